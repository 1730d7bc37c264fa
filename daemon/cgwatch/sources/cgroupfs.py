"""What the kernel already counts per cgroup: memory, tasks, quota, io, PSI.

Unified hosts keep it all in one cgroup2 directory. Hybrid hosts keep
``cpu.stat`` usage, members and PSI there, and memory, pids, blkio and the
cpu quota in v1 trees, found from ``/proc/<pid>/cgroup`` of a member since
runtimes do not always mirror the cgroup2 path in v1. Without a member the
same relative path is tried; a member in a v1 tree's root is ignored (the
root's figures are the whole host's).

A figure the host does not keep is absent, never 0. Tasks: ``pids.current``
(v2, then v1), else ``cgroup.threads`` lines over the cgroup2 subtree (both
count threads). v1 io comes from the first blkio file listing a device:
newer kernels fill ``blkio.throttle.*`` only once the device has a throttle
rule, so a bare ``Total 0`` means unknown, not idle.

>>> Layout.detect("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw").unified
PosixPath('/sys/fs/cgroup')
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..model import Container, Event, Frame
from .cgroupfs_layout import (
    CPU_STAT,
    V1_CONTROLLERS,
    FileCache,
    Layout,
    fd_budget,
    parse_cpu_stat,
    pick,
    read_file,
    read_text,
    resolve_v1,
)

__all__ = ["CgroupfsSource", "Layout", "V1_CONTROLLERS", "read_cgroup", "resolve_v1"]

log = logging.getLogger(__name__)

#: v1 ``memory.limit_in_bytes`` at or above this means no limit (PAGE_COUNTER_MAX pages)
V1_UNLIMITED = 2**62
#: v1 block io files, best first (recursive, then the 3.10-era and bfq ones)
_BLKIO = ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes",
          "blkio.io_service_bytes_recursive", "blkio.bfq.io_service_bytes_recursive")
_warned: set[str] = set()
Parse = Callable[[str], dict[str, float]]


def _warn_once(kind: str, msg: str, level: int = logging.WARNING) -> None:
    """The first problem with each kind of file at ``level``, later ones at debug."""
    log.log(level if kind not in _warned else logging.DEBUG, "%s", msg)
    _warned.add(kind)


#: a file found absent (or unsupported) is not looked for again in that cgroup for this long:
#: on a hybrid host most v2 controller files never exist, and a failed open costs as much as a read
ABSENT_RETRY_S = 60.0
_ABSENT_MAX = 100_000
_absent: dict[str, float] = {}
#: the open files of the CgroupfsSource that runs (None: open and close per read)
_files: FileCache | None = None


def _known_absent(path: str, now: float) -> bool:
    """Whether ``path`` was found absent less than ABSENT_RETRY_S ago.

    >>> _absent["/x/memory.max"] = 100.0
    >>> _known_absent("/x/memory.max", 130.0), _known_absent("/x/memory.max", 200.0)
    (True, False)
    """
    seen = _absent.get(path)
    if seen is None:
        return False
    if now - seen < ABSENT_RETRY_S:
        return True
    del _absent[path]
    return False


class _Dir:
    """One cgroup directory being read; remembers whether a file was missing, and
    whether a read failed now (not a file known to be absent from before).

    A container's dirs are made once and reused every interval (:meth:`reset`): the
    paths are joined once, not per file per interval.
    """

    __slots__ = ("path", "prefix", "missing", "failed", "ok", "now", "trace")

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else str(path)
        self.prefix = "" if self.path is None else self.path.rstrip("/") + "/"
        self.missing = self.failed = self.ok = False
        self.now = 0.0
        #: where the files found are listed, in the order read (see :class:`_Plan`)
        self.trace: list[tuple[str, Parse, _Dir]] | None = None

    def reset(self, now: float, trace: list[tuple[str, Parse, _Dir]] | None = None) -> _Dir:
        self.missing = self.failed = self.ok = False
        self.now = now
        self.trace = trace
        return self

    def get(self, name: str, parse: Parse) -> dict[str, float] | None:
        """The figures in one file: None when it is not there, {} when malformed."""
        if self.path is None:
            return None
        path = self.prefix + name
        seen = _absent.get(path)
        if seen is not None:        # _known_absent, inlined: most files of a hybrid host
            if self.now - seen < ABSENT_RETRY_S:
                self.missing = True
                return None
            del _absent[path]
        try:
            text = read_file(path) if _files is None else _files.read(path)
        except OSError as e:
            self.failed = True
            if e.errno in (errno.ENOENT, errno.ENODEV):  # ENODEV: removed while open
                self.missing = True
            else:  # EOPNOTSUPP: PSI switched off at boot; anything else is odd
                level = logging.DEBUG if e.errno == errno.EOPNOTSUPP else logging.WARNING
                _warn_once(name, f"cgroupfs: {path}: {e.strerror}", level)
            if e.errno in (errno.ENOENT, errno.EOPNOTSUPP):
                if len(_absent) >= _ABSENT_MAX:
                    _absent.clear()
                _absent[path] = self.now
            return None
        self.ok = True
        if self.trace is not None:
            self.trace.append((path, parse, self))
        return _parsed(path, parse, text)

    def gone(self) -> bool:
        """Whether the directory went away: looked at when a file was missing, unless every
        read this interval succeeded (then files known absent from before say nothing of it)."""
        return self.missing and (self.failed or not self.ok) and not os.path.isdir(self.path or "")


_NO_DIR = _Dir(None)


def _key(name: str, key: str) -> Parse:
    """The value of one ``name value`` line of a long file (memory.stat: about 40 lines, one
    wanted), found without splitting the others; {} when the file has no such line.

    >>> _key("total_pgmajfault", "f")("cache 5\\npgmajfault 2\\ntotal_pgmajfault 7\\n")
    {'f': 7.0}
    >>> _key("pgmajfault", "f")("pgmajfault 3\\ntotal_pgmajfault 7"), _key("pgmajfault", "f")("cache 1\\n")
    ({'f': 3.0}, {})
    """
    first, later = name + " ", "\n" + name + " "

    def parse(text: str) -> dict[str, float]:
        if text.startswith(first):
            i = len(first)
        else:
            i = text.find(later)
            if i < 0:
                return {}
            i += len(later)
        j = text.find("\n", i)
        return {key: float(int(text[i:j] if j >= 0 else text[i:]))}     # not a number: malformed
    return parse


def _keys(*pairs: tuple[str, str]) -> Parse:
    """:func:`_key` for each ``(name, key)``: the figures of those lines that are there.

    >>> _keys(("pgmajfault", "f"), ("inactive_file", "i"))("cache 1\\ninactive_file 4096\\npgmajfault 2\\n")
    {'f': 2.0, 'i': 4096.0}
    """
    parts = [_key(name, key) for name, key in pairs]

    def parse(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in parts:
            out.update(part(text))
        return out
    return parse


def _num(key: str, scale: float = 1.0) -> Parse:
    """One number, or ``quota period`` (cpu.max); ``max``, -1 and v1's huge number: {}."""
    def parse(text: str) -> dict[str, float]:
        f = text.split()
        if f[0] == "max":
            return {}
        v = int(f[0]) / (int(f[1]) if len(f) > 1 else 1)
        return {} if v < 0 or v >= V1_UNLIMITED else {key: v * scale}
    return parse


