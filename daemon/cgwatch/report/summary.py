"""Read a recording once and reduce it to what a report shows (no HTML here).

One pass feeds every line both to an :class:`Aggregator` (per container ×
metric: timestamps and values appended to compact ``array('d')`` buffers,
turned into numpy arrays once at the end) and, when rules are given, to the
same :class:`~cgwatch.rules.engine.Engine` that ``cgwatch replay`` runs. Bad
lines are counted and skipped, never fatal: a report of a damaged file is
still a report, and it says what was skipped.

Percentiles are numpy's default ``linear`` method (type 7 of Hyndman & Fan,
the one spreadsheets call PERCENTILE.INC).
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..anomaly.stage import AnomalyStage
from ..forecast import Forecast
from ..model import Alert, Event, Sample
from ..record import read_recording
from ..rules.engine import Engine, intervals
from ..web.card import card_of
from ..web.history import History
from .fmt import unit_of

PERCENTILE_METHOD = "linear"
MAX_POINTS = 600
TOP_N = 5
#: how many skipped lines a report names (all are counted)
SHOW_SKIPPED = 5

#: top offenders: (title, how, metrics summed, unit of the result)
OFFENDERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("CPU", "mean", ("cpu.usage_cores",)),
    ("Memory", "max", ("mem.usage_bytes",)),
    ("Execs", "mean", ("proc.execs",)),
    ("Network", "mean", ("net.rx_bytes", "net.tx_bytes")),
    ("Run-queue latency p99", "mean", ("cpu.runq_latency_p99_ms",)),
)


@dataclass(frozen=True, slots=True)
class Stats:
    """Count, mean, median, 95th percentile and maximum of one series (finite values only)."""

    count: int
    mean: float
    p50: float
    p95: float
    max: float
    first_ts: float
    last_ts: float

    @classmethod
    def of(cls, ts: np.ndarray, values: np.ndarray) -> Stats:
        """The statistics of one series.

        >>> s = Stats.of(np.arange(100.0), np.arange(100.0))
        >>> (s.count, s.mean, s.p50, s.p95, s.max, s.first_ts, s.last_ts)
        (100, 49.5, 49.5, 94.05, 99.0, 0.0, 99.0)
        """
        v = values[np.isfinite(values)]
        if not len(v):
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, float(ts[0]), float(ts[-1]))
        p50, p95 = np.percentile(v, [50, 95], method=PERCENTILE_METHOD)
        return cls(len(v), float(v.mean()), float(p50), float(p95), float(v.max()), float(ts[0]), float(ts[-1]))


@dataclass(slots=True)
class Series:
    """One container's metric: its statistics and a chart-sized copy of it."""

    metric: str
    stats: Stats
    x: list[float]
    y: list[float | None]
    hi: list[float | None] | None = None   # per-bucket maximum when downsampled


@dataclass(slots=True)
class ContainerSummary:
    """Everything the report says about one container."""

    name: str
    id: str
    image: str
    runtime: str
    series: dict[str, Series] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Skipped:
    """Lines of the recording that could not be read: how many, and the first few."""

    count: int = 0
    first: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        """Count one bad line; keep its number and reason if it is among the first."""
        self.count += 1
        if len(self.first) < SHOW_SKIPPED:
            self.first.append((line, reason))


@dataclass(slots=True)
class Offenders:
    """The containers highest on one resource."""

    title: str
    how: str
    metrics: tuple[str, ...]
    rows: list[tuple[str, float]]


@dataclass(slots=True)
class Report:
    """A recording, summarised: the input of the HTML and Markdown writers."""

    source: str
    host: str | None
    start: float | None
    end: float | None
    samples: int
    events: int
    containers: dict[str, ContainerSummary]
    skipped: Skipped
    offenders: list[Offenders]
    alerts: list[Alert] | None          # None: no rules were evaluated
    rules: int = 0
    #: index in ``alerts`` -> the root-cause card of that firing (web/card.py), as the daemon makes it
    cards: dict[int, dict[str, Any]] = field(default_factory=dict)
    percentile_method: str = PERCENTILE_METHOD

    @property
    def duration(self) -> float:
        """Seconds from the first line to the last (0 for an empty recording)."""
        return 0.0 if self.start is None or self.end is None else self.end - self.start

    def alert_counts(self) -> dict[str, dict[str, int]]:
        """Per rule: how many state changes of each kind (``firing``, ``resolved``)."""
        out: dict[str, dict[str, int]] = {}
        for a in self.alerts or ():
            c = out.setdefault(a.rule, {"firing": 0, "resolved": 0})
            c[a.state] = c.get(a.state, 0) + 1
        return dict(sorted(out.items()))


