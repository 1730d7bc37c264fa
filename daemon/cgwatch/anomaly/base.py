"""The contract every anomaly detector keeps, and the input guard they share.

A detector watches one series (one container x one metric). ``update(ts, value)``
learns the value and returns its anomaly score in ``[0, 1]`` (``None`` during
warm-up or for a skipped value). Bad input never raises and never reaches the
model: a non-finite or huge value, a negative value where ``nonnegative=True``
(counters), a timestamp that is not finite or not after the previous accepted
one: each is skipped and counted in ``skipped``.

Every detector also keeps River's anomaly-detector contract: ``score_one(x)``
scores ``x = {"ts": ..., "value": ...}`` without learning it and ``learn_one(x)``
learns it, so River's tools can drive ours as they drive River's own.

State is plain JSON (``state()`` / ``from_state()``) carrying ``kind``,
``version`` and ``params``; a state of another kind or version is a
:class:`ValueError`, so the store can relearn instead of loading a stale model.

Examples
--------
>>> from cgwatch.anomaly.models import MADDetector
>>> d = MADDetector()
>>> [d.update(t, v) for t, v in [(0, 1.0), (1, float("nan")), (-1, 2.0)]]
[None, None, None]
>>> d.samples, d.skipped
(1, 2)
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar, runtime_checkable

#: The state format of every detector; bump when a state's meaning changes.
STATE_VERSION = 2

#: Values past this magnitude are treated as garbage, not as data.
MAX_ABS = 1e18

T = TypeVar("T", bound="BaseDetector")


class Band(NamedTuple):
    """A model's normal range: ``low``..``high`` held 98 % of the last values, which took ``span_s``."""

    low: float
    high: float
    span_s: float


def band_of(ordered: Any, span_s: float, back: Any = None) -> Band | None:
    """The 1st and 99th percentile of a sorted window (mapped by ``back`` to the value's scale).

    >>> band_of([float(x) for x in range(101)], 60.0)
    Band(low=1.0, high=99.0, span_s=60.0)
    >>> band_of([1.0], 60.0) is None
    True
    """
    n = len(ordered)
    if n < 10:
        return None
    lo, hi = ordered[int(0.01 * (n - 1) + 0.5)], ordered[int(0.99 * (n - 1) + 0.5)]
    if back is not None:
        lo, hi = back(lo), back(hi)
    return Band(lo, hi, span_s)


@runtime_checkable
class Detector(Protocol):
    """A streaming anomaly detector for one series.

    >>> from cgwatch.anomaly.models import build
    >>> isinstance(build("mad"), Detector)
    True
    """

    skipped: int

    def update(self, ts: float, value: float) -> float | None: ...

    @property
    def samples(self) -> int: ...

    def state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Detector: ...