def _io_stat(text: str) -> dict[str, float]:
    """v2 io.stat summed over devices; an empty file means no io yet."""
    r = w = 0
    for line in text.splitlines():
        kv = dict(item.split("=", 1) for item in line.split()[1:])
        r, w = r + int(kv.get("rbytes", 0)), w + int(kv.get("wbytes", 0))
    return {"io_read_bytes": float(r), "io_write_bytes": float(w)}


def _blkio(text: str) -> dict[str, float]:
    """v1 ``MAJ:MIN Op bytes`` lines summed; {} when no device is listed."""
    rw: dict[str, int] = {}
    for f in map(str.split, text.splitlines()):
        if len(f) == 3 and ":" in f[0]:
            rw[f[1]] = rw.get(f[1], 0) + int(f[2])  # Sync, Async, Discard, Total: unused
        elif f and not (len(f) == 2 and f[0] == "Total" and f[1].isdigit()):
            raise ValueError(f)
    return {"io_read_bytes": rw.get("Read", 0) * 1.0,
            "io_write_bytes": rw.get("Write", 0) * 1.0} if rw else {}


def _psi_some(key: str) -> Parse:
    """The ``total=`` µs of a *.pressure file's ``some`` line (its first), which ends with it.

    >>> _psi_some("k")("some avg10=0.00 avg60=0.00 avg300=0.00 total=42\\nfull avg10=0 total=7\\n")
    {'k': 42.0}
    >>> _psi_some("k")("full avg10=0.00 total=7\\nsome avg10=0.00 total=42\\n")
    Traceback (most recent call last):
    ...
    ValueError: not a some line first: 'full avg10=0.00 total=7'
    """
    def parse(text: str) -> dict[str, float]:
        end = text.find("\n")
        if end < 0:
            end = len(text)
        i = text.rfind(" total=", 0, end)
        if i < 0 or not text.startswith("some "):
            raise ValueError(f"not a some line first: {text[:end]!r}")
        return {key: float(int(text[i + 7:end]))}       # int: the number must end the line
    return parse


