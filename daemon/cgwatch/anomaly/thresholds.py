"""Turn anomaly scores into alert onsets without tuning.

:class:`Thresholder` wraps a detector. A score fires when, after ``warmup``
scored samples, it is above both the running ``q`` quantile of the scores
before it and an absolute ``floor`` for ``confirm`` samples in a row (or
once, at or above ``instant``); the alert then stays on until the score
has been below a lower mark for ``clear_after`` samples in a row, so a noisy
anomaly gives one onset, not a flapping one. ``sensitivity`` in (0, 1] sets
``q = 1 - 0.01 * sensitivity`` (0.5 -> 0.995, 1 -> 0.99).

The quantile comes from :class:`ScoreQuantile`, a histogram of scores in
``-log10(1 - score)`` (fine near 1, where anomalies live), halved when full so
it follows drift and stays bounded. The top bin is open: where the past is
saturated at a score of 1, nothing scores above the quantile, so a series
whose "anomalies" are everyday events stops firing on them.

Examples
--------
>>> from cgwatch.anomaly.models import build
>>> th = Thresholder(build("mad"))
>>> out = [th.update(float(t), 5.0 + (t % 4) * 0.1) for t in range(100)]
>>> any(onset for _, onset in out)
False
>>> score, onset = th.update(100.0, 50.0)
>>> round(score, 3), onset, th.active
(1.0, True, True)
"""

from __future__ import annotations

import math
from typing import Any

from cgwatch.anomaly.base import Detector, _count, finite_list

#: histogram range and resolution in decades of 1 - score
_DECADES = 16.0
_BINS = 256


class ScoreQuantile:
    """A bounded streaming quantile of scores in [0, 1].

    >>> q = ScoreQuantile()
    >>> for i in range(1000):
    ...     q.add(i / 1000)
    >>> round(q.quantile(0.5), 2), round(q.quantile(0.99), 2)
    (0.5, 0.99)
    """

    __slots__ = ("counts", "total", "cap")

    def __init__(self, cap: float = 100_000.0) -> None:
        self.counts = [0.0] * _BINS
        self.total = 0.0
        self.cap = float(cap)

    @staticmethod
    def _bin(score: float) -> int:
        if score >= 1.0:
            return _BINS - 1
        d = -math.log10(1.0 - max(0.0, score))
        return min(_BINS - 1, int(d / _DECADES * _BINS))

    def add(self, score: float) -> None:
        """Count one score; halve every count once ``cap`` is reached.

        >>> q = ScoreQuantile(cap=4); [q.add(0.1) for _ in range(5)] and q.total
        3.0
        """
        self.counts[self._bin(score)] += 1.0
        self.total += 1.0
        if self.total >= self.cap:
            self.counts = [c / 2.0 for c in self.counts]
            self.total /= 2.0

    def quantile(self, q: float) -> float:
        """The score below which a fraction ``q`` of the counted scores fall (bin upper edge; 0 if empty).

        >>> ScoreQuantile().quantile(0.9)
        0.0
        """
        if self.total <= 0:
            return 0.0
        need, acc = q * self.total, 0.0
        for i, c in enumerate(self.counts):
            acc += c
            if acc >= need and c > 0:
                return 1.0 if i == _BINS - 1 else 1.0 - 10.0 ** (-(i + 1) * _DECADES / _BINS)
        return 1.0

    def state(self) -> dict[str, Any]:
        """JSON-serialisable counts.

        >>> sorted(ScoreQuantile().state())
        ['cap', 'counts', 'total']
        """
        return {"counts": list(self.counts), "total": self.total, "cap": self.cap}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ScoreQuantile:
        """Rebuild from :meth:`state`; ValueError on a bad state.

        >>> ScoreQuantile.from_state({"counts": [1.0], "total": 1.0, "cap": 10.0})
        Traceback (most recent call last):
        ...
        ValueError: score histogram has 1 bins, expected 256
        """
        counts = finite_list(d["counts"])
        if len(counts) != _BINS or any(c < 0 for c in counts):
            raise ValueError(f"score histogram has {len(counts)} bins, expected {_BINS}")
        q = cls(float(d["cap"]))
        q.counts, q.total = counts, math.fsum(counts)
        return q


