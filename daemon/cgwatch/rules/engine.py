"""The rules engine: Samples and Events in, alert state changes out.

The same engine runs live, over a recording (``cgwatch replay``) and in rule
unit tests, and time comes only from the samples, so a recording replays to
the same alerts anywhere.

Evaluation follows Prometheus:

- A threshold rule is evaluated for a container whenever a batch of samples
  (one timestamp) brought a metric it reads with a value that can change its
  answer, and again while it is pending or firing. Its condition holding
  makes it *pending*; holding for ``for:`` makes it *firing* (at once with no
  ``for:``); not holding any more makes a firing alert *resolved* and a
  pending one silently inactive.
- A metric that kept its value (and was never stale in between) cannot
  change the answer: an expression is a function of the metrics' current
  values, their windows and the container's fields, and a value going
  missing never makes a condition true (see :mod:`cgwatch.rules.expr`). So a
  rule that did not hold is evaluated again when a value it reads changed,
  when a metric it reads has a window, and for a container seen anew,
  renamed, started again or taken over by a reload; never for a container
  that never had a metric its condition needs (``Compiled.needs``).
- A metric without a sample in the last ``stale_after`` seconds has no value,
  and a condition that reads a missing value is false.
- An event rule fires once per matching event; it has no resolution.
- An anomaly rule reads the :class:`~cgwatch.model.Verdict` s of its models,
  which the anomaly stage (:mod:`cgwatch.anomaly.stage`) scores before the
  engine: its condition holds while the latest verdict for the container is
  ``active``, and ``for:`` applies as for thresholds. The latest score is also
  the metric ``anomaly.score`` (the highest of the container's models at that
  time), so an expression can combine it.
- Series, windows, models and alerts belong to the container's *workload*
  (:attr:`~cgwatch.model.Container.workload`), so they carry across a restart.
  ``container_stop`` stops the workload: from then on its metrics have no
  current value (a firing threshold alert on them resolves at the stop),
  while its windows keep what they held (``total(proc.restarts, 5m)``
  goes on counting a restart loop); ``container_start`` of the same workload
  takes it up again. A workload stopped for ``stale_after`` is forgotten and
  whatever still fires for it resolves.
- :meth:`Engine.step` is one interval, live and in replay alike: the
  interval's samples, one evaluation at its time, then its events in order.

Cost follows what changed: rules are indexed by the metrics they read, a
sample of a metric no rule reads costs one dict lookup, and only the metrics
some window function needs keep history (and only as far back as needed).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..model import Alert, Container, Event, Sample, Verdict, rows_of
from ..units import human_bytes
from .template import ANOMALY_VARIABLES, human_duration

log = logging.getLogger("cgwatch.rules")

#: a metric is stale (has no value) this long after its last sample, as in Prometheus
STALE_AFTER = 300.0
#: a ``neighbours`` event speaks for the container's waits this long (they come every 10-60 s)
NEIGHBOURS_FRESH_S = 120.0
#: no window keeps more samples than this, whatever the interval
MAX_WINDOW_SAMPLES = 100_000
#: ``for:`` is met this share of an interval early: ticks jitter by milliseconds, and
#: a condition seen at three ticks 1 s apart has held for 2 s whatever the clock says
FOR_SLACK = 0.25

INACTIVE, PENDING, FIRING = 0, 1, 2
#: sets of changed metrics whose rules are remembered, at most (then the memory starts again)
RULES_OF_MAX = 4096


class Series:
    """One container's recent values of the metrics rules read; the evaluation
    context of threshold expressions."""

    __slots__ = ("container", "key", "now", "stale_after", "_last", "_hist", "_keep", "_unsorted", "_nonzero",
                 "dirty", "selected", "stopped", "epoch", "neighbours")

    def __init__(self, container: Container, keep: Mapping[str, float], stale_after: float) -> None:
        self.container = container
        #: the workload the series is kept under (the same whatever the container is renamed to)
        self.key = container.workload
        self.now = 0.0
        self.stale_after = stale_after
        #: metric -> (time, value, the epoch it was pushed in)
        self._last: dict[str, tuple[float, float, int]] = {}
        self._hist: dict[str, deque[tuple[float, float]]] = {}
        self._keep = keep
        #: metrics whose history got a value older than the one before (a clock stepped back)
        self._unsorted: set[str] = set()
        #: how many values in each history are not 0 (NaN counts): a window of zeros is known
        #: without reading it (:meth:`quiet`)
        self._nonzero: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.selected: dict[int, bool] = {}
        #: when the container stopped (None while it runs): its metrics have no current value
        self.stopped: float | None = None
        #: moves when the rules must see this container anew (renamed, started again, a reload's
        #: new rules): each metric's first value after that is dirty whatever it is
        self.epoch = 0
        #: the latest ``neighbours`` event's (time, text): who it waited behind for a CPU
        self.neighbours: tuple[float, str] | None = None

    def push(self, metric: str, ts: float, value: float) -> None:
        """Take a value; mark the metric dirty unless it cannot change what a rule reading it says
        (the same value as before, in the same :attr:`epoch`, not stale in between, no window)."""
        last = self._last.get(metric)
        self._last[metric] = (ts, value, self.epoch)
        keep = self._keep.get(metric)
        if not keep:
            if last is None or last[1] != value or last[2] != self.epoch or ts - last[0] > self.stale_after:
                self.dirty.add(metric)
            return
        h = self._hist.get(metric)
        nz = self._nonzero.get(metric, 0)
        if h is None:
            h = self._hist[metric] = deque(maxlen=MAX_WINDOW_SAMPLES)
        elif h:
            if ts < h[-1][0]:
                self._unsorted.add(metric)
            if len(h) == MAX_WINDOW_SAMPLES and h[0][1]:     # append drops it
                nz -= 1
        h.append((ts, value))
        if value:
            nz += 1
        horizon = ts - keep
        while h[0][0] <= horizon:
            if h.popleft()[1]:
                nz -= 1
        self._nonzero[metric] = nz
        self.dirty.add(metric)

    # -- the expression Context --------------------------------------------------
    def last(self, metric: str) -> float | None:
        got = self._last.get(metric)
        if got is None or self.stopped is not None or self.now - got[0] > self.stale_after:
            return None
        return got[1]

    def window(self, metric: str, seconds: float, now: float) -> Sequence[tuple[float, float]]:
        h = self._hist.get(metric)
        if not h:
            return ()
        start = now - seconds
        if h[0][0] > start and h[-1][0] <= now and metric not in self._unsorted:
            return list(h)          # in time order and all inside: the whole history, copied in C
        out = []
        for item in reversed(h):
            if item[0] <= start:
                break
            if item[0] <= now:
                out.append(item)
        out.reverse()
        return out

    def quiet(self, metric: str, seconds: float, now: float) -> bool:
        """True when the window holds two or more points over some time and every one
        is 0 (as ``window`` would give them), known from a count kept as values come and
        go: a crash-loop rule's 5-minute window of zeros is not read every interval."""
        h = self._hist.get(metric)
        if not h or len(h) < 2 or self._nonzero.get(metric) or metric in self._unsorted:
            return False
        first, last = h[0][0], h[-1][0]
        return first > now - seconds and last <= now and last > first

    def field(self, name: str) -> object | None:
        return _container_field(self.container, name)


