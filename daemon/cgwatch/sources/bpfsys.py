"""BPF maps, ring buffers and perf events through the ``bpf()`` system call, without BCC.

The daemon holds its programs as file descriptors handed over by a short-lived
loader process (:mod:`cgwatch.sources.loader`): BCC's compiler (LLVM and Clang,
some 130 MB) runs there and exits, and this module is all the daemon needs to
read what the programs count. It speaks the kernel's own interface: map lookups
and batch lookups, deletes and key walks, the ring buffer's shared pages, and
``perf_event_open`` for the profiler's sampling event.

A :class:`Program` offers the part of BCC's ``BPF`` object cgwatch uses
(``prog["map"]``, ``funcs``, ``close()``), and a :class:`Map` the part of BCC's
tables (``Key``, ``Leaf``, ``sLeaf``, ``keys()``, ``items()``, ``getvalue()``,
``del map[key]``, ``clear()``, ``walk()``, ``event()``), so the sources read the
same either way.
"""

from __future__ import annotations

import ctypes as ct
import errno
import mmap
import os
import platform
import struct
from collections.abc import Callable, Iterator
from typing import Any

#: the bpf() system call's number per architecture
_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "ppc64le": 361, "s390x": 351,
           "riscv64": 280, "loongarch64": 280}
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "arm64": 241, "ppc64le": 319, "s390x": 331,
                       "riscv64": 241, "loongarch64": 241}

# commands (include/uapi/linux/bpf.h)
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD = 5
RAW_TRACEPOINT_OPEN = 17
MAP_LOOKUP_BATCH = 24

# map types
MAP_HASH, MAP_ARRAY, MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_STACK_TRACE = 1, 2, 5, 6, 7
MAP_LRU_PERCPU_HASH, MAP_RINGBUF = 10, 27
PERCPU_TYPES = frozenset({MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_LRU_PERCPU_HASH})

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


class _ElemAttr(ct.Structure):
    _fields_ = [("map_fd", ct.c_uint32), ("pad", ct.c_uint32), ("key", ct.c_uint64),
                ("value", ct.c_uint64), ("flags", ct.c_uint64)]


class _BatchAttr(ct.Structure):
    _fields_ = [("in_batch", ct.c_uint64), ("out_batch", ct.c_uint64), ("keys", ct.c_uint64),
                ("values", ct.c_uint64), ("count", ct.c_uint32), ("map_fd", ct.c_uint32),
                ("elem_flags", ct.c_uint64), ("flags", ct.c_uint64)]


class _RawTpAttr(ct.Structure):
    _fields_ = [("name", ct.c_uint64), ("prog_fd", ct.c_uint32), ("pad", ct.c_uint32)]


class _MapCreateAttr(ct.Structure):
    _fields_ = [("map_type", ct.c_uint32), ("key_size", ct.c_uint32), ("value_size", ct.c_uint32),
                ("max_entries", ct.c_uint32), ("map_flags", ct.c_uint32), ("inner_map_fd", ct.c_uint32),
                ("numa_node", ct.c_uint32), ("map_name", ct.c_char * 16)]


class _ProgLoadAttr(ct.Structure):
    _fields_ = [("prog_type", ct.c_uint32), ("insn_cnt", ct.c_uint32), ("insns", ct.c_uint64),
                ("license", ct.c_uint64), ("log_level", ct.c_uint32), ("log_size", ct.c_uint32),
                ("log_buf", ct.c_uint64), ("kern_version", ct.c_uint32), ("prog_flags", ct.c_uint32),
                ("prog_name", ct.c_char * 16)]


def _nr(table: dict[str, int]) -> int:
    machine = platform.machine()
    try:
        return table[machine]
    except KeyError:
        raise OSError(errno.ENOSYS, f"cgwatch does not know this architecture's system calls ({machine})") from None


def bpf(cmd: int, attr: ct.Structure) -> int:
    """One bpf() call; raises OSError with the kernel's errno."""
    res = _libc.syscall(_nr(_NR_BPF), cmd, ct.byref(attr), ct.sizeof(attr))
    if res < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return int(res)


def _obj_name(name: str) -> bytes:
    """A map's or program's name as the kernel keeps it (15 characters, as BCC gives it)."""
    return "".join(c for c in name if c.isalnum() or c in "_.").encode()[:15]


