"""Memory per container from ``bpf/mem.bpf.c``: user page faults, OOM kills.

The OOM killer's choice arrives as an ``oom_kill`` event with the victim's
pid and comm, in the victim's container.
"""

from __future__ import annotations

from typing import Any

from ..model import Container, Event
from .bpf import Probe, raw_tracepoints, tracepoint_fields
from .kernel import KernelSource, cstr

EV_OOM = 3


class MemSource(KernelSource):
    name = "mem"
    program = "mem"
    tables = ("mem_stats",)
    metrics = ("mem.page_faults",)
    rate_fields = {"mem.page_faults": 0}  # fields of struct cgw_mem
    probes = (
        Probe("exceptions", "page_fault_user", "CGW_HAVE_FAULT", ("mem.page_faults",)),
        Probe("oom", "mark_victim", "CGW_HAVE_OOM"),
    )

    def extra_flags(self, have: list[str]) -> list[str]:
        flags = []
        if "comm" in tracepoint_fields("oom", "mark_victim"):
            flags.append("-DCGW_VICTIM_COMM")
        if "-DCGW_HAVE_FAULT" in have and raw_tracepoints():
            flags.append("-DCGW_RAW_FAULT")
        return flags


    def decode(self, rec: Any, container: Container, ts: float) -> Event | None:
        if rec.kind != EV_OOM:
            return None
        comm = cstr(rec.comm) or _comm_of(rec.pid)
        return Event(ts, container, "oom_kill", {"pid": rec.pid, "comm": comm})


def _comm_of(pid: int) -> str:
    """The comm of a live process ('' once it is gone).

    >>> _comm_of(-1)
    ''
    """
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
