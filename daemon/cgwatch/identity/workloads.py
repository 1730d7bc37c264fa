"""Workloads: what outlives a container's restart, and how often it restarts.

A runtime restarts a container by removing its cgroup and making a new one:
``docker restart`` and ``--restart always`` keep the container id, a
Kubernetes container restarted in its pod gets a new id but keeps its pod and
container name, a systemd unit keeps its name. :attr:`Container.workload
<cgwatch.model.Container.workload>` is that stable key.

:class:`Workloads` turns what identity saw between two ticks (containers
started, containers stopped) into ``container_stop`` / ``container_start``
events in the order they happened — a container that went and came back in
one interval stopped *before* it started — and counts restarts: a start of a
workload that stopped before. The count is the metric ``proc.restarts``,
per second over the interval like every other counter, given for every
container each interval, so ``total(proc.restarts, 5m)`` is how many
times it restarted in the last five minutes.

Examples
--------
>>> from cgwatch.model import Container
>>> w = Workloads()
>>> web = Container(id="4f1c", name="web-1", runtime="docker")
>>> [e.kind for e in w.events(10.0, started=[web], stopped=[])]
['container_start']
>>> list(w.samples(10.0, [web]))  # the first interval has no length yet
[]
>>> [(e.kind, e.fields["restarts"]) for e in w.events(11.0, started=[web], stopped=[web])]
[('container_stop', 0), ('container_start', 1)]
>>> [(s.metric, s.value) for s in w.samples(11.0, [web])]
[('proc.restarts', 1.0)]
>>> [(s.metric, s.value) for s in w.samples(12.0, [web])]
[('proc.restarts', 0.0)]
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model import HOST, Container, Event, Frame

#: a workload stopped for longer than this starts afresh (its restarts are forgotten)
REMEMBER_S = 3600.0
METRIC = "proc.restarts"


class Workloads:
    """Restarts per workload, and container lifecycle events in order."""

    __slots__ = ("remember_s", "_stopped", "_count", "_new", "_last_tick")

    def __init__(self, remember_s: float = REMEMBER_S) -> None:
        self.remember_s = remember_s
        self._stopped: dict[str, float] = {}    # workload -> when it last stopped
        self._count: dict[str, int] = {}        # workload -> restarts since first seen
        self._new: dict[str, int] = {}          # workload -> restarts in the current interval
        self._last_tick: float | None = None

    def events(self, now: float, started: Sequence[Container], stopped: Sequence[Container],
               flashed: Sequence[Container] = ()) -> list[Event]:
        """The interval's lifecycle events in the order they happened: the stops of
        containers that ran before, the starts, then a start and a stop for each
        container that came and went within the interval (``flashed``). A start of
        a workload that stopped before (this interval or within ``remember_s``) is a
        restart, and the events say how many restarts the workload has had."""
        out = [self._stop(now, c) for c in stopped]
        out += [self._start(now, c) for c in started]
        for c in flashed:
            out += [self._start(now, c), self._stop(now, c)]
        if self._stopped:
            for key in [k for k, t in self._stopped.items() if now - t > self.remember_s]:
                del self._stopped[key]
                self._count.pop(key, None)
        return out

    def _stop(self, now: float, c: Container) -> Event:
        self._stopped[c.workload] = now
        return Event(now, c, "container_stop", {"cgroup": c.cgroup, "restarts": self._count.get(c.workload, 0)})

    def _start(self, now: float, c: Container) -> Event:
        key = c.workload
        if self._stopped.pop(key, None) is not None:
            self._count[key] = self._count.get(key, 0) + 1
            self._new[key] = self._new.get(key, 0) + 1
        return Event(now, c, "container_start", {"cgroup": c.cgroup, "restarts": self._count.get(key, 0)})

    def samples(self, now: float, containers: Sequence[Container]) -> Frame:
        """``proc.restarts`` of every container but the host, per second over the
        interval since the previous call (none at the first call: no interval yet)."""
        last, self._last_tick = self._last_tick, now
        new, self._new = self._new, {}
        if last is None or now <= last:
            return Frame()
        span = now - last
        return Frame([(c, now, {METRIC: new.get(c.workload, 0) / span}) for c in containers if c is not HOST])

    def restarts(self, c: Container) -> int:
        """How many times ``c``'s workload restarted while cgwatch watched it."""
        return self._count.get(c.workload, 0)
