"""A cache of compiled BPF programs: load them again with ``bpf()`` alone, no BCC, no loader.

Compiling the six programs with Clang and LLVM is most of the daemon's start-up
time and memory (:mod:`cgwatch.sources.loader`). What BCC hands to the kernel,
though, is plain bytecode: the loader's worker records it once, with the maps it
uses and where their descriptors go (:func:`cgwatch.sources.loader.cache_entry`),
and a later start creates the maps, patches their new descriptors into the
bytecode, loads and attaches the programs itself (:func:`load_entry`).

An entry is one JSON file, ``<program>.<key>.json``; the key is a sha256 over
everything the bytecode depends on (:func:`cache_key`): the source and the headers
beside it, the flags, the extra programs, the kernel (release and build) and BCC's
version. Only the newest entry of each program is kept. This is root loading
bytecode from disk, so a directory or file that is not root's, or that group or
others may write, is refused with a warning. Whatever goes wrong with an entry
(unreadable, a map or program the kernel refuses, a tracepoint gone) is one
warning, and the program is compiled as if there were no cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import stat
import struct
from pathlib import Path
from typing import Any

from .loader import CACHE_FORMAT, CACHEABLE_MAPS, RAW_TRACEPOINT_PROG, RINGBUF, TRACEPOINT_PROG

log = logging.getLogger("cgwatch.bpf")

#: the largest entry read (the six programs' are 5-20 kB)
MAX_ENTRY = 4 << 20

_dir: Path | None = None
#: a program was compiled (or failed) since the directory was set without an entry to show
#: for it: the cache is not complete
_missed = False
#: the entries that programs compiled since the directory was set are to leave behind
_expected: list[Path] = []
#: the file that says the last start found every program in the cache (see :func:`looks_complete`)
COMPLETE = "complete"


def set_dir(path: str | os.PathLike[str] | None) -> Path | None:
    """Use ``path`` for the cache from now on (made 0700 if missing), or none
    (None). A directory that is not root's own, or that others may write, is
    refused with one warning; returns the directory in use."""
    global _dir, _missed
    _dir, _missed = None, False
    _expected.clear()
    if path is None:
        return None
    d = Path(path)
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        why = unsafe(os.lstat(d), directory=True)
    except OSError as e:
        why = e.strerror or str(e)
    if why:
        log.warning("BPF program cache %s not used (%s); the programs are compiled at each start", d, why)
        return None
    _dir = d
    return d


def current() -> Path | None:
    """The cache directory in use, or None."""
    return _dir


def missed(entry: str | os.PathLike[str] | None = None) -> None:
    """Note that a program did not come from the cache; ``entry``: the file its compile
    is to record it in (the cache is complete once that is there)."""
    global _missed
    if entry is None:
        _missed = True
    else:
        _expected.append(Path(entry))


def fingerprint() -> str:
    """What every entry's key shares: the entry format, the kernel, BCC and the shipped
    BPF sources and headers (flags and extra programs are not known before the sources load)."""
    from .bpf import bpf_dir

    h = hashlib.sha256()
    u = os.uname()
    h.update(f"{CACHE_FORMAT}\n{u.release}\n{u.version}\n{u.machine}\n{bcc_version()}\n".encode())
    d = bpf_dir()
    for f in sorted([*d.glob("*.c"), *d.glob("*.h")]):
        data = f.read_bytes()
        h.update(f"{f.name} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def mark_start() -> None:
    """After the daemon's programs loaded (the loader's workers have written what they
    compiled by then): record whether the cache now holds them all (the next start then
    need not start BCC's loader early), else forget it."""
    if _dir is None:
        return
    path = _dir / COMPLETE
    try:
        if _missed or not all(p.is_file() for p in _expected):
            path.unlink(missing_ok=True)
            return
        tmp = _dir / f".{COMPLETE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(fingerprint() + "\n")
        os.rename(tmp, path)
    except OSError as e:
        log.debug("BPF program cache: %s: %s", path, e)


def looks_complete(state_dir: str) -> bool:
    """True when the last start in ``state_dir`` found every program in the cache and
    neither the kernel, BCC nor the BPF sources changed since: a start that then
    need not import BCC at all. (A hint only: a program that misses still compiles.)"""
    path = Path(state_dir) / "bpf-cache" / COMPLETE
    try:
        if unsafe(os.lstat(path.parent), directory=True) or unsafe(os.lstat(path)):
            return False
        return path.read_text().strip() == fingerprint()
    except OSError:
        return False


def unsafe(st: os.stat_result, directory: bool = False) -> str:
    """Why a file (or directory) must not be trusted with bytecode root loads, or ''.

    >>> unsafe(os.stat_result((stat.S_IFREG | 0o600, 0, 0, 1, 0, 0, 0, 0, 0, 0)))
    ''
    >>> unsafe(os.stat_result((stat.S_IFREG | 0o666, 0, 0, 1, 0, 0, 0, 0, 0, 0)))
    'writable by group or others'
    """
    if directory and not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if not directory and not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return "writable by group or others"
    return ""


_bcc: str | None = None


def bcc_version() -> str:
    """BCC's version, read from its ``version.py`` without importing it (that maps
    LLVM into the daemon); '' when BCC is not found."""
    global _bcc
    if _bcc is None:
        import importlib.util

        found = ""     # set once, whole: sources load in threads side by side and all ask
        try:
            spec = importlib.util.find_spec("bcc")
            if spec is not None and spec.origin:
                text = Path(spec.origin).with_name("version.py").read_text()
                m = re.search(r"""__version__\s*=\s*['"]([^'"]+)['"]""", text)
                found = m.group(1) if m else ""
        except (ImportError, ValueError, OSError):
            pass
        _bcc = found
    return _bcc


def cache_key(src: Path, cflags: list[str], funcs: dict[str, int]) -> str:
    """The sha256 of everything a program's bytecode depends on: its source, every
    header in its directory and in each ``-I`` directory, the flags, the extra
    programs, the kernel and BCC.

    Raises OSError when a file cannot be read."""
    h = hashlib.sha256()

    def part(tag: str, data: bytes) -> None:
        h.update(f"{tag} {len(data)}\n".encode())
        h.update(data)

    part("format", str(CACHE_FORMAT).encode())
    part("src", src.read_bytes())
    dirs = [src.parent, *(Path(f[2:]) for f in cflags if f.startswith("-I"))]
    for d in dict.fromkeys(dirs):
        for header in sorted(d.glob("*.h")):
            part(f"header {header.name}", header.read_bytes())
    part("cflags", json.dumps(cflags).encode())
    part("funcs", json.dumps(funcs, sort_keys=True).encode())
    u = os.uname()
    part("kernel", f"{u.release}\n{u.version}\n{u.machine}".encode())
    part("bcc", bcc_version().encode())
    return h.hexdigest()


def entry_path(d: Path, program: str, key: str) -> Path:
    return d / f"{program}.{key}.json"


def request(d: Path, program: str, key: str) -> dict[str, str]:
    """What a loader request carries for its worker to record the entry."""
    return {"path": str(entry_path(d, program, key)), "bcc": bcc_version()}


class EntryError(Exception):
    """An entry that cannot be used; the message says why, in a few words."""


def read_entry(path: Path) -> dict[str, Any] | None:
    """The entry at ``path``; None when there is none. Raises EntryError when it is
    unsafe, unreadable or not an entry of this format."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise EntryError(f"cannot open it ({e.strerror})") from None
    try:
        why = unsafe(os.fstat(fd))
        if why:
            raise EntryError(why)
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_ENTRY + 1)
    except OSError as e:
        raise EntryError(f"cannot read it ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_ENTRY:
        raise EntryError("larger than an entry can be")
    try:
        entry = json.loads(raw)
    except ValueError:
        raise EntryError("not valid JSON") from None
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
        raise EntryError("not an entry of this cgwatch")
    return entry


def load_entry(entry: dict[str, Any], name: str) -> Any:
    """Create the maps, load and attach the programs an entry describes; returns a
    :class:`~.bpfsys.Program` as the loader would. Raises EntryError (whatever was
    opened is closed)."""
    from . import bpf
    from .bpfsys import Func, Map, Program, attach_raw_tracepoint, attach_tracepoint, create_map, load_prog

    maps: dict[str, Map] = {}
    funcs: dict[str, Func] = {}
    links: list[int] = []
    opened: list[int] = []
    step = "reading it"
    try:
        for m in entry["maps"]:
            step = f"creating map {m['name']}"
            kind = int(m["type"])
            if kind not in CACHEABLE_MAPS:
                raise EntryError(f"map {m['name']} has type {kind}")
            ring = kind == RINGBUF          # a ring buffer has no keys or values, only bytes
            fd = create_map(m["name"], kind, 0 if ring else int(m["key_size"]),
                            0 if ring else int(m["leaf_size"]), int(m["max_entries"]), int(m["flags"]))
            opened.append(fd)
            maps[m["name"]] = Map(m["name"], fd, kind, int(m["key_size"]), int(m["leaf_size"]),
                                  int(m["max_entries"]), m["key_desc"], m["leaf_desc"])
        events = None
        for f in entry["funcs"]:
            step = f"loading program {f['name']}"
            code = bytearray(base64.b64decode(f["insns"], validate=True))
            for index, map_name in f["relocs"]:
                at = int(index) * 8
                if not 0 <= at <= len(code) - 16 or code[at] != 0x18 or code[at + 1] >> 4 != 1:
                    raise EntryError(f"relocation at instruction {index} is no map load")
                struct.pack_into("<i", code, at + 4, maps[map_name].fd)
            fd = load_prog(f["name"], int(f["type"]), bytes(code), str(entry["license"]),
                           int(entry.get("kern_version", 0)))
            opened.append(fd)
            funcs[f["name"]] = Func(f["name"], fd)
            attach = f["attach"]
            if attach is None:
                continue
            kind, tp = attach
            step = f"attaching {f['name']} to {tp}"
            if kind == "tracepoint" and int(f["type"]) == TRACEPOINT_PROG:
                if events is None:
                    root = bpf.tracefs()
                    if root is None:
                        raise EntryError("tracefs is not mounted")
                    events = str(root / "events")
                group, _, event = tp.partition(":")
                links.append(attach_tracepoint(fd, events, group, event))
            elif kind == "raw_tracepoint" and int(f["type"]) == RAW_TRACEPOINT_PROG:
                links.append(attach_raw_tracepoint(fd, tp))
            else:
                raise EntryError(f"unknown attachment {attach!r}")
            opened.append(links[-1])
    except EntryError:
        _close(opened)
        raise
    except OSError as e:
        _close(opened)
        raise EntryError(f"{step}: {e.strerror}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        _close(opened)
        raise EntryError(f"{step}: malformed entry ({type(e).__name__}: {e})") from None
    return Program(name, maps, funcs, links)


def _close(fds: list[int]) -> None:
    for fd in reversed(fds):
        try:
            os.close(fd)
        except OSError:
            pass


def load(d: Path, program: str, key: str, src_name: str) -> Any:
    """The program from its cache entry, or None (no entry, or one that failed: then
    with one warning, and the caller compiles it)."""
    path = entry_path(d, program, key)
    try:
        entry = read_entry(path)
        if entry is None:
            return None
        prog = load_entry(entry, src_name)
    except EntryError as e:
        log.warning("%s: the cached build in %s did not load (%s); compiling it", src_name, path, e)
        return None
    log.debug("%s: loaded from the cache (%s)", src_name, path)
    return prog