def downsample(ts: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS
               ) -> tuple[list[float], list[float | None], list[float | None] | None]:
    """A series cut to at most ``max_points`` equal time buckets: the mean time, mean and maximum of each.

    A series that already fits is returned as it is (``hi`` is None). Empty
    buckets (a gap in the recording) are ``None``, so a chart shows the gap.

    >>> x, y, hi = downsample(np.arange(10.0), np.arange(10.0), 5)
    >>> x, y, hi
    ([0.5, 2.5, 4.5, 6.5, 8.5], [0.5, 2.5, 4.5, 6.5, 8.5], [1.0, 3.0, 5.0, 7.0, 9.0])
    >>> downsample(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    ([1.0, 2.0], [3.0, 4.0], None)
    """
    if len(ts) <= max_points:
        return _times(ts), _clean(values), None
    t0, t1 = float(ts[0]), float(ts[-1])
    width = (t1 - t0) / max_points or 1.0
    idx = np.minimum(((ts - t0) / width).astype(np.int64), max_points - 1)
    v = np.where(np.isfinite(values), values, np.nan)
    counts = np.bincount(idx, minlength=max_points)
    sums = np.bincount(idx, weights=np.nan_to_num(v, nan=0.0), minlength=max_points)
    finite = np.bincount(idx, weights=np.isfinite(v).astype(float), minlength=max_points)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite > 0, sums / finite, np.nan)
    hi = np.full(max_points, np.nan)
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])   # ts are ordered, so buckets are runs
    hi[idx[starts]] = np.fmax.reduceat(v, starts)
    mean[counts == 0] = np.nan
    tsum = np.bincount(idx, weights=ts - t0, minlength=max_points)
    with np.errstate(invalid="ignore", divide="ignore"):   # a bucket's x: the mean time of its samples
        x = np.where(counts > 0, t0 + tsum / counts, t0 + width * (np.arange(max_points) + 0.5))
    return _times(x), _clean(mean), _clean(hi)


def _times(a: np.ndarray) -> list[float]:
    """Unix seconds to the millisecond."""
    return np.round(a, 3).tolist()


def _clean(a: np.ndarray) -> list[Any]:
    """Floats rounded to 6 significant digits (charts need no more), NaN/inf as None."""
    return [float(f"{v:.6g}") if np.isfinite(v) else None for v in a.tolist()]


class Aggregator:
    """Collects a recording's Samples and Events per container, streaming.

    >>> from cgwatch.model import Container
    >>> web = Container(id="w", name="web", runtime="docker")
    >>> agg = Aggregator()
    >>> for i in range(4):
    ...     agg.add(Sample(float(i), web, "cpu.usage_cores", i / 2))
    >>> agg.add(Event(2.0, web, "exec"))
    >>> cs = agg.containers()
    >>> cs["web"].series["cpu.usage_cores"].stats.mean, cs["web"].events
    (0.75, {'exec': 1})
    """

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self.samples = 0
        self.events = 0
        self.start: float | None = None
        self.end: float | None = None
        self._meta: dict[str, tuple[str, str, str]] = {}
        self._data: dict[tuple[str, str], tuple[array[float], array[float]]] = {}
        self._events: dict[str, Counter[str]] = {}

    def add(self, item: Sample | Event) -> None:
        """Take one line of the recording."""
        c = item.container
        name = c.name
        if name not in self._meta:
            self._meta[name] = (c.id, c.image, c.runtime)
        if self.start is None:
            self.start = item.ts
        self.end = item.ts
        if isinstance(item, Sample):
            self.samples += 1
            buf = self._data.get((name, item.metric))
            if buf is None:
                buf = self._data[(name, item.metric)] = (array("d"), array("d"))
            buf[0].append(item.ts)
            buf[1].append(item.value)
        else:
            self.events += 1
            self._events.setdefault(name, Counter())[item.kind] += 1

    def observe(self, items: Iterable[Sample | Event]) -> Iterator[Sample | Event]:
        """Pass ``items`` through unchanged, taking each on the way."""
        for item in items:
            self.add(item)
            yield item

    def containers(self) -> dict[str, ContainerSummary]:
        """Per container (by name, sorted): statistics and chart data of each metric, event counts."""
        out: dict[str, ContainerSummary] = {}
        for name in sorted(self._meta):
            cid, image, runtime = self._meta[name]
            out[name] = ContainerSummary(name, cid, image, runtime,
                                         events=dict(sorted(self._events.get(name, Counter()).items())))
        for (name, metric) in sorted(self._data):
            tsa, va = self._data.pop((name, metric))   # free each buffer once used
            ts, values = np.frombuffer(tsa, dtype=float), np.frombuffer(va, dtype=float)
            x, y, hi = downsample(ts, values, self.max_points)
            out[name].series[metric] = Series(metric, Stats.of(ts, values), x, y, hi)
        return out