class BaseDetector:
    """Input guard, counters and the state envelope; subclasses write ``_learn``.

    ``nonnegative=True`` skips negative values (for counters and their rates);
    ``seed`` is kept for every kind so that all are built the same way.

    >>> from cgwatch.anomaly.models import MADDetector
    >>> d = MADDetector(nonnegative=True)
    >>> d.update(1.0, -3.0) is None, d.skipped
    (True, 1)
    """

    kind: ClassVar[str] = ""

    def __init__(self, *, nonnegative: bool = False, seed: int = 42) -> None:
        self.nonnegative = bool(nonnegative)
        self.seed = int(seed)
        self.skipped = 0
        self._samples = 0
        self._last_ts: float | None = None
        self._gap: float | None = None   # the usual time between values (EW), for how long a window spans

    # -- the contract -------------------------------------------------------
    @property
    def samples(self) -> int:
        """How many values this detector has learned.

        >>> from cgwatch.anomaly.models import MADDetector
        >>> MADDetector().samples
        0
        """
        return self._samples

    @property
    def last_ts(self) -> float | None:
        """The time of the last value learnt (None before the first).

        >>> from cgwatch.anomaly.models import MADDetector
        >>> d = MADDetector(); _ = d.update(5.0, 1.0); d.last_ts
        5.0
        """
        return self._last_ts

    def update(self, ts: float, value: float) -> float | None:
        """Learn ``value`` seen at ``ts`` and return its score, or None.

        >>> from cgwatch.anomaly.models import MADDetector
        >>> MADDetector().update(0.0, 5.0) is None  # warm-up
        True
        """
        try:
            ts = float(ts)
        except (TypeError, ValueError, OverflowError):
            ts = math.nan
        last = self._last_ts
        value = self._clean(value)
        if value is None or not math.isfinite(ts) or (last is not None and ts <= last):
            self.skipped += 1
            return None
        self._last_ts = ts
        if last is not None:
            gap = self._gap
            self._gap = ts - last if gap is None else gap + 0.05 * (ts - last - gap)
        score = self._learn(ts, value, last)
        self._samples += 1
        if score is None:
            return None
        if not math.isfinite(score):  # never expected; never let it out
            return 1.0 if score > 0 else 0.0
        return min(1.0, max(0.0, score))

    def band(self) -> Band | None:
        """What the model takes as normal now: where 98 % of recent values lie, and
        over how long; None where the model cannot say (or has seen too little).

        >>> from cgwatch.anomaly.models import MADDetector
        >>> d = MADDetector(transform="none")
        >>> for t in range(100):
        ...     _ = d.update(60.0 * t, 10.0 + t % 5)
        >>> d.band()
        Band(low=10.0, high=14.0, span_s=6000.0)
        """
        return None

    def _span(self, n: int) -> float:
        """How long the last ``n`` values (or as many as were seen) took, in seconds."""
        return min(self._samples, n) * (self._gap or 0.0)

    # -- River's anomaly-detector contract ----------------------------------
    def learn_one(self, x: dict[str, Any]) -> None:
        """River's ``learn_one``: learn ``x["value"]`` at ``x["ts"]`` (a second after the last without one).

        >>> from cgwatch.anomaly.models import MADDetector
        >>> d = MADDetector(); d.learn_one({"value": 2.0}); d.learn_one({"value": 3.0, "ts": 9.0}); d.last_ts
        9.0
        """
        self.update(*self._river_x(x))

    def score_one(self, x: dict[str, Any]) -> float:
        """River's ``score_one``: the score ``learn_one(x)`` would give, learning nothing (0 while warming up).

        It scores a copy, so it costs a model's copy; the daemon calls :meth:`update`,
        which scores and then learns in one step, River's own order.

        >>> from cgwatch.anomaly.models import MADDetector
        >>> d = MADDetector(warmup=3)
        >>> for v in (1.0, 1.1, 0.9, 1.0):
        ...     d.learn_one({"value": v})
        >>> round(d.score_one({"value": 9.0}), 2), d.samples
        (1.0, 4)
        """
        return copy.deepcopy(self).update(*self._river_x(x)) or 0.0

    def _river_x(self, x: dict[str, Any]) -> tuple[float, Any]:
        ts = x.get("ts")
        if ts is None:
            ts = 0.0 if self._last_ts is None else self._last_ts + 1.0
        return ts, x.get("value")

    def _clean(self, value: Any) -> Any:
        """``value`` as the float a model may learn, or None if it must be skipped.

        >>> from cgwatch.anomaly.models import MADDetector
        >>> d = MADDetector(nonnegative=True)
        >>> d._clean("2"), d._clean(-1.0), d._clean(float("inf")), d._clean(1e300)
        (2.0, None, None, None)
        """
        try:
            x = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if not math.isfinite(x) or abs(x) > MAX_ABS or (self.nonnegative and x < 0.0):
            return None
        return x

    def params(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this detector empty.

        >>> from cgwatch.anomaly.models import MADDetector
        >>> MADDetector(window=64).params()["window"]
        64
        """
        return {"nonnegative": self.nonnegative, "seed": self.seed}

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state: ``kind``, ``version``, ``params`` and the learned data.

        >>> from cgwatch.anomaly.models import MADDetector
        >>> s = MADDetector().state()
        >>> s["kind"], s["version"], sorted(s)
        ('mad', 2, ['data', 'kind', 'params', 'samples', 'skipped', 'version'])
        """
        return {
            "kind": self.kind,
            "version": STATE_VERSION,
            "params": self.params(),
            "samples": self._samples,
            "skipped": self.skipped,
            "data": {"last_ts": self._last_ts, "gap": self._gap, **self._data()},
        }

    @classmethod
    def from_state(cls: type[T], d: dict[str, Any]) -> T:
        """Rebuild a detector from :meth:`state`; ValueError on a bad or old state.

        >>> from cgwatch.anomaly.models import MADDetector
        >>> MADDetector.from_state({"kind": "mad", "version": 0})
        Traceback (most recent call last):
        ...
        ValueError: mad state version 0, expected 2
        """
        if not isinstance(d, dict):
            raise ValueError(f"{cls.kind} state must be a dict, not {type(d).__name__}")
        if d.get("kind") != cls.kind:
            raise ValueError(f"state of kind {d.get('kind')!r}, expected {cls.kind!r}")
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"{cls.kind} state version {d.get('version')}, expected {STATE_VERSION}")
        try:
            params = d["params"]
            if not isinstance(params, dict):
                raise TypeError("params must be a dict")
            obj = cls(**params)
            data = d["data"]
            last = data["last_ts"]
            obj._last_ts = None if last is None else _finite(last)
            gap = data.get("gap")
            obj._gap = None if gap is None else _finite(gap)
            obj._samples = _count(d["samples"])
            obj.skipped = _count(d["skipped"])
            obj._load(data)
        except ValueError:
            raise
        except (KeyError, TypeError, IndexError, AttributeError, OverflowError) as exc:
            raise ValueError(f"bad {cls.kind} state: {exc!r}") from exc
        return obj

    # -- for subclasses -----------------------------------------------------
    def _learn(self, ts: float, value: float, last_ts: float | None) -> float | None:
        raise NotImplementedError

    def _data(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load(self, data: dict[str, Any]) -> None:
        raise NotImplementedError


def _finite(x: Any) -> float:
    """``x`` as a finite float, else ValueError.

    >>> _finite(2)
    2.0
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"not a finite number: {x!r}")
    return float(x)


def _count(x: Any) -> int:
    """``x`` as a non-negative int, else ValueError.

    >>> _count(3)
    3
    """
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise ValueError(f"not a count: {x!r}")
    return x


def finite_list(xs: Any, limit: int | None = None) -> list[float]:
    """A list of finite floats from state, at most ``limit`` long, else ValueError.

    >>> finite_list([1, 2.5])
    [1.0, 2.5]
    >>> finite_list([1, 2], limit=1)
    Traceback (most recent call last):
    ...
    ValueError: list of 2 longer than 1
    """
    if not isinstance(xs, list):
        raise ValueError(f"not a list: {type(xs).__name__}")
    if limit is not None and len(xs) > limit:
        raise ValueError(f"list of {len(xs)} longer than {limit}")
    return [_finite(x) for x in xs]