class EventContext:
    """The evaluation context of an event rule's ``where:``."""

    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        self.event = event

    def last(self, metric: str) -> float | None:
        return None

    def window(self, metric: str, seconds: float, now: float) -> Sequence[tuple[float, float]]:
        return ()

    def quiet(self, metric: str, seconds: float, now: float) -> bool:
        return False

    def field(self, name: str) -> object | None:
        if name.startswith("event."):
            return self.event.fields.get(name[6:])
        return _container_field(self.event.container, name)


def _container_field(c: Container, name: str) -> object | None:
    if name.startswith("container."):
        key = name[10:]
        if key in ("name", "id", "image", "runtime", "pod", "qos", "cgroup"):
            return getattr(c, key)
    return None


class Engine:
    """Evaluates a rule set over a stream of Samples and Events."""

    def __init__(self, rules: Sequence[Any], stale_after: float = STALE_AFTER) -> None:
        self.rules = [r for r in rules if r.enabled]
        self.stale_after = stale_after
        # anomaly rule name -> (its index, the key its verdicts are pushed under to mark it for evaluation)
        self._anomaly: dict[str, tuple[int, str]] = {}
        # (rule index, workload) -> the latest verdict
        self._verdicts: dict[tuple[int, str], Verdict] = {}
        self._by_metric: dict[str, tuple[int, ...]] = {}
        self._by_event: dict[str, tuple[int, ...]] = {}
        keep: dict[str, float] = {}
        by_metric: dict[str, list[int]] = {}
        by_event: dict[str, list[int]] = {}
        for i, r in enumerate(self.rules):
            if r.expr is not None:
                for m in r.expr.metrics:
                    by_metric.setdefault(m, []).append(i)
                for m, w in r.expr.windows.items():
                    keep[m] = max(keep.get(m, 0.0), w)
            elif r.event is not None:
                by_event.setdefault(r.event, []).append(i)
            elif r.anomaly is not None:
                a = r.anomaly
                if len(a.metrics) > 1 and a.model not in ("auto", "mad", "joint"):
                    log.warning("rule %s: a joint model (metrics: [%s]) is made of mad parts; "
                                "model %r is not used", r.name, ", ".join(a.metrics), a.model)
                vkey = f"verdict:{r.name}"       # not a metric name: they have no ':'
                self._anomaly[r.name] = (i, vkey)
                by_metric.setdefault(vkey, []).append(i)
        self._by_metric = {m: tuple(v) for m, v in by_metric.items()}
        #: a set of changed metrics -> the rules that read them, in rule order (see :meth:`flush`)
        self._rules_of: dict[frozenset[str], tuple[int, ...]] = {}
        #: rule index -> the metrics its condition cannot hold without (see Compiled.needs)
        self._needs = [r.expr.needs if r.expr is not None else frozenset() for r in self.rules]
        self._by_event = {k: tuple(v) for k, v in by_event.items()}
        self._keep = keep
        self._series: dict[str, Series] = {}
        self._dirty: dict[str, Series] = {}
        # (rule index, workload) -> [state, since, value]
        self._active: dict[tuple[int, str], list[Any]] = {}
        # workload -> when it stopped, for the workloads stopped and not forgotten yet
        self._stopped: dict[str, float] = {}
        self._now: float | None = None
        self._slack = 0.0

    # -- input -----------------------------------------------------------------
    def push_sample(self, s: Sample) -> None:
        """Take one sample; nothing is evaluated until :meth:`flush`."""
        if s.metric not in self._by_metric:
            return
        ser = self._series_of(s.container)
        ser.push(s.metric, s.ts, s.value)
        self._dirty[s.container.workload] = ser

    def push_verdict(self, v: Verdict) -> None:
        """Take one anomaly verdict; its rule is evaluated for the container at :meth:`flush`."""
        hit = self._anomaly.get(v.rule)
        if hit is None:
            return
        i, vkey = hit
        ser = self._series_of(v.container)
        self._verdicts[(i, v.container.workload)] = v
        ser.push(vkey, v.ts, 1.0)
        ser.dirty.add(vkey)             # the verdict is new even when its marker value is not
        if v.score is not None and "anomaly.score" in self._by_metric:
            last = ser._last.get("anomaly.score")
            if last is None or last[0] != v.ts or v.score > last[1]:    # the highest of this time's
                ser.push("anomaly.score", v.ts, v.score)
        self._dirty[v.container.workload] = ser

    def _series_of(self, c: Container) -> Series:
        cid = c.workload
        ser = self._series.get(cid)
        if ser is None:
            ser = self._series[cid] = Series(c, self._keep, self.stale_after)
            ser.stopped = self._stopped.get(cid)
        elif ser.container is not c:   # renamed (metadata arrived): select again
            ser.container = c
            ser.selected.clear()
            ser.epoch += 1
        return ser

    def _selects(self, i: int, ser: Series) -> bool:
        """Whether rule ``i`` watches this container (cached until it is renamed)."""
        sel = ser.selected.get(i)
        if sel is None:
            sel = ser.selected[i] = self.rules[i].select.matches(ser.container)
        return sel

    def push_event(self, e: Event) -> list[Alert]:
        """Evaluate the event rules for one event (and stop or take up a workload
        on ``container_stop`` / ``container_start``)."""
        out: list[Alert] = []
        if e.kind == "container_stop":
            out += self._stop(e.container, e.ts)
        elif e.kind == "container_start":
            self._start(e.container)
        elif e.kind == "neighbours":
            ser = self._series.get(e.container.workload)
            if ser is not None:
                ser.neighbours = (e.ts, str(e.fields.get("text", "")))
        rules = self._by_event.get(e.kind, ())
        if rules:
            ctx = EventContext(e)
            for i in rules:
                r = self.rules[i]
                if not r.select.matches(e.container):
                    continue
                if r.where is not None and not r.where.evaluate(ctx, e.ts):
                    continue
                out.append(self._alert(r, e.container, e.ts, "firing", None, dict(e.fields)))
        return out

    def flush(self, now: float | None = None) -> list[Alert]:
        """Evaluate what the samples since the last flush touched, at ``now``
        (default: the newest sample's time), and the pending and firing alerts."""
        if now is None:
            now = max((s._last[m][0] for s in self._dirty.values() for m in s.dirty), default=self._now)
            if now is None:
                return []
        prev, self._now = self._now, now
        # ticks come a few ms early or late: "held for 2s" at a 1 s interval is three
        # intervals in a row, whether the clock says 1.997 s or 2.003 s between them
        self._slack = FOR_SLACK * (now - prev) if prev is not None and now > prev else 0.0
        out: list[Alert] = []
        done: set[tuple[int, str]] = set()
        needs, rules_of = self._needs, self._rules_of
        for cid, ser in self._dirty.items():
            ser.now = now
            key = frozenset(ser.dirty)      # the same few sets of metrics change, interval after interval
            todo = rules_of.get(key)
            if todo is None:
                if len(rules_of) >= RULES_OF_MAX:
                    rules_of.clear()
                todo = rules_of[key] = tuple(sorted({i for m in key for i in self._by_metric[m]}))
            ser.dirty.clear()
            have = ser._last.keys()
            for i in todo:
                done.add((i, cid))
                need = needs[i]
                if need and not have >= need:
                    continue    # it cannot hold without a value it never had (nor did it: none is ever dropped)
                self._evaluate(i, ser, now, out)
        self._dirty.clear()
        for key in [k for k in self._active if k not in done]:
            ser = self._series.get(key[1])
            if ser is not None:
                ser.now = now
                self._evaluate(key[0], ser, now, out)
        return out

    def step(self, now: float, samples: Iterable[Sample], events: Iterable[Event],
             verdicts: Iterable[Verdict] = ()) -> list[Alert]:
        """One interval, the one order live and in replay: the interval's samples and the
        anomaly stage's verdicts on them, evaluation at ``now``, then its events in time
        order; returns the alert changes."""
        by_metric, dirty = self._by_metric, self._dirty
        rows = rows_of(samples)
        pushed = bool(rows)
        for c, ts, values in rows:     # push_sample of each value a rule reads, its series looked up once a row
            read = values.keys() & by_metric
            if read:
                ser = self._series_of(c)
                dirty[ser.key] = ser
                for m in read:
                    ser.push(m, ts, values[m])
        for v in verdicts:
            self.push_verdict(v)
            pushed = True
        out = self.flush(now) if pushed else []
        for e in events:
            out += self.push_event(e)
        if self._stopped:
            out += self._forget(now)
        return out

    def feed(self, items: Iterable[Sample | Event], anomaly: Any = None) -> Iterator[Alert]:
        """Drive the engine over a time-ordered stream (a recording), interval by
        interval (:func:`intervals`) as :meth:`step` is driven live. ``anomaly`` is the
        anomaly stage (``step(now, samples)`` -> verdicts) that judges each interval's
        samples first; without it anomaly rules never fire."""
        if anomaly is None and self._anomaly:
            log.warning("anomaly rules (%s) have no anomaly stage to judge them", ", ".join(self._anomaly))
        for now, samples, events in intervals(items):
            yield from self.step(now, samples, events, anomaly.step(now, samples) if anomaly is not None else ())

    # -- state machine -----------------------------------------------------------
    def _evaluate(self, i: int, ser: Series, now: float, out: list[Alert]) -> None:
        r = self.rules[i]
        if not self._selects(i, ser):
            return
        key = (i, ser.key)
        verdict = None
        if r.anomaly is not None:
            holds, value, verdict = self._anomalous(i, ser)
        else:
            holds = r.expr.evaluate(ser, now)
            value = r.expr.value(ser, now) if holds else None
        st = self._active.get(key)
        if holds:
            if st is None:
                st = self._active[key] = [PENDING, now, value, verdict]
            else:
                st[2], st[3] = value, verdict
            if st[0] == PENDING and now - st[1] >= r.for_s - self._slack and (now > st[1] or not r.for_s):
                st[0] = FIRING
                out.append(self._alert(r, ser.container, now, "firing", value, verdict=verdict, ser=ser))
        elif st is not None:
            del self._active[key]
            if st[0] == FIRING:
                if r.anomaly is None:
                    value = r.expr.value(ser, now)   # stale data has none: keep the last one seen
                out.append(self._alert(r, ser.container, now, "resolved", st[2] if value is None else value,
                                       verdict=verdict or st[3], ser=ser))

    def _anomalous(self, i: int, ser: Series) -> tuple[bool, float | None, Verdict | None]:
        """Whether the rule's latest verdict for this container is alerting, the value it
        judged (a joint model's: its score) and the verdict."""
        v = self._verdicts.get((i, ser.container.workload))
        if v is None:
            return False, None, None
        return v.active and ser.stopped is None, v.value, v

    def _stop(self, c: Container, ts: float) -> list[Alert]:
        """The container stopped: its workload's metrics have no value from now on, so
        its alerts are evaluated again at once (those on windows may go on holding)."""
        w = c.workload
        self._stopped[w] = ts
        ser = self._series.get(w)
        out: list[Alert] = []
        if ser is not None:
            ser.stopped = ts
            ser.now = ts
            for key in [k for k in self._active if k[1] == w]:
                self._evaluate(key[0], ser, ts, out)
        return out

    def _start(self, c: Container) -> None:
        """The container (re)started: its workload runs again, as ``c``."""
        if self._stopped.pop(c.workload, None) is None:
            return
        ser = self._series.get(c.workload)
        if ser is not None:
            ser.stopped = None
            ser.epoch += 1
            if ser.container is not c:
                ser.container = c
                ser.selected.clear()

    def _forget(self, now: float) -> list[Alert]:
        """Drop the workloads stopped for ``stale_after``; what still fires for them resolves."""
        out = []
        for w in [w for w, t in self._stopped.items() if now - t >= self.stale_after]:
            del self._stopped[w]
            ser = self._series.pop(w, None)
            self._dirty.pop(w, None)
            for key in [k for k in self._verdicts if k[1] == w]:
                del self._verdicts[key]
            for key in [k for k in self._active if k[1] == w]:
                st = self._active.pop(key)
                if st[0] == FIRING and ser is not None:
                    out.append(self._alert(self.rules[key[0]], ser.container, now, "resolved", st[2],
                                           verdict=st[3], ser=ser))
        return out

    def _alert(self, r: Any, c: Container, ts: float, state: str, value: float | None,
               event: Mapping[str, Any] | None = None, verdict: Verdict | None = None,
               ser: Series | None = None) -> Alert:
        return Alert(ts, r.name, c, state, r.severity, value,
                     summarize(r, c, value, event, verdict, read_values(r, ser), told(ser, ts)), dict(r.labels))

    def firing_count(self) -> int:
        """How many of :meth:`alerts` are firing, without writing their summaries."""
        series = self._series
        return sum(1 for (_, cid), st in self._active.items() if st[0] == FIRING and cid in series)

    def firing(self) -> list[tuple[str, Container, str, str, float | None]]:
        """What is firing now: (rule, container, severity, summary, value)."""
        out = []
        for (i, cid), st in self._active.items():
            if st[0] == FIRING:
                r, ser = self.rules[i], self._series[cid]
                c = ser.container
                out.append((r.name, c, r.severity,
                            summarize(r, c, st[2], None, st[3], read_values(r, ser), told(ser, ser.now)), st[2]))
        return out

    def alerts(self) -> list[tuple[Any, Container, str, float, float | None, str]]:
        """Every pending or firing alert: (rule, container, state, since, value, summary)."""
        out = []
        for (i, cid), st in self._active.items():
            ser = self._series.get(cid)
            if ser is not None:
                r = self.rules[i]
                out.append((r, ser.container, "firing" if st[0] == FIRING else "pending", st[1], st[2],
                            summarize(r, ser.container, st[2], None, st[3], read_values(r, ser),
                                      told(ser, ser.now))))
        return out

    def adopt(self, old: Engine, now: float) -> list[Alert]:
        """Take over what ``old`` (the engine before a reload) knew: each container's
        recent values and the pending and firing alerts of the rules that are still
        here (by name). A firing alert whose rule is gone resolves; returns those."""
        index = {r.name: i for i, r in enumerate(self.rules)}
        for ser in old._series.values():
            ser._keep = self._keep
            ser.selected.clear()
            ser.dirty.clear()
            ser.epoch += 1
        self._series = old._series
        self._stopped = old._stopped
        self._now = old._now
        out = []
        for (i, cid), st in old._active.items():
            r = old.rules[i]
            j = index.get(r.name)
            if j is not None and (self.rules[j].event is None) == (r.event is None):
                self._active[(j, cid)] = st
            elif st[0] == FIRING and cid in self._series:
                out.append(Alert(now, r.name, self._series[cid].container, "resolved", r.severity, st[2],
                                 f"{r.name}: rule removed", dict(r.labels)))
        for (i, cid), v in old._verdicts.items():
            hit = self._anomaly.get(old.rules[i].name)
            if hit is not None:
                self._verdicts[(hit[0], cid)] = v
        return out

    def promote(self, rule: str, workload: str) -> bool:
        """Treat a pending alert as firing (it was firing before a restart and holds
        again), so that it resolves when it stops holding; False if it is not pending."""
        for (i, cid), st in self._active.items():
            if cid == workload and self.rules[i].name == rule and st[0] == PENDING:
                st[0] = FIRING
                return True
        return False

    @property
    def active(self) -> int:
        """How many alerts are pending or firing now."""
        return len(self._active)