def create_map(name: str, map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0) -> int:
    """``BPF_MAP_CREATE``; returns the new map's descriptor (raises OSError)."""
    attr = _MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                          max_entries=max_entries, map_flags=flags, map_name=_obj_name(name))
    return bpf(MAP_CREATE, attr)


#: the verifier's log of a program that failed to load (its last lines say why)
_LOG_SIZE = 1 << 20


def load_prog(name: str, prog_type: int, insns: bytes, license: str, kern_version: int = 0) -> int:
    """``BPF_PROG_LOAD``; returns the program's descriptor. A program the verifier
    rejects raises OSError whose message is the verifier's last line."""
    for prefix in ("tracepoint__", "raw_tracepoint__"):     # as BCC names them
        if name.startswith(prefix):
            name = name[len(prefix):]
    code = ct.create_string_buffer(insns, len(insns))
    lic = ct.create_string_buffer(license.encode())
    attr = _ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=ct.addressof(code),
                         license=ct.addressof(lic), kern_version=kern_version, prog_name=_obj_name(name))
    try:
        return bpf(PROG_LOAD, attr)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EINVAL):
            raise
        first = e
    # again with the verifier's log, only to say why (loading with a log is slower)
    buf = ct.create_string_buffer(_LOG_SIZE)
    attr.log_level, attr.log_size, attr.log_buf = 1, _LOG_SIZE, ct.addressof(buf)
    try:
        return bpf(PROG_LOAD, attr)
    except OSError as e:
        # the reason is the last line before the verifier's statistics ("processed N insns ...")
        lines = [x for x in buf.value.decode(errors="replace").splitlines()
                 if x.strip() and not x.startswith(("processed ", "verification time", "stack depth"))]
        why = lines[-1] if lines else e.strerror
        raise OSError(first.errno, f"{first.strerror}: {why}") from None


def attach_raw_tracepoint(prog_fd: int, tp: str) -> int:
    """``BPF_RAW_TRACEPOINT_OPEN``: run the program on the raw tracepoint ``tp``; closing the
    descriptor detaches it."""
    name = ct.create_string_buffer(tp.encode())
    return bpf(RAW_TRACEPOINT_OPEN, _RawTpAttr(name=ct.addressof(name), prog_fd=prog_fd))


def attach_tracepoint(prog_fd: int, events: str, group: str, name: str) -> int:
    """A perf event on the tracepoint ``group:name`` (``events``: tracefs's events
    directory) running the program, as BCC attaches it; closing the descriptor detaches it."""
    if "/" in group or "/" in name or group.startswith(".") or name.startswith("."):
        raise OSError(errno.EINVAL, f"bad tracepoint name {group}:{name}")
    with open(os.path.join(events, group, name, "id")) as f:
        tp_id = int(f.read())
    attr = _PerfAttr(type=_PERF_TYPE_TRACEPOINT, size=ct.sizeof(_PerfAttr), config=tp_id,
                     sample_freq=1, wakeup_events=1)          # sample_freq is sample_period here
    return _perf_attach(attr, 0, prog_fd, f"{group}:{name}")


def raw_tracepoints_supported() -> bool:
    """True when this kernel has ``BPF_RAW_TRACEPOINT_OPEN`` (4.17+).

    Asks the kernel itself: opening a raw tracepoint with no program fails with
    EBADF (or ENOENT) where the command exists, and EINVAL where it does not.
    """
    try:
        fd = attach_raw_tracepoint(0xFFFFFFFF, "sched_switch")
    except OSError as e:
        return e.errno != errno.EINVAL
    os.close(fd)                    # cannot happen with prog fd -1; never leak one
    return True


def possible_cpus() -> list[int]:
    """The CPUs the kernel may bring up (per-CPU map values have one slot each).

    >>> 0 in possible_cpus()
    True
    """
    return _cpus("possible")


def _cpus(which: str) -> list[int]:
    """A CPU list from sysfs (``0-3,6``) as numbers; [] when it cannot be read."""
    try:
        with open(f"/sys/devices/system/cpu/{which}") as f:
            text = f.read().strip()
        out: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except (OSError, ValueError):
        return []
    return out


