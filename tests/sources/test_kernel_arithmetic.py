"""Map-to-sample arithmetic of the BPF sources, without a kernel: cumulative
per-cgroup counters in, per-container rates out."""

from __future__ import annotations

import numpy as np
import pytest

from cgwatch.model import HOST, Container
from cgwatch.sources.cpu import CpuSource, hist_quantile
from cgwatch.sources.kernel import KernelSource, rate_samples

WEB = Container(id="a" * 64, name="web-1", runtime="docker", cgroup="docker/" + "a" * 64)
DB = Container(id="b" * 64, name="db-1", runtime="docker", cgroup="docker/" + "b" * 64)


class FakeResolver:
    def __init__(self, table: dict[int, Container]) -> None:
        self.table = table
        self.dead: set[int] = set()

    def container(self, cgid: int, now: float) -> Container:
        return self.table.get(cgid, HOST)

    def alive(self, cgid: int) -> bool:
        return cgid not in self.dead


class FakeReader:
    """Stands in for PerCpuTable: returns whatever the test put in the 'map'."""

    def __init__(self) -> None:
        self.map: dict[int, np.ndarray] = {}
        self.deleted: list[int] = []
        self.nfields = 3

    def read(self) -> dict[int, np.ndarray]:
        return {k: v.copy() for k, v in self.map.items()}

    def delete(self, cgids: list[int]) -> None:
        for c in cgids:
            self.deleted.append(c)
            self.map.pop(c, None)


def source(cls: type, resolver: FakeResolver, tables: tuple[str, ...], t0: float) -> KernelSource:
    s = cls.__new__(cls)
    s.resolver = resolver
    s.absent = set()
    s.cflags = []
    s.readers = {t: FakeReader() for t in tables}
    s._prev = {t: {} for t in tables}
    s._prev_ts = t0
    return s


def u64(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.uint64)


def test_cpu_rates_sum_the_cgroups_of_a_container():
    """Two cgroups of one container (its scope and a child) add up; rates are per second."""
    res = FakeResolver({10: WEB, 11: WEB, 20: DB})
    s = source(CpuSource, res, ("cpu_stats",), t0=100.0)
    r = s.readers["cpu_stats"]
    r.map = {10: u64(0, 0, 0), 11: u64(0, 0, 0), 20: u64(0, 0, 0)}
    s.collect(101.0, [WEB, DB])
    r.map = {10: u64(1_500_000_000, 100, 10), 11: u64(500_000_000, 50, 5), 20: u64(0, 0, 0)}
    out = {(x.container.id, x.metric): x.value for x in s.collect(103.0, [WEB, DB])}
    assert out[(WEB.id, "cpu.usage_cores")] == pytest.approx(1.0)      # 2 s of CPU in 2 s
    assert out[(WEB.id, "cpu.ctx_switches")] == pytest.approx(75.0)
    assert out[(WEB.id, "cpu.involuntary_ctx_switches")] == pytest.approx(7.5)
    assert out[(DB.id, "cpu.usage_cores")] == 0.0


def test_a_cgroup_seen_first_counts_from_zero_and_alive_idle_containers_report_zero():
    res = FakeResolver({10: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    s.readers["cpu_stats"].map = {10: u64(2_000_000_000, 4, 0)}
    out = {(x.container.id, x.metric): x.value for x in s.collect(4.0, [WEB, DB])}
    assert out[(WEB.id, "cpu.usage_cores")] == pytest.approx(0.5)
    assert out[(DB.id, "cpu.usage_cores")] == 0.0 and out[(DB.id, "cpu.ctx_switches")] == 0.0


def test_a_dead_cgroup_gives_its_last_counts_then_leaves_the_map():
    res = FakeResolver({10: WEB, 11: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    r = s.readers["cpu_stats"]
    r.map = {10: u64(1_000_000_000, 10, 0), 11: u64(1_000_000_000, 10, 0)}
    s.collect(1.0, [WEB])
    r.map = {10: u64(2_000_000_000, 20, 0), 11: u64(1_500_000_000, 15, 0)}
    res.dead = {11}
    out = {x.metric: x.value for x in s.collect(2.0, [WEB]) if x.container is WEB}
    assert out["cpu.usage_cores"] == pytest.approx(1.5)   # 11's last half second counted
    assert r.deleted == [11]
    res.dead = set()
    r.map = {10: u64(3_000_000_000, 30, 0)}
    out = {x.metric: x.value for x in s.collect(3.0, [WEB]) if x.container is WEB}
    assert out["cpu.usage_cores"] == pytest.approx(1.0)   # never negative after the removal


def test_a_recreated_counter_restarts_instead_of_going_negative():
    res = FakeResolver({10: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    r = s.readers["cpu_stats"]
    r.map = {10: u64(5_000_000_000, 50, 5)}
    s.collect(1.0, [WEB])
    r.map = {10: u64(1_000_000_000, 10, 1)}      # smaller: the entry was recreated
    out = {x.metric: x.value for x in s.collect(2.0, [WEB]) if x.container is WEB}
    assert out["cpu.usage_cores"] == pytest.approx(1.0)
    assert all(v >= 0 for v in out.values())


def test_runq_latency_from_the_histogram_delta():
    """avg from sum/count, p99 from the interval's histogram only."""
    res = FakeResolver({10: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    s.cflags = ["-DCGW_RUNQ"]
    s.readers["cpu_stats"].nfields = 31
    before = np.zeros(31, dtype=np.uint64)          # oncpu, switches, invol, count, sum, 26 slots
    before[3], before[4], before[5 + 12] = 1000, 1000 * 5_000_000, 1000   # old: 1000 waits of ~4 ms
    s.readers["cpu_stats"].map = {10: before}
    s.collect(1.0, [WEB])
    after = before.copy()
    after[3] += 100
    after[4] += 100 * 20_000        # 100 waits of 20 us
    after[5 + 4] += 100             # slot 4: [16, 32) us
    s.readers["cpu_stats"].map = {10: after}
    out = {x.metric: x.value for x in s.collect(2.0, [WEB]) if x.container is WEB}
    assert out["cpu.runq_latency_avg_ms"] == pytest.approx(0.02)
    assert 0.016 <= out["cpu.runq_latency_p99_ms"] < 0.032


def test_no_wakeups_means_no_latency_sample_not_zero():
    res = FakeResolver({10: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    s.cflags = ["-DCGW_RUNQ"]
    s.readers["cpu_stats"].nfields = 31
    s.readers["cpu_stats"].map = {10: np.zeros(31, dtype=np.uint64)}
    metrics = {x.metric for x in s.collect(1.0, [WEB])}
    assert "cpu.usage_cores" in metrics
    assert "cpu.runq_latency_p99_ms" not in metrics and "cpu.runq_latency_avg_ms" not in metrics


def test_absent_metrics_are_never_reported():
    d = {WEB.id: (WEB, u64(5))}
    out = rate_samples(1.0, d, [WEB], 1, {"mem.page_faults": lambda v: float(v[0])}, {"mem.page_faults"})
    assert out == []


@pytest.mark.parametrize("slots,q,lo,hi", [
    ([100], 0.99, 0.0, 2.0),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10], 0.5, 1024.0, 2048.0),
    ([90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10], 0.99, 1024.0, 2048.0),   # the tail decides p99
    ([99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0.99, 0.0, 2.0),
])
def test_hist_quantile_lands_in_the_right_bucket(slots, q, lo, hi):
    v = hist_quantile(slots, q)
    assert v is not None and lo <= v <= hi