def intervals(items: Iterable[Sample | Event]) -> Iterator[tuple[float, list[Sample], list[Event]]]:
    """A time-ordered stream (a recording) cut into the intervals the daemon runs: the
    samples of one timestamp are an interval, and the events since the previous
    interval's samples (the kernel's, stamped inside the interval, and the lifecycle
    events stamped at its end) belong to it. Yields ``(now, samples, events)``.

    >>> from cgwatch.model import Container
    >>> web = Container(id="4f1c", name="web-1", runtime="docker")
    >>> [(now, len(s), len(e)) for now, s, e in intervals([Sample(1.0, web, "m", 1.0), Event(1.5, web, "exit"),
    ...                                                      Sample(2.0, web, "m", 1.0), Sample(2.0, web, "n", 2.0)])]
    [(1.0, 1, 0), (2.0, 2, 1)]
    """
    samples: list[Sample] = []
    events: list[Event] = []
    cur: float | None = None        # the timestamp of ``samples``
    for item in items:
        if cur is not None and item.ts > cur:   # past this interval's samples: it is complete
            yield cur, samples, events
            samples, events, cur = [], [], None
        if isinstance(item, Sample):
            samples.append(item)
            cur = item.ts
        else:
            events.append(item)
    if samples or events:
        yield (cur if cur is not None else events[-1].ts), samples, events


