"""Time to the limit: when a container's memory (or its task count) reaches its limit, at
its recent trend.

:class:`Forecast` is a stage between the collector and the anomaly stage; each interval it
reads every container's ``mem.working_set_bytes`` and ``mem.limit_bytes`` and adds
``mem.time_to_limit_s`` and ``mem.time_to_limit_confidence`` to that container's values
when, and only when, its memory grows steadily toward a limit; the same for ``proc.count``
toward ``proc.limit`` (``pids.max``) as ``proc.time_to_limit_s`` and
``proc.time_to_limit_confidence`` (below, "the working set" reads "the task count" there;
an OOM kill does not start a task count's series again). It runs in the daemon and in
``replay`` alike (recordings hold what the sources measured; the forecast is made again).

How (docs/metrics.md, "Time to the limit"):

* The working set (memory in use less the cache the kernel reclaims first: what grows
  toward an OOM kill while caches come and go) is taken down to its **minimum per
  15 seconds**: allocation spikes and short-lived buffers do not make a trend, the floor
  under them does.
* A straight line is fitted (least squares) to the last **20 minutes** of those minima.
  It is a forecast only when the line rises, when the rise is far outside the scatter
  (slope at least :data:`MIN_T` standard errors), when it spans at least **8 minutes**,
  and when the most recent third of the window still rises, clearly (two standard
  errors) and at 70 % of that pace: a growth that levels off, as a cache filling or a
  warm-up does, is not projected.
* The series starts again at a restart of the container, at an OOM kill in it, and at a
  drop of more than half (a batch that ended, a cycle that freed what it took). After such a
  drop nothing is forecast until the line passes the high-water mark of the cycle before it
  by 5 %, for an hour: a container that has already come back down from that level is not
  leaking toward it. Nor is anything forecast in an interval whose working set is less
  than half the line's (a drop the next minimum will start again from).
* When a forecast ends (the growth stopped, the container restarted), both metrics are NaN
  for one interval: no value, so that a rule on them resolves at once rather than when the
  last forecast goes stale.
* ``mem.time_to_limit_s`` is the time until the fitted line reaches the limit (0 when it
  is at or past it), given when that is at most six times as far ahead as the time the
  line was fitted to (2 hours at 20 minutes): further is not a forecast but a guess; ``mem.time_to_limit_confidence`` is the fit's R² (0-1): the share of
  the working set's movement in the window that the straight line explains.

The work per interval is a comparison per container; a fit (over at most 80 points) runs
once per 15 s per container whose memory has a limit.

>>> from cgwatch.model import Container, Sample
>>> web = Container(id="4f1c", name="web-1", runtime="docker")
>>> f = Forecast()
>>> def tick(t, ws):     # 10 MiB a minute toward a 512 MiB limit, from 100 MiB
...     return f.step(float(t), [Sample(float(t), web, "mem.working_set_bytes", ws),
...                              Sample(float(t), web, "mem.limit_bytes", 512 * 2**20)], [])
>>> out = [tick(t, (100 + t / 6) * 2**20) for t in range(0, 600, 5)]
>>> [s.metric for s in out[-1]][-2:]
['mem.time_to_limit_s', 'mem.time_to_limit_confidence']
>>> round(out[-1][-2].value / 60), round(out[-1][-1].value, 3)    # minutes left, R²
(31, 1.0)
>>> [s.metric for s in out[20]][-1]     # after 100 s: too short a trend to say
'mem.limit_bytes'
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from .model import Event, Frame, Sample, new_sample, rows_of

WORKING_SET, LIMIT = "mem.working_set_bytes", "mem.limit_bytes"
TIME_TO_LIMIT, CONFIDENCE = "mem.time_to_limit_s", "mem.time_to_limit_confidence"
_OOM = "mem.oom_kills"
_NAN = math.nan
_RESTARTS = "proc.restarts"

#: the working set is taken down to its minimum over this many seconds
STEP_S = 15.0
#: the line is fitted to this many of those minima (20 minutes)
WINDOW = 80
#: and forecasts once they span this long
MIN_SPAN_S = 480.0
#: the slope must be this many of its standard errors above 0
MIN_T = 5.0
#: the window's latest third must rise at least at this share of the whole window's slope,
#: by at least RECENT_T of its own standard errors
RECENT_SHARE, RECENT_T = 0.7, 2.0
#: nothing is forecast further ahead than this many times the time the line was fitted to
HORIZON = 6.0
#: a minimum below this share of the one before starts the series again (a cycle's end)
DROP = 0.5
#: after such a drop, nothing is forecast until the line passes the cycle's peak by this share,
#: for this long
PEAK_MARGIN, PEAK_MEMORY_S = 0.05, 3600.0


@dataclass(frozen=True, slots=True)
class Pace:
    """The forecast's time scale: minima per ``step_s``, ``window`` of them, forecasts from
    ``min_span_s`` on. The daemon's is the one above; a test that cannot wait 8 minutes
    shortens it (the rest of the method is the same)."""

    step_s: float = STEP_S
    window: int = WINDOW
    min_span_s: float = MIN_SPAN_S


SHIPPED = Pace()


@dataclass(frozen=True, slots=True)
class Fit:
    """A line through (t, y): ``y = level + slope * (t - at)``, and its R²."""

    at: float
    level: float
    slope: float
    r2: float


def fit_line(ts: Sequence[float], ys: Sequence[float], min_t: float = MIN_T) -> Fit | None:
    """The least-squares line through the points, or None when it does not rise by at least
    ``min_t`` standard errors of its slope (too few points, flat, falling, or scattered).

    >>> fit_line([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0])
    Fit(at=1.5, level=4.0, slope=2.0, r2=1.0)
    >>> fit_line([0, 1, 2, 3], [7.0, 5.0, 3.0, 1.0]) is None, fit_line([0, 1, 2, 3], [1.0, 5.0, 1.0, 5.0]) is None
    (True, True)
    """
    n = len(ts)
    if n < 3:
        return None
    mt, my = math.fsum(ts) / n, math.fsum(ys) / n
    stt = syy = sty = 0.0
    for t, y in zip(ts, ys):
        dt, dy = t - mt, y - my
        stt += dt * dt
        syy += dy * dy
        sty += dt * dy
    if stt <= 0.0 or sty <= 0.0:
        return None
    slope = sty / stt
    r2 = min(1.0, sty * sty / (stt * syy)) if syy > 0.0 else 1.0
    resid = max(0.0, syy - slope * sty)         # residual sum of squares
    se = math.sqrt(resid / (n - 2) / stt)
    if se > 0.0 and slope < min_t * se:
        return None
    return Fit(mt, my, slope, r2)


class Trend:
    """One container's working-set minima and the line through them."""

    __slots__ = ("pace", "ts", "ys", "bucket", "low", "fit", "span", "peak", "peak_until", "shown")

    def __init__(self, pace: Pace = SHIPPED) -> None:
        self.pace = pace
        self.ts, self.ys = array("d"), array("d")
        self.bucket = -1            # the step_s slot being taken down to its minimum
        self.low = math.inf
        self.fit: Fit | None = None
        self.span = 0.0             # the time the fit covers
        self.peak = 0.0             # the last cycle's high-water mark, while it is remembered
        self.peak_until = 0.0
        self.shown = False          # the last interval had a forecast

    def restart(self) -> None:
        """Forget the series and any cycle before it (a restart, an OOM kill)."""
        del self.ts[:], self.ys[:]
        self.bucket, self.low, self.fit, self.peak_until = -1, math.inf, None, 0.0

    def add(self, ts: float, ws: float) -> None:
        step = self.pace.step_s
        slot = int(ts // step)
        if slot == self.bucket:
            if ws < self.low:
                self.low = ws
            return
        if self.bucket >= 0:
            self._close((self.bucket + 0.5) * step, self.low)
        self.bucket, self.low = slot, ws

    def _close(self, t: float, low: float) -> None:
        ys = self.ys
        if ys and low < DROP * ys[-1]:     # a cycle ended: its peak is remembered, the series starts again
            self.peak, self.peak_until = max(ys), t + PEAK_MEMORY_S
            del self.ts[:], ys[:]
        self.ts.append(t)
        ys.append(low)
        if len(ys) > self.pace.window:
            del self.ts[0], ys[0]
        self.fit = self._fit()
        self.span = self.ts[-1] - self.ts[0]

    def _fit(self) -> Fit | None:
        ts, ys = self.ts, self.ys
        if len(ts) < 3 or ts[-1] - ts[0] < self.pace.min_span_s:
            return None
        whole = fit_line(ts, ys)
        if whole is None:
            return None
        k = len(ts) // 3
        recent = fit_line(ts[-k:], ys[-k:], min_t=RECENT_T)
        if recent is None or recent.slope < RECENT_SHARE * whole.slope:
            return None
        return whole

    def forecast(self, now: float, ws: float, limit: float) -> tuple[float, float] | None:
        """(seconds until the line reaches ``limit``, R²), or None when there is no forecast:
        none yet, none while ``ws`` (now) is a drop from the line, none under the last cycle's peak."""
        f = self.fit
        if f is None:
            return None
        level = f.level + f.slope * (now - f.at)
        if ws < DROP * level or (now < self.peak_until and level <= self.peak * (1.0 + PEAK_MARGIN)):
            return None
        ttl = max(0.0, (limit - level) / f.slope)
        return None if ttl > HORIZON * self.span else (ttl, f.r2)


@dataclass(frozen=True, slots=True)
class Resource:
    """What is forecast: ``value`` growing toward ``limit`` (both metrics of a row), given as
    ``ttl`` and ``confidence``; ``oom`` whether an OOM kill starts its series again."""

    value: str
    limit: str
    ttl: str
    confidence: str
    oom: bool


#: memory (its working set) toward its limit, and tasks toward the pids limit
RESOURCES = (Resource(WORKING_SET, LIMIT, TIME_TO_LIMIT, CONFIDENCE, True),
             Resource("proc.count", "proc.limit", "proc.time_to_limit_s", "proc.time_to_limit_confidence", False))
#: what the stage adds (docs/metrics.md)
METRICS = tuple(m for r in RESOURCES for m in (r.ttl, r.confidence))


class Forecast:
    """The stage: one :class:`Trend` per container and resource that has a limit."""

    def __init__(self, pace: Pace = SHIPPED) -> None:
        self.pace = pace
        #: (container id, index in RESOURCES) -> its trend
        self.trends: dict[tuple[str, int], Trend] = {}

    def step(self, now: float, samples: Sequence[Sample], events: Sequence[Event]) -> Sequence[Sample]:
        """The interval's samples with the forecasts added: a :class:`Frame` gets them in its
        rows, any other sequence comes back as a new list that ends with them."""
        trends = self.trends
        for e in events:
            if e.kind in ("container_start", "oom_kill", "container_stop"):
                for i, r in enumerate(RESOURCES):
                    key = (e.container.id, i)
                    tr = trends.get(key)
                    if tr is None:
                        continue
                    if e.kind == "container_stop":
                        del trends[key]
                    elif e.kind == "container_start" or r.oom:
                        tr.restart()
        out: list[tuple[object, float, dict[str, float]]] = []
        for c, ts, values in rows_of(samples):
            found: dict[str, float] | None = None
            for i, r in enumerate(RESOURCES):
                v = values.get(r.value)
                if v is None:
                    continue
                limit = values.get(r.limit)
                key = (c.id, i)
                tr = trends.get(key)
                if limit is None:          # no limit (any more): nothing to reach
                    if tr is not None:
                        del trends[key]
                    continue
                if tr is None:
                    tr = trends[key] = Trend(self.pace)
                elif (r.oom and values.get(_OOM, 0.0) > 0.0) or values.get(_RESTARTS, 0.0) > 0.0:
                    tr.restart()
                tr.add(ts, v)
                got = tr.forecast(ts, v, limit)
                if got is not None:
                    found = found if found is not None else {}
                    found[r.ttl], found[r.confidence] = got
                elif tr.shown:           # withdrawn: said once, so that a rule on it resolves now
                    found = found if found is not None else {}
                    found[r.ttl] = found[r.confidence] = _NAN
                tr.shown = got is not None
            if found:
                out.append((c, ts, found))
        if not out:
            return samples
        if isinstance(samples, Frame):
            for c, ts, values in out:
                samples.add(c, ts, values)   # type: ignore[arg-type]
            return samples
        return [*samples, *(new_sample(ts, c, m, v) for c, ts, values in out  # type: ignore[arg-type]
                            for m, v in values.items())]
