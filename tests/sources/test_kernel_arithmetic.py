"""Map-to-sample arithmetic of the BPF sources, without a kernel: cumulative
per-cgroup counters in, per-container rates out.

Sources read a fake clock (:class:`Clock`); :func:`at` reads the maps at the
tick's ``now``, the rate tests at the end read them late, as the daemon does.
"""

from __future__ import annotations

import numpy as np
import pytest

from cgwatch.model import HOST, Container
from cgwatch.sources.cpu import CpuSource, hist_quantile, hist_quantiles
from cgwatch.sources.kernel import KernelSource
from cgwatch.sources.mem import MemSource

WEB = Container(id="a" * 64, name="web-1", runtime="docker", cgroup="docker/" + "a" * 64)
DB = Container(id="b" * 64, name="db-1", runtime="docker", cgroup="docker/" + "b" * 64)


class FakeResolver:
    def __init__(self, table: dict[int, Container]) -> None:
        self.table = table
        self.dead: set[int] = set()
        self.lookups = 0

    @property
    def generation(self) -> tuple:
        """What the tests change: the table (by what each id names) and the dead."""
        return tuple((k, c.id, c.name) for k, c in sorted(self.table.items())), frozenset(self.dead)

    def container(self, cgid: int, now: float) -> Container:
        self.lookups += 1
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

    def read_rows(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.read()
        if not m:
            return np.zeros(0, dtype=np.uint64), np.zeros((0, self.nfields), dtype=np.uint64)
        return np.array(list(m), dtype=np.uint64), np.array(list(m.values()))

    def delete(self, cgids: list[int]) -> None:
        for c in cgids:
            self.deleted.append(c)
            self.map.pop(c, None)


class Clock:
    """A monotonic clock that moves only when the test says."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def source(cls: type, resolver: FakeResolver, tables: tuple[str, ...], t0: float) -> KernelSource:
    """A source as loaded at ``t0`` (on the fake clock), with fake maps and no cgroupfs."""
    s = cls.__new__(cls)
    s.resolver = resolver
    s.absent = set()
    s.cflags = []
    s.readers = {t: FakeReader() for t in tables}
    s._prev, s._rows = {}, {}
    s.clock = Clock(t0)
    s._read_at = dict.fromkeys(tables, t0)
    if isinstance(s, CpuSource):
        s.cgroup2, s._files, s._usage, s._paths = None, None, {}, {}
    return s


def at(s: KernelSource, now: float, containers: list[Container], lag: float = 0.0) -> list:
    """One tick at ``now`` whose reads come ``lag`` seconds later."""
    s.clock.t = now + lag
    return s.collect(now, containers)


def u64(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.uint64)


def test_cpu_rates_sum_the_cgroups_of_a_container():
    """Two cgroups of one container (its scope and a child) add up; rates are per second."""
    res = FakeResolver({10: WEB, 11: WEB, 20: DB})
    s = source(CpuSource, res, ("cpu_stats",), t0=100.0)
    r = s.readers["cpu_stats"]
    r.map = {10: u64(0, 0, 0), 11: u64(0, 0, 0), 20: u64(0, 0, 0)}
    at(s, 101.0, [WEB, DB])
    r.map = {10: u64(1_500_000_000, 100, 10), 11: u64(500_000_000, 50, 5), 20: u64(0, 0, 0)}
    out = {(x.container.id, x.metric): x.value for x in at(s, 103.0, [WEB, DB])}
    assert out[(WEB.id, "cpu.usage_cores")] == pytest.approx(1.0)      # 2 s of CPU in 2 s
    assert out[(WEB.id, "cpu.ctx_switches")] == pytest.approx(75.0)
    assert out[(WEB.id, "cpu.involuntary_ctx_switches")] == pytest.approx(7.5)
    assert out[(DB.id, "cpu.usage_cores")] == 0.0


def test_a_cgroup_seen_first_counts_from_zero_and_alive_idle_containers_report_zero():
    res = FakeResolver({10: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    s.readers["cpu_stats"].map = {10: u64(2_000_000_000, 4, 0)}
    out = {(x.container.id, x.metric): x.value for x in at(s, 4.0, [WEB, DB])}
    assert out[(WEB.id, "cpu.usage_cores")] == pytest.approx(0.5)
    assert out[(DB.id, "cpu.usage_cores")] == 0.0 and out[(DB.id, "cpu.ctx_switches")] == 0.0


def test_a_dead_cgroup_gives_its_last_counts_then_leaves_the_map():
    res = FakeResolver({10: WEB, 11: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    r = s.readers["cpu_stats"]
    r.map = {10: u64(1_000_000_000, 10, 0), 11: u64(1_000_000_000, 10, 0)}
    at(s, 1.0, [WEB])
    r.map = {10: u64(2_000_000_000, 20, 0), 11: u64(1_500_000_000, 15, 0)}
    res.dead = {11}
    out = {x.metric: x.value for x in at(s, 2.0, [WEB]) if x.container is WEB}
    assert out["cpu.usage_cores"] == pytest.approx(1.5)   # 11's last half second counted
    assert r.deleted == [11]
    res.dead = set()
    r.map = {10: u64(3_000_000_000, 30, 0)}
    out = {x.metric: x.value for x in at(s, 3.0, [WEB]) if x.container is WEB}
    assert out["cpu.usage_cores"] == pytest.approx(1.0)   # never negative after the removal


def test_a_recreated_counter_restarts_instead_of_going_negative():
    res = FakeResolver({10: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    r = s.readers["cpu_stats"]
    r.map = {10: u64(5_000_000_000, 50, 5)}
    at(s, 1.0, [WEB])
    r.map = {10: u64(1_000_000_000, 10, 1)}      # smaller: the entry was recreated
    out = {x.metric: x.value for x in at(s, 2.0, [WEB]) if x.container is WEB}
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
    at(s, 1.0, [WEB])
    after = before.copy()
    after[3] += 100
    after[4] += 100 * 20_000        # 100 waits of 20 us
    after[5 + 4] += 100             # slot 4: [16, 32) us
    s.readers["cpu_stats"].map = {10: after}
    out = {x.metric: x.value for x in at(s, 2.0, [WEB]) if x.container is WEB}
    assert out["cpu.runq_latency_avg_ms"] == pytest.approx(0.02)
    assert 0.016 <= out["cpu.runq_latency_p99_ms"] < 0.032


def test_no_wakeups_means_no_latency_sample_not_zero():
    res = FakeResolver({10: WEB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    s.cflags = ["-DCGW_RUNQ"]
    s.readers["cpu_stats"].nfields = 31
    s.readers["cpu_stats"].map = {10: np.zeros(31, dtype=np.uint64)}
    metrics = {x.metric for x in at(s, 1.0, [WEB])}
    assert "cpu.usage_cores" in metrics
    assert "cpu.runq_latency_p99_ms" not in metrics and "cpu.runq_latency_avg_ms" not in metrics


def test_absent_metrics_are_never_reported():
    s = source(MemSource, FakeResolver({10: WEB}), ("mem_stats",), t0=0.0)
    s.absent = {"mem.page_faults"}              # its tracepoint is missing on this kernel
    s.readers["mem_stats"].nfields = 1
    s.readers["mem_stats"].map = {10: u64(5)}
    assert [x for x in at(s, 1.0, [WEB]) if x.metric == "mem.page_faults"] == []


@pytest.mark.parametrize("slots,q,lo,hi", [
    ([100], 0.99, 0.0, 2.0),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10], 0.5, 1024.0, 2048.0),
    ([90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10], 0.99, 1024.0, 2048.0),   # the tail decides p99
    ([99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0.99, 0.0, 2.0),
])
def test_hist_quantile_lands_in_the_right_bucket(slots, q, lo, hi):
    v = hist_quantile(slots, q)
    assert v is not None and lo <= v <= hi


def test_hist_quantiles_of_many_rows_equal_hist_quantile_of_each():
    """The batch form the cpu source uses gives what the one-row form gives, to the bit."""
    rows = [[0] * 26, [100] + [0] * 25, [0] * 25 + [3], [90] + [0] * 9 + [10] + [0] * 15,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1_000_000],
            [0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    for q in (0.99, 0.5, 0.01, 1.0):
        assert hist_quantiles(np.array(rows, dtype=np.uint64), q) == [hist_quantile(r, q) for r in rows]


# -- every rate over its own reads -------------------------------------------------
# Ticks come every second, but each tick's reads come a varying time after its
# `now` (identity, ring buffers, the GIL: up to ~0.3 s under load), and the
# containers of one tick are read one after another. A steady counter must read
# steady: the rate is over the time between the two reads that produced it.

class SteadyMap(FakeReader):
    """A map whose cgroup 10 counts `per_s` of every field per second of the clock."""

    def __init__(self, clock: Clock, per_s: tuple[int, ...]) -> None:
        super().__init__()
        self.clock, self.per_s = clock, per_s
        self.nfields = len(per_s)

    def read(self) -> dict[int, np.ndarray]:
        return {10: np.array([round(r * self.clock.t) for r in self.per_s], dtype=np.uint64)}


LAGS = [0.0, 0.3, 0.0, 0.25, 0.1, 0.0]      # how late each tick's reads come after its `now`


def test_a_kernel_rate_is_over_its_own_reads_not_the_ticks():
    """mem.page_faults (KernelSource.collect, as proc, mem and net use it) of a steady
    1000 faults/s, read 0-0.3 s after ticks 1 s apart: 1000 every interval (over
    the ticks' `now` it read 1300, 700, 1250, 850, 900)."""
    s = source(MemSource, FakeResolver({10: WEB}), ("mem_stats",), t0=0.0)
    s.readers["mem_stats"] = SteadyMap(s.clock, (1000,))
    got = []
    for i, lag in enumerate(LAGS):
        out = at(s, 1.0 + i, [WEB], lag=lag)
        got.append(next(x.value for x in out if x.metric == "mem.page_faults"))
    assert got == [pytest.approx(1000.0)] * len(LAGS)   # the first: since load, at t0


def test_a_read_that_comes_no_later_than_the_last_gives_nothing_and_loses_nothing():
    s = source(MemSource, FakeResolver({10: WEB}), ("mem_stats",), t0=0.0)
    s.readers["mem_stats"] = SteadyMap(s.clock, (1000,))
    at(s, 1.0, [WEB])
    assert at(s, 1.0, [WEB]) == []                   # the same moment: no interval
    assert [x.value for x in at(s, 3.0, [WEB])] == [pytest.approx(1000.0)]


class SteadyFiles:
    """cgroup2 cpu.stat files of containers each using `cores[id]` cores of the clock."""

    def __init__(self, clock: Clock, cores: dict[str, float]) -> None:
        self.clock, self.cores = clock, cores
        self.gone: set[str] = set()

    def read(self, path: str) -> str:
        cid = path.split("/")[-2]
        if cid in self.gone:
            raise FileNotFoundError(path)
        return f"usage_usec {round(self.cores[cid] * self.clock.t * 1e6)}\nuser_usec 0\nsystem_usec 0\n"


def late(clock: Clock, containers: list[Container], stall: float):
    """The containers, with the collecting thread stalled `stall` s after the first."""
    for i, c in enumerate(containers):
        if i == 1:
            clock.t += stall
        yield c


def test_cpu_usage_is_over_each_containers_own_reads():
    """cpu.usage_cores from cpu.stat (0.5 and 0.25 cores), read late and with a stall
    between the two containers; ctx_switches from the map, read late: all steady."""
    res = FakeResolver({10: WEB, 20: DB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    s.readers["cpu_stats"] = SteadyMap(s.clock, (0, 200, 20))       # only cgroup 10 counts
    s.cgroup2 = "/cg"
    files = s._files = SteadyFiles(s.clock, {WEB.id: 0.5, DB.id: 0.25})
    stalls = [0.2, 0.0, 0.4, 0.05, 0.0, 0.3]
    got = []
    for i, (lag, stall) in enumerate(zip(LAGS, stalls)):
        out = at(s, 1.0 + i, late(s.clock, [WEB, DB], stall), lag=lag)
        got.append({(x.container.id, x.metric): x.value for x in out})
    for g in got[1:]:      # the first interval of a container is BPF's (0 here)
        assert g[(WEB.id, "cpu.usage_cores")] == pytest.approx(0.5)
        assert g[(DB.id, "cpu.usage_cores")] == pytest.approx(0.25)
    for g in got:
        assert g[(WEB.id, "cpu.ctx_switches")] == pytest.approx(200.0)
        assert g[(WEB.id, "cpu.involuntary_ctx_switches")] == pytest.approx(20.0)
    # a file gone for a tick: BPF's figure that tick, then cpu.stat over the two reads around the gap
    files.gone = {DB.id}
    out = {(x.container.id, x.metric): x.value for x in at(s, 10.0, [WEB, DB], lag=0.2)}
    assert out[(DB.id, "cpu.usage_cores")] == 0.0 and out[(WEB.id, "cpu.usage_cores")] == pytest.approx(0.5)
    files.gone = set()
    out = {(x.container.id, x.metric): x.value for x in at(s, 11.0, [WEB, DB])}
    assert out[(DB.id, "cpu.usage_cores")] == pytest.approx(0.25)


def test_cpu_stat_going_backwards_gives_bpfs_figure_then_counts_from_the_new_value():
    s = source(CpuSource, FakeResolver({10: WEB}), ("cpu_stats",), t0=0.0)
    s.readers["cpu_stats"] = SteadyMap(s.clock, (250_000_000, 0, 0))   # BPF: 0.25 cores
    s.cgroup2 = "/cg"
    files = s._files = SteadyFiles(s.clock, {WEB.id: 0.5})
    at(s, 1.0, [WEB])
    files.cores[WEB.id] = 0.1                      # recreated: the counter is smaller
    assert [x.value for x in at(s, 2.0, [WEB]) if x.metric == "cpu.usage_cores"] == [pytest.approx(0.25)]
    assert [x.value for x in at(s, 3.0, [WEB]) if x.metric == "cpu.usage_cores"] == [pytest.approx(0.1)]


# -- the map's ids are resolved again only when something changed -------------------

def test_containers_are_looked_up_again_only_when_the_ids_or_the_resolver_change():
    """Every interval reads every map; naming its cgroup ids again each time is the
    per-entry Python loop the batch read avoids. It is redone when the ids change or
    the resolver says something changed (a container learnt, renamed, gone)."""
    res = FakeResolver({10: WEB, 20: DB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    r = s.readers["cpu_stats"]
    r.map = {10: u64(0, 0, 0), 20: u64(0, 0, 0)}
    at(s, 1.0, [WEB, DB])
    first = res.lookups
    for i in range(2, 5):
        r.map = {10: u64(i * 10**9, 0, 0), 20: u64(0, 0, 0)}
        at(s, float(i), [WEB, DB])
    assert res.lookups == first                           # same ids, same generation
    res.table[10] = Container(id=WEB.id, name="web-renamed", runtime="docker", cgroup=WEB.cgroup)
    r.map = {10: u64(5 * 10**9, 0, 0), 20: u64(0, 0, 0)}
    names = {x.container.name for x in at(s, 5.0, [WEB, DB]) if x.metric == "cpu.usage_cores"}
    assert "web-renamed" in names and res.lookups > first
    seen = res.lookups
    r.map = {10: u64(6 * 10**9, 0, 0), 20: u64(0, 0, 0), 30: u64(7 * 10**9, 0, 0)}   # a new cgroup
    out = {x.container.id: x.value for x in at(s, 6.0, [WEB, DB]) if x.metric == "cpu.usage_cores"}
    assert res.lookups > seen
    assert out[WEB.id] == pytest.approx(1.0)              # still against its own previous read
    assert out[HOST.id] == pytest.approx(7.0)             # id 30 is nobody's: the host, from zero


def test_a_map_that_lists_its_ids_in_another_order_still_subtracts_per_id():
    """The fast path compares the ids as read; a reordered map (a rehash) must pair
    each id with its own previous counters."""
    res = FakeResolver({10: WEB, 20: DB})
    s = source(CpuSource, res, ("cpu_stats",), t0=0.0)
    r = s.readers["cpu_stats"]
    r.map = {10: u64(1 * 10**9, 0, 0), 20: u64(3 * 10**9, 0, 0)}
    at(s, 1.0, [WEB, DB])
    r.map = {20: u64(4 * 10**9, 0, 0), 10: u64(3 * 10**9, 0, 0)}
    out = {x.container.id: x.value for x in at(s, 2.0, [WEB, DB]) if x.metric == "cpu.usage_cores"}
    assert out == {WEB.id: pytest.approx(2.0), DB.id: pytest.approx(1.0)}
