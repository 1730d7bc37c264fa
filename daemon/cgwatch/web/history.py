"""Bounded in-memory history for the dashboard: recent values, events and alert changes per container.

Per container, :class:`History` keeps

- a *fine* ring: every sample of the last 2 minutes (one slot per collection,
  shared by all the container's metrics; values as float32, NaN where a metric
  sent nothing in that slot);
- a *coarse* ring: 20 s bucket means for the last hour, filled when a bucket closes;
- the last 200 notable events (OOM kills, fatal signals, failed exits, exec
  storms, start/stop) and the last 200 alert state changes.

At most ``max_containers`` are kept; the least recently updated is dropped
first, and one that sent nothing for an hour is forgotten. :meth:`add` is the
hot path (a dict lookup, a compare and an array store per sample).

Examples
--------
>>> h = History(interval_s=1.0)
>>> for t in range(100, 130):
...     h.add(float(t), "4f1c", "cpu.usage_cores", t / 100)
>>> h.series("4f1c", "cpu.usage_cores", 127.0)
[(127.0, 1.2699999809265137), (128.0, 1.2799999713897705), (129.0, 1.2899999618530273)]
>>> h.series("4f1c", "cpu.usage_cores", 0.0)[:2]      # older than the fine ring's start: coarse means first
[(100.0, 1.0), (101.0, 1.0099999904632568)]
>>> h.metrics("4f1c"), h.series("nope", "cpu.usage_cores", 0.0)
(['cpu.usage_cores'], None)
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import Alert, Container, Event, Sample, rows_of

__all__ = ["COARSE_S", "FINE_S", "HOUR_S", "SPARK_S", "History"]

#: how far back the fine ring reaches (seconds); before that the coarse 20 s means serve (and the
#: 15-minute sparklines are drawn from them)
FINE_S = 120.0
#: the overview's sparklines reach back this far (drawn from the coarse means)
SPARK_S = 900.0
#: coarse bucket width and how far back coarse buckets reach (seconds)
COARSE_S = 20.0
HOUR_S = 3600.0
#: entries kept per container in the events ring and the alert-changes ring
EVENTS_KEPT = 200
#: exec events in one batch of one container that count as an exec storm
EXEC_STORM = 20
#: an exec of a binary a container had not run is kept once it has been watched this long
#: (before that, every binary is new to us), at most NEW_EXECS of them a batch, and the
#: binaries it ran are remembered up to EXECS_KNOWN per container
NEW_EXEC_AFTER_S, NEW_EXECS, EXECS_KNOWN = 600.0, 3, 1024
#: containers whose last image is remembered (to tell an image change), at most
IMAGES_KNOWN = 10_000
_NAN = float("nan")


@dataclass(slots=True)
class _Ring:
    container: Container | None
    ts: array[float]             # fine slot -> Unix time
    pos: int                     # the latest fine slot
    last_ts: float
    values: dict[str, array[float]]
    bucket: int                  # current coarse bucket number (ts // COARSE_S)
    bucket_pos: int              # fine slot where the current bucket started
    cts: array[float]            # coarse slot -> bucket start
    cpos: int
    coarse: dict[str, array[float]]
    events: deque[dict[str, Any]]
    alerts: deque[dict[str, Any]]
    born: float = 0.0            # when the container was first seen
    execs: set[str] | None = None  # the binaries it ran (see NEW_EXEC_AFTER_S)


def _nan_array(n: int) -> array[float]:
    return array("f", [_NAN]) * n


class History:
    """Recent samples, events and alert changes for up to ``max_containers`` containers.

    >>> h = History(interval_s=1.0, max_containers=2)
    >>> for cid in ("a", "b", "c"):
    ...     h.add(1.0, cid, "m", 1.0)
    >>> h.containers(), h.nbytes() > 0
    (['b', 'c'], True)
    """

    def __init__(self, interval_s: float = 1.0, max_containers: int = 512) -> None:
        self.fine_n = max(2, min(int(math.ceil(FINE_S / max(interval_s, 0.05))) + 1, 18001))
        self.coarse_n = int(HOUR_S / COARSE_S) + 1
        self.max_containers = max_containers
        self.dropped = 0
        self._rings: OrderedDict[str, _Ring] = OrderedDict()
        self._last_expire = 0.0
        #: container name (a pod's container: its workload) -> the image it ran last
        self._images: OrderedDict[str, str] = OrderedDict()

    # -- writing -------------------------------------------------------------------------------

    def _ring(self, cid: str, ts: float) -> _Ring:
        r = self._rings.get(cid)
        if r is None:
            while len(self._rings) >= self.max_containers:
                self._rings.popitem(last=False)
                self.dropped += 1
            b = int(ts // COARSE_S)
            r = self._rings[cid] = _Ring(None, array("d", [_NAN]) * self.fine_n, 0, ts, {}, b, 0,
                                         array("d", [_NAN]) * self.coarse_n, 0, {},
                                         deque(maxlen=EVENTS_KEPT), deque(maxlen=EVENTS_KEPT), ts)
            r.ts[0] = ts
        return r

    def _advance(self, r: _Ring, ts: float, cid: str, values: dict[str, float]) -> None:
        """Open a new fine slot at ``ts`` (closing the coarse bucket when it changed), holding
        ``values`` and NaN for every other metric of the container."""
        b = int(ts // COARSE_S)
        if b != r.bucket:
            self._close_bucket(r)
            r.bucket = b
            r.bucket_pos = (r.pos + 1) % self.fine_n
        r.pos = pos = (r.pos + 1) % self.fine_n
        r.ts[pos] = ts
        r.last_ts = ts
        self._rings.move_to_end(cid)
        get, stored = values.get, 0           # one pass: each column takes its value or NaN
        for m, vals in r.values.items():
            v = vals[pos] = get(m, _NAN)
            if v == v:
                stored += 1
        if stored < len(values):              # a metric new to the container (or a NaN value)
            self._store(r, values)

    def _close_bucket(self, r: _Ring) -> None:
        start, end = r.bucket_pos, r.pos
        r.cpos = cpos = (r.cpos + 1) % self.coarse_n
        r.cts[cpos] = r.bucket * COARSE_S
        for metric, vals in r.values.items():
            seg = vals[start:end + 1] if start <= end else vals[start:] + vals[:end + 1]   # slices: copied in C
            got = [v for v in seg if v == v]
            col = r.coarse.get(metric)
            if col is None:
                col = r.coarse[metric] = _nan_array(self.coarse_n)
            col[cpos] = sum(got) / len(got) if got else _NAN
        for metric, col in r.coarse.items():
            if metric not in r.values:
                col[cpos] = _NAN

    def add(self, ts: float, container_id: str, metric: str, value: float) -> None:
        """Record one value; samples of one container arrive in time order.

        >>> h = History(); h.add(1.0, "a", "m", 2.5); h.series("a", "m", 0.0)
        [(1.0, 2.5)]
        """
        self._put(container_id, ts, {metric: value})

    def _put(self, container_id: str, ts: float, values: dict[str, float]) -> _Ring | None:
        """Put ``values`` in the container's fine slot at ``ts`` (a new slot when ``ts`` is newer
        than its current one) and return its ring; None when ``ts`` is older than the slot: the
        ring only moves forward."""
        r = self._rings.get(container_id)
        if r is None:
            r = self._ring(container_id, ts)
        elif ts != r.last_ts:
            if ts < r.last_ts:
                return None
            self._advance(r, ts, container_id, values)
            return r
        self._store(r, values)
        return r

    def _store(self, r: _Ring, values: dict[str, float]) -> None:
        """Put ``values`` in the ring's current fine slot."""
        pos, cols = r.pos, r.values
        for m, v in values.items():
            vals = cols.get(m)
            if vals is None:
                vals = cols[m] = _nan_array(self.fine_n)
            vals[pos] = v

    def add_many(self, samples: Iterable[Sample]) -> None:
        """:meth:`add` each :class:`~cgwatch.model.Sample`, remembering who each container is.

        >>> web = Container(id="4f1c", name="web-1", runtime="docker")
        >>> h = History(); h.add_many([Sample(5.0, web, "cpu.usage_cores", 0.5)])
        >>> h.container("4f1c").name, h.series("4f1c", "cpu.usage_cores", 0.0)
        ('web-1', [(5.0, 0.5)])
        """
        for c, ts, values in rows_of(samples):
            r = self._put(c.id, ts, values)
            if r is not None and r.container is not c:
                if c.image and (r.container is None or r.container.image != c.image):
                    self._image(c, ts)
                r.container = c

    def _image(self, c: Container, ts: float) -> None:
        """Note the image ``c`` runs; one other than the last its name (its pod and container
        name in Kubernetes: a re-created container keeps it) ran is an ``image_change``."""
        key = c.workload if c.pod else c.name
        was = self._images.pop(key, None)
        self._images[key] = c.image
        if len(self._images) > IMAGES_KNOWN:
            self._images.popitem(last=False)
        if was is not None and was != c.image:
            self._keep_event(ts, c, "image_change", {"from": was, "to": c.image})

    def event(self, e: Event) -> dict[str, Any] | None:
        """Keep ``e`` if the dashboard marks it (not every exec or clean exit); returns the entry kept.

        >>> web = Container(id="4f1c", name="web-1", runtime="docker")
        >>> h = History()
        >>> h.event(Event(1.0, web, "exit", {"code": 0})) is None
        True
        >>> h.event(Event(2.0, web, "oom_kill", {"pid": 7, "comm": "java"}))
        {'ts': 2.0, 'container': '4f1c', 'name': 'web-1', 'kind': 'oom_kill', 'fields': {'pid': 7, 'comm': 'java'}}
        """
        if e.kind == "exec" or (e.kind == "exit" and not e.fields.get("code") and not e.fields.get("signal")):
            return None
        return self._keep_event(e.ts, e.container, e.kind, e.fields)

    def _keep_event(self, ts: float, c: Container, kind: str, fields: Any) -> dict[str, Any]:
        short = {k: v for k, v in list(fields.items())[:8] if isinstance(v, (str, int, float, bool)) or v is None}
        entry = {"ts": ts, "container": c.id, "name": c.name, "kind": kind,
                 "fields": {k: (v[:200] if isinstance(v, str) else v) for k, v in short.items()}}
        r = self._rings.get(c.id) or self._ring(c.id, ts)
        if r.container is None:
            r.container = c
        r.events.append(entry)
        return entry

    def events(self, batch: Sequence[Event]) -> list[dict[str, Any]]:
        """:meth:`event` for one interval's Events, plus one ``exec_storm`` per container with at
        least ``EXEC_STORM`` execs in the batch, else its execs of a binary it had not run
        (:data:`NEW_EXEC_AFTER_S`); returns the entries kept.

        >>> web = Container(id="4f1c", name="web-1", runtime="docker")
        >>> h = History()
        >>> [e["kind"] for e in h.events([Event(1.0, web, "exec")] * 25)]
        ['exec_storm']
        >>> def ran(ts, path): return h.events([Event(ts, web, "exec", {"filename": path, "comm": "x"})])
        >>> ran(2.0, "/bin/sh"), ran(700.0, "/bin/sh"), [e["fields"]["filename"] for e in ran(700.0, "/tmp/x")]
        ([], [], ['/tmp/x'])
        """
        kept = []
        execs: dict[str, list[Event]] = {}
        for e in batch:
            if e.kind == "exec":
                execs.setdefault(e.container.id, []).append(e)
            elif (entry := self.event(e)) is not None:
                kept.append(entry)
        for group in execs.values():
            kept += self._new_execs(group, keep=len(group) < EXEC_STORM)   # a storm is one entry
            if len(group) >= EXEC_STORM:
                comms: dict[str, int] = {}
                for e in group:
                    comm = str(e.fields.get("comm", "?"))
                    comms[comm] = comms.get(comm, 0) + 1
                top = ",".join(sorted(comms, key=comms.__getitem__, reverse=True)[:3])
                kept.append(self._keep_event(group[-1].ts, group[-1].container, "exec_storm",
                                             {"execs": len(group), "comm": top}))
        return kept

    def _new_execs(self, group: list[Event], keep: bool) -> list[dict[str, Any]]:
        """Learn the binaries one container ran; with ``keep``, keep the execs of those it had
        not run, once it was watched long enough to know (at most :data:`NEW_EXECS`)."""
        c = group[0].container
        r = self._rings.get(c.id) or self._ring(c.id, group[0].ts)
        if r.execs is None:
            r.execs = set()
        out = []
        for e in group:
            path = str(e.fields.get("filename") or e.fields.get("comm") or "")
            if not path or path in r.execs:
                continue
            if len(r.execs) < EXECS_KNOWN:
                r.execs.add(path)
            if keep and e.ts - r.born >= NEW_EXEC_AFTER_S and len(out) < NEW_EXECS:
                out.append(self._keep_event(e.ts, c, "exec", e.fields))
        return out

    def alert_change(self, a: Alert) -> dict[str, Any]:
        """Keep one alert state change; returns the entry kept.

        >>> web = Container(id="4f1c", name="web-1", runtime="docker")
        >>> History().alert_change(Alert(3.0, "cpu-hog", web, "firing", "warning", 0.97, "hot"))["state"]
        'firing'
        """
        v = a.value
        entry = {"ts": a.ts, "container": a.container.id, "name": a.container.name, "rule": a.rule,
                 "state": a.state, "severity": a.severity,
                 "value": v if v is not None and math.isfinite(v) else None, "summary": a.summary[:500]}
        r = self._rings.get(a.container.id) or self._ring(a.container.id, a.ts)
        if r.container is None:
            r.container = a.container
        r.alerts.append(entry)
        return entry

    def forget(self, container_id: str) -> None:
        """Drop everything about one container.

        >>> h = History(); h.add(1.0, "a", "m", 1.0); h.forget("a"); h.containers()
        []
        """
        self._rings.pop(container_id, None)

    def expire(self, now: float) -> None:
        """Forget containers that sent nothing for an hour (checked at most once a minute)."""
        if now - self._last_expire < 60:
            return
        self._last_expire = now
        for cid in [cid for cid, r in self._rings.items() if now - r.last_ts > HOUR_S]:
            del self._rings[cid]

    # -- reading -------------------------------------------------------------------------------

    def containers(self) -> list[str]:
        """Container ids held, least recently updated first."""
        return list(self._rings)

    def container(self, container_id: str) -> Container | None:
        """Who ``container_id`` is, as its latest sample said; None when unknown."""
        r = self._rings.get(container_id)
        return None if r is None else r.container

    def metrics(self, container_id: str) -> list[str]:
        """Sorted metric names with history for ``container_id`` (empty when unknown)."""
        r = self._rings.get(container_id)
        return [] if r is None else sorted(r.values)

    def _fine(self, r: _Ring) -> tuple[list[int], float]:
        """Fine slot indices oldest first, and the fine ring's oldest time."""
        n, pos = self.fine_n, r.pos
        order = [*range(pos + 1, n), *range(pos + 1)]
        order = [i for i in order if r.ts[i] == r.ts[i]]
        return order, (r.ts[order[0]] if order else r.last_ts)

    def series(self, container_id: str, metric: str, since: float) -> list[tuple[float, float]] | None:
        """``(ts, value)`` points at or after ``since``, oldest first: coarse 20 s means (stamped with
        the bucket's start) of buckets that end before the fine ring starts, then every sample; None
        for an unknown container or metric."""
        r = self._rings.get(container_id)
        if r is None:
            return None
        vals = r.values.get(metric)
        if vals is None:
            return None
        order, fine_start = self._fine(r)
        out: list[tuple[float, float]] = []
        col = r.coarse.get(metric)
        if since < fine_start and col is not None:
            n, cpos, cts = self.coarse_n, r.cpos, r.cts
            for i in [*range(cpos + 1, n), *range(cpos + 1)]:
                t, v = cts[i], col[i]
                if t >= since and t + COARSE_S <= fine_start and v == v:
                    out.append((t, v))
        ts = r.ts
        for i in order:
            t, v = ts[i], vals[i]
            if t >= since and v == v:
                out.append((t, v))
        return out

    def spark(self, container_id: str, metric: str, since: float) -> list[float | None]:
        """The coarse 20 s means from ``since`` on (None for empty buckets) for overview sparklines,
        aligned to bucket starts ``since // 10 * 10``, ``+10``, ... up to the current bucket.

        >>> h = History()
        >>> for t in range(0, 35):
        ...     h.add(float(t), "a", "m", float(t))
        >>> h.spark("a", "m", 0.0)
        [9.5, 27.0]
        """
        r = self._rings.get(container_id)
        first = int(since // COARSE_S)
        nb = r.bucket - first + 1 if r is not None else 0
        if r is None or nb <= 0 or metric not in r.values:
            return []
        out: list[float | None] = [None] * nb
        col = r.coarse.get(metric)
        if col is not None:
            for i in range(self.coarse_n):
                t = r.cts[i]
                if t == t:
                    k = int(t // COARSE_S) - first
                    v = col[i]
                    if 0 <= k < nb and v == v:
                        out[k] = round(v, 6)
        vals, n = r.values[metric], self.fine_n
        start, end = r.bucket_pos, r.pos
        slots = range(start, end + 1) if start <= end else [*range(start, n), *range(end + 1)]
        live = [vals[i] for i in slots if vals[i] == vals[i]]
        if live:
            out[-1] = round(sum(live) / len(live), 6)
        return out

    def recent_events(self, container_id: str) -> list[dict[str, Any]]:
        """The container's kept events, oldest first."""
        r = self._rings.get(container_id)
        return [] if r is None else list(r.events)

    def alert_changes(self, container_id: str) -> list[dict[str, Any]]:
        """The container's alert state changes, oldest first."""
        r = self._rings.get(container_id)
        return [] if r is None else list(r.alerts)

    def nbytes(self) -> int:
        """Bytes held by the rings' arrays (not counting Python object overhead).

        >>> History(interval_s=1.0).nbytes()
        0
        """
        total = 0
        for r in self._rings.values():
            total += r.ts.buffer_info()[1] * 8 + r.cts.buffer_info()[1] * 8
            total += sum(a.buffer_info()[1] * 4 for a in r.values.values())
            total += sum(a.buffer_info()[1] * 4 for a in r.coarse.values())
        return total