#: how an anomaly summary says why, by the channel that fired (``likelihood``)
WHY = {"range": "beyond its recent range", "daily": "unlike this time on earlier days",
       "local": "a sudden change", "global": "far from its long-run mean"}


def read_values(r: Any, ser: Series | None) -> dict[str, float | None]:
    """The container's latest value of each metric the rule's condition reads (None where it
    has none now): a summary's ``values``, so that it can show more than the left-hand side."""
    if ser is None or r.expr is None or r.summary is None:
        return {}
    out: dict[str, float | None] = {}
    for m in sorted(r.expr.metrics):
        v = ser.last(m)
        out[m] = v if v == v else None          # NaN: none
    return out


def told(ser: Series | None, now: float) -> str | None:
    """Who the container waited behind for a CPU, as its latest ``neighbours`` event said
    within :data:`NEIGHBOURS_FRESH_S` of ``now`` (a summary's ``neighbours``), else None."""
    if ser is None or ser.neighbours is None:
        return None
    ts, text = ser.neighbours
    return text if text and now - ts <= NEIGHBOURS_FRESH_S else None


def summarize(r: Any, c: Container, value: float | None, event: Mapping[str, Any] | None,
              verdict: Verdict | None = None, values: Mapping[str, float | None] | None = None,
              neighbours: str | None = None) -> str:
    """The alert's one-line summary: the rule's template, or a plain default.

    An anomaly rule's says what was seen and what the model took as normal:
    ``web-1 cpu.usage_cores 0.62, normal 0.95–1.02 over the last 1h: beyond its recent range``.
    """
    a = anomaly_context(r, value, verdict)
    if r.summary is not None:
        return str(r.summary.render({
            "container": c.name, "id": c.id, "image": c.image, "runtime": c.runtime,
            "labels": dict(c.labels), "value": value, "rule": r.name, "severity": r.severity,
            "event": dict(event or {}), "values": dict(values or {}), "neighbours": neighbours, **a,
        }))
    if r.anomaly is not None:
        metric, shown = " and ".join(r.anomaly.metrics), _shown(a["metric"], value)
        if len(r.anomaly.metrics) > 1:
            score = a["score"]
            return f"{c.name} {metric} departed together" + ("" if score is None else f" (score {score:.2f})")
        if a["normal"] is None:
            return f"{c.name} {metric} {shown}, unusual for it" + (f": {a['why']}" if a["why"] else "")
        return f"{c.name} {metric} {shown}, normal {a['normal']} over the last {a['over']}" + \
            (f": {a['why']}" if a["why"] else "")
    if value is None:
        return f"{r.name}: {c.name}"
    return f"{r.name}: {c.name} at {value:.4g}"


