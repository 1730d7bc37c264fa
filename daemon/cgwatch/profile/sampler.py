"""The kernel side of profiling: ``bpf/profile.bpf.c`` on the cpu-clock perf event.

One :class:`Sampler` serves every profile running at a time. It is compiled
on first use (BCC takes a few seconds), attached to the perf event only while
some cgroup is wanted, and its stack map is cleared whenever no profile runs,
so each window starts with an empty map.

A :class:`Session` is one container's profile: every poll (about once a
second) it takes its cgroups' counts out of the kernel map and names the new
stacks while their processes still exist, so a process (or the whole
container) that exits mid-profile keeps its names; at the end it returns a
:class:`~cgwatch.profile.model.Profile`.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import Container
from ..sources.bpf import load
from .model import KERNEL_SUFFIX, LOST_FRAME, Profile, profile_id

log = logging.getLogger("cgwatch.profile")

DEFAULT_HZ = 49
DEFAULT_STACKS = 8192
EFAULT = -errno.EFAULT
#: BCC's program type for perf-event programs (BPF_PROG_TYPE_PERF_EVENT)
PERF_EVENT_PROG = 7


class Names(Protocol):
    """What a session needs from a symboliser (cgwatch.profile.symbols.Symbolizer)."""

    def watch(self, pid: int) -> bool: ...

    def user(self, pid: int, addrs: list[int]) -> list[str]: ...

    def kernel(self, addrs: list[int]) -> list[str]: ...

    def forget(self, pid: int) -> None: ...


@dataclass(frozen=True, slots=True)
class RawCount:
    """One row of the kernel's counts map."""

    tgid: int
    comm: str
    user_stack: int
    kernel_stack: int
    count: int


class Sampler:
    """The loaded profiler program; thread-safe (sessions poll from worker threads)."""

    def __init__(self, hz: int = DEFAULT_HZ, stack_entries: int = DEFAULT_STACKS) -> None:
        if not 1 <= hz <= 1000:
            raise ValueError(f"profile frequency must be 1..1000 Hz, not {hz}")
        self.hz = hz
        self.stack_entries = stack_entries
        self.bpf = load("profile", [f"-DCGW_STACKS={stack_entries}", f"-DCGW_COUNTS={stack_entries * 4}"],
                        funcs={"on_sample": PERF_EVENT_PROG})
        self._wanted: dict[int, int] = {}     # cgroup id -> how many sessions want it
        self._attached = False
        self._lock = threading.Lock()

    # -- which cgroups -----------------------------------------------------------------
    def want(self, cgids: set[int]) -> None:
        """Start counting samples of these cgroups (attaching to the perf event if needed)."""
        with self._lock:
            table = self.bpf["wanted"]
            for cgid in cgids:
                if cgid not in self._wanted:
                    table[ct.c_uint64(cgid)] = ct.c_uint8(1)
                self._wanted[cgid] = self._wanted.get(cgid, 0) + 1
            if self._wanted and not self._attached:
                self.bpf.attach_perf_event("on_sample", self.hz)
                self._attached = True

    def unwant(self, cgids: set[int]) -> None:
        """Stop counting these cgroups; with none left, detach and clear the stack map."""
        with self._lock:
            table = self.bpf["wanted"]
            for cgid in cgids:
                left = self._wanted.get(cgid, 0) - 1
                if left > 0:
                    self._wanted[cgid] = left
                    continue
                self._wanted.pop(cgid, None)
                try:
                    del table[ct.c_uint64(cgid)]
                except KeyError:
                    pass
            if not self._wanted and self._attached:
                self.bpf.detach_perf_event()
                self._attached = False
                self.bpf["stacks"].clear()
                self.bpf["counts"].clear()

    # -- reading -----------------------------------------------------------------------
    def take(self, cgids: set[int]) -> list[RawCount]:
        """The counts of these cgroups since the last take (removed from the kernel map)."""
        counts = self.bpf["counts"]
        out = []
        with self._lock:
            for k, v in list(counts.items()):
                if k.cgid not in cgids:
                    continue
                try:
                    del counts[k]
                except KeyError:
                    pass
                out.append(RawCount(k.tgid, k.comm.decode(errors="replace"), k.user_stack, k.kernel_stack,
                                    int(v.value)))
        return out

    def stack(self, stack_id: int) -> list[int]:
        """The addresses of a stored stack, innermost first ([] when it is gone). Every address
        but the first is a return address, one past its call: it is moved back into the call,
        so a call that ends its function is not taken for the next function."""
        try:
            addrs = [int(a) for a in self.bpf["stacks"].walk(stack_id)]
        except KeyError:
            return []
        return addrs[:1] + [a - 1 for a in addrs[1:]]

    def errors(self) -> tuple[int, int, int]:
        """Samples whose user stack / kernel stack / count was lost since the program loaded."""
        table = self.bpf["errors"]
        return tuple(int(sum(table.getvalue(table.Key(i)))) for i in range(3))  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            if self._attached:
                self.bpf.detach_perf_event()
                self._attached = False
            self.bpf.close()


