"""CPU per container from ``bpf/cpu.bpf.c``: on-CPU time, context switches,
run-queue latency.

``cpu.usage_cores`` is on-CPU nanoseconds over wall nanoseconds, so 1.0 is one
core kept busy. Run-queue latency comes from a log2 histogram per cgroup; its
p99 is interpolated inside the bucket that holds the 99th percentile.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from ..model import Container, Sample
from .bpf import Probe, kernel_version, raw_tracepoints
from .kernel import KernelSource, rate_samples

RUNQ_SLOTS = 26  # CGW_RUNQ_SLOTS in cgwatch.h


def hist_quantile(slots: Sequence[float], q: float) -> float | None:
    """The q-quantile, in microseconds, of a log2 histogram of microseconds.

    Slot 0 holds [0, 2) us, slot i > 0 holds [2^i, 2^(i+1)) us; the value is
    interpolated linearly inside its slot.

    >>> hist_quantile([0, 0, 0, 100], 0.5)        # all in [8, 16) us
    12.0
    >>> hist_quantile([50, 0, 0, 50], 0.99)       # the top of [8, 16)
    15.84
    >>> hist_quantile([0, 0], 0.99) is None
    True
    """
    total = float(sum(slots))
    if total <= 0:
        return None
    want = q * total
    seen = 0.0
    for i, n in enumerate(slots):
        if n <= 0:
            continue
        if seen + n >= want:
            lo = 0.0 if i == 0 else float(2**i)
            hi = float(2 ** (i + 1))
            return lo + (hi - lo) * (want - seen) / n
        seen += n
    return float(2 ** len(slots))


class CpuSource(KernelSource):
    """sched_switch accounting (+ sched_wakeup* for run-queue latency)."""

    name = "cpu"
    program = "cpu"
    metrics = (
        "cpu.usage_cores",
        "cpu.ctx_switches",
        "cpu.involuntary_ctx_switches",
        "cpu.runq_latency_avg_ms",
        "cpu.runq_latency_p99_ms",
    )
    RUNQ_METRICS = ("cpu.runq_latency_avg_ms", "cpu.runq_latency_p99_ms")

    def __init__(self, resolver, cflags: Iterable[str] = (), runq: bool = True) -> None:  # type: ignore[no-untyped-def]
        self.runq = runq
        self.probes = (Probe("sched", "sched_switch", "CGW_HAVE_SWITCH", self.metrics),)
        if runq:
            self.probes += (
                Probe("sched", "sched_wakeup", "CGW_HAVE_WAKEUP", self.RUNQ_METRICS),
                Probe("sched", "sched_wakeup_new", "CGW_HAVE_WAKEUP_NEW", self.RUNQ_METRICS),
            )
        self.tables = ("cpu_stats",)
        super().__init__(resolver, cflags)
        if not self.runq_enabled:
            self.absent |= set(self.RUNQ_METRICS)

    @property
    def runq_enabled(self) -> bool:
        return "-DCGW_RUNQ" in self.cflags

    def extra_flags(self, have: list[str]) -> list[str]:
        if not raw_tracepoints():      # classic sched_switch: no task to key wake-ups by
            return []
        flags = ["-DCGW_RAW_SWITCH"]
        if kernel_version() >= (5, 18):   # prev_state became the 4th raw argument
            flags.append("-DCGW_SWITCH_STATE")
        if self.runq and {"-DCGW_HAVE_WAKEUP", "-DCGW_HAVE_WAKEUP_NEW"} <= set(have):
            flags.append("-DCGW_RUNQ")
        return flags

    def collect(self, now: float, containers: Iterable[Container]) -> list[Sample]:
        dt = self.interval(now)
        if dt <= 0:
            return []
        flush_cpus()
        d = self.deltas("cpu_stats", now)
        fields = {
            "cpu.usage_cores": lambda v: float(v[0]) / 1e9 / dt,
            "cpu.ctx_switches": lambda v: float(v[1]) / dt,
            "cpu.involuntary_ctx_switches": lambda v: float(v[2]) / dt,
        }
        if self.runq_enabled:
            fields["cpu.runq_latency_avg_ms"] = _runq_avg_ms
            fields["cpu.runq_latency_p99_ms"] = _runq_p99_ms
        return rate_samples(now, d, containers, self.readers["cpu_stats"].nfields, fields, self.absent)


def flush_cpus() -> None:
    """Make every CPU we may run on switch once, so running slices are charged.

    On-CPU time is charged when a task is switched out, and a busy task alone
    on a CPU may not be switched out for seconds: its time would arrive in
    lumps. Moving this thread across the CPUs makes each of them switch from
    whatever runs there to us, which charges the running slice up to now.
    It costs two context switches per CPU per interval.
    """
    allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed)
    try:
        for cpu in [*cpus, cpus[0]]:      # and back: leaving the last CPU flushes it too
            os.sched_setaffinity(0, {cpu})
    except OSError:     # a CPU went offline meanwhile: the next interval catches up
        pass
    finally:
        os.sched_setaffinity(0, allowed)


# struct cgw_cpu with -DCGW_RUNQ: oncpu_ns, switches, involuntary, runq_count, runq_sum_ns, slots...
def _runq_avg_ms(d: np.ndarray) -> float | None:
    return float(d[4]) / float(d[3]) / 1e6 if d[3] else None


def _runq_p99_ms(d: np.ndarray) -> float | None:
    us = hist_quantile(d[5:].tolist(), 0.99)
    return None if us is None else us / 1000.0