def anomaly_context(r: Any, value: float | None, verdict: Verdict | None) -> dict[str, Any]:
    """The template variables an anomaly rule adds (None for other rules): ``metric``,
    ``score``, ``low``, ``high``, ``normal`` ("0.95–1.02"), ``over`` ("1h"), ``why``."""
    out: dict[str, Any] = dict.fromkeys(ANOMALY_VARIABLES)
    if r.anomaly is None:
        return out
    out["metric"] = "+".join(r.anomaly.metrics)
    if verdict is None:
        return out
    out["score"] = verdict.score
    out["why"] = ", ".join(WHY.get(ch, ch) for ch in verdict.channels) or None
    low, high = verdict.low, verdict.high
    if low is not None and high is not None and len(r.anomaly.metrics) == 1:
        out["low"], out["high"] = low, high
        out["normal"] = f"{_shown(out['metric'], low)}–{_shown(out['metric'], high)}"
        out["over"] = human_duration(verdict.span_s) if verdict.span_s > 0 else "few samples"
    return out


def _shown(metric: str, v: float | None) -> str:
    """A value as a summary shows it: bytes in binary units, others to 3 significant digits."""
    if v is None:
        return "?"
    return human_bytes(v) if metric.endswith("_bytes") else f"{v:.3g}"
