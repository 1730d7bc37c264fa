"""Process lifecycle per container from ``bpf/proc.bpf.c``.

Counts (forks, execs, abnormal exits) are per-second rates; ``exec`` and
``exit`` events (non-zero code or fatal signal) arrive through the ring buffer.

An exit is judged once per process, when it ends: the code of exit_group,
else the first fatal signal, where a group exit's SIGKILL counts as the signal
that was sent (``kill -TERM`` is SIGTERM), and the SIGKILLs the kernel sends to
the other threads of a process that exits, execs or crashes count as nothing.
How the kernel makes that hard is told in ``bpf/proc.bpf.c``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Any

from ..model import Container, Event
from .bpf import Probe, tracepoint_fields
from .kernel import KernelSource, cstr

EV_EXEC, EV_EXIT = 1, 2


def signal_name(sig: int) -> str:
    """The conventional name of a signal number.

    >>> signal_name(9), signal_name(11), signal_name(99)
    ('SIGKILL', 'SIGSEGV', 'SIG99')
    """
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


class ProcSource(KernelSource):
    name = "proc"
    program = "proc"
    tables = ("proc_stats",)
    metrics = ("proc.forks", "proc.execs", "proc.exits_nonzero")
    rate_fields = {"proc.forks": 0, "proc.execs": 1, "proc.exits_nonzero": 3}  # fields of struct cgw_proc
    probes = (
        Probe("sched", "sched_process_fork", "CGW_HAVE_FORK", ("proc.forks",)),
        Probe("sched", "sched_process_exec", "CGW_HAVE_EXEC", ("proc.execs",)),
        Probe("sched", "sched_process_exit", "CGW_HAVE_EXIT", ("proc.exits_nonzero",)),
        Probe("syscalls", "sys_enter_exit_group", "CGW_HAVE_EXIT_GROUP"),
        Probe("signal", "signal_deliver", "CGW_HAVE_SIGNAL"),
        # without it a group exit shows as SIGKILL, and a multi-threaded
        # program's exit without the exit_group hook as a SIGKILL death
        Probe("signal", "signal_generate", "CGW_HAVE_SIGNAL_GENERATE"),
    )

    def __init__(self, resolver, cflags: Iterable[str] = (), ring_pages: int = 256,  # type: ignore[no-untyped-def]
                 exit_codes: bool = True) -> None:
        """``ring_pages``: ring buffer size in pages (a power of two); at the
        default 1 MiB it holds about 5,000 exec events between two reads.
        ``exit_codes=False`` drops the exit_group syscall hook, which costs
        every syscall on the host ~40 ns (docs/performance.md): exits by fatal
        signals are still reported, plain non-zero codes are not."""
        self.ring_pages = ring_pages
        if not exit_codes:
            self.probes = tuple(p for p in type(self).probes if p.name != "sys_enter_exit_group")
        super().__init__(resolver, cflags)

    def extra_flags(self, have: list[str]) -> list[str]:
        if "-DCGW_HAVE_EXIT_GROUP" not in have and "-DCGW_HAVE_SIGNAL" not in have:
            self.absent.add("proc.exits_nonzero")
        flags = [f"-DCGW_RINGBUF_PAGES={self.ring_pages}"]
        # newer kernels: an exit is judged at the last thread's end, not the leader's
        # (which may end first, or be replaced by a thread that exec'd)
        if "group_dead" in tracepoint_fields("sched", "sched_process_exit"):
            flags.append("-DCGW_HAVE_GROUP_DEAD")
        return flags


    def decode(self, rec: Any, container: Container, ts: float) -> Event | None:
        if rec.kind == EV_EXEC:
            return Event(ts, container, "exec", {
                "pid": rec.pid, "comm": cstr(rec.comm), "filename": cstr(rec.path),
            })
        if rec.kind == EV_EXIT:
            fields: dict[str, Any] = {"pid": rec.pid, "comm": cstr(rec.comm), "code": rec.code}
            if rec.sig:
                fields["signal"] = signal_name(rec.sig)
            return Event(ts, container, "exit", fields)
        return None
