"""The part every BPF source shares: maps of per-cgroup counters in, per-container
deltas out, and the ring buffer's rare events.

Counters stay cumulative in the kernel. Each read is compared with the
previous one *per cgroup id*, the differences are summed per container (a
container may span several cgroups), and entries of cgroups that are gone are
deleted from the maps after their last counts were taken.

A rate is a delta over the time between *the two reads that produced it*, each
read timed as it happens (:meth:`KernelSource.delta_rows`), never over two ticks'
``now``: a tick's reads come some time after ``now`` (identity, ring buffers,
the collecting thread waiting for the GIL or a CPU), and that lag changes from
tick to tick. The cgroupfs source and the cpu source's ``cpu.stat`` do the same
per container (each counter over the times of that container's own two reads).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from ..model import Container, Event, Frame
from .bpf import PerCpuTable, Probe, load, lost_count, probe_flags

log = logging.getLogger("cgwatch.sources")


class Resolver(Protocol):
    """What a BPF source needs from identity (see cgwatch.identity.Resolver)."""

    def container(self, cgid: int, now: float) -> Container: ...

    def alive(self, cgid: int) -> bool: ...

    @property
    def generation(self) -> Any:
        """Changes whenever container() or alive() may answer differently."""


class KernelSource:
    """Base of the BPF sources: load, read deltas, forget the dead, poll events."""

    name = "kernel"
    program = ""
    #: the loaded program (None only in a source built without one, as unit tests build them)
    bpf: Any = None
    tables: tuple[str, ...] = ()
    probes: tuple[Probe, ...] = ()
    metrics: tuple[str, ...] = ()
    #: metric -> index of the counter (in the first table's struct) it is the rate of
    rate_fields: dict[str, int] = {}
    #: what every read is timed with (monotonic: a stepped wall clock bends no rate; tests fake it)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, resolver: Resolver, cflags: Iterable[str] = ()) -> None:
        self.resolver = resolver
        flags, self.absent = probe_flags(self.probes, self.name)
        self.cflags = [*flags, *self.extra_flags(flags), *cflags]
        self.bpf = load(self.program, self.cflags)
        self.readers = {t: PerCpuTable(self.bpf[t]) for t in self.tables}
        #: table -> the cgroup ids and counters of its latest read
        self._prev: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        #: table -> (its ids as bytes, the resolver's generation, what _containers made of them)
        self._rows: dict[str, tuple[bytes, Any, Any]] = {}
        # the maps count from here on: a cgroup's first read is a delta from zero since load
        self._read_at: dict[str, float] = dict.fromkeys(self.tables, self.clock())
        self._pending: list[Event] = []
        self._lost_reported = 0
        self._mono_offset = time.time() - time.monotonic()
        self._ring = self._open_ring()

    # -- hooks for subclasses --------------------------------------------------
    def extra_flags(self, have: list[str]) -> list[str]:
        """More -D flags, given those of the tracepoints this kernel has."""
        return []

    def decode(self, rec: Any, container: Container, ts: float) -> Event | None:
        return None

    def collect(self, now: float, containers: Iterable[Container]) -> Frame:
        """Per-second rates of ``rate_fields`` for every container."""
        table = self.tables[0]
        cs, d, dt = self.delta_rows(table, now)
        if dt <= 0:
            return Frame()
        cs, d = with_idle(cs, d, containers)
        names = [m for m in self.rate_fields if m not in self.absent]
        cols = [self.rate_fields[m] for m in names]
        rates = (d[:, cols].astype(np.float64) / dt).tolist()      # float(v[i]) / dt, all at once
        return row_samples(now, cs, names, rates)

    # -- counters ----------------------------------------------------------------
    def delta_rows(self, table: str, now: float) -> tuple[list[Container], np.ndarray, float]:
        """What each container's cgroups' counters grew since the last read of ``table``:
        the containers (in the order the map listed their first cgroup), one row of
        counters each (summed over its cgroups), and the seconds between that read and
        this one. A cgroup seen first counts from zero; one whose counters went backwards
        (wrapped, or made anew) counts from zero again.

        Each read is timed at its middle (the batch read of one map takes well under
        a millisecond); ``now``, the tick's time, only names containers. The arithmetic
        is one numpy operation over the whole map, not one per cgroup.
        """
        reader = self.readers[table]
        t0 = self.clock()
        keys, vals = reader.read_rows()
        t = (t0 + self.clock()) / 2
        dt, self._read_at[table] = t - self._read_at.get(table, t), t
        pk, pv = self._prev.get(table, _NONE)
        self._prev[table] = keys, vals
        if not len(keys):
            return [], np.zeros((0, reader.nfields), dtype=np.uint64), dt
        d = vals - _aligned(keys, pk, pv)
        wrapped = (d > vals).any(axis=1)               # wrapped or recreated: from zero
        if wrapped.any():
            d[wrapped] = vals[wrapped]
        cs, where, dead = self._containers(table, keys, now)
        if where is not None:                          # a container of several cgroups: add up
            summed = np.zeros((len(cs), d.shape[1]), dtype=d.dtype)
            np.add.at(summed, where, d)
            d = summed
        if dead:
            reader.delete(dead)
            keep = ~np.isin(keys, np.array(dead, dtype=np.uint64))
            self._prev[table] = keys[keep], vals[keep]
        return cs, d, dt

    def _containers(self, table: str, keys: np.ndarray, now: float) -> tuple[list[Container], np.ndarray | None, list[int]]:
        """The containers of a map's cgroup ids, in order of first appearance; for each id
        the row of its container (None when every container has one id); the ids of
        cgroups that are gone. Kept while the ids and the resolver's generation stay."""
        gen, raw = self.resolver.generation, keys.tobytes()
        hit = self._rows.get(table)
        if hit is not None and hit[0] == raw and hit[1] == gen:
            return hit[2]
        container, alive = self.resolver.container, self.resolver.alive
        rows: dict[str, int] = {}
        cs: list[Container] = []
        where: list[int] = []
        dead = []
        for k in keys.tolist():
            c = container(k, now)
            j = rows.get(c.id)
            if j is None:
                j = rows[c.id] = len(cs)
                cs.append(c)
            where.append(j)
            if not alive(k):
                dead.append(k)
        out = cs, (np.array(where) if len(cs) < len(where) else None), dead
        # after container() ran: looking ids up may move the generation (a cgroup learnt)
        self._rows[table] = (raw, self.resolver.generation, out)
        return out

    # -- events ------------------------------------------------------------------
    def _open_ring(self) -> bool:
        # each program names its ring and its loss counter after itself (the loader may
        # compile the programs as one unit, where every map name is the unit's)
        if f"{self.program}_events" not in self.bpf:
            return False
        self._events = self.bpf[f"{self.program}_events"]
        self.bpf.open_ring_buffer(f"{self.program}_events", self._on_event)
        return True

    def _on_event(self, data: memoryview) -> None:
        rec = self._events.event(data)
        ts = rec.ts_ns / 1e9 + self._mono_offset
        container = self.resolver.container(rec.cgroup_id, ts)
        ev = self.decode(rec, container, ts)
        if ev is not None:
            self._pending.append(ev)

    def events(self) -> list[Event]:
        """Events the ring buffer holds now (non-blocking), oldest first."""
        if not self._ring:
            return []
        self.bpf.ring_buffer_consume()
        lost = lost_count(self.bpf[f"{self.program}_lost"])
        if lost > self._lost_reported:
            log.warning("%s: ring buffer full, %d events lost (%d in all)",
                        self.name, lost - self._lost_reported, lost)
            self._lost_reported = lost
        out, self._pending = self._pending, []
        return out

    @property
    def lost_events(self) -> int:
        return self._lost_reported

    def close(self) -> None:
        bpf, self.bpf = self.bpf, None
        if bpf is not None:
            bpf.cleanup()


