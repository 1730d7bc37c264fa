"""Compile and load BPF programs in a short-lived process; the daemon keeps only file descriptors.

BCC compiles C with LLVM and Clang inside the process that calls it. Importing
it maps and relocates some 60 MB of libraries, and each compile leaves tens of MB
more; none of that is given back while the process lives. So the daemon never
imports BCC. It starts a loader process (``python -P .../loader.py``)
as early as it can, asks it for programs, and receives over a Unix socket
(``SCM_RIGHTS``) the file descriptors of every map, program and attachment. The
loader then exits and its memory goes with it; the probes stay attached
because the daemon holds their descriptors (:class:`~cgwatch.sources.bpfsys.Program`).

The loader forks one worker at a time, once BCC is imported, for every request it
holds by then (it waits :data:`GATHER_S` after each for the next): the worker
compiles them as one unit (:func:`merge`), since each of BCC's compiles costs
about 0.2 s and tens of MB of Clang whatever it compiles, and answers each on its
own socket, so the daemon's threads can each wait for theirs. Programs that cannot
share a unit (a clashing name, other compiler flags, an error) compile one by one.

Protocol, on a ``SOCK_SEQPACKET`` pair: the daemon sends a JSON request
``{"src": path, "cflags": [...], "funcs": {name: BCC program type}}`` with one
descriptor, the socket the answer goes to. The worker answers
``{"maps": [...], "funcs": [...], "links": n}`` with the descriptors in that order
(and ``"unit": [file, ...]`` when it compiled in one unit with others),
or ``{"error": "one line"}``. The daemon closing its end tells the loader it is done.

A request may also carry ``"cache": {"path": file, "bcc": version}``: once it has
answered, the worker writes there what loading the program again takes without BCC
(:func:`cache_entry`; the daemon reads it with :mod:`cgwatch.sources.progcache`).
A program it cannot describe completely is not written, and the answer says why
(``"uncached"``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("cgwatch.bpf")

#: after a request, how long the loader waits for another before it compiles what it
#: holds: the daemon's sources ask within a few hundred ms of each other at start-up
GATHER_S = 0.15
#: the most descriptors one answer may carry (the kernel's SCM_MAX_FD is 253)
MAX_FDS = 250
_MSG = 1 << 20


class LoadError(Exception):
    """A program did not load; the message is BCC's first line."""


class Asked:
    """A request sent to the loader: :meth:`result` waits for its answer."""

    def __init__(self, src: str, sock: socket.socket) -> None:
        self.src, self._sock = src, sock

    def result(self) -> Any:
        """The program (a :class:`~.bpfsys.Program`); raises LoadError with the loader's
        one line when it did not load."""
        from .bpfsys import Func, Map, Program

        with self._sock:
            try:
                msg, fds, _, _ = socket.recv_fds(self._sock, _MSG, MAX_FDS)
            except OSError as e:
                raise LoadError(f"no answer from the BPF loader ({e.strerror})") from None
        name = os.path.basename(self.src)
        if not msg:
            raise LoadError("the BPF loader died while compiling (see the messages above)")
        ans = json.loads(msg)
        if "error" in ans:
            for fd in fds:
                os.close(fd)
            raise LoadError(ans["error"])
        if "uncached" in ans:
            log.debug("%s: not cached: %s", name, ans["uncached"])
        if "unit" in ans:
            log.debug("%s: compiled in one unit with %s", name, ", ".join(ans["unit"]))
        it = iter(fds)
        maps = {m["name"]: Map(m["name"], next(it), m["type"], m["key_size"], m["leaf_size"],
                               m["max_entries"], m["key_desc"], m["leaf_desc"]) for m in ans["maps"]}
        progs = {f: Func(f, next(it)) for f in ans["funcs"]}
        links = list(it)
        return Program(name, maps, progs, links)