def _read_text_kept(path: str) -> str | None:
    """A file's text through the open-file cache when there is one; None if unreadable."""
    if _files is None:
        return read_text(path)
    try:
        return _files.read(path)
    except OSError:
        return None


# the parsers, made once (not per container per interval)
_V2_CPU_STAT = parse_cpu_stat
_V1_CPU_STAT = pick(nr_periods="nr_periods", nr_throttled="nr_throttled")
_V1_USAGE = _num("cpu_usage_usec", 1e-3)
_LIMIT = _num("cpu_limit_cores")
_QUOTA, _PERIOD = _num("q"), _num("p")
_MEM_USAGE, _MEM_LIMIT = _num("mem_usage_bytes"), _num("mem_limit_bytes")
_OOM = pick(oom_kill="oom_kills")
#: memory.stat: the major faults, and the page cache the kernel would reclaim first (v1: hierarchical total_*)
_V2_MEMSTAT = _keys(("pgmajfault", "major_faults"), ("inactive_file", "inactive_file"))
_V1_MEMSTAT = _keys(("total_pgmajfault", "major_faults"), ("total_inactive_file", "inactive_file"))
_TASKS = _num("tasks")
#: pids.max: read when a container's plan is made (limits change seldom), kept in between
_PIDS_LIMIT = _num("tasks_limit")
_DESCENDANTS = pick(nr_descendants="n")
_PSI = tuple((f"{res}.pressure", _psi_some(f"psi_{res}_some_usec")) for res in ("cpu", "memory", "io"))
_PSI_PARSERS = frozenset(parse for _, parse in _PSI)
#: how often (s) a container's PSI files are read, at most: the kernel's own PSI clock (its
#: averages move every 2 s); each reading gives the exact stall share since the one before
PSI_PERIOD_S = 2.0
#: how often (s) a PSI file whose counter did not move at its last reading is read: most
#: containers stall on nothing most of the time (a file that moves is read every PSI_PERIOD_S)
QUIET_PSI_PERIOD_S = 10.0
#: (metric, its file's parser) of each PSI file
_PSI_METRICS = tuple((f"psi.{name.split('.')[0]}_some", parse) for name, parse in _PSI)


def _nested(v2: _Dir) -> bool:
    """Whether the cgroup has children (``cgroup.stat``; unknown counts as yes)."""
    return (v2.get("cgroup.stat", _DESCENDANTS) or {}).get("n", 1) > 0


def _threads(v2: _Dir, nested: bool) -> dict[str, float]:
    """Lines of cgroup.threads over the subtree (walked only when it has children)."""
    top, total, found = v2.path or "", 0, False
    for d, _, _ in os.walk(top) if nested else [(top, [], [])]:
        text = _read_text_kept(os.path.join(d, "cgroup.threads"))
        if text is not None:
            found, total = True, total + len(text.split())
    return {"tasks": float(total)} if found else {}


def _v1_limit(out: dict[str, float]) -> None:
    """v1's quota and period (read as ``q`` and ``p``) as ``cpu_limit_cores``; quota -1 = none."""
    q, p = out.pop("q", 0.0), out.pop("p", 0.0)
    if q > 0 and p > 0:
        out["cpu_limit_cores"] = q / p


def _dirs(layout: Layout, rel: str, v1_dirs: dict[str, Path]) -> tuple[_Dir, dict[str, _Dir]]:
    """The v2 dir and the v1 dirs of one cgroup, for :func:`_read_raw`."""
    return (_Dir(None if layout.unified is None else layout.unified / rel),
            {c: _Dir(p) for c, p in v1_dirs.items()})


