"""Where a container's cgroup files are: the mounts, and on hybrid hosts the
v1 directories of a cgroup2 container, found through a member process.

>>> Layout.detect("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw").unified
PosixPath('/sys/fs/cgroup')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: the v1 controllers read here
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio", "pids")
_V1_OTHERS = ("cpuset", "devices", "freezer", "net_cls", "net_prio", "perf_event", "hugetlb",
              "rdma", "misc")
_MAX_SCAN = 64  # descendant directories searched for a member process
_BUF = 65536


def read_file(path: str) -> str:
    """One small file: one open, (nearly always) one read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, _BUF)]
        while len(chunks[-1]) == _BUF:
            chunks.append(os.read(fd, _BUF))
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


class FileCache:
    """cgroup files kept open and re-read with ``pread(fd, n, 0)``, which makes the
    kernel generate them afresh: no open and close per file per interval.

    At most ``cap`` files stay open (least recently read closed first); a read that
    fails on a kept file (the cgroup went away, or was made again at the same
    path) closes it and opens the path anew, once.

    >>> import tempfile
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".stat", delete=False); _ = f.write("usage_usec 5"); f.close()
    >>> c = FileCache(cap=4)
    >>> c.read(f.name), c.read(f.name), len(c)
    ('usage_usec 5', 'usage_usec 5', 1)
    >>> c.close()
    """

    def __init__(self, cap: int) -> None:
        from collections import OrderedDict

        self.cap = max(0, int(cap))
        self._fds: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._fds)

    def read(self, path: str) -> str:
        fd = self._fds.get(path)
        if fd is not None:
            try:
                data = os.pread(fd, _BUF, 0)     # _pread_all, inlined: this runs for every file every interval
                self._fds.move_to_end(path)
                if len(data) < _BUF:
                    return data.decode("ascii", "replace")
                return _pread_all(fd)
            except OSError:
                self._drop(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = _pread_all(fd)
        except BaseException:
            os.close(fd)
            raise
        if self.cap:
            self._fds[path] = fd
            while len(self._fds) > self.cap:
                self._drop(next(iter(self._fds)))
        else:
            os.close(fd)
        return data

    def _drop(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for path in list(self._fds):
            self._drop(path)


class SharedReads:
    """A file two sources read every interval, read and parsed once per tick and handed to
    both with the time of that read.

    A cgroup's ``cpu.stat`` gives the cpu source its usage and the cgroupfs source its
    usage and throttling. Every rate is over the times of its own two readings, so
    two sources can share one reading exactly; whichever asks first in a tick reads.
    A reading is ``(text, figures, time)``: ``figures`` is ``parse(text)``, or None when
    the text is malformed (each source says so its own way); neither may change it.

    >>> import itertools, tempfile
    >>> f = tempfile.NamedTemporaryFile("w", delete=False); _ = f.write("usage_usec 5"); f.close()
    >>> clock, shared = itertools.count().__next__, SharedReads(parse_cpu_stat)
    >>> shared.read(f.name, 1.0, read_file, clock), shared.read(f.name, 1.0, read_file, clock)
    (('usage_usec 5', {'cpu_usage_usec': 5.0}, 0.5), ('usage_usec 5', {'cpu_usage_usec': 5.0}, 0.5))
    >>> shared.read(f.name, 2.0, read_file, clock)      # the next tick reads again
    ('usage_usec 5', {'cpu_usage_usec': 5.0}, 2.5)
    """

    __slots__ = ("_tick", "_got", "_parse")

    def __init__(self, parse: Callable[[str], dict[str, float]]) -> None:
        self._tick: float | None = None
        self._got: dict[str, tuple[str, dict[str, float] | None, float]] = {}
        self._parse = parse

    def read(self, path: str, tick: float, read: Callable[[str], str],
             clock: Callable[[], float]) -> tuple[str, dict[str, float] | None, float]:
        """The text of ``path`` this tick, its figures (None: malformed) and when it was read
        (the middle of the read)."""
        if tick != self._tick:
            self._tick, self._got = tick, {}
        hit = self._got.get(path)
        if hit is None:
            t0 = clock()
            text = read(path)
            at = (t0 + clock()) / 2
            try:
                figures: dict[str, float] | None = self._parse(text)
            except (ValueError, IndexError):
                figures = None
            hit = self._got[path] = (text, figures, at)
        return hit


def pick(**names: str) -> Callable[[str], dict[str, float]]:
    """A parser of some ``key value`` lines (cpu.stat, memory.events, ...), renamed.

    >>> pick(usage_usec="u")("usage_usec 7\\nuser_usec 5\\n")
    {'u': 7.0}
    >>> pick(usage_usec="u")("usage_usec 7 8\\n")
    Traceback (most recent call last):
    ...
    ValueError: too many values to unpack (expected 2)
    """
    def parse(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in text.splitlines():
            f = line.split()
            if f:
                k, v = f          # not two words: malformed (ValueError), whichever the key
                key = names.get(k)
                if key is not None:
                    out[key] = float(int(v))
        return out
    return parse


#: a cgroup2 ``cpu.stat``: usage and throttling
parse_cpu_stat = pick(usage_usec="cpu_usage_usec", nr_periods="nr_periods", nr_throttled="nr_throttled")


#: the cgroup2 ``cpu.stat`` readings the host's cpu and cgroupfs sources share
CPU_STAT = SharedReads(parse_cpu_stat)


def _pread_all(fd: int) -> str:
    data = os.pread(fd, _BUF, 0)
    if len(data) < _BUF:         # nearly always: one read holds the whole file
        return data.decode("ascii", "replace")
    chunks = [data]
    while len(chunks[-1]) == _BUF:
        chunks.append(os.pread(fd, _BUF, _BUF * len(chunks)))
    return b"".join(chunks).decode("ascii", "replace")


def fd_budget(reserve: int = 512, most: int = 8192) -> int:
    """How many cgroup files may stay open: the soft RLIMIT_NOFILE, raised to the hard
    limit where it is lower, less ``reserve`` for sockets, BPF maps and the rest.

    >>> fd_budget() >= 0
    True
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    limit = soft if soft != resource.RLIM_INFINITY else 65536
    return max(0, min(most, limit - reserve))


def read_text(path: str | Path) -> str | None:
    try:
        return read_file(str(path))
    except OSError:
        return None


@dataclass(slots=True)
class Layout:
    """Where the cgroup trees are mounted.

    ``v1`` maps each controller to its mount; comounted controllers
    (``cpu,cpuacct``) share one path. Only mounts of a whole tree count:
    cgwatch runs in the host's cgroup namespace, where /proc/<pid>/cgroup
    paths are relative to those mounts.
    """

    unified: Path | None = None
    v1: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def detect(cls, mountinfo_text: str | None = None) -> Layout:
        """Parse /proc/self/mountinfo (or the text given); a tree's first mount wins.

        >>> lay = Layout.detect(
        ...     "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\\n"
        ...     "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\\n")
        >>> lay.unified, lay.v1["cpuacct"]
        (PosixPath('/sys/fs/cgroup/unified'), PosixPath('/sys/fs/cgroup/cpu,cpuacct'))
        """
        if mountinfo_text is None:
            mountinfo_text = read_file("/proc/self/mountinfo")
        out = cls()
        for line in mountinfo_text.splitlines():
            left, sep, right = line.partition(" - ")
            a, b = left.split(), right.split()
            if not sep or len(a) < 5 or len(b) < 3 or a[3] != "/":
                continue
            mnt = a[4]
            for code in ("\\040", "\\011", "\\012", "\\134"):  # octal escapes
                mnt = mnt.replace(code, chr(int(code[1:], 8)))
            if b[0] == "cgroup2" and out.unified is None:
                out.unified = Path(mnt)
            elif b[0] == "cgroup":
                for o in b[2].split(","):
                    if o in V1_CONTROLLERS or o in _V1_OTHERS or o.startswith("name="):
                        out.v1.setdefault(o, Path(mnt))
        return out


def _rel(proc_path: str) -> str | None:
    """A /proc/<pid>/cgroup path relative to its mount; None outside our namespace."""
    rel = proc_path.strip("/")
    return None if ".." in rel.split("/") else rel


def _proc_cgroups(proc_root: Path, pid: int) -> dict[str, str]:
    """/proc/<pid>/cgroup as {controller: path}; cgroup2 under key ``""``."""
    out: dict[str, str] = {}
    for line in (read_text(proc_root / str(pid) / "cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.update((c, parts[2]) for c in parts[1].split(","))
    return out


def _pids(d: Path) -> list[int]:
    return [int(x) for x in (read_text(d / "cgroup.procs") or "").split()[:3] if x.isdigit()]


def _members(layout: Layout, rel: str) -> Iterator[tuple[int, str]]:
    """(pid, relative dir it is in): the top dir first, then descendants."""
    if layout.unified is None:  # v1-only host: look where the runtime put it
        for c in [c for c in ("name=systemd", "memory", "pids", "cpu") if c in layout.v1]:
            yield from ((p, rel) for p in _pids(layout.v1[c] / rel))
        return
    queue, seen = [rel], 0
    while queue and seen < _MAX_SCAN:
        r = queue.pop(0)
        seen += 1
        yield from ((p, r) for p in _pids(layout.unified / r))
        try:
            with os.scandir(layout.unified / r) as it:
                queue += [f"{r}/{e.name}".lstrip("/")
                          for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            pass


def _exclusive(v1_dir: Path, rel: str, proc_root: Path, sample: int = 64) -> bool:
    """Whether a v1 cgroup that does not mirror the container's path holds only
    the container's processes. A shared one (the container was started inside
    some bigger v1 group) would report other processes' memory as its own.
    """
    pids = (read_text(v1_dir / "cgroup.procs") or "").split()[:sample]
    for p in pids:
        if not p.isdigit():
            continue
        mine = _rel(_proc_cgroups(proc_root, int(p)).get("", "/.."))
        if mine is not None and mine != rel and not mine.startswith(rel + "/"):
            return False
    return True


def resolve_v1(layout: Layout, cgroup_rel_path: str,
               proc_root: Path | str = "/proc") -> tuple[dict[str, Path], bool]:
    """The v1 directory of each controller read here, for one cgroup.

    The bool says whether a member process vouched for them; ``False``
    means nobody was home and the same relative path was guessed. A
    controller with no usable directory is left out.

    >>> resolve_v1(Layout(unified=Path("/nonexistent")), "docker/abc")
    ({}, True)
    """
    rel = cgroup_rel_path.strip("/")
    if not layout.v1:
        return {}, True
    for pid, found in _members(layout, rel):
        cg = _proc_cgroups(Path(proc_root), pid)
        if layout.unified is not None and _rel(cg.get("", "/..")) != found:
            continue  # exited or moved since cgroup.procs was read
        suffix = found[len(rel):].strip("/")
        dirs: dict[str, Path] = {}
        for c in V1_CONTROLLERS:
            r = _rel(cg[c]) if c in cg and c in layout.v1 else None
            if r is not None and suffix and r.endswith("/" + suffix):
                r = r[: -len(suffix) - 1]  # the member sits in a child: climb to the top
            if r is not None and (r or not rel):  # a member in the v1 root: host-wide
                d = layout.v1[c] / r
                if r == rel or r.endswith("/" + rel) or _exclusive(d, rel, Path(proc_root)):
                    dirs[c] = d
        return dirs, True
    guess = {c: layout.v1[c] / rel for c in V1_CONTROLLERS if c in layout.v1}
    return {c: d for c, d in guess.items() if rel and d.is_dir()}, False
