"""A root-cause card: what changed around an alert's onset, for that container.

The daemon builds one for each first firing notice (``cgwatch.daemon.loops.cards``), and
``cgwatch report`` for each firing in a recording, both from a :class:`History`.

:func:`build_card` reads what the dashboard's :class:`~cgwatch.web.history.History` keeps of
the container (its metrics' last hour, its notable events) and gives a small, bounded dict:

* ``changed``: up to :data:`TOP` of its metrics that moved away from where they were before
  the onset, ranked by how far: the median since the onset (``now``) against the median of
  the :data:`BEFORE_S` before it, up to :data:`AROUND_S` before it (``before``), in robust
  standard deviations of those (``z``: the median absolute deviation, but at least 5 % of
  the larger level, so a move from 0 is 20): ``{metric, before, now, z}``; the rule's own metrics are left
  out (the alert says those moved);
* ``events``: its notable events from :data:`BEFORE_S` before the onset until it fired
  (restarts, OOM kills, fatal signals, failed exits, exec storms), newest last, at most
  :data:`EVENTS`;
* ``neighbours``: who it waited behind for a CPU (the latest ``neighbours`` event's text);
* ``missing``: why a part is empty where it is (no history before the onset, ...).

It costs one pass over the container's kept points (at most an hour of 20 s means and two
minutes of samples per metric), once per firing.

>>> from cgwatch.model import Container, Event
>>> from cgwatch.web.history import History
>>> h = History(interval_s=1.0)
>>> for t in range(0, 600):
...     h.add(float(t), "4f1c", "mem.usage_bytes", 100e6 if t < 500 else 300e6)
...     h.add(float(t), "4f1c", "cpu.usage_cores", 0.5 + (t % 3) / 100)
>>> _ = h.event(Event(498.0, Container(id="4f1c", name="web-1", runtime="docker"), "exit", {"code": 3}))
>>> card = build_card(h, "4f1c", onset=500.0)
>>> [(c["metric"], c["before"], c["now"]) for c in card["changed"]]
[('mem.usage_bytes', 100000000.0, 300000000.0)]
>>> [e["kind"] for e in card["events"]], card["missing"]
(['exit'], [])
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

#: the card looks this far back before the onset for what was normal, and for events
BEFORE_S = 900.0
#: what came within this long before the onset is the change on its way, neither before nor after
AROUND_S = 10.0
#: "after" is from the onset on, and at least the last this many seconds (an alert without ``for:``)
AFTER_MIN_S = 2.0
#: at most this many changed metrics, and only those that moved at least MIN_Z
TOP, MIN_Z = 5, 3.0
#: at most this many events
EVENTS = 10
#: metrics the card never ranks (the dashboard's own drawings of verdicts)
_SKIP_PREFIX = ("anomaly.",)
#: event fields a card leaves out (the cgroup's path says nothing the container's name does not)
_QUIET_FIELDS = frozenset({"cgroup"})


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def moved(before: list[float], after: list[float]) -> tuple[float, float, float] | None:
    """(the level before, the level after, how far it moved in robust standard deviations),
    or None with too few points (5 before, 1 after).

    >>> moved([1.0, 1.1, 0.9, 1.0, 1.05], [3.0])     # 5 % of the larger level: 0.15
    (1.0, 3.0, 13.33)
    >>> moved([0.0] * 10, [0.99])                    # from nothing: 20, whatever the level
    (0.0, 0.99, 20.0)
    >>> moved([0.0] * 10, [0.0]) is None or moved([0.0] * 10, [0.0])[2]
    0.0
    """
    if len(before) < 5 or not after:
        return None
    b, a = _median(before), _median(after)
    mad = _median([abs(x - b) for x in before]) * 1.4826
    scale = max(mad, 0.05 * max(abs(b), abs(a)), 1e-12)
    return b, a, round((a - b) / scale, 2)


def card_of(history: Any, rule: Any, container_id: str, fired_at: float) -> dict[str, Any]:
    """The card of ``rule`` firing at ``fired_at`` on a container: its onset is when the
    condition began to hold (``fired_at`` less the rule's ``for:``), and the metrics the
    rule reads are not ranked (the alert says those moved)."""
    onset = fired_at - float(getattr(rule, "for_s", 0.0) or 0.0)
    expr = getattr(rule, "expr", None)
    return build_card(history, container_id, onset, fired_at, skip=getattr(expr, "metrics", ()) or ())


def build_card(history: Any, container_id: str, onset: float, now: float | None = None,
               skip: Iterable[str] = ()) -> dict[str, Any]:
    """The card of an alert on ``container_id`` whose condition began to hold at ``onset``
    (``now``: when it fired; default the onset). ``skip``: metrics not to rank."""
    now = onset if now is None else now
    missing: list[str] = []
    skipped = set(skip)
    ranked = []
    metrics = history.metrics(container_id)
    since = min(onset, now - AFTER_MIN_S)
    for m in metrics:
        if m in skipped or m.startswith(_SKIP_PREFIX):
            continue
        points = history.series(container_id, m, onset - BEFORE_S) or []
        before = [v for t, v in points if t < onset - AROUND_S and math.isfinite(v)]
        after = [v for t, v in points if t >= since and math.isfinite(v)]
        got = moved(before, after)
        if got is not None and abs(got[2]) >= MIN_Z:
            ranked.append({"metric": m, "before": got[0], "now": got[1], "z": got[2]})
    ranked.sort(key=lambda c: -abs(c["z"]))
    if not metrics:
        missing.append("no history of this container")
    elif not ranked:
        missing.append("no metric moved away from where it was before the onset (or too little history)")
    events, neighbours = [], None
    for e in history.recent_events(container_id):
        if e["ts"] < onset - BEFORE_S or e["ts"] >= now:      # (an event rule's own event is the alert)
            continue
        if e["kind"] == "neighbours":
            neighbours = e["fields"].get("text") or neighbours
        else:
            events.append({"ts": e["ts"], "kind": e["kind"],
                           "fields": {k: v for k, v in e["fields"].items() if k not in _QUIET_FIELDS}})
    return {"changed": ranked[:TOP], "events": events[-EVENTS:], "neighbours": neighbours, "missing": missing}