def top_offenders(containers: dict[str, ContainerSummary], n: int = TOP_N) -> list[Offenders]:
    """Per resource of :data:`OFFENDERS` some container has: the ``n`` highest containers.

    >>> cs = {}
    >>> for name, v in [("a", 1.0), ("b", 3.0)]:
    ...     s = Stats(1, v, v, v, v, 0.0, 0.0)
    ...     cs[name] = ContainerSummary(name, name, "", "", {"cpu.usage_cores": Series("cpu.usage_cores", s, [], [])})
    >>> [(o.title, o.rows) for o in top_offenders(cs)]
    [('CPU', [('b', 3.0), ('a', 1.0)])]
    """
    out = []
    for title, how, metrics in OFFENDERS:
        rows = []
        for name, c in containers.items():
            got = [getattr(c.series[m].stats, how) for m in metrics if m in c.series]
            got = [v for v in got if v == v]
            if got:
                rows.append((name, float(sum(got))))
        if rows:
            rows.sort(key=lambda r: (-r[1], r[0]))
            out.append(Offenders(title, how, metrics, rows[:n]))
    return out


def summarize(path: str, rules: Sequence[Any] | None = None, *, host: str | None = None,
              max_points: int = MAX_POINTS) -> Report:
    """Read the recording at ``path`` once (skipping bad lines) into a :class:`Report`.

    With ``rules`` (loaded rule objects), the alerts are those ``cgwatch
    replay`` gives for the same rules and recording. A file that cannot be
    opened raises :class:`~cgwatch.record.RecordingError`.

    >>> import os, tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write('{"ts": 1, "container": "a", "metric": "proc.execs", "value": 2}\\n{oops\\n')
    >>> r = summarize(f.name)
    >>> r.samples, r.skipped.count, r.containers["a"].series["proc.execs"].stats.max
    (1, 1, 2.0)
    >>> os.unlink(f.name)
    """
    skipped = Skipped()
    agg = Aggregator(max_points)
    items = agg.observe(read_recording(path, on_error=skipped.add))
    alerts: list[Alert] | None = None
    cards: dict[int, dict[str, Any]] = {}
    if rules is not None:
        rules = list(rules)
        alerts = replay(rules, items, cards)
    else:
        for _ in items:
            pass
    containers = agg.containers()
    return Report(source=os.path.basename(path), host=host, start=agg.start, end=agg.end,
                  samples=agg.samples, events=agg.events, containers=containers, skipped=skipped,
                  offenders=top_offenders(containers), alerts=alerts, rules=len(rules or ()), cards=cards)


def replay(rules: Sequence[Any], items: Iterable[Sample | Event], cards: dict[int, dict[str, Any]]) -> list[Alert]:
    """The alerts of ``rules`` over a recording, through the daemon's stages in its order (the
    forecast, the anomaly stage, the rules: ``cgwatch replay`` gives the same); each firing's
    root-cause card goes into ``cards`` under its index, built as the daemon builds it, from a
    :class:`~cgwatch.web.history.History` that the replay feeds as the dashboard's is fed."""
    engine, anomaly, forecast, history = Engine(rules), AnomalyStage.for_rules(rules), Forecast(), History()
    by_name = {r.name: r for r in rules}
    alerts: list[Alert] = []
    for now, samples, events in intervals(items):
        samples = forecast.step(now, samples, events)
        out = engine.step(now, samples, events, anomaly.step(now, samples))
        history.add_many(samples)
        if events:
            history.events(events)
        history.expire(now)
        for a in out:
            if a.state == "firing":
                cards[len(alerts)] = card_of(history, by_name.get(a.rule), a.container.id, a.ts)
            alerts.append(a)
    return alerts


__all__ = ["Aggregator", "Report", "Stats", "Series", "Skipped", "Offenders", "summarize", "downsample",
           "top_offenders", "unit_of"]
