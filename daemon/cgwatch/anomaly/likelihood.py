"""``likelihood``: four views of one series, each judged by its own anomaly likelihood.

The default baseline. It fires when a value is unusual in any of four ways
(an *channel* each), and it judges the three scored channels by how unlikely
their recent scores are, not by how high one score is:

- ``range``: the value leaves the range the series kept over the last
  ``max(range_samples, range_s)`` (3,000 samples and at least a day) by more
  than ``tol`` (2 %) of that range. The strongest single channel on public
  data; muted while range breaks are routine (an EW rate above 1 %: a series
  that drifts makes new extremes every day, and they are not news).
- ``daily``: distance from the same time of day on the days before (288
  bins of 5 minutes, learnt from earlier days only) or from the same hour a
  week before, whichever is nearer, in units of its usual distance: a quiet
  Saturday is normal when last Saturday was quiet too. Silent until a bin has
  a past day.
- ``local``: robust z of the value and of its first difference against the
  median and interquartile range of the last 256 (on ``log(x + 1 % of the
  mean)`` while the series has never been negative: container metrics are
  multiplicative, so a doubling means the same at any level).
- ``global``: z against the all-time mean and variance (the z River's
  ``StandardAbsoluteDeviation`` scores; Welford's update written here, as
  importing ``river.stats`` for it costs the daemon 16 MB of memory).

``daily``, ``local`` and ``global`` scores are squashed to [0, 1] and fed to
an anomaly *likelihood* (Numenta's HTM paper, bounded and exponentially
weighted): the mean of the last 20 squashed scores, against a normal fitted
to all earlier such means; the channel fires when that mean is ``-log10``
tail ≥ 8 (``daily``) or 6 (``local``, ``global``) unlikely. An everyday
burst raises the short mean a little, where an anomaly lifts it far past what
the series has ever done, whatever the raw scale of its scores.

The detector says which channels fired (:attr:`fired`); the
:class:`~cgwatch.anomaly.thresholds.Thresholder` turns that into alert
onsets (warm-up of 150 samples, no new onset within 100 samples of the last).
``update`` returns the highest channel's share of its threshold (1.0 means
"at the threshold"), which is what ``anomaly.score`` shows.

``sensitivity`` (0, 1], default 0.5, moves every likelihood threshold: 1.0
lowers them by 2 decades, 0.1 raises them by 1.6.

How it was chosen, and what it scores on public and synthetic series:
docs/anomaly.md.

Examples
--------
>>> d = LikelihoodDetector()
>>> quiet = [d.update(60.0 * t, 10.0 + (t % 5) * 0.1) for t in range(300)]
>>> d.fired
()
>>> round(d.update(18000.0, 40.0), 2), d.fired
(1.0, ('range',))
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from typing import Any

from cgwatch.anomaly.base import Band, BaseDetector, _count, _finite, band_of, finite_list
from cgwatch.anomaly.robust import _LN2, LogScale, _push, _Ring

_sqrt, _erfc, _log10 = math.sqrt, math.erfc, math.log10
DAY = 86400.0
WEEK = 7 * DAY
#: the weekly profile's bins: the hours of a week
WEEK_BINS = 168
_RS2 = 1.0 / math.sqrt(2.0)


class Likelihood:
    """HTM's anomaly likelihood, bounded: how unlikely the mean of the last ``k`` scores is.

    ``-log10 P(N(mu, var) >= a)`` where ``a`` is the mean of the last ``k``
    scores and ``mu``, ``var`` are fitted to every earlier such mean,
    exponentially weighted with memory ``1 / alpha`` (plain averages before
    that), floored as Numenta floors them. None for the first ``learn`` means.

    >>> lik = Likelihood(k=5, learn=10)
    >>> out = [lik.update(0.1) for _ in range(50)]
    >>> out[0], round(out[-1], 2)
    (None, 0.3)
    >>> lik.update(1.0) > 6 or [lik.update(1.0) for _ in range(2)][-1] > 6
    True
    """

    __slots__ = ("k", "alpha", "learn", "buf", "sum", "n", "mu", "var")

    #: Numenta's floors on the fitted mean and variance (written out in :meth:`update`)
    MIN_MEAN = 0.03
    MIN_VAR = 0.0003

    def __init__(self, k: int = 20, alpha: float = 1.0 / 4000, learn: int = 50) -> None:
        self.k, self.alpha, self.learn = int(k), float(alpha), int(learn)
        self.buf: deque[float] = deque(maxlen=self.k)
        self.sum = 0.0
        self.n = 0
        self.mu = self.var = 0.0

    def update(self, s: float) -> float | None:
        """Add one score in [0, 1]; the likelihood of the new short mean, in decades."""
        buf = self.buf
        if len(buf) == self.k:
            self.sum -= buf[0]
        buf.append(s)
        self.sum += s
        a = self.sum / len(buf)
        out = None
        n, mu, var = self.n, self.mu, self.var
        if n >= self.learn:    # per sample: local names and compares, not max() (the hot path)
            z = (a - (mu if mu > 0.03 else 0.03)) / _sqrt(var if var > 0.0003 else 0.0003)
            p = 0.5 * _erfc(z * _RS2)
            out = -_log10(p) if p > 1e-300 else 300.0
        n += 1
        self.n = n
        w = 1.0 / n
        if w < self.alpha:
            w = self.alpha
        d = a - mu
        self.mu = mu + w * d
        self.var = (1.0 - w) * (var + w * d * d)
        return out

    def state(self) -> dict[str, Any]:
        return {"buf": list(self.buf), "sum": self.sum, "n": self.n, "mu": self.mu, "var": self.var}

    def load(self, d: dict[str, Any]) -> None:
        self.buf = deque(finite_list(d["buf"], self.k), maxlen=self.k)
        self.sum = _finite(d["sum"])
        self.n = _count(d["n"])
        self.mu, self.var = _finite(d["mu"]), _finite(d["var"])
        if self.var < 0:
            raise ValueError("negative variance")


class RangeChannel:
    """How far a value leaves the recent range, as a share of that range.

    The range is the min and max of closed blocks (each at least ``block``
    samples and ``span_s / blocks`` seconds) and of the open one, so memory is
    ``2 x blocks`` floats whatever the window holds.

    >>> r = RangeChannel(samples=10, block=5)
    >>> [r.update(float(t), float(t % 3)) for t in range(10)][-1]
    0.0
    >>> r.update(10.0, 4.0)
    1.0
    """

    __slots__ = ("block", "blocks", "block_s", "mins", "maxs", "cmin", "cmax", "cn", "t0", "lo", "hi")

    def __init__(self, samples: int = 3000, block: int = 100, span_s: float = DAY) -> None:
        self.block = max(1, int(block))
        self.blocks = max(1, int(samples) // self.block)
        self.block_s = float(span_s) / self.blocks
        self.mins: deque[float] = deque(maxlen=self.blocks)
        self.maxs: deque[float] = deque(maxlen=self.blocks)
        self.cmin, self.cmax, self.cn = math.inf, -math.inf, 0
        self.t0: float | None = None
        self.lo, self.hi = math.inf, -math.inf     # of the closed blocks, kept as they close

    def bounds(self) -> tuple[float, float]:
        """(min, max) of what the window holds; (inf, -inf) when empty."""
        return min(self.lo, self.cmin), max(self.hi, self.cmax)

    def update(self, ts: float, x: float) -> float | None:
        """The excess of ``x`` beyond the range before it (None when empty); then learn it."""
        cmin, cmax = self.cmin, self.cmax
        lo = self.lo if self.lo < cmin else cmin
        hi = self.hi if self.hi > cmax else cmax
        out = None
        if hi >= lo:
            r = hi - lo
            if r > 0:
                out = (x - hi) / r if x > hi else (lo - x) / r if x < lo else 0.0
            else:
                out = 0.0 if x == hi else 1.0
        if x < cmin:
            self.cmin = x
        if x > cmax:
            self.cmax = x
        self.cn += 1
        if self.t0 is None:
            self.t0 = ts
        if self.cn >= self.block and ts - self.t0 >= self.block_s:
            self.mins.append(self.cmin)
            self.maxs.append(self.cmax)
            self.lo, self.hi = min(self.mins), max(self.maxs)
            self.cmin, self.cmax, self.cn, self.t0 = math.inf, -math.inf, 0, None
        return out

    def state(self) -> dict[str, Any]:
        open_ = None if self.cn == 0 else [self.cmin, self.cmax, self.cn, self.t0]
        return {"mins": list(self.mins), "maxs": list(self.maxs), "open": open_}

    def load(self, d: dict[str, Any]) -> None:
        mins, maxs = finite_list(d["mins"], self.blocks), finite_list(d["maxs"], self.blocks)
        if len(mins) != len(maxs):
            raise ValueError("range blocks do not match")
        self.mins, self.maxs = deque(mins, maxlen=self.blocks), deque(maxs, maxlen=self.blocks)
        self.lo, self.hi = min(mins, default=math.inf), max(maxs, default=-math.inf)
        if d["open"] is not None:
            lo, hi, n, t0 = d["open"]
            self.cmin, self.cmax, self.cn, self.t0 = _finite(lo), _finite(hi), _count(n), _finite(t0)


class DailyChannel:
    """Distance from the same time of day on earlier days, in units of its usual distance.

    A bin's samples are averaged while it is current and folded into the
    profile (EW ``a_prof``) when the next bin starts, so the profile means the
    same at 1 s and at 1 h sampling, and today never predicts itself.

    >>> d = DailyChannel()
    >>> [d.update(t * 3600.0, 5.0) for t in range(24)][-1] is None     # no earlier day yet
    True
    >>> [d.update(t * 3600.0, 5.0 + t % 2) for t in range(24, 48)][-1] is not None
    True
    """

    __slots__ = ("bin_s", "bins", "prof", "seen", "a_prof", "a_scale", "scale", "cur", "csum", "ccnt",
                 "week", "wcur", "wsum", "wcnt")

    def __init__(self, bin_s: float = 300.0, a_prof: float = 0.2, a_scale: float = 0.01) -> None:
        self.bin_s = float(bin_s)
        self.bins = max(1, int(DAY // self.bin_s))
        self.prof = array("d", bytes(8 * self.bins))
        self.seen = bytearray(self.bins)
        self.a_prof, self.a_scale = float(a_prof), float(a_scale)
        self.scale: float | None = None
        self.cur, self.csum, self.ccnt = -1, 0.0, 0
        # the same hour of the week, a week before (NaN: not seen): a quiet Saturday is like last Saturday
        self.week = array("d", [math.nan]) * WEEK_BINS
        self.wcur, self.wsum, self.wcnt = -1, 0.0, 0

    def update(self, ts: float, x: float) -> float | None:
        b = int((ts % DAY) // self.bin_s) % self.bins
        if b != self.cur:
            if self.ccnt:
                m, c = self.csum / self.ccnt, self.cur
                if self.seen[c]:
                    self.prof[c] += self.a_prof * (m - self.prof[c])
                else:
                    self.prof[c], self.seen[c] = m, 1
            self.cur, self.csum, self.ccnt = b, 0.0, 0
        self.csum += x
        self.ccnt += 1
        w = int((ts % WEEK) // 3600.0) % WEEK_BINS     # a tiny negative ts % WEEK rounds to WEEK itself
        if w != self.wcur:
            if self.wcnt:
                m, c = self.wsum / self.wcnt, self.wcur
                old = self.week[c]
                self.week[c] = m if old != old else old + 0.5 * (m - old)
            self.wcur, self.wsum, self.wcnt = w, 0.0, 0
        self.wsum += x
        self.wcnt += 1
        if not self.seen[b]:
            return None
        r = abs(x - self.prof[b])
        last_week = self.week[w]
        if last_week == last_week:   # like this hour of the week before is normal too
            r = min(r, abs(x - last_week))
        scale = self.scale
        self.scale = r if scale is None else scale + self.a_scale * (r - scale)
        return None if scale is None else r / (scale + 1e-9 + 1e-6 * abs(x))

    def state(self) -> dict[str, Any]:
        return {"prof": [p if s else None for p, s in zip(self.prof, self.seen)], "scale": self.scale,
                "cur": [self.cur, self.csum, self.ccnt],
                "week": [None if p != p else p for p in self.week], "wcur": [self.wcur, self.wsum, self.wcnt]}

    def load(self, d: dict[str, Any]) -> None:
        prof = d["prof"]
        if not isinstance(prof, list) or len(prof) != self.bins:
            raise ValueError("daily profile does not match params")
        for i, p in enumerate(prof):
            self.prof[i], self.seen[i] = (0.0, 0) if p is None else (_finite(p), 1)
        self.scale = None if d["scale"] is None else _finite(d["scale"])
        cur, csum, ccnt = d["cur"]
        if isinstance(cur, bool) or not isinstance(cur, int) or not -1 <= cur < self.bins:
            raise ValueError(f"bad daily bin {cur!r}")
        self.cur, self.csum, self.ccnt = cur, _finite(csum), _count(ccnt)
        week = d["week"]
        if not isinstance(week, list) or len(week) != WEEK_BINS:
            raise ValueError("weekly profile does not match")
        for i, p in enumerate(week):
            self.week[i] = math.nan if p is None else _finite(p)
        wcur, wsum, wcnt = d["wcur"]
        if isinstance(wcur, bool) or not isinstance(wcur, int) or not -1 <= wcur < WEEK_BINS:
            raise ValueError(f"bad weekly bin {wcur!r}")
        self.wcur, self.wsum, self.wcnt = wcur, _finite(wsum), _count(wcnt)


class Quartiles:
    """Exact quartiles of the last ``n`` values: a ring and a sorted copy of doubles.

    Hand-written rather than three ``river.stats.RollingQuantile``: those keep a
    window each (three copies, ~20 KB per channel against 4 KB here) and cannot
    hand their window back for the JSON state a restart loads.

    >>> q = Quartiles(5)
    >>> for x in (5.0, 1.0, 4.0, 2.0, 3.0, 9.0):
    ...     q.add(x)
    >>> q.get()
    (2.0, 3.0, 4.0)
    """

    __slots__ = ("n", "ring", "sorted")

    def __init__(self, n: int = 256) -> None:
        self.n = int(n)
        self.ring = _Ring(self.n)
        self.sorted = array("d")

    def __len__(self) -> int:
        return len(self.sorted)

    def add(self, x: float) -> None:
        _push(self.ring, self.sorted, x, self.n)

    def get(self) -> tuple[float, float, float]:
        s = self.sorted
        last = len(s) - 1
        return s[int(0.25 * last + 0.5)], s[int(0.5 * last + 0.5)], s[int(0.75 * last + 0.5)]

    def state(self) -> list[float]:
        return self.ring.ordered()

    def load(self, values: Any) -> None:
        for x in finite_list(values, self.n):
            self.add(x)


class LocalChannel:
    """The larger robust z of the value and of its first difference (median and IQR of the last ``n``).

    >>> c = LocalChannel(64)
    >>> [c.update(float(t % 4)) for t in range(40)][-1] < 3
    True
    >>> c.update(30.0) > 10
    True
    """

    __slots__ = ("x", "dx", "prev")

    def __init__(self, n: int = 256) -> None:
        self.x, self.dx = Quartiles(n), Quartiles(n)
        self.prev: float | None = None

    def update(self, x: float) -> float | None:
        out = None
        prev = self.prev
        if prev is not None:
            dx = x - prev
            if len(self.x) > 10:
                eps = 1e-9 + 1e-6 * abs(x)
                q1, q2, q3 = self.x.get()
                d1, d2, d3 = self.dx.get()
                out = 1.349 * max(abs(x - q2) / (q3 - q1 + eps), abs(dx - d2) / (d3 - d1 + eps))
            self.dx.add(dx)
        self.x.add(x)
        self.prev = x
        return out

    def state(self) -> dict[str, Any]:
        return {"x": self.x.state(), "dx": self.dx.state(), "prev": self.prev}

    def load(self, d: dict[str, Any]) -> None:
        self.x.load(d["x"])
        self.dx.load(d["dx"])
        self.prev = None if d["prev"] is None else _finite(d["prev"])


class Moments:
    """Running count, mean and variance (Welford), as ``river.stats.Var`` keeps them.

    >>> m = Moments()
    >>> for x in (3.0, 5.0, 4.0, 7.0, 10.0, 12.0):
    ...     m.add(x)
    >>> m.mean, round(m.var(), 5)
    (6.833333333333333, 12.56667)
    """

    __slots__ = ("n", "mean", "s2")

    def __init__(self) -> None:
        self.n, self.mean, self.s2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.s2 += d * (x - self.mean)

    def var(self) -> float:
        """The sample variance (0 before two values)."""
        return self.s2 / (self.n - 1) if self.n > 1 else 0.0


class LikelihoodDetector(BaseDetector):
    """Range, daily, local and global channels; each scored one judged by its likelihood.

    >>> d = LikelihoodDetector(sensitivity=1.0)
    >>> d.thresholds
    {'daily': 6.0, 'local': 4.0, 'global': 4.0}
    >>> LikelihoodDetector(sensitivity=0)
    Traceback (most recent call last):
    ...
    ValueError: sensitivity must be in (0, 1], not 0
    """

    kind = "likelihood"
    CHANNELS = ("range", "daily", "local", "global")
    #: -log10 tail each likelihood channel fires at, for sensitivity 0.5
    THRESHOLDS = {"daily": 8.0, "local": 6.0, "global": 6.0}
    #: squash half-points: the z that scores 0.5 before the likelihood
    HALF = {"daily": 6.0, "local": 6.0, "global": 4.0}
    #: the range channel: excess over the range, and the rate of breaks that mutes it
    TOL, MUTE_RATE, RATE_ALPHA = 0.02, 0.01, 0.001

    def __init__(self, *, sensitivity: float = 0.5, range_samples: int = 3000, range_s: float = DAY,
                 window: int = 256, bin_s: float = 300.0, k: int = 20, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0.0 < float(sensitivity) <= 1.0:
            raise ValueError(f"sensitivity must be in (0, 1], not {sensitivity}")
        self.sensitivity = float(sensitivity)
        self.range_samples, self.range_s = int(range_samples), float(range_s)
        self.window, self.bin_s, self.k = int(window), float(bin_s), int(k)
        shift = 4.0 * (self.sensitivity - 0.5)
        self.thresholds = {c: t - shift for c, t in self.THRESHOLDS.items()}
        self.fired: tuple[str, ...] = ()
        self._range = RangeChannel(self.range_samples, 100, self.range_s)
        self._rate = 0.0
        self._daily = DailyChannel(self.bin_s)
        self._local = LocalChannel(self.window)
        self._scale = LogScale()
        self._moments = Moments()
        self._lik = {c: Likelihood(self.k) for c in self.THRESHOLDS}
        self._judges = tuple((c, self._lik[c], self.HALF[c], self.thresholds[c]) for c in ("daily", "local", "global"))

    def params(self) -> dict[str, Any]:
        """Constructor arguments.

        >>> sorted(LikelihoodDetector().params())
        ['bin_s', 'k', 'nonnegative', 'range_s', 'range_samples', 'seed', 'sensitivity', 'window']
        """
        return {**super().params(), "sensitivity": self.sensitivity, "range_samples": self.range_samples,
                "range_s": self.range_s, "window": self.window, "bin_s": self.bin_s, "k": self.k}

    def _learn(self, ts: float, value: float, last_ts: float | None) -> float | None:
        fired: list[str] = []
        score: float | None = None
        e = self._range.update(ts, value)
        hit = e is not None and e > self.TOL
        if hit and self._rate <= self.MUTE_RATE:
            fired.append("range")
        if e is not None:
            score = min(1.0, e / self.TOL) if self._rate <= self.MUTE_RATE else 0.0
        self._rate += self.RATE_ALPHA * (hit - self._rate)

        daily, local, glob = self._judges
        score = self._judge(daily, self._daily.update(ts, value), score, fired)
        score = self._judge(local, self._local.update(self._local_scale(value)), score, fired)
        mo = self._moments
        z = abs(value - mo.mean) / (_sqrt(mo.var()) + 1e-10) if mo.n else None
        score = self._judge(glob, z, score, fired)
        mo.add(value)
        self.fired = tuple(fired) if fired else ()
        return score

    @staticmethod
    def _judge(judge: tuple[str, Likelihood, float, float], z: float | None, score: float | None,
               fired: list[str]) -> float | None:
        if z is None:
            return score
        channel, lik, half, thr = judge
        q = z / half
        got = lik.update(1.0 - math.exp(-_LN2 * q * q))      # squash(z, half), inline: the hot path
        if got is None:
            return score
        if got >= thr:
            fired.append(channel)
        got = got / thr if got < thr else 1.0
        return got if score is None or got > score else score

    def _local_scale(self, x: float) -> float:
        """``x`` on the scale the local channel reads: log while the series was never negative."""
        sc = self._scale
        if sc.on and x < 0.0:   # not a non-negative series after all: the local channel starts over, raw
            sc.on = False
            self._local = LocalChannel(self.window)
        return sc(x, self._samples)

    def band(self) -> Band | None:
        """Where 98 % of the last 256 values lie (on the value's own scale), and their span."""
        return band_of(self._local.x.sorted, self._span(self.window), self._scale.back)

    def _data(self) -> dict[str, Any]:
        mo = self._moments
        return {
            "range": self._range.state(), "rate": self._rate, "daily": self._daily.state(),
            "local": self._local.state(), "log": self._scale.on, "mean": self._scale.mean,
            "global": [mo.n, mo.mean, mo.s2],
            "lik": {c: lik.state() for c, lik in self._lik.items()}, "fired": list(self.fired),
        }

    def _load(self, data: dict[str, Any]) -> None:
        self._range.load(data["range"])
        self._rate = _finite(data["rate"])
        self._daily.load(data["daily"])
        self._local.load(data["local"])
        if not isinstance(data["log"], bool):
            raise ValueError("log flag must be a bool")
        self._scale.on = data["log"]
        self._scale.mean = None if data["mean"] is None else _finite(data["mean"])
        n, m, s2 = data["global"]
        self._moments.n, self._moments.mean, self._moments.s2 = _count(n), _finite(m), _finite(s2)
        if s2 < 0:
            raise ValueError("bad global moments")
        for c, lik in self._lik.items():
            lik.load(data["lik"][c])
        fired = data["fired"]
        if not isinstance(fired, list) or not set(fired) <= set(self.CHANNELS):
            raise ValueError(f"bad fired channels {fired!r}")
        self.fired = tuple(fired)
