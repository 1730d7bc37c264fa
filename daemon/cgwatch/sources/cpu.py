"""CPU per container: usage from the cgroup's own counter; context switches and
run-queue latency from ``bpf/cpu.bpf.c``.

``cpu.usage_cores`` is CPU time over wall time, so 1.0 is one core kept busy.
For a container it is the growth of its cgroup2 ``cpu.stat`` ``usage_usec``
(every cgroup2 directory has it, whichever controllers are enabled, and it
includes the cgroup's descendants) between two reads, over the time between
those same two reads. That counter is the kernel's CPU accounting, the very
one a CPU quota is enforced against, so ``cpu.usage_cores`` and
``cpu.limit_cores`` compare like with like. BPF's on-CPU time serves only
``host`` (every task outside a container: no cgroup file holds that), a
container's first interval, and a container whose file cannot be read.

Why not BPF for containers too: sched_switch time reaches user space only
when a slice ends or a flush makes one end, each CPU at its own moment, and
it counts what the kernel does not charge to the task (the switch itself,
and the slice's tail after a throttled cgroup's quota ran out), about 1 % of
a throttled core. The file costs one read per container per interval, which
the cgroupfs source pays as well.

Every rate here is over the time between *its own* two reads, not between
two ticks' ``now`` (see :mod:`.kernel`): the map's through
:meth:`KernelSource.deltas`, each container's ``cpu.stat`` over the times of those reads. A 0.5-core container
read 0.3 s late after an on-time read used to show 0.65 and then 0.35 cores.

Run-queue latency comes from a log2 histogram per cgroup; its p99 is
interpolated inside the bucket that holds the 99th percentile. Waits a CPU
quota imposes are left out where this kernel shows the refills (see
cpu.bpf.c and :func:`refill_flags`).
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Container, Event, Frame
from .blame import METRIC as BLAME_METRIC
from .blame import QUOTA, Blame
from .bpf import PerCpuTable, Probe, kernel_version, raw_tracepoints, tracepoint_exists
from .bpfsys import possible_cpus
from .cgroupfs_layout import CPU_STAT, FileCache, Layout, parse_cpu_stat
from .kernel import KernelSource, row_samples, with_idle

log = logging.getLogger("cgwatch.sources")

RUNQ_SLOTS = 26  # CGW_RUNQ_SLOTS in cgwatch.h
#: kernel functions whose calls mark a CFS bandwidth refill (cpu.bpf.c)
REFILL_SYMBOLS = {"sched_cfs_period_timer": "CGW_PERIOD_FN", "sched_cfs_slack_timer": "CGW_SLACK_FN",
                  "__cfsb_csd_unthrottle": "CGW_CSD_FN"}
#: cgroup cpu.stat files kept open (beyond it, the least recently read is reopened)
USAGE_FILES = 1024


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
        BLAME_METRIC,
    )
    RUNQ_METRICS = ("cpu.runq_latency_avg_ms", "cpu.runq_latency_p99_ms")
    #: who each container waited behind (sources/blame.py), with CGW_BLAME
    _blame: Blame | None = None
    _pairs: PerCpuTable | None = None
    #: the cgroup2 mount, whose cpu.stat files give containers' usage (None: BPF only)
    cgroup2: Path | None = None
    _files: FileCache | None = None
    #: container id -> (time of its previous read, usage_usec)
    _usage: dict[str, tuple[float, float]] | None = None
    #: cgroup (as the Container says it) -> its cpu.stat
    _paths: dict[str, str] | None = None
    #: on the host's own cgroupfs, cpu.stat readings are shared with the cgroupfs source
    _shared = False
    #: the possible CPUs, in the order of per-CPU map values
    _possible: list[int] | None = None

    def __init__(self, resolver, cflags: Iterable[str] = (), runq: bool = True,  # type: ignore[no-untyped-def]
                 cgroup2: Path | None = None, blame: bool = True) -> None:
        self.runq = runq
        self.blame = blame
        self._shared = cgroup2 is None
        self.cgroup2 = Layout.detect().unified if cgroup2 is None else cgroup2
        self._files = FileCache(USAGE_FILES)
        self._usage, self._paths = {}, {}
        self.probes = (Probe("sched", "sched_switch", "CGW_HAVE_SWITCH", self.metrics),)
        if runq:
            waits = (*self.RUNQ_METRICS, BLAME_METRIC) if blame else self.RUNQ_METRICS
            self.probes += (
                Probe("sched", "sched_wakeup", "CGW_HAVE_WAKEUP", waits),
                Probe("sched", "sched_wakeup_new", "CGW_HAVE_WAKEUP_NEW", waits),
            )
        self.tables = ("cpu_stats",)
        super().__init__(resolver, cflags)
        if not self.runq_enabled:
            if runq and not self.absent & set(self.RUNQ_METRICS):    # the tracepoints are there: no raw ones
                log.warning("cpu: this kernel has no raw tracepoints; run-queue latency and who waited "
                            "behind whom (%s) will be absent", ", ".join((*self.RUNQ_METRICS, BLAME_METRIC)))
            self.absent |= set(self.RUNQ_METRICS)
        if "-DCGW_BLAME" in self.cflags and "pair_wait" in self.bpf:
            self._blame, self._pairs = Blame(resolver.container), PerCpuTable(self.bpf["pair_wait"])
        else:
            self.absent.add(BLAME_METRIC)

    def _stale_cpus(self) -> list[int] | None:
        """The CPUs to flush before this read (None: all of them, when the program's
        per-CPU state cannot be read)."""
        if self.bpf is None or "cpu_state" not in self.bpf:
            return None
        m = self.bpf["cpu_state"]
        try:
            state = m.lookup(0)
        except OSError:
            return None
        if state is None:
            return None
        if self._possible is None:
            self._possible = possible_cpus()
        return stale_cpus(state, m.stride, self._possible, time.monotonic_ns(), _sched_getcpu())

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
            if self.blame:
                flags.append("-DCGW_BLAME")
            flags += refill_flags()
        return flags

    def collect(self, now: float, containers: Iterable[Container]) -> Frame:
        containers = list(containers)
        flush_cpus(self._stale_cpus())
        cs, d, dt = self.delta_rows("cpu_stats", now)
        if dt <= 0:
            return Frame()
        cs, d = with_idle(cs, d, containers)
        usage = self.cgroup_usage(containers, now)
        f = d[:, :3].astype(np.float64)
        cols: dict[str, list[float | None]] = {
            "cpu.usage_cores": (f[:, 0] / 1e9 / dt).tolist(),
            "cpu.ctx_switches": (f[:, 1] / dt).tolist(),
            "cpu.involuntary_ctx_switches": (f[:, 2] / dt).tolist(),
        }
        if usage:     # the cgroup's own counter where it could be read (see the module)
            cores = cols["cpu.usage_cores"]
            for i, c in enumerate(cs):
                u = usage.get(c.id)
                if u is not None:
                    cores[i] = u
        if self.runq_enabled:
            cols["cpu.runq_latency_avg_ms"] = _runq_avg_ms(d)
            cols["cpu.runq_latency_p99_ms"] = _runq_p99_ms(d)
        names = [m for m in cols if m not in self.absent]
        frame = row_samples(now, cs, names, list(zip(*(cols[m] for m in names))))
        if self._blame is not None and self._blame.due(now):
            for c, ts, values in self.read_blame(now):
                frame.add(c, ts, values)
        return frame

    def read_blame(self, now: float) -> list[tuple[Container, float, dict[str, float]]]:
        """One read of ``pair_wait``: the rows of the neighbours' share (its events wait for
        :meth:`events`); pairs of cgroups that are gone are deleted from the map."""
        assert self._blame is not None and self._pairs is not None
        keys, vals = self._pairs.read_rows()
        pairs, counts = keys.tolist(), vals.tolist()
        rows, events = self._blame.read(now, pairs, counts)
        self._pending += events
        alive = self.resolver.alive
        dead = [k for k in pairs if not alive(k[0]) or (k[1] not in (0, QUOTA) and not alive(k[1]))]
        for k in dead:
            try:
                del self._pairs.table[self._pairs.table.Key(*k)]
            except KeyError:
                pass
        return rows

    def events(self) -> list[Event]:
        """The neighbours events of the last read of ``pair_wait`` (the program has no ring)."""
        out, self._pending = self._pending, []
        return out

    def cgroup_usage(self, containers: Iterable[Container], now: float) -> dict[str, float]:
        """Cores each container used since its previous read, from its cgroup2 ``cpu.stat``
        (on the host, the tick's reading it shares with the cgroupfs source: :data:`CPU_STAT`).

        A container read for the first time, or whose file is gone, unreadable or
        went backwards (the cgroup was made anew), is left out: BPF's figure stands.
        """
        out: dict[str, float] = {}
        prev, files, clock = self._usage, self._files, self.clock
        paths = self._paths
        if self.cgroup2 is None or files is None or prev is None or paths is None:
            return out
        read = CPU_STAT.read if self._shared else None
        top = str(self.cgroup2)
        seen: dict[str, tuple[float, float]] = {}
        for c in containers:
            if c.runtime == "host":
                continue
            path = paths.get(c.cgroup)
            if path is None:
                rel = c.cgroup.strip("/")
                if not rel:
                    continue
                path = paths[c.cgroup] = f"{top}/{rel}/cpu.stat"
            cid = c.id
            before = prev.get(cid)
            try:
                if read is not None:
                    _, figures, t = read(path, now, files.read, clock)
                else:
                    t0 = clock()
                    text = files.read(path)
                    t = (t0 + clock()) / 2
                    figures = parse_cpu_stat(text)
                usec = figures["cpu_usage_usec"]    # type: ignore[index]
            except (OSError, ValueError, IndexError, KeyError, TypeError):   # TypeError: malformed (None)
                if before is not None:      # the next good read's rate spans the gap
                    seen[cid] = before
                continue
            seen[cid] = (t, usec)
            if before is not None and t > before[0] and usec >= before[1]:
                out[cid] = (usec - before[1]) / (t - before[0]) / 1e6
        self._usage = seen
        if len(paths) > 2 * len(seen) + 64:     # many containers gone: their paths are made again
            self._paths = {}
        return out

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
        super().close()


def refill_flags(kallsyms: str = "/proc/kallsyms") -> list[str]:
    """-D flags that let cpu.bpf.c end throttled waits at quota refills, or [].

    Needs ``timer:hrtimer_expire_entry`` and the addresses of the bandwidth
    timers' callbacks; ``__cfsb_csd_unthrottle`` (>= 6.2) is optional. Without
    them, a throttled task's wait for its quota counts as run-queue latency.
    """
    if not tracepoint_exists("timer", "hrtimer_expire_entry"):
        log.info("cpu: no timer:hrtimer_expire_entry; throttled waits count as run-queue latency")
        return []
    found: dict[str, int] = {}
    try:
        with open(kallsyms) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in REFILL_SYMBOLS and parts[2] not in found:
                    found[parts[2]] = int(parts[0], 16)
    except (OSError, ValueError) as e:
        log.info("cpu: cannot read %s (%s); throttled waits count as run-queue latency", kallsyms, e)
        return []
    if not found.get("sched_cfs_period_timer") or not found.get("sched_cfs_slack_timer"):
        log.info("cpu: CFS bandwidth timers not in %s (no CONFIG_CFS_BANDWIDTH, or addresses hidden); "
                 "throttled waits count as run-queue latency", kallsyms)
        return []
    flags = ["-DCGW_REFILL"]
    if not tracepoint_exists("csd", "csd_function_entry"):   # then every refill stamps every CPU
        found.pop("__cfsb_csd_unthrottle", None)
    flags += [f"-D{REFILL_SYMBOLS[name]}={addr:#x}ULL" for name, addr in sorted(found.items())]
    flags.append(f"-DCGW_NCPUS={_ncpus()}")
    return flags


def _ncpus() -> int:
    """One more than the highest CPU id this machine may ever have (1024 if unknown)."""
    return max(possible_cpus(), default=1023) + 1


def flush_cpus(cpus: Sequence[int] | None = None) -> None:
    """Make every CPU we may run on (of ``cpus``, when given) switch once, so running
    slices are charged.

    On-CPU time is charged when a task is switched out, and a busy task alone
    on a CPU may not be switched out for seconds: its time would arrive in
    lumps. Moving this thread across the CPUs makes each of them switch from
    whatever runs there to us, which charges the running slice up to now.
    It costs two context switches per CPU visited.
    """
    if cpus is not None and not cpus:
        return                          # nothing to visit: not even the affinity syscall
    allowed = os.sched_getaffinity(0)
    visit = sorted(allowed if cpus is None else allowed & set(cpus))
    if not visit:
        return
    back = next((c for c in sorted(allowed) if c != visit[-1]), visit[-1])
    try:
        for cpu in [*visit, back]:      # and away: leaving the last CPU flushes it too
            os.sched_setaffinity(0, {cpu})
    except OSError:     # a CPU went offline meanwhile: the next interval catches up
        pass
    finally:
        os.sched_setaffinity(0, allowed)


#: a CPU whose work not yet in the map is less than this at a read needs no flush
#: (:func:`stale_cpus`): at most this much lands in the next interval instead of this
#: one (0.2 % of a core at a 1 s interval). CGW_FRESH_NS in cpu.bpf.c
FRESH_NS = 2_000_000
#: struct cpu_state (cpu.bpf.c): last_ns, flushed_ns, idle, then cgid, wait_ns, wait_task,
#: idle_task, and the pending counts, on-CPU time first
_STATE, _PENDING, _PENDING_AT = struct.Struct("=QxxxxxxxxQ"), struct.Struct("=Q"), 7 * 8


def _sched_getcpu() -> int:
    """The CPU this thread runs on now (-1 when libc cannot say)."""
    global _getcpu
    if _getcpu is None:
        import ctypes as ct

        try:
            _getcpu = ct.CDLL(None).sched_getcpu
        except (OSError, AttributeError):
            _getcpu = lambda: -1  # noqa: E731
    return int(_getcpu())


_getcpu: Any = None


def stale_cpus(state: bytes, stride: int, cpus: Sequence[int], now_ns: int, here: int = -1) -> list[int]:
    """The CPUs a read must flush (:func:`flush_cpus`): those with :data:`FRESH_NS` or
    more of work not yet in the map, its pending on-CPU time plus the slice running
    since its last switch. No slice counts on a CPU that went idle at its last switch,
    nor on ``here``, the CPU the caller runs on (the caller is what runs there; its
    slice is charged when it next sleeps). ``state`` is cpu.bpf.c's per-CPU
    ``cpu_state``, one ``stride`` per CPU of ``cpus`` (the possible CPUs, in order);
    ``now_ns`` is CLOCK_MONOTONIC, bpf_ktime_get_ns()'s clock.

    A busy host switches its CPUs many times a millisecond, and the switch to idle hands
    on what is pending: a read there visits few CPUs or none. A CPU one task keeps to
    itself is visited every interval, as is one whose idle task is not known yet.

    >>> def cpu(last, idle=0, pending=0): return _STATE.pack(last, idle) + bytes(32) + _PENDING.pack(pending)
    >>> four = cpu(9_000_000) + cpu(1_000_000) + cpu(1_000_000, idle=1) + cpu(9_500_000, pending=3_000_000)
    >>> stale_cpus(four, 64, [0, 1, 2, 3], 10_000_000)     # CPU 1 has run one task for 9 ms
    [1, 3]
    >>> stale_cpus(four, 64, [0, 1, 2, 3], 12_000_000, here=1)   # CPU 0's slice is 3 ms; we are on 1
    [0, 3]
    """
    out = []
    for i, cpu in enumerate(cpus):
        last, idle = _STATE.unpack_from(state, i * stride)
        (pending,) = _PENDING.unpack_from(state, i * stride + _PENDING_AT)
        if not idle and cpu != here:
            pending += now_ns - last
        if pending >= FRESH_NS:
            out.append(cpu)
    return out


# struct cgw_cpu with -DCGW_RUNQ: oncpu_ns, switches, involuntary, runq_count, runq_sum_ns, slots...
def _runq_avg_ms(d: np.ndarray) -> list[float | None]:
    """Each row's mean wait, in ms (None without wake-ups)."""
    count = d[:, 3]
    avg = d[:, 4].astype(np.float64) / np.where(count == 0, 1, count).astype(np.float64) / 1e6
    return [a if n else None for a, n in zip(avg.tolist(), count.tolist())]


def _runq_p99_ms(d: np.ndarray) -> list[float | None]:
    """Each row's p99 wait from its histogram slots, in ms (None when they are empty):
    :func:`hist_quantile` over every row at once, with the same arithmetic."""
    return [None if us is None else us / 1000.0 for us in hist_quantiles(d[:, 5:], 0.99)]


def hist_quantiles(slots: np.ndarray, q: float) -> list[float | None]:
    """:func:`hist_quantile` of each row of ``slots`` (counts), in one pass of numpy.

    >>> hist_quantiles(np.array([[0, 0, 0, 100], [50, 0, 0, 50], [0, 0, 0, 0]], dtype=np.uint64), 0.99)
    [15.92, 15.84, None]
    """
    out: list[float | None] = [None] * len(slots)
    total = slots.sum(axis=1)
    rows = np.flatnonzero(total)
    if not len(rows):
        return out
    s = slots[rows]
    want = q * total[rows].astype(np.float64)
    cum = np.cumsum(s, axis=1).astype(np.float64)          # exact: counts stay far below 2**53
    reached = cum >= want[:, None]
    at = np.arange(len(rows))
    i = reached.argmax(axis=1)                              # the first slot that reaches it (never an empty one)
    n = s[at, i].astype(np.float64)
    seen = cum[at, i] - n
    lo = np.where(i == 0, 0.0, np.exp2(i.astype(np.float64)))
    hi = np.exp2((i + 1).astype(np.float64))
    us = np.where(reached[at, i], lo + (hi - lo) * (want - seen) / np.where(n > 0, n, 1.0),
                  float(2 ** slots.shape[1]))
    for r, v in zip(rows.tolist(), us.tolist()):
        out[r] = v
    return out