def _first(out: dict[str, float], *tries: tuple[_Dir, str, Parse]) -> None:
    """The figures of the first file that is there."""
    for d, name, parse in tries:
        got = d.get(name, parse)
        if got is not None:
            out.update(got)
            return


def _read_raw(layout: Layout, rel: str, v1_dirs: dict[str, Path],
              dirs: tuple[_Dir, dict[str, _Dir]] | None = None,
              now: float | None = None,
              trace: list[tuple[str, Parse, _Dir]] | None = None) -> tuple[dict[str, float] | None, bool]:
    """The readings (None: the cgroup vanished) and whether a v1 dir vanished.

    ``dirs`` (from :func:`_dirs`) are the container's dirs kept from one interval
    to the next; ``now`` is the monotonic time files found absent are judged at;
    ``trace`` gets the files that were there, in order (a :class:`_Plan`'s steps).
    """
    v2, v1 = _dirs(layout, rel, v1_dirs) if dirs is None else dirs
    t = time.monotonic() if now is None else now
    v2.reset(t, trace)
    for d in v1.values():
        d.reset(t, trace)
    get = v1.get
    cpu, cpuacct, mem, blk, pids = (get(c, _NO_DIR) for c in V1_CONTROLLERS)
    got = v2.get("cpu.stat", _V2_CPU_STAT)
    if got is None and v2.gone():
        return None, False
    out: dict[str, float] = dict(got) if got else {}
    if "cpu_usage_usec" not in out:
        _first(out, (cpuacct, "cpuacct.usage", _V1_USAGE))
    if "nr_periods" not in out:
        _first(out, (cpu, "cpu.stat", _V1_CPU_STAT))
    if (lim := v2.get("cpu.max", _LIMIT)) is not None:
        out.update(lim)
    else:  # v1: quota -1 = none (see _v1_limit)
        out.update(cpu.get("cpu.cfs_quota_us", _QUOTA) or {})
        out.update(cpu.get("cpu.cfs_period_us", _PERIOD) or {})
    _first(out, (v2, "memory.current", _MEM_USAGE), (mem, "memory.usage_in_bytes", _MEM_USAGE))
    _first(out, (v2, "memory.max", _MEM_LIMIT), (mem, "memory.limit_in_bytes", _MEM_LIMIT))
    _first(out, (v2, "memory.events", _OOM), (mem, "memory.oom_control", _OOM))
    _first(out, (v2, "memory.stat", _V2_MEMSTAT), (mem, "memory.stat", _V1_MEMSTAT))
    tasks = v2.get("pids.current", _TASKS)
    if tasks is None:
        tasks = pids.get("pids.current", _TASKS)
    lim = v2.get("pids.max", _PIDS_LIMIT)
    if lim is None:
        lim = pids.get("pids.max", _PIDS_LIMIT)
    if lim:
        out.update(lim)
    if tasks:
        out.update(tasks)
    elif v2.path:
        n = len(trace) if trace is not None else 0
        nested = _nested(v2)
        out.update(_threads(v2, nested))
        if trace is not None:      # one step: the walk, or the one file (children are looked for again with the plan)
            del trace[n:]
            trace.append((v2.prefix, _THREADS, v2) if nested else (v2.prefix + "cgroup.threads", _THREADS_TOP, v2))
    io = v2.get("io.stat", _io_stat)      # the first file with figures
    if not io:
        for name in _BLKIO:
            io = blk.get(name, _blkio)
            if io:
                break
    if io:
        out.update(io)
    for name, parse in _PSI:
        if (psi := v2.get(name, parse)) is not None:
            out.update(psi)
    if v2.gone() or v2.path is None and all(d.path is None or d.gone() for d in v1.values()):
        return None, False
    _v1_limit(out)
    return out, any(d.gone() for d in v1.values())


def _parsed(path: str, parse: Parse, text: str) -> dict[str, float]:
    """``parse(text)``; {} and a warning (once per file name) when the file is malformed."""
    try:
        return parse(text)
    except _MALFORMED:
        return _malformed(path, text)


#: what a parser raises on a malformed file
_MALFORMED = (ValueError, IndexError, ZeroDivisionError)