_CTYPES = {
    "_Bool": ct.c_bool, "char": ct.c_char, "wchar_t": ct.c_wchar, "unsigned char": ct.c_ubyte,
    "short": ct.c_short, "unsigned short": ct.c_ushort, "int": ct.c_int, "unsigned int": ct.c_uint,
    "long": ct.c_long, "unsigned long": ct.c_ulong, "long long": ct.c_longlong,
    "unsigned long long": ct.c_ulonglong, "float": ct.c_float, "double": ct.c_double,
    "long double": ct.c_longdouble, "__int128": ct.c_int64 * 2, "unsigned __int128": ct.c_uint64 * 2,
}


def ctype(desc: Any) -> Any:
    """The ctypes type of a BCC type description (the JSON its compiler emits per map).

    >>> ctype("unsigned long long") is ct.c_ulonglong
    True
    >>> t = ctype(["ev", [["pid", "unsigned int"], ["comm", "char", [4]]], "struct"])
    >>> ct.sizeof(t), [f[0] for f in t._fields_]
    (8, ['pid', 'comm'])
    """
    if isinstance(desc, str):
        return _CTYPES[desc]
    anon: list[str] = []
    fields: list[tuple[Any, ...]] = []
    for f in desc[1]:
        if len(f) == 2:
            fields.append((f[0], ctype(f[1])))
        elif isinstance(f[2], list):
            fields.append((f[0], ctype(f[1]) * f[2][0]))
        elif isinstance(f[2], int):
            fields.append((f[0], ctype(f[1]), f[2]))          # a bit field
        elif f[2] in ("union", "struct", "struct_packed"):
            name = f[0] or f"__anon{len(anon)}"
            if not f[0]:
                anon.append(name)
            fields.append((name, ctype(f)))
        else:
            raise ValueError(f"cannot decode BPF type {f!r}")
    kind = desc[2] if len(desc) > 2 else "struct"
    base = ct.Union if kind == "union" else ct.Structure
    body: dict[str, Any] = {"_anonymous_": anon, "_fields_": fields}
    if kind == "struct_packed":
        body["_pack_"] = 1
    return type(str(desc[0]), (base,), body)


