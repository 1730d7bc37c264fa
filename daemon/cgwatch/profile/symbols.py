"""Names for the raw instruction addresses of sampled stacks.

User addresses are named per process from a snapshot taken by ``watch(pid)``:
its ``/proc/PID/maps``, its perf map (``/tmp/perf-NSPID.map`` as the process
sees it, written by JITs such as ``python -X perf``, Node, Java agents) and the
function symbols of each executable file it maps. A file is opened through
``/proc/PID/map_files/START-END`` (deleted files, other mount namespaces; needs
CAP_SYS_ADMIN), else ``/proc/PID/root/PATH``. Its ``.symtab`` (else
``.dynsym``) is read once per build id, kept in an LRU of 256 files; a file
with no function symbols borrows them from ``/usr/lib/debug/.build-id/``. An
address becomes a file offset, then a virtual address through the PT_LOAD that
holds it, then the function whose ``[st_value, st_value + st_size)`` holds it.
Kernel addresses are named from ``/proc/kallsyms``, read once.

An address no symbol holds is named by its module alone, in brackets: every
frame of a stripped binary is ``[busybox]``, so its samples add up to one
function-sized share instead of thousands of addresses; the ``[vdso]`` and
anonymous code without a perf map are ``[vdso]`` and ``[anon]``. An address in
no executable mapping (where a frame-pointer walk through code built without
frame pointers lands: the heap, the stack, data), or of a process gone before it
was watched, is ``[unknown]``; an unnamed kernel address is ``[kernel]``.

Limits: names only (no ``+offset``, no demangling, no inlined frames); return
addresses are looked up as given (a call at the very end of a function may name
the next one); kallsyms is not re-read, so modules and BPF programs loaded
later stay ``[kernel]``. Not thread-safe.

Examples
--------
>>> s = Symbolizer()
>>> s.user(2**22 + 1, [0x401000]), s.stats["unknown"]   # no such pid
(['[unknown]'], 1)
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .model import unknown

log = logging.getLogger("cgwatch.profile")

ELF_CACHE_SIZE = 256
MAPS_MIN_AGE_S = 1.0
DEBUG_DIR = Path("/usr/lib/debug/.build-id")
_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_BIND_RANK = {1: 0, 2: 1, 0: 2}  # GLOBAL before WEAK before LOCAL, among aliases
_DELETED = " (deleted)"
_KTYPES = {b"T": 0, b"W": 1, b"t": 2, b"w": 3}


class _Syms:
    """Function symbols of one ELF file, sorted, plus its PT_LOAD segments."""

    __slots__ = ("loads", "starts", "sizes", "names")

    def __init__(self, loads: list[tuple[int, int, int]], starts: list[int], sizes: list[int],
                 names: list[str]) -> None:
        self.loads = loads  # (p_offset, p_filesz, p_vaddr)
        self.starts, self.sizes, self.names = starts, sizes, names

    def name(self, file_offset: int) -> str | None:
        for off, filesz, vaddr in self.loads:
            if off <= file_offset < off + filesz:
                v = file_offset - off + vaddr
                break
        else:
            return None
        i = bisect.bisect_right(self.starts, v) - 1
        if i < 0:
            return None
        size = self.sizes[i]
        return self.names[i] if size == 0 or v < self.starts[i] + size else None


def _func_symbols(elf: ELFFile, name: str) -> tuple[list[int], list[int], list[str]]:
    """Sorted (starts, sizes, names) of the defined functions in one symbol table section."""
    sec = elf.get_section_by_name(name)
    if sec is None or sec["sh_type"] == "SHT_NOBITS":
        return [], [], []
    e = "<" if elf.little_endian else ">"
    if elf.elfclass == 64:
        fields = [("name", "u4"), ("info", "u1"), ("other", "u1"), ("shndx", "u2"), ("value", "u8"), ("size", "u8")]
    else:
        fields = [("name", "u4"), ("value", "u4"), ("size", "u4"), ("info", "u1"), ("other", "u1"), ("shndx", "u2")]
    dt = np.dtype([(n, e + t) for n, t in fields])
    data = sec.data()
    sym = np.frombuffer(data, dtype=dt, count=len(data) // dt.itemsize)
    typ = sym["info"] & 0xF
    sym = sym[((typ == _STT_FUNC) | (typ == _STT_GNU_IFUNC)) & (sym["shndx"] != 0) & (sym["value"] != 0)]
    if not len(sym):
        return [], [], []
    strtab = elf.get_section(sec["sh_link"]).data()
    names = []
    for off in sym["name"].tolist():
        end = strtab.find(b"\0", off)
        names.append(strtab[off:end if end >= 0 else None].decode("utf-8", "replace"))
    # among aliases at one address: fewer leading underscores, then GLOBAL, WEAK, LOCAL
    under = np.array([len(n) - len(n.lstrip("_")) for n in names])
    bind = np.array([_BIND_RANK.get(b, 3) for b in (sym["info"] >> 4).tolist()])
    order = np.lexsort((bind, under, sym["value"]))
    values, sizes = sym["value"][order], sym["size"][order]
    first = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return (values[first].tolist(), np.maximum.reduceat(sizes, first).tolist(),
            [names[i] for i in order[first].tolist()])


def _build_id(elf: ELFFile) -> str | None:
    sections = [elf.get_section_by_name(".note.gnu.build-id")] if elf.num_sections() else []
    notes = [s for s in sections if s is not None] or [s for s in elf.iter_segments() if s["p_type"] == "PT_NOTE"]
    for part in notes:
        for note in part.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return str(note["n_desc"])
    return None


@dataclass(slots=True)
class _Map:
    start: int
    end: int
    offset: int
    inode: int
    path: str  # without " (deleted)"
    deleted: bool
    module: str  # "" when not executable: no code runs there, an address in it is a broken unwind
    code: bool  # executable and file-backed: its symbols are loaded
    syms: _Syms | None = None


@dataclass(slots=True)
class _Proc:
    starttime: str
    maps: list[_Map]
    starts: list[int]
    read_at: float
    perf_path: Path | None = None
    perf_sig: tuple[int, int] | None = None
    perf: tuple[list[int], list[int], list[str]] = ([], [], [])
    names: dict[int, str] = field(default_factory=dict)


def _module(path: str) -> str:
    if not path:
        return "[anon]"
    return path if path.startswith("[") else os.path.basename(path) or path


def _parse_maps(text: str) -> list[_Map]:
    maps = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, _, hi = parts[0].partition("-")
        path = parts[5].strip() if len(parts) == 6 else ""
        deleted = path.endswith(_DELETED)
        if deleted:
            path = path[: -len(_DELETED)]
        x = "x" in parts[1]
        code = x and path.startswith("/")
        maps.append(_Map(int(lo, 16), int(hi, 16), int(parts[2], 16), int(parts[4]), path, deleted,
                         _module(path) if x else "", code))
    maps.sort(key=lambda m: m.start)
    return maps


def _parse_perf_map(text: str) -> tuple[list[int], list[int], list[str]]:
    entries: dict[int, tuple[int, str]] = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            try:
                entries[int(parts[0], 16)] = (int(parts[1], 16), parts[2].strip())
            except ValueError:
                continue
    starts = sorted(entries)
    return starts, [entries[s][0] for s in starts], [entries[s][1] for s in starts]


class Symbolizer:
    """Names user and kernel frames; one instance serves every profiled process."""

    def __init__(self, proc: Path = Path("/proc"), kallsyms: Path = Path("/proc/kallsyms"),
                 *, use_map_files: bool = True) -> None:
        self._proc = proc
        self._kallsyms_path = kallsyms
        self._use_map_files = use_map_files
        self._procs: dict[int, _Proc] = {}
        self._elf: OrderedDict[object, _Syms] = OrderedDict()
        self._by_stat: dict[tuple[int, int, int, int], object] = {}
        self._kaddrs: np.ndarray | None = None
        self._knames: list[str] = []
        # elf_loaded/elf_cached/elf_failed: files; unknown: addresses that got no name (each once per snapshot)
        self.stats = {"elf_loaded": 0, "elf_cached": 0, "elf_failed": 0, "maps_read": 0, "perf_map_read": 0,
                      "unknown": 0}

    # -- user space ---------------------------------------------------------------------------

    def watch(self, pid: int) -> bool:
        """Snapshot pid's maps, perf map and ELF symbols; False when the process is gone."""
        p = self._procs.get(pid)
        now = time.monotonic()
        if p is not None and now - p.read_at < MAPS_MIN_AGE_S:
            self._refresh_perf_map(p)
            return (self._proc / str(pid)).exists()
        base = self._proc / str(pid)
        try:
            starttime = (base / "stat").read_text().rsplit(")", 1)[1].split()[19]
            maps = _parse_maps((base / "maps").read_text())
            status = (base / "status").read_text()
        except (OSError, IndexError, ValueError):
            if p is not None:
                p.read_at = now
            return False
        self.stats["maps_read"] += 1
        if p is not None and p.starttime != starttime:
            p = None  # the pid was reused
        old = {(m.start, m.end, m.offset, m.inode, m.path): m.syms for m in p.maps if m.code} if p else {}
        for m in maps:
            if m.code:
                k = (m.start, m.end, m.offset, m.inode, m.path)
                m.syms = old[k] if k in old else self._load(pid, m)
        nspid = next((ln.split()[-1] for ln in status.splitlines() if ln.startswith("NSpid:")), str(pid))
        if p is None:
            p = self._procs[pid] = _Proc(starttime, maps, [], now)
            p.perf_path = base / "root" / "tmp" / f"perf-{nspid}.map"
        p.maps, p.starts, p.read_at = maps, [m.start for m in maps], now
        p.names.clear()
        self._refresh_perf_map(p)
        return True

    def user(self, pid: int, addrs: Sequence[int]) -> list[str]:
        """One name per user-space address of pid, same order."""
        p = self._procs.get(pid)
        if p is None and self.watch(pid):
            p = self._procs.get(pid)
        if p is None:
            self.stats["unknown"] += len(addrs)
            return [unknown()] * len(addrs)
        cache = p.names
        out = []
        for a in addrs:
            name = cache.get(a)
            if name is None:
                name = cache[a] = self._resolve(p, a)
            out.append(name)
        return out

    def forget(self, pid: int) -> None:
        """Drop pid's snapshot; the ELF cache stays."""
        self._procs.pop(pid, None)

    def _resolve(self, p: _Proc, addr: int) -> str:
        starts, sizes, names = p.perf
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < starts[i] + sizes[i]:
            return names[i]
        i = bisect.bisect_right(p.starts, addr) - 1
        m = p.maps[i] if i >= 0 and addr < p.maps[i].end else None
        name = m.syms.name(addr - m.start + m.offset) if m is not None and m.syms else None
        if name is None:
            self.stats["unknown"] += 1
            return unknown(m.module if m is not None else "")
        return name

    def _refresh_perf_map(self, p: _Proc) -> None:
        if p.perf_path is None:
            return
        try:
            with open(p.perf_path, "rb") as f:
                st = os.fstat(f.fileno())
                sig = (st.st_size, st.st_mtime_ns)
                if sig == p.perf_sig:
                    return
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return  # none yet, or the process is gone: keep what was read
        p.perf, p.perf_sig = _parse_perf_map(text), sig
        p.names.clear()
        self.stats["perf_map_read"] += 1

    def _load(self, pid: int, m: _Map) -> _Syms | None:
        """The symbols of m's file, from the cache or opened through /proc; None when unreadable."""
        candidates = []
        if self._use_map_files:
            candidates.append((self._proc / str(pid) / "map_files" / f"{m.start:x}-{m.end:x}", False))
        candidates.append((self._proc / str(pid) / "root" / m.path.lstrip("/"), m.deleted))
        for path, check_inode in candidates:
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    if check_inode and st.st_ino != m.inode:
                        continue  # a new file where the deleted one was
                    return self._symbols(f, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            except (OSError, ELFError, ValueError, KeyError, IndexError, AttributeError) as e:
                log.debug("symbols of %s via %s: %s", m.path, path, e)
        self.stats["elf_failed"] += 1
        return None

    def _symbols(self, f: BinaryIO, stat_key: tuple[int, int, int, int]) -> _Syms:
        key = self._by_stat.get(stat_key)
        if key is not None and key in self._elf:
            self._elf.move_to_end(key)
            self.stats["elf_cached"] += 1
            return self._elf[key]
        elf = ELFFile(f)
        build_id = _build_id(elf)
        key = build_id or stat_key
        syms = self._elf.get(key)
        if syms is not None:
            self.stats["elf_cached"] += 1
        else:
            loads = [(s["p_offset"], s["p_filesz"], s["p_vaddr"]) for s in elf.iter_segments()
                     if s["p_type"] == "PT_LOAD"]
            starts, sizes, names = _func_symbols(elf, ".symtab")
            if not starts:
                starts, sizes, names = _func_symbols(elf, ".dynsym")
            if not starts and build_id:
                starts, sizes, names = _debug_symbols(build_id)
            syms = _Syms(loads, starts, sizes, names)
            self.stats["elf_loaded"] += 1
        self._elf[key] = syms
        self._elf.move_to_end(key)
        while len(self._elf) > ELF_CACHE_SIZE:
            self._elf.popitem(last=False)
        if len(self._by_stat) > 16 * ELF_CACHE_SIZE:
            self._by_stat.clear()
        self._by_stat[stat_key] = key
        return syms

    # -- kernel -------------------------------------------------------------------------------

    def kernel(self, addrs: Sequence[int]) -> list[str]:
        """One name per kernel address, same order, without module or ``_[k]`` suffix."""
        if self._kaddrs is None:
            self._load_kallsyms()
        assert self._kaddrs is not None
        if not len(self._kaddrs) or not len(addrs):
            self.stats["unknown"] += len(addrs)
            return [unknown("kernel")] * len(addrs)
        a = np.fromiter((x & 0xFFFF_FFFF_FFFF_FFFF for x in addrs), dtype=np.uint64, count=len(addrs))
        idx = (np.searchsorted(self._kaddrs, a, side="right") - 1).tolist()
        out = [self._knames[i] if i >= 0 else unknown("kernel") for i in idx]
        self.stats["unknown"] += idx.count(-1)
        return out

    def _load_kallsyms(self) -> None:
        addrs: list[int] = []
        ranks: list[int] = []
        names: list[str] = []
        try:
            with open(self._kallsyms_path, "rb") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in _KTYPES:
                        addrs.append(int(parts[0], 16))
                        name = parts[2].decode("utf-8", "replace")
                        names.append(name)
                        ranks.append((len(name) - len(name.lstrip("_"))) * 4 + _KTYPES[parts[1]])
        except OSError as e:
            log.warning("cannot read %s (%s): kernel frames stay unknown", self._kallsyms_path, e)
        arr = np.array(addrs, dtype=np.uint64)
        if len(arr) and not arr.any():
            log.warning("%s shows no addresses (kptr_restrict, or no CAP_SYSLOG): kernel frames stay unknown",
                        self._kallsyms_path)
            arr = arr[:0]
        if not len(arr):
            self._kaddrs, self._knames = arr, []
            return
        order = np.lexsort((np.array(ranks, dtype=np.int64), arr))
        arr = arr[order]
        first = np.flatnonzero(np.r_[True, arr[1:] != arr[:-1]])  # one name per address, as for ELF aliases
        self._kaddrs = arr[first]
        self._knames = [names[i] for i in order[first].tolist()]


def _debug_symbols(build_id: str) -> tuple[list[int], list[int], list[str]]:
    """Function symbols from the Debian dbgsym file of a build id, or empty lists."""
    path = DEBUG_DIR / build_id[:2] / f"{build_id[2:]}.debug"
    try:
        with open(path, "rb") as f:
            return _func_symbols(ELFFile(f), ".symtab")
    except (OSError, ELFError, ValueError, KeyError, IndexError, AttributeError):
        return [], [], []