def _malformed(path: str, text: str) -> dict[str, float]:
    """No figures from a malformed file, and a warning (once per file name)."""
    _warn_once(path.rpartition("/")[2], f"cgroupfs: {path}: malformed: {text[:80]!r}")
    return {}


def _THREADS(text: str) -> dict[str, float]:
    """Marks the task count from cgroup.threads over a subtree (:func:`_threads`) in a plan;
    never called."""
    raise AssertionError("not a file parser")


def _THREADS_TOP(text: str) -> dict[str, float]:
    """As :func:`_THREADS`, of a cgroup that had no children when the plan was made."""
    raise AssertionError("not a file parser")


class _Plan:
    """One container's files: where they are, and which of them a full read found.

    The first read of a container tries every file in order of preference
    (:func:`_read_raw`: v2, then v1, then the fall-backs) and lists the files that
    were there. Later reads read only those, in the same order: no lookups of the
    alternatives that are absent (about 24 per container on a hybrid host, for some
    6 files read). A plan lasts :data:`ABSENT_RETRY_S`, as a file found absent
    did, and so does what it knows of children (the task count from cgroup.threads
    walks the subtree only if it had children then); any read that fails makes this
    read a full one, which tells a vanished cgroup from a vanished file as before.
    ``pids.max`` is read only by the full read that makes the plan; planned reads give
    the figure it found (a changed pids limit shows within :data:`ABSENT_RETRY_S`).

    A planned read may leave the PSI files out (``psi=0``), or those whose counter did
    not move at their last reading (``psi=1``, :attr:`quiet`; see :class:`CgroupfsSource`);
    a full read reads them all.
    """

    __slots__ = ("layout", "rel", "v1", "vouched", "dirs", "steps", "no_psi", "loud", "quiet", "until", "phase",
                 "kept")

    def __init__(self, layout: Layout, rel: str, v1: dict[str, Path], vouched: bool, phase: int = 0) -> None:
        self.layout, self.rel, self.v1, self.vouched = layout, rel, v1, vouched
        self.dirs = _dirs(layout, rel, v1)
        self.steps: list[tuple[str, Parse, _Dir]] | None = None
        #: the steps without the PSI files, and without the quiet ones
        self.no_psi: list[tuple[str, Parse, _Dir]] = []
        self.loud: list[tuple[str, Parse, _Dir]] = []
        #: the parsers of the PSI files whose counter did not move at their last reading
        self.quiet: frozenset[Parse] = frozenset()
        self.until = 0.0
        #: which ticks read this container's PSI (see :meth:`CgroupfsSource.collect`)
        self.phase = phase
        #: figures read only when the plan is made (pids.max), given with every planned read
        self.kept: dict[str, float] = {}

    def read(self, now: float, shared: tuple[float, Callable[[], float]] | None = None,
             psi: int = 2) -> tuple[dict[str, float] | None, bool]:
        """As :func:`_read_raw`, from the plan while it lasts: with the PSI files (``psi=2``),
        the PSI files not :attr:`quiet` (1), or none (0). With ``shared`` (the tick and the
        clock), the cgroup2 ``cpu.stat`` is the tick's :data:`CPU_STAT` reading, whose time
        is ``cpu_read_at``."""
        if self.steps is not None and now < self.until:
            out = self._planned(now, shared, self.steps if psi == 2 else self.loud if psi else self.no_psi)
            if out is not None:
                return out, False
        trace: list[tuple[str, Parse, _Dir]] = []
        raw, stale = _read_raw(self.layout, self.rel, self.v1, self.dirs, now, trace)
        if raw is None or stale:
            self.steps = None
        else:
            trace = [step for step in trace if step[1] is not _PIDS_LIMIT]
            self.kept = {"tasks_limit": raw["tasks_limit"]} if "tasks_limit" in raw else {}
            self.steps, self.until = trace, now + ABSENT_RETRY_S
            self.no_psi = [step for step in trace if step[1] not in _PSI_PARSERS]
            self.loud = [step for step in trace if step[1] not in self.quiet]
        return raw, stale

    def hush(self, values: dict[str, float]) -> None:
        """Note which PSI files this reading's ``values`` (rates) found still: a 0 makes a
        file quiet, any stall makes it loud; a file not read, or read for the first time,
        stays as it was."""
        quiet = self.quiet
        for metric, parse in _PSI_METRICS:
            v = values.get(metric)
            if v is not None and (v == 0.0) != (parse in quiet):
                quiet = quiet | {parse} if v == 0.0 else quiet - {parse}
        if quiet is not self.quiet:
            self.quiet = quiet
            self.loud = [step for step in self.steps or () if step[1] not in quiet]

    def _planned(self, now: float, shared: tuple[float, Callable[[], float]] | None,
                 steps: list[tuple[str, Parse, _Dir]]) -> dict[str, float] | None:
        """The readings from the planned files ``steps``; None when one could not be read.

        This runs for every container every interval: the common steps (a file read and
        parsed) come first and stay inline."""
        out: dict[str, float] = {}
        read = read_file if _files is None else _files.read
        for path, parse, d in steps:
            if parse is _V2_CPU_STAT and shared is not None:
                try:
                    text, figures, at = CPU_STAT.read(path, shared[0], read, shared[1])
                except OSError:
                    return None
                out.update(_malformed(path, text) if figures is None else figures)   # shared: not to be changed
                out["cpu_read_at"] = at
                continue
            elif parse is _THREADS_TOP:       # the step is the cgroup's own cgroup.threads
                try:
                    out["tasks"] = float(len(read(path).split()))
                except OSError:
                    return None
                continue
            elif parse is _THREADS:
                got = _threads(d.reset(now), True)
                if not got:
                    return None
            elif parse is _blkio and "io_read_bytes" in out:
                continue                      # the first blkio file with figures, as in a full read
            else:
                try:
                    text = read(path)
                except OSError:
                    return None
                try:
                    got = parse(text)
                except _MALFORMED:
                    got = _malformed(path, text)
            out.update(got)
        if "q" in out or "p" in out:
            _v1_limit(out)
        if self.kept:
            out.update(self.kept)
        return out


