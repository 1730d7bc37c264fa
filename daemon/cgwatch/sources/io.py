"""Block I/O per container from ``bpf/io.bpf.c``: requests completed and how long the
device took with them (issue to completion), charged to the cgroup that queued each.

``io.latency_p99_ms`` is interpolated inside the log2 histogram slot that holds the
99th percentile (as the run-queue latency's); an interval with no request completed
gives ``io.ops`` 0 and no latency.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..model import Container, Frame
from .bpf import Probe
from .cpu import hist_quantiles
from .kernel import KernelSource, row_samples, with_idle

#: struct cgw_io: ops, lat_sum_ns, then the histogram slots
_SLOTS_AT = 2


class IoSource(KernelSource):
    name = "io"
    program = "io"
    tables = ("io_stats",)
    metrics = ("io.ops", "io.latency_p99_ms")
    probes = (
        Probe("block", "block_bio_queue", "CGW_HAVE_BIO_QUEUE", metrics),
        Probe("block", "block_rq_issue", "CGW_HAVE_RQ_ISSUE", metrics),
        Probe("block", "block_rq_complete", "CGW_HAVE_RQ_COMPLETE", metrics),
    )

    def extra_flags(self, have: list[str]) -> list[str]:
        if {"-DCGW_HAVE_BIO_QUEUE", "-DCGW_HAVE_RQ_ISSUE", "-DCGW_HAVE_RQ_COMPLETE"} <= set(have):
            return ["-DCGW_IO_BLOCK"]
        return []

    def collect(self, now: float, containers: Iterable[Container]) -> Frame:
        cs, d, dt = self.delta_rows(self.tables[0], now)
        if dt <= 0 or "io.ops" in self.absent:
            return Frame()
        cs, d = with_idle(cs, d, containers)
        ops = (d[:, 0].astype(np.float64) / dt).tolist()
        p99 = [None if us is None else us / 1000.0 for us in hist_quantiles(d[:, _SLOTS_AT:], 0.99)]
        return row_samples(now, cs, ["io.ops", "io.latency_p99_ms"], [list(r) for r in zip(ops, p99)])
