"""The part every BPF source shares: maps of per-cgroup counters in, per-container
deltas out, and the ring buffer's rare events.

Counters stay cumulative in the kernel. Each read is compared with the
previous one *per cgroup id*, the differences are summed per container (a
container may span several cgroups), and entries of cgroups that are gone are
deleted from the maps after their last counts were taken.

A rate is a delta over the time between *the two reads that produced it*, each
read timed as it happens (:meth:`KernelSource.deltas`), never over two ticks'
``now``: a tick's reads come some time after ``now`` (identity, ring buffers,
the collecting thread waiting for the GIL or a CPU), and that lag changes from
tick to tick. The cgroupfs source and the cpu source's ``cpu.stat`` do the same
per container (:class:`~cgwatch.sources.base.Rates` fed with read times).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from ..model import Container, Event
from .bpf import PerCpuTable, Probe, load, lost_count, probe_flags

log = logging.getLogger("cgwatch.sources")


class Resolver(Protocol):
    """What a BPF source needs from identity (see cgwatch.identity.Resolver)."""

    def container(self, cgid: int, now: float) -> Container: ...

    def alive(self, cgid: int) -> bool: ...


Deltas = dict[str, tuple[Container, np.ndarray]]


class KernelSource:
    """Base of the BPF sources: load, read deltas, forget the dead, poll events."""

    name = "kernel"
    program = ""
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
        self._prev: dict[str, dict[int, np.ndarray]] = {t: {} for t in self.tables}
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

    def collect(self, now: float, containers: Iterable[Container]) -> list[Any]:
        """Per-second rates of ``rate_fields`` for every container."""
        table = self.tables[0]
        d, dt = self.deltas(table, now)
        if dt <= 0:
            return []
        fields = {m: (lambda v, i=i: float(v[i]) / dt) for m, i in self.rate_fields.items()}
        return rate_samples(now, d, containers, self.readers[table].nfields, fields, self.absent)

    # -- counters ----------------------------------------------------------------
    def deltas(self, table: str, now: float) -> tuple[Deltas, float]:
        """Per-container sums of what each cgroup's counters grew since the last read
        of ``table``, and the seconds between that read and this one.

        Each read is timed at its middle (the batch read of one map takes well under
        a millisecond); ``now``, the tick's time, only names containers.
        """
        t0 = self.clock()
        cur = self.readers[table].read()
        t = (t0 + self.clock()) / 2
        dt, self._read_at[table] = t - self._read_at.get(table, t), t
        prev = self._prev[table]
        out: Deltas = {}
        dead = []
        for cgid, vals in cur.items():
            before = prev.get(cgid)
            d = vals if before is None else vals - before
            if before is not None and (d > vals).any():   # wrapped or recreated
                d = vals
            c = self.resolver.container(cgid, now)
            hit = out.get(c.id)
            if hit is None:
                out[c.id] = (c, d.copy())
            else:
                hit[1][:] += d
            if not self.resolver.alive(cgid):
                dead.append(cgid)
        if dead:
            self.readers[table].delete(dead)
            for cgid in dead:
                cur.pop(cgid, None)
        self._prev[table] = cur
        return out, dt

    # -- events ------------------------------------------------------------------
    def _open_ring(self) -> bool:
        if "events" not in self.bpf:
            return False
        self.bpf.open_ring_buffer("events", self._on_event)
        return True

    def _on_event(self, data: memoryview) -> None:
        rec = self.bpf["events"].event(data)
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
        lost = lost_count(self.bpf["lost"])
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


def cstr(buf: Any) -> str:
    """A NUL-terminated C char array as text.

    >>> import ctypes
    >>> cstr((ctypes.c_char * 8)(*b"sh\\0xx"))
    'sh'
    """
    return bytes(buf).split(b"\0", 1)[0].decode("utf-8", "replace")


def rate_samples(
    now: float, deltas: Deltas, containers: Iterable[Container], width: int,
    fields: dict[str, Callable[[np.ndarray], float | None]], absent: set[str],
) -> list[Any]:
    """Samples of per-field rates for every container alive or seen active.

    ``fields`` maps a metric name to how it is computed from a container's
    delta vector of ``width`` counters. Alive containers with no activity
    count zero; metrics in ``absent`` are skipped.
    """
    from ..model import Sample

    out = []
    zero = np.zeros(width, dtype=np.uint64)
    for c in containers:
        if c.id not in deltas:
            deltas[c.id] = (c, zero)
    for c, d in deltas.values():
        for metric, fn in fields.items():
            if metric in absent:
                continue
            v = fn(d)
            if v is not None:
                out.append(Sample(now, c, metric, v))
    return out