def read_cgroup(layout: Layout, cgroup_rel_path: str, v1_dirs: dict[str, Path] | None = None,
                *, proc_root: Path | str = "/proc") -> dict[str, float] | None:
    """The raw readings of one cgroup, or None if it has vanished.

    Counters (cumulative): ``cpu_usage_usec``, ``nr_periods``,
    ``nr_throttled``, ``io_read_bytes``, ``io_write_bytes``, ``oom_kills``,
    ``major_faults``, ``psi_{cpu,memory,io}_some_usec``. Gauges:
    ``mem_usage_bytes``, ``mem_limit_bytes``, ``inactive_file``, ``cpu_limit_cores``, ``tasks``, ``tasks_limit``. A figure this host
    does not keep, or a malformed file, leaves its key out. ``v1_dirs``
    (from :func:`resolve_v1`) is resolved here when not given.

    >>> import shutil, tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "docker/abc").mkdir(parents=True)
    >>> _ = (root / "docker/abc/memory.current").write_text("4096\\n")
    >>> _ = (root / "docker/abc/memory.max").write_text("max\\n")
    >>> read_cgroup(Layout(unified=root), "docker/abc")
    {'mem_usage_bytes': 4096.0}
    >>> read_cgroup(Layout(unified=root), "docker/gone") is None
    True
    >>> shutil.rmtree(root)
    """
    rel = cgroup_rel_path.strip("/")
    if v1_dirs is None:
        v1_dirs = resolve_v1(layout, rel, proc_root)[0]
    return _read_raw(layout, rel, v1_dirs)[0]


#: gauges: (metric, reading)
_GAUGES = (("cpu.limit_cores", "cpu_limit_cores"), ("mem.usage_bytes", "mem_usage_bytes"),
           ("mem.limit_bytes", "mem_limit_bytes"), ("proc.count", "tasks"), ("proc.limit", "tasks_limit"))
#: per-second rates of counters: (metric, reading, scale); PSI µs/s x 1e-4 = percent
_RATES = (("cpu.cgroup_usage_cores", "cpu_usage_usec", 1e-6), ("mem.oom_kills", "oom_kills", 1.0),
          ("mem.major_faults", "major_faults", 1.0),
          ("io.read_bytes", "io_read_bytes", 1.0), ("io.write_bytes", "io_write_bytes", 1.0),
          ("psi.cpu_some", "psi_cpu_some_usec", 1e-4),
          ("psi.memory_some", "psi_memory_some_usec", 1e-4),
          ("psi.io_some", "psi_io_some_usec", 1e-4))