class Loader:
    """The daemon's side: one loader process, many requests (thread-safe)."""

    def __init__(self, start: bool = True) -> None:
        """``start=False``: the process starts with the first :meth:`load` (a session
        whose programs all come from the cache never starts it)."""
        self._lock = threading.Lock()
        self._closed = False
        self._used = False
        self._proc: subprocess.Popen[bytes] | None = None
        if start:
            self._start()

    def _start(self) -> None:
        self._ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # run as a script (-P: its directory is not put on sys.path): the loader
            # needs only the standard library and BCC, not cgwatch
            self._proc = subprocess.Popen(
                [sys.executable, "-P", os.path.abspath(__file__), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )
        except BaseException:
            self._ctl.close()
            raise
        finally:
            theirs.close()

    @property
    def started(self) -> bool:
        return self._proc is not None

    def load(self, src: str, cflags: list[str], funcs: dict[str, int] | None = None,
             cache: dict[str, str] | None = None) -> Any:
        """Compile, load and attach ``src``; returns a :class:`~.bpfsys.Program`.
        ``cache``: where and for which BCC the worker records it (see the module's doc)."""
        return self.ask(src, cflags, funcs, cache).result()

    def ask(self, src: str, cflags: list[str], funcs: dict[str, int] | None = None,
            cache: dict[str, str] | None = None) -> Asked:
        """Send the request for ``src`` and return at once: :meth:`Asked.result` waits for
        the program. Requests asked together compile together (see the module's doc)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        body: dict[str, Any] = {"src": src, "cflags": cflags, "funcs": funcs or {}}
        if cache is not None:
            body["cache"] = cache
        req = json.dumps(body).encode()
        try:
            with self._lock:
                if self._closed:
                    raise LoadError("the BPF loader was already closed")
                if self._proc is None:
                    self._start()
                self._used = True
                socket.send_fds(self._ctl, [req], [theirs.fileno()])
        except OSError as e:
            mine.close()
            raise LoadError(f"the BPF loader is gone ({e.strerror})") from None
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        return Asked(src, mine)

    def close(self) -> None:
        """Tell the loader we are done and reap it (its workers have answered by now)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._proc is None:
                return
            self._ctl.close()
        if not self._used:      # prestarted, then every program came from the cache:
            self._proc.kill()   # no need to wait for BCC's import to finish
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


_shared: Loader | None = None
_depth = 0
_shared_lock = threading.Lock()


def prestart() -> None:
    """Start the loader now, so BCC imports while the daemon does its own start-up.
    The next :func:`session` uses it and closes it at its end (and :func:`release`
    when nothing needed it: every program came from the cache)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Loader()


@contextmanager
def session() -> Iterator[Loader]:
    """The loader for a batch of loads: the prestarted one, or one that starts with
    its first load (none, when every program comes from the cache). The outermost
    session closes it, and with it the compiler's memory."""
    global _shared, _depth
    with _shared_lock:
        if _shared is None:
            _shared = Loader(start=False)
        _depth += 1
        loader = _shared
    try:
        yield loader
    finally:
        with _shared_lock:
            _depth -= 1
            last = _depth == 0 and _shared is loader
            if last:
                _shared = None
        if last:
            loader.close()


def release() -> None:
    """Close a loader that :func:`prestart` started and no session used."""
    global _shared
    with _shared_lock:
        loader = _shared if _depth == 0 else None
        if loader is not None:
            _shared = None
    if loader is not None:
        loader.close()


# --------------------------------------------------------------------------------------
# the loader process

def _describe(b: Any, lib: Any, req: dict[str, Any],
              own: frozenset[str] | None = None) -> tuple[dict[str, Any], list[int], dict[str, Any] | None]:
    """Load the requested extra programs; list every map, program and attachment, and
    (when the request asks for it) the cache entry. ``own``: in a unit compiled for
    several requests, the names of this request's maps and programs (:func:`merge`)."""
    for name, kind in req["funcs"].items():
        b.load_func(name.encode(), kind)
    maps, fds = [], []
    for i in range(lib.bpf_num_tables(b.module)):
        name = lib.bpf_table_name(b.module, i)
        fd = lib.bpf_table_fd_id(b.module, i)
        if fd < 0 or (own is not None and name.decode() not in own):
            continue
        key = lib.bpf_table_key_desc_id(b.module, i)
        leaf = lib.bpf_table_leaf_desc_id(b.module, i)
        kind = lib.bpf_table_type_id(b.module, i)
        if kind == RINGBUF:        # its records' type is what the program writes into it
            leaf = json.dumps(_event_desc(lib, b.module, name))
        maps.append({
            "name": name.decode(), "type": kind,
            "key_size": lib.bpf_table_key_size_id(b.module, i),
            "leaf_size": lib.bpf_table_leaf_size_id(b.module, i),
            "max_entries": lib.bpf_table_max_entries_id(b.module, i),
            "flags": lib.bpf_table_flags_id(b.module, i),
            "key_desc": json.loads(key) if key else None,
            "leaf_desc": json.loads(leaf) if leaf else None,
        })
        fds.append(fd)
    funcs, tps, raws = _owned(b, own)
    ans: dict[str, Any] = {"maps": maps}
    entry = None
    if req.get("cache"):
        import bcc

        try:
            if bcc.__version__ != req["cache"]["bcc"]:
                raise ValueError(f"BCC is {bcc.__version__}, the daemon read {req['cache']['bcc']}")
            entry = cache_entry(b, lib, req, maps, list(fds), funcs, tps, raws)
        except ValueError as e:
            ans["uncached"] = str(e)
    fds += [fn.fd for fn in funcs.values()]
    links = [*tps.values(), *raws.values()]
    fds += links
    if len(fds) > MAX_FDS:
        raise LoadError(f"{len(fds)} descriptors are more than one answer can carry")
    ans.update(funcs=list(funcs), links=len(links))
    return ans, fds, entry


def _str(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _owned(b: Any, own: frozenset[str] | None) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """The loaded programs (name -> BCC's function), and the tracepoint and raw tracepoint
    attachments (name -> link fd) that are ``own``'s (all of them: None)."""
    funcs = {_str(k): fn for k, fn in b.funcs.items() if own is None or _str(k) in own}
    tps = {_str(k): fd for k, fd in b.tracepoint_fds.items()
           if own is None or "tracepoint__" + _str(k).replace(":", "__") in own}
    raws = {_str(k): fd for k, fd in b.raw_tracepoint_fds.items()
            if own is None or "raw_tracepoint__" + _str(k) in own}
    return funcs, tps, raws


#: what a program's C source declares at file scope: BPF_TABLE("type", key, leaf, NAME, ..),
#: BPF_HASH(NAME, ..) and kin, the programs (RAW_)TRACEPOINT_PROBE names, and functions,
#: struct and enum tags that start a line
_DECLS = re.compile(r"""
      \bBPF_TABLE\w*\(\s*"[^"]*"\s*,[^,]*,[^,]*,\s*(?P<table>\w+)
    | \bBPF_(?!TABLE)[A-Z0-9_]+\(\s*(?P<map>\w+)
    | \bRAW_TRACEPOINT_PROBE\(\s*(?P<raw>\w+)\s*\)
    | \bTRACEPOINT_PROBE\(\s*(?P<group>\w+)\s*,\s*(?P<tp>\w+)\s*\)
    | ^(?:static\s+|inline\s+|__always_inline\s+)*(?:(?:struct|enum|unsigned|const)\s+)*\w+[\s*]+(?P<func>\w+)\s*\(
    | ^(?:struct|enum)\s+(?P<tag>\w+)\s*\{
""", re.M | re.X)
_MACROS = re.compile(r"^\s*#\s*define\s+(\w+)", re.M)


def declared(text: str) -> frozenset[str]:
    """The names a program's source declares at file scope, as BCC names them (a
    ``TRACEPOINT_PROBE(sched, sched_switch)`` is the program ``tracepoint__sched__sched_switch``).

    >>> sorted(declared('BPF_HASH(counts, u64, u64, 8);\\nBPF_TABLE("lru_hash", u64, struct x, seen, 8);\\n'
    ...                 'static __always_inline struct cgw *stats_of(u64 id)\\n{\\n    return lookup(id);\\n}\\n'
    ...                 'TRACEPOINT_PROBE(sched, sched_switch)\\nRAW_TRACEPOINT_PROBE(sched_wakeup)\\n'
    ...                 'struct cpu_state {\\n    u64 a;\\n};\\nint on_sample(void *ctx)\\n'))
    ['counts', 'cpu_state', 'on_sample', 'raw_tracepoint__sched_wakeup', 'seen', 'stats_of', 'tracepoint__sched__sched_switch']
    """
    out = set()
    for m in _DECLS.finditer(text):
        if m["group"]:
            out.add(f"tracepoint__{m['group']}__{m['tp']}")
        elif m["raw"]:
            out.add(f"raw_tracepoint__{m['raw']}")
        else:
            out.add(next(v for v in (m["table"], m["map"], m["func"], m["tag"]) if v))
    return frozenset(out)


def merge(reqs: list[dict[str, Any]]) -> tuple[str, list[str], list[frozenset[str]]]:
    """One translation unit for several requests: each program's source in turn, its -D
    flags defined before it and, with the macros it defines itself, undefined after it,
    so no program sees another's. Returns the text, the flags they share (all but -D)
    and what each request owns. Raises ValueError when they cannot share a unit: other
    compiler flags, a source that includes from a directory the flags do not name, or a
    name two of them declare.

    Shared headers are read once, at the first program's turn: nothing in them may
    depend on a program's flags (bpf/cgwatch.h keeps to that)."""
    common: list[str] | None = None
    parts: list[str] = []
    owners: dict[str, str] = {}
    owns: list[frozenset[str]] = []
    for req in reqs:
        src = req["src"]
        defs = [f[2:].partition("=") for f in req["cflags"] if f.startswith("-D")]
        rest = [f for f in req["cflags"] if not f.startswith("-D")]
        if common is None:
            common = rest
        elif rest != common:
            raise ValueError(f"{os.path.basename(src)} has other compiler flags")
        if f"-I{os.path.dirname(os.path.abspath(src))}" not in rest:
            raise ValueError(f"{os.path.basename(src)}: its directory is not on the include path")
        with open(src) as f:
            text = f.read()
        names = declared(text) | set(req["funcs"])
        for n in names:
            if n in owners:
                raise ValueError(f"{n} is declared by {owners[n]} and {os.path.basename(src)}")
            owners[n] = os.path.basename(src)
        owns.append(frozenset(names))
        undef = dict.fromkeys([*(n for n, _, _ in defs), *_MACROS.findall(text)])
        parts += [f"#define {n} {v if eq else 1}" for n, eq, v in defs]
        parts += [f"/* {os.path.basename(src)} */", text, *(f"#undef {n}" for n in undef)]
    return "\n".join(parts) + "\n", common or [], owns


RINGBUF = 27

# -- the cache of compiled programs: what the worker records ---------------------------------

#: the layout of a cache entry (part of its key: a new layout misses every old entry)
CACHE_FORMAT = 1
#: the map types an entry may create (no map of maps, no program array: their contents are fds)
CACHEABLE_MAPS = frozenset({1, 2, 5, 6, 7, 9, 10, RINGBUF})
#: BCC's program types for what it attaches by name (bcc.BPF.TRACEPOINT, .RAW_TRACEPOINT)
TRACEPOINT_PROG, RAW_TRACEPOINT_PROG = 5, 17
_LD_IMM64, _CALL, _PSEUDO_MAP_FD = 0x18, 0x85, 1


def relocations(code: bytes, map_fds: dict[int, str]) -> list[list[Any]]:
    """``[instruction index, map name]`` of every map a program's bytecode loads by fd
    (``ld_imm64`` with src_reg ``BPF_PSEUDO_MAP_FD``; BCC puts its fds in the imm).
    Raises ValueError at anything else a loader would have to fix up: a map value
    (src_reg 2), a function's address, a call into another function or the kernel.

    >>> import struct
    >>> ld = struct.pack("<BBhi", 0x18, 0x11, 0, 7) + bytes(8)
    >>> relocations(ld + struct.pack("<BBhi", 0x95, 0, 0, 0), {7: "m"})
    [[0, 'm']]
    >>> relocations(struct.pack("<BBhi", 0x18, 0x21, 0, 7) + bytes(8), {7: "m"})
    Traceback (most recent call last):
    ValueError: instruction 0 loads with src_reg 2
    """
    import struct

    if len(code) % 8:
        raise ValueError(f"{len(code)} bytes of bytecode is no whole number of instructions")
    out: list[list[Any]] = []
    i, n = 0, len(code) // 8
    while i < n:
        op, regs, _, imm = struct.unpack_from("<BBhi", code, i * 8)
        src = regs >> 4
        if op == _LD_IMM64:
            if src == _PSEUDO_MAP_FD:
                if imm not in map_fds:
                    raise ValueError(f"instruction {i} loads fd {imm}, which is no map of this program")
                out.append([i, map_fds[imm]])
            elif src:
                raise ValueError(f"instruction {i} loads with src_reg {src}")
            i += 2
            continue
        if op == _CALL and src:
            raise ValueError(f"instruction {i} calls with src_reg {src}")
        i += 1
    return out


def cache_entry(b: Any, lib: Any, req: dict[str, Any], maps: list[dict[str, Any]], map_fds: list[int],
                funcs: dict[str, Any], tps: dict[str, int], raws: dict[str, int]) -> dict[str, Any]:
    """What loading this compiled program again takes, without BCC: its maps, and per
    program (``funcs``, attached to ``tps`` and ``raws``: :func:`_owned`) its type,
    bytecode, map relocations and attachment. Raises ValueError naming what it cannot
    describe."""
    import base64

    by_fd = {fd: m["name"] for m, fd in zip(maps, map_fds)}
    for m in maps:
        if m["type"] not in CACHEABLE_MAPS:
            raise ValueError(f"map {m['name']} is of type {m['type']}")
    out, tps_seen, raws_seen = [], set(), set()
    for name in funcs:
        attach: list[str] | None = None
        if name in req["funcs"]:
            kind = req["funcs"][name]
        elif name.startswith("tracepoint__") and name[12:].replace("__", ":") in tps:
            kind, attach = TRACEPOINT_PROG, ["tracepoint", name[12:].replace("__", ":")]
            tps_seen.add(attach[1])
        elif name.startswith("raw_tracepoint__") and name[16:] in raws:
            kind, attach = RAW_TRACEPOINT_PROG, ["raw_tracepoint", name[16:]]
            raws_seen.add(attach[1])
        else:
            raise ValueError(f"program {name} is attached in a way the cache does not know")
        code = b.dump_func(name.encode())
        out.append({"name": name, "type": kind, "attach": attach, "relocs": relocations(code, by_fd),
                    "insns": base64.b64encode(code).decode()})
    if tps_seen != set(tps) or raws_seen != set(raws):
        raise ValueError("a tracepoint is attached to a program the cache does not know")
    return {"format": CACHE_FORMAT, "bcc": req["cache"]["bcc"], "src": os.path.basename(req["src"]),
            "license": (lib.bpf_module_license(b.module) or b"").decode(),
            "kern_version": lib.bpf_module_kern_version(b.module), "maps": maps, "funcs": out}


def write_entry(path: str, entry: dict[str, Any]) -> None:
    """Write a cache entry atomically (a file beside it, synced, renamed over it), then
    delete the entries of older builds of the same program (named ``<program>.<key>.json``)."""
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    prog = base.split(".", 1)[0]
    for other in os.listdir(d):
        if other != base and other.startswith(f"{prog}.") and other.endswith(".json"):
            try:
                os.unlink(os.path.join(d, other))
            except OSError:
                pass
#: BCC's event field types -> the C type names of its table descriptions
_EVENT_TYPES = {
    "char": "char", "s8": "char", "unsigned char": "unsigned char", "u8": "unsigned char",
    "short": "short", "s16": "short", "unsigned short": "unsigned short", "u16": "unsigned short",
    "int": "int", "s32": "int", "enum": "int", "unsigned int": "unsigned int", "u32": "unsigned int",
    "long": "long", "unsigned long": "unsigned long", "long long": "long long", "s64": "long long",
    "unsigned long long": "unsigned long long", "u64": "unsigned long long",
    "u8 *": "unsigned long", "char *": "unsigned long", "void *": "unsigned long",
}


def _event_desc(lib: Any, module: Any, name: bytes) -> list[Any]:
    """The struct a program writes into a ring buffer, as a table description (BCC
    records it from the program's ``ringbuf_output``/``ringbuf_reserve`` calls)."""
    import re

    fields: list[list[Any]] = []
    for i in range(lib.bpf_perf_event_fields(module, name)):
        fname, _, ftype = lib.bpf_perf_event_field(module, name, i).decode().partition("#")
        if ftype.startswith("enum "):
            ftype = "enum"
        m = re.match(r"(.+?) ?\[([0-9]+)\]$", ftype)
        if m:
            fields.append([fname, _EVENT_TYPES[m.group(1)], [int(m.group(2))]])
        else:
            fields.append([fname, _EVENT_TYPES[ftype]])
    return ["event", fields, "struct"]


def _lib() -> Any:
    """libbcc, with the signatures of what the worker calls."""
    import ctypes as ct

    from bcc.libbcc import lib

    for f, res, args in (("bpf_num_tables", ct.c_size_t, [ct.c_void_p]),
                         ("bpf_table_name", ct.c_char_p, [ct.c_void_p, ct.c_size_t]),
                         ("bpf_table_fd_id", ct.c_int, [ct.c_void_p, ct.c_size_t]),
                         ("bpf_table_key_desc_id", ct.c_char_p, [ct.c_void_p, ct.c_size_t]),
                         ("bpf_table_leaf_desc_id", ct.c_char_p, [ct.c_void_p, ct.c_size_t]),
                         ("bpf_table_key_size_id", ct.c_size_t, [ct.c_void_p, ct.c_size_t]),
                         ("bpf_table_leaf_size_id", ct.c_size_t, [ct.c_void_p, ct.c_size_t]),
                         ("bpf_table_type_id", ct.c_int, [ct.c_void_p, ct.c_ulonglong]),
                         ("bpf_table_max_entries_id", ct.c_ulonglong, [ct.c_void_p, ct.c_ulonglong]),
                         ("bpf_table_flags_id", ct.c_int, [ct.c_void_p, ct.c_ulonglong]),
                         ("bpf_module_license", ct.c_char_p, [ct.c_void_p]),
                         ("bpf_module_kern_version", ct.c_uint, [ct.c_void_p]),
                         ("bpf_perf_event_fields", ct.c_size_t, [ct.c_void_p, ct.c_char_p]),
                         ("bpf_perf_event_field", ct.c_char_p, [ct.c_void_p, ct.c_char_p, ct.c_size_t])):
        getattr(lib, f).restype = res
        getattr(lib, f).argtypes = args
    return lib


def _serve_all(batch: list[tuple[dict[str, Any], socket.socket]]) -> None:
    """One worker: compile what the loader holds as one unit when it can, else one by
    one; answer each request on its socket."""
    lib = _lib()
    if len(batch) > 1:
        try:
            answers = _compile_merged([req for req, _ in batch], lib)
        except Exception as e:     # BCC raises bare Exception with its own text
            print(f"cgwatch BPF loader: compiling {len(batch)} programs one by one: "
                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr, flush=True)
        else:
            for (req, reply), (ans, fds, entry) in zip(batch, answers):
                _answer(req, reply, ans, fds, entry)
            return
    for req, reply in batch:
        _serve(req, reply, lib)


def _compile_merged(reqs: list[dict[str, Any]], lib: Any) -> list[tuple[dict[str, Any], list[int], dict[str, Any] | None]]:
    """Compile, load and attach ``reqs`` as one unit (:func:`merge`) and describe each
    request's share. Raises when they cannot share a unit or the unit does not compile;
    nothing stays attached then."""
    from bcc import BPF

    text, flags, owns = merge(reqs)
    with _captured_stderr() as said:     # a unit that fails compiles again one by one, and says so then
        b = BPF(text=text.encode(), cflags=flags)
    try:
        tables = {lib.bpf_table_name(b.module, i).decode() for i in range(lib.bpf_num_tables(b.module))}
        for req in reqs:     # loaded before every name is checked against its owner (BCC loads once)
            for name, kind in req["funcs"].items():
                b.load_func(name.encode(), kind)
        everything = frozenset().union(*owns)
        stray = sorted((tables | set(_owned(b, None)[0])) - everything)
        if stray:
            raise ValueError(f"{', '.join(stray)} belongs to none of the programs")
        answers = [_describe(b, lib, req, own) for req, own in zip(reqs, owns)]
        unit = [os.path.basename(req["src"]) for req in reqs]
        for ans, _, _ in answers:
            ans["unit"] = unit
    except BaseException:
        b.cleanup()
        raise
    sys.stderr.write("".join(said))
    return answers


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """What is written to fd 2 (Clang's diagnostics) inside, collected instead of printed:
    the list yielded holds it afterwards."""
    import tempfile

    out: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            out.append(buf.read().decode(errors="replace"))


def _answer(req: dict[str, Any], reply: socket.socket, ans: dict[str, Any], fds: list[int],
            entry: dict[str, Any] | None) -> None:
    socket.send_fds(reply, [json.dumps(ans).encode()], fds)
    reply.close()
    if entry is not None:           # after the answer: the daemon need not wait for the disk
        try:
            write_entry(req["cache"]["path"], entry)
        except OSError as e:
            print(f"cgwatch BPF loader: could not cache {os.path.basename(req['src'])}: {e}",
                  file=sys.stderr, flush=True)


def _serve(req: dict[str, Any], reply: socket.socket, lib: Any) -> None:
    """Compile, attach and answer one request alone, and leave without BCC's clean-up
    (which would disable the perf events the daemon now shares)."""
    from bcc import BPF

    try:
        b = BPF(src_file=req["src"].encode(), cflags=req["cflags"])
        ans, fds, entry = _describe(b, lib, req)
    except Exception as e:  # BCC raises bare Exception with its own text
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        reply.send(json.dumps({"error": text}).encode())
        reply.close()
        return
    _answer(req, reply, ans, fds, entry)


def _big_mappings(maps: str, least: int) -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, file) of every mapping of a file of at least ``least`` bytes."""
    try:
        with open(maps) as f:
            rows = [line.split(None, 5) for line in f]
    except OSError:
        return []
    sizes: dict[str, int] = {}
    out = []
    for r in rows:
        if len(r) < 6 or not r[5].startswith("/"):
            continue
        path = r[5].strip()
        if path not in sizes:
            try:
                sizes[path] = os.stat(path).st_size
            except OSError:
                sizes[path] = 0
        if sizes[path] >= least:
            lo, _, hi = r[0].partition("-")
            out.append((int(lo, 16), int(hi, 16), r[1], path))
    return out


def read_ahead(maps: str = "/proc/self/maps", least: int = 1 << 20) -> int:
    """Ask the kernel to read every file of at least ``least`` bytes that this process maps
    (after ``import bcc``: BCC, LLVM and Clang, about 200 MB) into the page cache now, in the
    background; returns how many files it was asked for.

    On a cold cache (a fresh machine, or after the host reclaimed them) a compile otherwise
    pulls them in a page fault at a time, which made a first start take 3-8 s instead of
    about 2.3 s. It costs no memory of ours: page cache, not mapped pages.

    >>> read_ahead("/nonexistent")
    0
    """
    n = 0
    for path in sorted({m[3] for m in _big_mappings(maps, least)}):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            n += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return n


MADV_PAGEOUT = 21


def page_out(maps: str = "/proc/self/maps", least: int = 1 << 20) -> int:
    """Unmap the pages of big libraries that only this process maps and that it never wrote
    (``MADV_PAGEOUT``, Linux 5.4+; elsewhere nothing happens); returns the bytes asked for.

    Loading LLVM and Clang makes the dynamic linker read some 40 MB of their symbol and
    relocation tables, which no compile reads again; the loader would otherwise hold them,
    resident, all through the compile, at the daemon's start-up peak (measured: the loader
    and its worker 134 MB PSS, 100 MB with this). What a compile does need it faults in
    again from the page cache (:func:`read_ahead` after this keeps that there).

    >>> page_out("/nonexistent")
    0
    """
    import ctypes as ct

    libc = ct.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ct.c_void_p, ct.c_size_t, ct.c_int]
    n = 0
    for lo, hi, perms, _ in _big_mappings(maps, least):
        if "w" not in perms and libc.madvise(lo, hi - lo, MADV_PAGEOUT) == 0:
            n += hi - lo
    return n


def _gather(ctl: socket.socket) -> tuple[list[tuple[dict[str, Any], socket.socket]], bool]:
    """The next requests: one (waiting as long as it takes), then any that follow it
    within :data:`GATHER_S` of the one before. Also whether the daemon is done."""
    batch: list[tuple[dict[str, Any], socket.socket]] = []
    ctl.settimeout(None)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, _MSG, 1)
        except TimeoutError:
            return batch, False
        except OSError:
            return batch, True
        if not msg:
            return batch, True
        batch.append((json.loads(msg), socket.socket(fileno=fds[0])))
        ctl.settimeout(GATHER_S)


def main(fd: int) -> None:
    ctl = socket.socket(fileno=fd)
    try:
        import bcc  # noqa: F401  (the one import the workers share)
        err = ""
        page_out()        # what loading LLVM touched and no compile needs
        read_ahead()      # what the compiles will fault in, read now while the daemon starts
    except Exception as e:
        err = f"BCC did not import: {e}"
    done = False
    while not done:
        batch, done = _gather(ctl)
        if err:
            for _, reply in batch:
                reply.send(json.dumps({"error": err}).encode())
                reply.close()
            continue
        if not batch:
            continue
        # one worker at a time: each holds tens of MB of Clang and LLVM while it compiles
        pid = os.fork()
        if pid == 0:
            try:
                ctl.close()
                _serve_all(batch)
            except BaseException as e:     # the daemon sees the socket close and says so
                print(f"cgwatch BPF loader: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            finally:
                os._exit(0)
        for _, reply in batch:
            reply.close()
        os.waitpid(pid, 0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(int(sys.argv[1]))
