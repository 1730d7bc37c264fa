"""Compile and load cgwatch's BPF programs (with BCC, in a loader process), and check the host first.

Everything a user can get wrong (not root, no BCC, no kernel headers, no
tracefs) becomes a :class:`SetupError` whose message is one line saying what
to do; the CLI prints it and exits 2.

Probes are switched on per tracepoint: a source lists what it wants with the
``-D`` flag that enables it, and only tracepoints this kernel has are compiled
in (:func:`probe_flags`). A metric whose tracepoint is missing is absent, and
the warning names the tracepoint.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

log = logging.getLogger("cgwatch.bpf")

TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


class SetupError(Exception):
    """The host is not ready for cgwatch; the message says what to do."""


def bpf_dir() -> Path:
    """Where the shipped BPF C sources are (installed or editable).

    >>> (bpf_dir() / "cgwatch.h").is_file()
    True
    """
    return Path(str(files("cgwatch.bpf")))


def tracefs() -> Path | None:
    """The mounted tracefs, or None.

    >>> tracefs() is None or (tracefs() / "events").is_dir()
    True
    """
    for d in TRACEFS_DIRS:
        if (d / "events").is_dir():
            return d
    return None


def tracepoint_exists(group: str, name: str) -> bool:
    """True when this kernel has the tracepoint ``group:name``.

    >>> tracepoint_exists("no_such_group", "no_such_event")
    False
    """
    root = tracefs()
    return root is not None and (root / "events" / group / name / "format").is_file()


def tracepoint_fields(group: str, name: str) -> set[str]:
    """The argument names of a tracepoint, from its tracefs format file.

    >>> tracepoint_fields("no_such_group", "x")
    set()
    """
    root = tracefs()
    if root is None:
        return set()
    try:
        text = (root / "events" / group / name / "format").read_text()
    except OSError:
        return set()
    out = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("field:") and ";" in line:
            decl = line[len("field:"):line.index(";")]
            out.add(decl.split()[-1].split("[")[0])
    return out


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of a kernel release string.

    >>> kernel_version("6.18.44-fc-v669")
    (6, 18)
    >>> kernel_version("5.4.0-150-generic")
    (5, 4)
    """
    rel = release or platform.release()
    parts = rel.split("-")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def raw_tracepoints() -> bool:
    """True when this kernel attaches raw tracepoints (asked of the kernel, not of BCC)."""
    from .bpfsys import raw_tracepoints_supported

    return raw_tracepoints_supported()


def check_host() -> None:
    """Raise SetupError naming the first thing that stops BPF from loading.

    What a host must grant for these checks to pass is listed in :mod:`cgwatch.requirements`.
    """
    if os.geteuid() != 0:
        raise SetupError("loading BPF programs needs root: run it with sudo")
    if not _bcc_installed():
        raise SetupError(
            "BCC's Python module is missing: install python3-bpfcc and run cgwatch from "
            "Debian's python3 or a venv made with --system-site-packages (`sudo make run` does both)"
        ) from None
    rel = platform.release()
    build = Path("/lib/modules") / rel / "build"
    if not (build / "include").is_dir() and not Path("/sys/kernel/kheaders.tar.xz").exists():
        raise SetupError(
            f"no kernel headers for {rel} at {build}: install linux-headers-{rel}, or run "
            "`sudo make setup`, which links the distribution's headers"
        )
    if tracefs() is None:
        try:
            os.makedirs("/sys/kernel/tracing", exist_ok=True)
            _mount_tracefs()
        except OSError as e:
            raise SetupError(
                f"tracefs is not mounted and mounting it failed ({e.strerror}): "
                "mount -t tracefs tracefs /sys/kernel/tracing"
            ) from None


def _bcc_installed() -> bool:
    """True when BCC's Python module can be imported, found without importing it (that
    maps LLVM into this process; only the loader process imports BCC)."""
    import importlib.util

    try:
        return importlib.util.find_spec("bcc") is not None
    except (ImportError, ValueError):    # ValueError: sys.modules["bcc"] is None
        return False


def _mount_tracefs() -> None:
    libc = ct.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", b"/sys/kernel/tracing", b"tracefs", 0, None) != 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    log.info("mounted tracefs at /sys/kernel/tracing")


@dataclass(frozen=True, slots=True)
class Probe:
    """A tracepoint a program can use, and the -D flag that compiles it in."""

    group: str
    name: str
    flag: str
    metrics: tuple[str, ...] = ()


def probe_flags(probes: Iterable[Probe], owner: str) -> tuple[list[str], set[str]]:
    """The -D flags for the probes this kernel has, and the metrics lost.

    >>> flags, lost = probe_flags([Probe("no_such", "tp", "CGW_X", ("a.b",))], "test")
    >>> flags, lost
    ([], {'a.b'})
    """
    flags: list[str] = []
    lost: set[str] = set()
    for p in probes:
        if tracepoint_exists(p.group, p.name):
            flags.append(f"-D{p.flag}")
        else:
            lost.update(p.metrics)
            log.warning(
                "%s: tracepoint %s:%s is missing on this kernel; %s will be absent",
                owner, p.group, p.name, ", ".join(p.metrics) or "its events",
            )
    return flags, lost


def set_cache_dir(path: str | os.PathLike[str] | None) -> None:
    """Keep compiled programs in ``path`` and load them from there when nothing they
    depend on changed (:mod:`cgwatch.sources.progcache`); None: compile every time.
    The daemon uses ``<state_dir>/bpf-cache``; other commands compile."""
    from . import progcache

    progcache.set_dir(path)