class Thresholder:
    """Scores to onsets: running quantile AND absolute floor, warm-up in samples, hysteresis.

    ``floor`` (default 0.6, about 3.5 robust sigmas for ``mad``/``forecast``;
    the running quantile is usually the higher mark) is the least score that
    may fire; ``clear_floor`` (default 0.5) and the
    running ``clear_q`` quantile (default 0.95), whichever is higher but never
    above the firing mark, is the score an alert must stay below for
    ``clear_after`` samples (default 5) to clear. An onset needs ``confirm``
    consecutive samples above the firing mark (default 2), unless one scores
    at least ``instant`` (default 0.99999, about 12 robust sigmas for
    ``mad``/``forecast``), which fires at once. The defaults were chosen on
    the labelled benchmark (``bench/anomaly/sweep.py``, docs/anomaly.md).

    >>> from cgwatch.anomaly.models import build
    >>> th = Thresholder(build("mad"), sensitivity=1.0)
    >>> th.q
    0.99
    >>> Thresholder(build("mad"), sensitivity=0)
    Traceback (most recent call last):
    ...
    ValueError: sensitivity must be in (0, 1], not 0
    """

    VERSION = 1
    #: samples before a judging detector (one that says which channels fired) may fire
    JUDGE_WARMUP = 150

    def __init__(
        self,
        detector: Detector,
        *,
        sensitivity: float = 0.5,
        warmup: int | None = None,
        floor: float = 0.6,
        clear_floor: float = 0.5,
        clear_q: float = 0.95,
        clear_after: int = 5,
        confirm: int = 2,
        instant: float = 0.99999,
        refractory: int = 100,
    ) -> None:
        if not 0.0 < sensitivity <= 1.0:
            raise ValueError(f"sensitivity must be in (0, 1], not {sensitivity}")
        self.detector = detector
        self.judges = hasattr(detector, "fired")
        self.sensitivity = float(sensitivity)
        self.q = 1.0 - 0.01 * self.sensitivity
        self.warmup = int(warmup if warmup is not None else self.JUDGE_WARMUP if self.judges else 30)
        self.refractory = max(0, int(refractory))
        self.floor = float(floor)
        self.clear_floor = float(clear_floor)
        self.clear_q = float(clear_q)
        self.clear_after = max(1, int(clear_after))
        self.confirm = max(1, int(confirm))
        self.instant = float(instant)
        self.scored = 0
        self.active = False
        self.last_score: float | None = None
        self._below = 0
        self._run = 0
        self._last_onset: int | None = None
        self._scores = ScoreQuantile()

    @property
    def skipped(self) -> int:
        """Values the wrapped detector skipped.

        >>> from cgwatch.anomaly.models import build
        >>> Thresholder(build()).skipped
        0
        """
        return self.detector.skipped

    def update(self, ts: float, value: float) -> tuple[float | None, bool]:
        """Learn one value; return ``(score, is_onset)``.

        >>> from cgwatch.anomaly.models import build
        >>> Thresholder(build()).update(0.0, float("nan"))
        (None, False)
        """
        score = self.detector.update(ts, value)
        if score is None:
            return None, False
        self.last_score = score
        if self.judges:
            return score, self._judge()
        past = self._scores
        onset = False
        if self.scored >= self.warmup:
            high = max(self.floor, past.quantile(self.q))
            low = min(high, max(self.clear_floor, past.quantile(self.clear_q)))
            if not self.active:
                self._run = self._run + 1 if score > high else 0
                if self._run >= self.confirm or (self._run and score >= self.instant):
                    self.active, onset, self._below, self._run = True, True, 0, 0
            elif score < low:
                self._below += 1
                if self._below >= self.clear_after:
                    self.active, self._below = False, 0
            else:
                self._below = 0
        past.add(score)
        self.scored += 1
        return score, onset

    def _judge(self) -> bool:
        """The detector said which of its channels fired: an onset when one did,
        after warm-up and ``refractory`` samples after the last onset; the alert
        clears once none has fired for ``clear_after`` samples."""
        fired = bool(self.detector.fired)  # type: ignore[attr-defined]
        n = self.scored
        self.scored += 1
        if not self.active:
            last = self._last_onset
            if fired and n >= self.warmup and (last is None or n - last > self.refractory):
                self.active, self._below, self._last_onset = True, 0, n
                return True
        elif fired:
            self._below = 0
        else:
            self._below += 1
            if self._below >= self.clear_after:
                self.active, self._below = False, 0
        return False

    def threshold(self) -> float:
        """The score that fires now: the higher of the floor and the running quantile
        (1.0 for a detector that judges itself: its score is its share of its own mark).

        >>> from cgwatch.anomaly.models import build
        >>> Thresholder(build("mad")).threshold()
        0.6
        """
        if self.judges:
            return 1.0
        return max(self.floor, self._scores.quantile(self.q))

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state, the detector's included.

        >>> from cgwatch.anomaly.models import build
        >>> sorted(Thresholder(build()).state())
        ['active', 'below', 'detector', 'kind', 'last_onset', 'params', 'run', 'scored', 'scores', 'version']
        """
        return {
            "kind": "thresholder",
            "version": self.VERSION,
            "params": {
                "sensitivity": self.sensitivity,
                "warmup": self.warmup,
                "floor": self.floor,
                "clear_floor": self.clear_floor,
                "clear_q": self.clear_q,
                "clear_after": self.clear_after,
                "confirm": self.confirm,
                "instant": self.instant,
                "refractory": self.refractory,
            },
            "scored": self.scored,
            "active": self.active,
            "below": self._below,
            "run": self._run,
            "last_onset": self._last_onset,
            "scores": self._scores.state(),
            "detector": self.detector.state(),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Thresholder:
        """Rebuild from :meth:`state`; ValueError on a bad or old state.

        >>> Thresholder.from_state({"kind": "thresholder", "version": 99})
        Traceback (most recent call last):
        ...
        ValueError: thresholder state version 99, expected 1
        """
        from cgwatch.anomaly.models import restore

        if not isinstance(d, dict) or d.get("kind") != "thresholder":
            raise ValueError("not a thresholder state")
        if d.get("version") != cls.VERSION:
            raise ValueError(f"thresholder state version {d.get('version')}, expected {cls.VERSION}")
        try:
            th = cls(restore(d["detector"]), **d["params"])
            th.scored = _count(d["scored"])
            th._below = _count(d["below"])
            th._run = _count(d.get("run", 0))
            last = d.get("last_onset")
            th._last_onset = None if last is None else _count(last)
            if not isinstance(d["active"], bool):
                raise ValueError("active must be a bool")
            th.active = d["active"]
            th._scores = ScoreQuantile.from_state(d["scores"])
        except ValueError:
            raise
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad thresholder state: {exc!r}") from exc
        return th