class Map:
    """One BPF map, by file descriptor, with BCC's table methods cgwatch uses."""

    def __init__(self, name: str, fd: int, map_type: int, key_size: int, value_size: int,
                 max_entries: int, key_desc: Any = None, leaf_desc: Any = None) -> None:
        self.name = name
        self.map_fd = self.fd = fd
        self.type = map_type
        self.key_size = key_size
        self.max_entries = max_entries
        self.percpu = map_type in PERCPU_TYPES
        self.ncpu = len(possible_cpus()) if self.percpu else 1
        self.Key: Any = ctype(key_desc) if key_desc else ct.c_uint32
        self.sLeaf: Any = ctype(leaf_desc) if leaf_desc else ct.c_uint8 * value_size
        #: one element's value in the kernel's layout (per-CPU maps: a slot per CPU, 8-aligned)
        self.stride = (value_size + 7) & ~7 if self.percpu else value_size
        self.value_size = self.stride * self.ncpu
        self.Leaf: Any = self.sLeaf * self.ncpu if self.percpu else self.sLeaf

    # -- single elements ----------------------------------------------------------
    def _key(self, key: Any) -> Any:
        if isinstance(key, int):
            key = self.Key(key)
        return key

    def lookup(self, key: Any) -> bytes | None:
        """The raw value of ``key`` (all CPUs' slots for a per-CPU map), or None."""
        k = self._key(key)
        buf = ct.create_string_buffer(self.value_size)
        try:
            bpf(MAP_LOOKUP_ELEM, _ElemAttr(map_fd=self.fd, key=ct.addressof(k), value=ct.addressof(buf)))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return buf.raw

    def getvalue(self, key: Any) -> Any:
        """The value as BCC gives it: a ``sLeaf``, or for per-CPU maps a list of one per CPU."""
        raw = self.lookup(key)
        if raw is None:
            raise KeyError(key)
        if not self.percpu:
            return self.sLeaf.from_buffer_copy(raw)
        vals = [self.sLeaf.from_buffer_copy(raw, i * self.stride) for i in range(self.ncpu)]
        return [v.value if hasattr(v, "value") else v for v in vals]

    __getitem__ = getvalue

    def __setitem__(self, key: Any, value: Any) -> None:
        k = self._key(key)
        bpf(MAP_UPDATE_ELEM, _ElemAttr(map_fd=self.fd, key=ct.addressof(k), value=ct.addressof(value)))

    def __delitem__(self, key: Any) -> None:
        k = self._key(key)
        try:
            bpf(MAP_DELETE_ELEM, _ElemAttr(map_fd=self.fd, key=ct.addressof(k)))
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise KeyError(key) from None
            raise

    # -- walking --------------------------------------------------------------------
    def keys(self) -> Iterator[Any]:
        """Every key now in the map (a snapshot's worth: keys deleted meanwhile may be missed)."""
        cur: Any = None
        while True:
            nxt = self.Key()
            attr = _ElemAttr(map_fd=self.fd, key=0 if cur is None else ct.addressof(cur),
                             value=ct.addressof(nxt))
            try:
                bpf(MAP_GET_NEXT_KEY, attr)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            yield nxt
            cur = nxt

    __iter__ = keys

    def items(self) -> Iterator[tuple[Any, Any]]:
        for k in list(self.keys()):
            try:
                yield k, self.getvalue(k)
            except KeyError:
                continue

    def clear(self) -> None:
        for k in list(self.keys()):
            try:
                del self[k]
            except KeyError:
                pass

    def walk(self, stack_id: int) -> Iterator[int]:
        """The addresses of a stack in a stack-trace map, innermost first."""
        raw = self.lookup(ct.c_uint32(stack_id))
        if raw is None:
            raise KeyError(stack_id)
        for (addr,) in struct.iter_unpack("<Q", raw):
            if not addr:
                return
            yield addr

    def lookup_batch(self, start: Any, out_batch: Any, keys: Any, values: Any, count: ct.c_uint32) -> None:
        """One ``BPF_MAP_LOOKUP_BATCH``; ``count`` goes in as room and comes back as found.
        Raises OSError (ENOENT: the walk is over, with ``count`` still valid)."""
        attr = _BatchAttr(in_batch=0 if start is None else ct.addressof(start),
                          out_batch=ct.addressof(out_batch), keys=ct.addressof(keys),
                          values=ct.addressof(values), count=count.value, map_fd=self.fd)
        try:
            bpf(MAP_LOOKUP_BATCH, attr)
        finally:
            count.value = attr.count

    def event(self, data: Any) -> Any:
        """A ring-buffer record as the map's declared event struct."""
        leaf = self.sLeaf
        size = ct.sizeof(leaf)
        if len(data) >= size:           # as the program wrote it: copied once, by ctypes
            return leaf.from_buffer_copy(data)
        return leaf.from_buffer_copy(bytes(data) + bytes(size - len(data)))


_BUSY, _DISCARD = 1 << 31, 1 << 30