def load(name: str, cflags: Iterable[str] = (), funcs: dict[str, int] | None = None) -> Any:
    """Load ``bpf/<name>.bpf.c`` and attach its probes: from the cache of compiled
    programs when one is set and holds this build, else compiled in the loader process
    (:mod:`cgwatch.sources.loader`), which records it for the cache. Returns a
    :class:`~cgwatch.sources.bpfsys.Program`.

    ``funcs`` names programs to load that no probe attaches by itself (name -> BCC
    program type). Raises SetupError (one line) when compilation or loading fails.
    """
    check_host()
    from . import progcache
    from .loader import LoadError, session

    src = bpf_dir() / f"{name}.bpf.c"
    flags = [f"-I{bpf_dir()}", *cflags]
    cache, record = progcache.current(), None
    if cache is not None and not progcache.bcc_version():
        progcache.missed()                      # compiled, and nothing to record it by
    elif cache is not None:
        try:
            key = progcache.cache_key(src, flags, funcs or {})
        except OSError as e:
            log.warning("%s.bpf.c: not cached (%s)", name, e)
        else:
            prog = progcache.load(cache, name, key, src.name)
            if prog is not None:
                return prog
            record = progcache.request(cache, name, key)
        progcache.missed(record["path"] if record is not None else None)
    log.debug("compiling %s with %s", src, " ".join(flags))
    try:
        with session() as loader:
            return loader.load(str(src), flags, funcs, cache=record)
    except LoadError as e:
        raise SetupError(f"{name}.bpf.c did not load: {e}") from None


class PerCpuTable:
    """Read a BPF per-CPU hash of ``u64 cgroup id -> struct of u64`` in batches (or a plain
    hash, as one CPU; or keys of several u64, as rows of them).

    Values are summed over CPUs with numpy, so one read costs a handful of
    syscalls and no per-entry Python objects beyond the result dict. Kernels
    without batch operations (< 5.6) fall back to walking the keys.
    """

    def __init__(self, table: Any, chunk: int = 256) -> None:
        import numpy as np

        self._np = np
        self.table = table
        self.fd = table.map_fd
        self.ncpu = table.ncpu
        leaf = ct.sizeof(table.sLeaf)
        if leaf % 8 or table.key_size % 8:
            raise ValueError("keys and leaves must be made of u64 fields")
        self.nfields = leaf // 8
        self.kwords = table.key_size // 8
        self._chunk = chunk
        self._alloc(chunk)
        self._batch = True

    def _alloc(self, chunk: int) -> None:
        self._chunk = chunk
        self._keys = (ct.c_uint64 * (chunk * self.kwords))()
        self._vals = (ct.c_uint64 * (chunk * self.ncpu * self.nfields))()

    def read(self) -> dict[int, Any]:
        """cgroup id -> numpy array of the fields, summed over CPUs."""
        keys, sums = self.read_rows()
        return dict(zip(keys.tolist(), sums))

    def read_rows(self) -> tuple[Any, Any]:
        """The cgroup ids (uint64, in the map's order; a row of them per key when keys are
        wider) and their fields summed over CPUs (one row each): two arrays, no Python
        object per entry."""
        if self._batch:
            try:
                return self._read_batch()
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
                log.info("map batch operations unsupported here; reading key by key")
                self._batch = False
        return self._read_walk()

    def _read_batch(self) -> tuple[Any, Any]:
        np = self._np
        keys, sums = [], []
        in_b, out_b = ct.c_uint32(0), ct.c_uint32(0)
        first = True
        while True:
            count = ct.c_uint32(self._chunk)
            try:
                self.table.lookup_batch(None if first else in_b, out_b, self._keys, self._vals, count)
                res = err = 0
            except OSError as e:
                res, err = -1, e.errno
            n = count.value
            if n:
                vals = np.frombuffer(self._vals, dtype=np.uint64, count=n * self.ncpu * self.nfields)
                sums.append(vals.reshape(n, self.ncpu, self.nfields).sum(axis=1))
                keys.append(self._shape(np.frombuffer(self._keys, dtype=np.uint64, count=n * self.kwords).copy()))
            if res != 0:
                if err == errno.ENOENT:
                    return self._rows(keys, sums)
                if err == errno.ENOSPC and n == 0:   # one bucket holds more than a chunk
                    self._alloc(self._chunk * 2)
                    continue
                raise OSError(err, os.strerror(err))
            in_b.value = out_b.value
            first = False

    def _shape(self, keys: Any) -> Any:
        return keys if self.kwords == 1 else keys.reshape(-1, self.kwords)

    def _rows(self, keys: list[Any], sums: list[Any]) -> tuple[Any, Any]:
        np = self._np
        if len(keys) == 1:
            return keys[0], sums[0]
        if not keys:
            return self._shape(np.zeros(0, dtype=np.uint64)), np.zeros((0, self.nfields), dtype=np.uint64)
        return np.concatenate(keys), np.concatenate(sums)

    def _read_walk(self) -> tuple[Any, Any]:
        np = self._np
        keys, sums = [], []
        for k in list(self.table.keys()):
            raw = self.table.lookup(k)
            if raw is None:          # deleted since the walk saw it
                continue
            keys.append(self._shape(np.frombuffer(bytes(k), dtype=np.uint64).copy()))
            sums.append(np.frombuffer(raw, dtype=np.uint64).reshape(self.ncpu, self.nfields).sum(axis=0)[None, :])
        return self._rows(keys, sums)

    def delete(self, cgids: Iterable[int]) -> None:
        """Remove the entries of cgroups that no longer exist."""
        for cgid in cgids:
            try:
                del self.table[self.table.Key(cgid)]
            except KeyError:
                pass


def lost_count(table: Any) -> int:
    """Sum of a one-slot per-CPU counter array (ring-buffer drops)."""
    try:
        return int(sum(table.getvalue(table.Key(0))))
    except KeyError:
        return 0