_NONE = (np.zeros(0, dtype=np.uint64), np.zeros((0, 0), dtype=np.uint64))


def _aligned(keys: np.ndarray, pk: np.ndarray, pv: np.ndarray) -> np.ndarray:
    """The previous read's counters ``pv`` (of ids ``pk``) in the rows of ``keys``;
    zeros for an id seen first. The map lists its ids in the same order from one
    read to the next until one comes or goes, so that is the case tried first.

    >>> k = np.array([7, 9, 8], dtype=np.uint64)
    >>> _aligned(k, np.array([8, 7], dtype=np.uint64), np.array([[80], [70]], dtype=np.uint64)).tolist()
    [[70], [0], [80]]
    """
    if not len(pk):
        return np.zeros(1, dtype=np.uint64)          # broadcasts: everything counts from zero
    if len(pk) == len(keys) and np.array_equal(pk, keys):
        return pv
    out = np.zeros((len(keys), pv.shape[1]), dtype=pv.dtype)
    order = np.argsort(pk)
    sk = pk[order]
    pos = np.minimum(np.searchsorted(sk, keys), len(sk) - 1)
    hit = sk[pos] == keys
    out[hit] = pv[order[pos[hit]]]
    return out


def cstr(buf: Any) -> str:
    """A NUL-terminated C char array as text.

    >>> import ctypes
    >>> cstr((ctypes.c_char * 8)(*b"sh\\0xx"))
    'sh'
    """
    return bytes(buf).split(b"\0", 1)[0].decode("utf-8", "replace")


def with_idle(cs: list[Container], d: np.ndarray,
              containers: Iterable[Container]) -> tuple[list[Container], np.ndarray]:
    """The containers and delta rows of :meth:`KernelSource.delta_rows`, followed by
    every alive container the map had nothing for (a row of zeros: alive and idle)."""
    have = {c.id for c in cs}
    extra: dict[str, Container] = {}
    for c in containers:
        if c.id not in have:
            extra.setdefault(c.id, c)     # one row per id, the first Container given for it
    if not extra:
        return cs, d
    zeros = np.zeros((len(extra), d.shape[1]), dtype=d.dtype)
    return cs + list(extra.values()), np.concatenate([d, zeros])


def row_samples(now: float, cs: list[Container], names: list[str],
                rows: list[list[float | None]]) -> Frame:
    """The Samples of ``names[j]`` = ``rows[i][j]`` for each container ``cs[i]`` (one each), None
    skipped: one row of the Frame per container."""
    return Frame([(c, now, {m: v for m, v in zip(names, row) if v is not None}) for c, row in zip(cs, rows)])