class RingBuffer:
    """The consumer side of a ``BPF_MAP_TYPE_RINGBUF``, read from its shared pages.

    The kernel writes records into the data pages and moves the producer position;
    we read records up to it and move the consumer position, which frees the room.
    The data pages are mapped twice in a row, so a record that wraps is contiguous.
    """

    def __init__(self, m: Map) -> None:
        page = mmap.PAGESIZE
        self.size = m.max_entries
        self.mask = self.size - 1
        self._cons = mmap.mmap(m.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(m.fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data = memoryview(self._prod)[page:]
        self._page = page

    def consume(self, fn: Callable[[memoryview], None]) -> int:
        """Hand every committed record to ``fn`` (a view valid during the call); returns how many."""
        cons = struct.unpack_from("<Q", self._cons, 0)[0]
        n = 0
        more = True
        while more:                     # until a pass finds nothing new (as libbpf does)
            more = False
            prod = struct.unpack_from("<Q", self._prod, 0)[0]
            while cons < prod:
                off = cons & self.mask
                length = struct.unpack_from("<I", self._data, off)[0]
                if length & _BUSY:          # reserved, not yet committed: the rest waits
                    return n
                size = length & ~(_BUSY | _DISCARD)
                if not length & _DISCARD:
                    fn(self._data[off + 8:off + 8 + size])
                    n += 1
                cons += (size + 8 + 7) & ~7
                struct.pack_into("<Q", self._cons, 0, cons)
                more = True
        return n

    def close(self) -> None:
        self._data.release()
        self._prod.close()
        self._cons.close()


class Func:
    """A loaded BPF program: its name and file descriptor."""

    __slots__ = ("name", "fd")

    def __init__(self, name: str, fd: int) -> None:
        self.name, self.fd = name, fd


class Program:
    """What the loader handed over for one ``.bpf.c`` file: maps, programs, and the
    file descriptors that keep its probes attached (closing them detaches)."""

    def __init__(self, name: str, maps: dict[str, Map], funcs: dict[str, Func], links: list[int]) -> None:
        self.name = name
        self.maps = maps
        self.funcs = funcs
        self.links = links
        self._rings: dict[str, tuple[RingBuffer, Callable[..., None]]] = {}
        self._perf: list[int] = []

    def __getitem__(self, name: str) -> Map:
        return self.maps[name]

    def __contains__(self, name: str) -> bool:
        return name in self.maps

    # -- ring buffers (BCC's open_ring_buffer / ring_buffer_consume) --------------------
    def open_ring_buffer(self, name: str, fn: Callable[[memoryview], None]) -> None:
        self._rings[name] = (RingBuffer(self.maps[name]), fn)

    def ring_buffer_consume(self) -> None:
        for ring, fn in self._rings.values():
            ring.consume(fn)

    # -- perf events (the profiler's sampling clock) ----------------------------------------
    def attach_perf_event(self, func: str, sample_freq: int) -> None:
        """Run ``func`` on the software CPU clock of every online CPU, ``sample_freq`` times a second."""
        prog = self.funcs[func].fd
        fds: list[int] = []
        try:
            for cpu in _cpus("online"):
                fds.append(_perf_clock(cpu, sample_freq, prog))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        self._perf += fds

    def detach_perf_event(self) -> None:
        fds, self._perf = self._perf, []
        for fd in fds:
            _ioctl(fd, _PERF_EVENT_IOC_DISABLE, 0)
            os.close(fd)

    def close(self) -> None:
        """Detach every probe and let go of the maps (the kernel frees them with the last fd)."""
        self.detach_perf_event()
        for ring, _ in self._rings.values():
            ring.close()
        self._rings.clear()
        fds = [*self.links, *(f.fd for f in self.funcs.values()), *(m.fd for m in self.maps.values())]
        self.links, self.funcs, self.maps = [], {}, {}
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    cleanup = close


# perf_event_open: struct perf_event_attr up to sample_type/flags (PERF_ATTR_SIZE_VER0 is 64 bytes)
class _PerfAttr(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("size", ct.c_uint32), ("config", ct.c_uint64),
                ("sample_freq", ct.c_uint64), ("sample_type", ct.c_uint64),
                ("read_format", ct.c_uint64), ("flags", ct.c_uint64),
                ("wakeup_events", ct.c_uint32), ("bp_type", ct.c_uint32), ("config1", ct.c_uint64)]


_PERF_TYPE_SOFTWARE, _PERF_TYPE_TRACEPOINT, _PERF_COUNT_SW_CPU_CLOCK = 1, 2, 0
_PERF_FLAG_FD_CLOEXEC = 1 << 3
_ATTR_FREQ = 1 << 10                      # perf_event_attr.freq
_PERF_EVENT_IOC_ENABLE, _PERF_EVENT_IOC_DISABLE, _PERF_EVENT_IOC_SET_BPF = 0x2400, 0x2401, 0x40042408


def _ioctl(fd: int, req: int, arg: int) -> None:
    if _libc.ioctl(fd, ct.c_ulong(req), ct.c_long(arg)) < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))


def _perf_clock(cpu: int, freq: int, prog_fd: int) -> int:
    attr = _PerfAttr(type=_PERF_TYPE_SOFTWARE, size=ct.sizeof(_PerfAttr), config=_PERF_COUNT_SW_CPU_CLOCK,
                     sample_freq=freq, flags=_ATTR_FREQ)
    return _perf_attach(attr, cpu, prog_fd, f"CPU {cpu}")


def _perf_attach(attr: _PerfAttr, cpu: int, prog_fd: int, what: str) -> int:
    """A perf event of every task on ``cpu`` (-1: every CPU) running ``prog_fd``, enabled."""
    fd = _libc.syscall(_nr(_NR_PERF_EVENT_OPEN), ct.byref(attr), -1, cpu, -1, _PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ct.get_errno()
        raise OSError(err, f"perf_event_open on {what}: {os.strerror(err)}")
    try:
        _ioctl(fd, _PERF_EVENT_IOC_SET_BPF, prog_fd)
        _ioctl(fd, _PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return int(fd)
