"""Who a container waited behind for a CPU: cpu.bpf.c's ``pair_wait`` (CGW_BLAME) made
into shares per container.

The kernel charges each run-queue wait to the pair {waiter's cgroup, the cgroup it took the
CPU from}, with two culprits that are not neighbours: 0, the CPU was idle (the wake-up's own
latency), and :data:`QUOTA`, the part its own CPU quota imposed. :class:`Blame` reads the
map every :data:`EVERY_S` and keeps the last :data:`WINDOW` reads' growth (a minute); for
each container that waited it gives

* ``cpu.runq_wait_neighbours_ratio``: the share of its wait in that minute spent behind
  other containers (``host`` included), 0-1;
* and, when the wait was at least :data:`MIN_WAIT_MS`, a ``neighbours`` event naming what
  took :data:`MIN_SHARE` or more of it, largest first: the top neighbours, its own tasks
  (``self``), its quota (``quota``), idle CPUs waking up (``idle``); ``main`` is the
  first. It comes when the main culprit changes, else at most once every
  :data:`TELL_EVERY_S`.

>>> from cgwatch.model import Container
>>> web, batch = Container(id="w", name="web-1", runtime="docker"), Container(id="b", name="batch-7", runtime="docker")
>>> ids = {10: web, 20: batch}
>>> b = Blame(lambda cgid, now: ids[cgid])
>>> b.read(0.0, [(10, 20, 0)], [(0, 0)])                 # the first read: where the counters start
([], [])
>>> rows, events = b.read(10.0, [(10, 20), (10, 10), (10, QUOTA)], [(800_000_000, 90), (150_000_000, 10), (50_000_000, 1)])
>>> [(c.name, v) for c, _, v in rows]
[('web-1', {'cpu.runq_wait_neighbours_ratio': 0.8})]
>>> events[0].fields["text"]
'80% behind batch-7, 15% behind its own tasks, 5% held back by its CPU quota'
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..model import Container, Event

METRIC = "cpu.runq_wait_neighbours_ratio"
#: the culprit of the part of a wait the waiter's own CPU quota imposed (CGW_QUOTA in cpu.bpf.c)
QUOTA = 2**64 - 1
#: the map is read this often (s)
EVERY_S = 10.0
#: shares are over this many reads (a minute)
WINDOW = 6
#: a container that waited less than this in the window is not told about (ms)
MIN_WAIT_MS = 100.0
#: culprits with at least this share are named, the TOP largest
MIN_SHARE, TOP = 0.05, 3
#: a container's neighbours event comes again after this long when its main culprit stays
TELL_EVERY_S = 60.0

_SELF, _QUOTA, _IDLE = "self", "quota", "idle"
#: how the text says each
_SAID = {_SELF: "behind its own tasks", _QUOTA: "held back by its CPU quota", _IDLE: "waking an idle CPU"}


class Blame:
    """Shares of each container's run-queue wait by culprit, over the last minute."""

    def __init__(self, container: Callable[[int, float], Container]) -> None:
        self.container = container
        self._prev: dict[tuple[int, int], int] | None = None
        self._window: deque[dict[tuple[int, int], int]] = deque(maxlen=WINDOW)
        self.next_at = 0.0
        #: victim id -> (when it was told, its main culprit then)
        self._told: dict[str, tuple[float, str]] = {}

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def read(self, now: float, keys: Iterable[Sequence[int]], vals: Iterable[Sequence[int]],
             ) -> tuple[list[tuple[Container, float, dict[str, float]]], list[Event]]:
        """Take one read of the map (its keys {victim, culprit} and values {ns, count});
        returns the rows of :data:`METRIC` and the ``neighbours`` events."""
        self.next_at = now + EVERY_S
        cur = {(int(k[0]), int(k[1])): int(v[0]) for k, v in zip(keys, vals)}
        prev, self._prev = self._prev, cur
        if prev is None:
            return [], []
        grew = {}
        for k, ns in cur.items():
            before = prev.get(k, 0)
            d = ns - before if ns >= before else ns       # made anew (a cgroup id reused): from zero
            if d > 0:
                grew[k] = d
        self._window.append(grew)
        return self._shares(now)

    def _shares(self, now: float) -> tuple[list[tuple[Container, float, dict[str, float]]], list[Event]]:
        find = self.container
        per: dict[str, tuple[Container, dict[Any, int]]] = {}
        for grew in self._window:
            for (v, c), ns in grew.items():
                victim = find(v, now)
                got = per.get(victim.id)
                if got is None:
                    got = per[victim.id] = (victim, {})
                if c == 0:
                    who: Any = _IDLE
                elif c == QUOTA:
                    who = _QUOTA
                else:
                    culprit = find(c, now)
                    who = _SELF if culprit.id == victim.id else culprit
                got[1][who] = got[1].get(who, 0) + ns
        rows, events = [], []
        for victim, by in per.values():
            total = sum(by.values())
            if total <= 0:
                continue
            others = sorted(((ns, c) for c, ns in by.items() if isinstance(c, Container)),
                            key=lambda x: -x[0])
            share = sum(ns for ns, _ in others) / total
            rows.append((victim, now, {METRIC: share}))
            if total >= MIN_WAIT_MS * 1e6:
                e = self._tell(victim, now, by, total, others, share)
                if e is not None:
                    events.append(e)
        gone = [vid for vid, (at, _) in self._told.items() if now - at > 10 * TELL_EVERY_S]
        for vid in gone:
            del self._told[vid]
        return rows, events

    def _tell(self, victim: Container, now: float, by: dict[Any, int], total: int,
              others: list[tuple[int, Container]], share: float) -> Event | None:
        mine = {k: by.get(k, 0) / total for k in (_SELF, _QUOTA, _IDLE)}
        top = [(ns / total, c) for ns, c in others[:TOP] if ns / total >= MIN_SHARE]
        said = [(s, f"behind {c.name}", c.name) for s, c in top]
        said += [(mine[k], _SAID[k], k) for k in (_SELF, _QUOTA, _IDLE) if mine[k] >= MIN_SHARE]
        if not said:
            return None
        said.sort(key=lambda x: -x[0])
        main = said[0][2]
        told = self._told.get(victim.id)
        if told is not None and told[1] == main and now - told[0] < TELL_EVERY_S:
            return None
        self._told[victim.id] = (now, main)
        return Event(now, victim, "neighbours", {      # text and main first: what a short view keeps
            "text": ", ".join(f"{s:.0%} {what}" for s, what, _ in said), "main": main,
            "window_s": EVERY_S * len(self._window), "wait_ms": round(total / 1e6, 3),
            "neighbours": round(share, 4), **{k: round(v, 4) for k, v in mine.items()},
            "top": [{"container": c.name, "id": c.id, "share": round(s, 4)} for s, c in top],
        })