class CgroupfsSource:
    """The cgroupfs figures of every container, as DESIGN.md metrics.

    ``layout`` defaults to this host's; ``proc_root`` and ``clock`` are for
    tests. Counters become per-second rates (a container's first interval
    gives gauges only); PSI is percent of wall time from the exact ``total=``
    µs. A container's rates are over the time between *its own* two reads,
    each timed with ``clock`` at the middle of that container's reads (about
    0.1 ms of files): a tick's reads of 500 containers span real time, and
    start some variable time after the tick's ``now``.

    PSI is read every ``psi_period`` seconds (default :data:`PSI_PERIOD_S`, the
    kernel's own PSI clock), not every interval when the interval is shorter:
    reading the three ``*.pressure`` files cost a quarter of the daemon's CPU
    at 100 containers and a 1 s interval (docs/performance.md). A file whose
    counter did not move at its last reading (no stall: most of them, most of
    the time) is read every ``quiet_psi_period`` seconds (default
    :data:`QUIET_PSI_PERIOD_S`) instead, until a reading finds a stall. Each
    reading gives the exact stall share since the container's previous one, so
    nothing is averaged away that the kernel counted; between two readings the
    metric is absent for that interval, and rules go on seeing its last value,
    as for any metric. Containers take turns, so each tick reads about the same
    number of files.

    >>> import shutil, tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "web").mkdir()
    >>> _ = (root / "web/memory.current").write_text("512\\n")
    >>> _ = (root / "web/memory.max").write_text("1024\\n")
    >>> web = Container(id="w", name="web", runtime="docker", cgroup="web")
    >>> [(s.metric, s.value) for s in CgroupfsSource(Layout(unified=root)).collect(10.0, [web])]
    [('mem.usage_bytes', 512.0), ('mem.limit_bytes', 1024.0), ('mem.usage_ratio', 0.5)]
    >>> shutil.rmtree(root)
    """

    name = "cgroupfs"
    metrics = (*(m for m, _ in _GAUGES), "cpu.throttled_ratio", "mem.usage_ratio", "mem.working_set_bytes",
               *(m for m, _, _ in _RATES))

    def __init__(self, layout: Layout | None = None, *, proc_root: Path | str = "/proc",
                 clock: Callable[[], float] = time.monotonic, psi_period: float = PSI_PERIOD_S,
                 quiet_psi_period: float = QUIET_PSI_PERIOD_S) -> None:
        self.layout = Layout.detect() if layout is None else layout
        self.proc_root = Path(proc_root)
        self.clock = clock
        self.psi_period, self.quiet_psi_period = psi_period, quiet_psi_period
        #: ticks so far, the previous tick's ``now``, and the plans made (each plan's turn for PSI)
        self._ticks, self._last_now, self._plans_made = 0, None, 0
        #: on the host's own cgroupfs, cpu.stat readings are shared with the cpu source
        self._shared = layout is None
        #: container id -> {metric or reading: (time of the container's read, counter)}
        self._prev: dict[str, dict[str, tuple[float, float]]] = {}
        #: container id -> where its files are, and which of them to read
        self._paths: dict[str, _Plan] = {}
        global _files
        if layout is None and _files is None:
            # on the host's own cgroupfs (not a layout given for a test), the files read every
            # interval stay open: no open and close per file per interval; a removed cgroup's
            # open file answers ENODEV, which reads as "gone", as a failed open does
            _files = FileCache(fd_budget())

    def collect(self, now: float, containers: Iterable[Container]) -> Frame:
        """Samples for the interval ending at ``now``; vanished cgroups give none.

        >>> src = CgroupfsSource(Layout(unified=Path("/nonexistent")))
        >>> list(src.collect(1.0, [Container(id="x", name="x", runtime="docker", cgroup="x")]))
        []
        """
        rows: list[tuple[Container, float, dict[str, float]]] = []
        alive: set[str] = set()
        clock, paths, layout = self.clock, self._paths, self.layout
        mono = time.monotonic()
        (every, quiet_every), tick = self._psi_every(now), self._ticks
        shared = (now, clock) if self._shared else None
        for c in containers:
            cid = c.id
            if c.runtime == "host" or cid in alive:  # the root's figures include every container
                continue
            alive.add(cid)
            rel = c.cgroup.strip("/")
            p = paths.get(cid)
            if p is None or p.rel != rel or not p.vouched:
                v1, vouched = resolve_v1(layout, rel, self.proc_root)
                self._plans_made += 1
                p = paths[cid] = _Plan(layout, rel, v1, vouched, self._plans_made)
            turn = tick + p.phase
            t0 = clock()
            raw, stale = p.read(mono, shared, 2 if turn % quiet_every == 0 else 1 if turn % every == 0 else 0)
            if raw is None or stale:  # resolve again next time
                del paths[cid]
            if raw:
                values = self._values(c, raw, (t0 + clock()) / 2)
                p.hush(values)
                rows.append((c, now, values))
        for cid in self._prev.keys() - alive:     # containers gone: forget them
            del self._prev[cid]
        for cid in paths.keys() - alive:
            del paths[cid]
        return Frame(rows)     # one row per container (each read once); empty ones are left out

    def _psi_every(self, now: float) -> tuple[int, int]:
        """Every how many ticks a container's PSI files are read, and those of them that are
        quiet, from the time since the last tick (1 and the quiet period's share of it when the
        interval is ``psi_period`` or longer, or unknown); counts this tick. The second is a
        multiple of the first, so a container's quiet files are read on one of its turns.

        >>> src = CgroupfsSource(Layout(unified=Path("/nonexistent")))
        >>> [src._psi_every(t) for t in (10.0, 11.0, 12.0, 12.5, 22.5, 52.5)]
        [(1, 1), (2, 10), (2, 10), (4, 20), (1, 1), (1, 1)]
        """
        last, self._last_now = self._last_now, now
        self._ticks += 1
        if last is None or not now > last:
            return 1, 1
        dt = now - last
        every = max(1, round(self.psi_period / dt))
        return every, every * max(1, round(self.quiet_psi_period / (every * dt)))

    def _values(self, c: Container, raw: dict[str, float], read_at: float) -> dict[str, float]:
        """Gauges, and rates over the time since this container's previous read (``read_at``).
        A counter's first reading, or one that went backwards, gives no rate."""
        out = {m: raw[k] for m, k in _GAUGES if k in raw}
        prev = self._prev.get(c.id)
        if prev is None:
            prev = self._prev[c.id] = {}
        if "nr_periods" in raw and "nr_throttled" in raw:
            periods, throttled = raw["nr_periods"], raw["nr_throttled"]
            p0, t0 = prev.get("nr_periods"), prev.get("nr_throttled")
            prev["nr_periods"], prev["nr_throttled"] = (0.0, periods), (0.0, throttled)
            dp = None if p0 is None or periods < p0[1] else float(periods - p0[1])
            dt = None if t0 is None or throttled < t0[1] else float(throttled - t0[1])
            if dp and dt is not None and "cpu_limit_cores" in raw:
                out["cpu.throttled_ratio"] = min(1.0, dt / dp)
        if raw.get("mem_limit_bytes", 0) > 0 and "mem_usage_bytes" in raw:
            out["mem.usage_ratio"] = raw["mem_usage_bytes"] / raw["mem_limit_bytes"]
        if "inactive_file" in raw and "mem_usage_bytes" in raw:
            out["mem.working_set_bytes"] = max(0.0, raw["mem_usage_bytes"] - raw["inactive_file"])
        cpu_at = raw.get("cpu_read_at", read_at)     # a shared reading's own time (CPU_STAT)
        for m, k, scale in _RATES:
            v = raw.get(k)
            if v is None:
                continue
            at = cpu_at if k == "cpu_usage_usec" else read_at
            before = prev.get(m)
            prev[m] = (at, v)
            if before is None:
                continue
            dt, dv = at - before[0], v - before[1]
            if dt > 0 and dv >= 0:
                out[m] = dv / dt * scale
        return out

    def events(self) -> list[Event]:
        """cgroupfs has no discrete events (OOM kills come as a rate).

        >>> CgroupfsSource(Layout()).events()
        []
        """
        return []

    def close(self) -> None:
        """Close the files kept open.

        >>> CgroupfsSource(Layout()).close()
        """
        global _files
        if _files is not None:
            _files.close()
            _files = None