class Session:
    """One container's profile in progress.

    ``cgroups`` returns the container's cgroup ids now (empty once it is gone);
    it is asked again at every poll, so cgroups created during the profile count.
    """

    def __init__(self, sampler: Sampler, names: Names, container: Container,
                 cgroups: Callable[[], set[int]], duration_s: float, rule: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.sampler = sampler
        self.names = names
        self.container = container
        self.cgroups = cgroups
        self.duration_s = duration_s
        self.rule = rule
        self.clock = clock
        self.started = clock()
        self.partial = ""
        self.lost = 0
        #: the cgroup ids being counted for this container (grows as its cgroups do)
        self.cgids: set[int] = set()
        self._stacks: dict[tuple[str, ...], int] = {}
        self._user: dict[tuple[int, int], tuple[str, ...]] = {}    # (tgid, stack id) -> names, root first
        self._kernel: dict[int, tuple[str, ...]] = {}
        self._pids: set[int] = set()
        self._ended: float | None = None
        self._errors0 = sampler.errors()
        self._grow()

    @property
    def due(self) -> float:
        return self.started + self.duration_s

    def _grow(self) -> bool:
        """Want the container's current cgroups; False when it has none left."""
        now = self.cgroups()
        new = now - self.cgids
        if new:
            self.sampler.want(new)
            self.cgids |= new
        return bool(now)

    def poll(self) -> bool:
        """Fold what the kernel counted; False once the profile is over (time, or the container left)."""
        self._fold(self.sampler.take(self.cgids))
        if self.clock() >= self.due:
            return False
        if not self._grow():
            self.partial = f"the container exited {self.clock() - self.started:.1f} s into the profile"
            return False
        return True

    def finish(self) -> Profile:
        """Stop counting and return the profile (call once)."""
        try:
            self._fold(self.sampler.take(self.cgids))
        finally:
            self.sampler.unwant(self.cgids)
        for pid in self._pids:
            self.names.forget(pid)
        errors = [b - a for a, b in zip(self._errors0, self.sampler.errors(), strict=True)]
        if errors[2] and not self.partial:
            self.partial = f"{errors[2]} samples were not counted: the kernel's counts map was full"
        if self.lost:
            log.info("profile of %s: %d samples lost their stack to the stack map (a slot taken by another "
                     "stack; a larger profiles.stack_map makes that rarer)",
                        self.container.name, self.lost)
        took = min(self.clock() - self.started, self.duration_s)
        return Profile(id=profile_id(self.container.id, self.started), container=self.container,
                       started=self.started, duration_s=round(took, 3), requested_s=self.duration_s, hz=self.sampler.hz, stacks=self._stacks,
                       partial=self.partial, lost=self.lost, rule=self.rule)

    # -- naming ------------------------------------------------------------------------
    def _fold(self, rows: list[RawCount]) -> None:
        for r in rows:
            if r.tgid not in self._pids:
                self._pids.add(r.tgid)
                self.names.watch(r.tgid)
            stack = (r.comm or "?",) + self._user_frames(r) + self._kernel_frames(r.kernel_stack)
            if (r.user_stack < 0 and r.user_stack != EFAULT) or (r.kernel_stack < 0 and r.kernel_stack != EFAULT):
                self.lost += r.count
            self._stacks[stack] = self._stacks.get(stack, 0) + r.count

    def _user_frames(self, r: RawCount) -> tuple[str, ...]:
        if r.user_stack == EFAULT:
            return ()
        if r.user_stack < 0:
            return (LOST_FRAME,)
        key = (r.tgid, r.user_stack)
        got = self._user.get(key)
        if got is None:
            addrs = self.sampler.stack(r.user_stack)
            got = self._user[key] = tuple(reversed(self.names.user(r.tgid, addrs))) if addrs else (LOST_FRAME,)
        return got

    def _kernel_frames(self, sid: int) -> tuple[str, ...]:
        if sid == EFAULT:
            return ()
        if sid < 0:
            return (LOST_FRAME + KERNEL_SUFFIX,)
        got = self._kernel.get(sid)
        if got is None:
            addrs = self.sampler.stack(sid)
            got = self._kernel[sid] = tuple(n + KERNEL_SUFFIX for n in reversed(self.names.kernel(addrs)))
        return got


def run(session: Session, every: float = 1.0, sleep: Callable[[float], Any] = time.sleep) -> Profile:
    """Drive a session to its end in this thread (the CLI's way; the daemon polls from its loop)."""
    try:
        while session.poll():
            sleep(max(0.05, min(every, session.due - session.clock())))
    finally:
        profile = session.finish()
    return profile
