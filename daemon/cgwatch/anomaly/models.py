"""Streaming anomaly detectors for one series each (one container x one metric).

Three kinds keep the :class:`~cgwatch.anomaly.base.Detector` contract:

- ``mad``: :class:`MADDetector`, a robust z-score against a rolling median/MAD.
- ``hst``: :class:`~cgwatch.anomaly.hst.HSTDetector`, River's Half-Space Trees
  over robustly scaled value and first difference.
- ``forecast``: :class:`ForecastDetector`, damped-trend exponential smoothing
  (Holt-Winters, optional daily season) scored by its robust forecast residual.

``build(kind, **params)`` makes one, ``restore(state)`` loads any kind, and
:func:`model_size_bytes` measures one. Every default works at any sampling
interval: memories are counted in samples, seasons in seconds.

Examples
--------
>>> d = build("mad")
>>> scores = [d.update(float(t), 10.0 + (t % 3)) for t in range(50)]
>>> round(d.update(50.0, 80.0), 3)
1.0
>>> restore(d.state()).samples
51
"""

from __future__ import annotations

import pickle
from typing import Any

from cgwatch.anomaly.base import BaseDetector, Detector, _finite, finite_list
from cgwatch.anomaly.hst import HSTDetector
from cgwatch.anomaly.joint import JointDetector
from cgwatch.anomaly.likelihood import LikelihoodDetector
from cgwatch.anomaly.mad import MADDetector
from cgwatch.anomaly.river_model import RiverDetector
from cgwatch.anomaly.robust import RollingMedian, robust_eps, squash

__all__ = ["MADDetector", "ForecastDetector", "HSTDetector", "EnsembleDetector", "JointDetector", "LikelihoodDetector", "KINDS", "SCALAR_KINDS", "build", "restore", "model_size_bytes"]


class ForecastDetector(BaseDetector):
    """Damped-trend exponential smoothing with an optional season; scores the forecast residual.

    One step is the observed sampling interval (rolling median of the gaps), so
    a gap of ``k`` intervals forecasts ``k`` steps ahead with the trend damped
    by ``phi`` per step, and smoothing weights are compounded over the gap.
    The residual is scored in robust sigmas of recent residuals (rolling
    MAD); after warm-up, the value is Huber-clipped to ``huber`` sigmas
    before it updates level, trend and season, so a spike does not drag the
    forecast. The season (``season_s`` seconds, default daily; None to turn it
    off) is kept in ``season_bins`` slots of the period and is used only after
    two whole periods have been seen.

    >>> d = ForecastDetector(warmup=5)
    >>> s = [d.update(60.0 * t, 2.0 * t) for t in range(30)]  # a straight line
    >>> s[:5], max(s[5:]) < 0.5
    ([None, None, None, None, None], True)
    """

    kind = "forecast"

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        beta: float = 0.05,
        phi: float = 0.98,
        gamma: float = 0.3,
        season_s: float | None = 86400.0,
        season_bins: int = 48,
        huber: float = 3.0,
        window: int = 256,
        warmup: int = 10,
        half: float = 3.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("phi", phi)):
            if not 0.0 < float(v) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], not {v}")
        self.alpha, self.beta, self.phi, self.gamma = float(alpha), float(beta), float(phi), float(gamma)
        self.season_s = None if season_s is None else float(season_s)
        if self.season_s is not None and not self.season_s > 0:
            raise ValueError(f"season_s must be positive, not {season_s}")
        self.season_bins = max(1, int(season_bins))
        self.huber = float(huber)
        self.window = int(window)
        self.warmup = max(2, int(warmup))
        self.half = float(half)
        self._level = 0.0
        self._trend = 0.0
        self._first_ts: float | None = None
        self._season = [0.0] * self.season_bins if self.season_s is not None else []
        self._dts = RollingMedian(31)
        self._resid = RollingMedian(self.window)

    def params(self) -> dict[str, Any]:
        """Constructor arguments.

        >>> ForecastDetector(season_s=None).params()["season_s"] is None
        True
        """
        return {
            **super().params(),
            **{k: getattr(self, k) for k in ("alpha", "beta", "phi", "gamma", "season_s", "season_bins")},
            **{k: getattr(self, k) for k in ("huber", "window", "warmup", "half")},
        }

    def _learn(self, ts: float, value: float, last_ts: float | None) -> float | None:
        if last_ts is None or self._first_ts is None:
            self._level, self._trend, self._first_ts = value, 0.0, ts
            return None
        dt = ts - last_ts
        self._dts.add(dt)
        h = dt / self._dts.median()  # steps since the last value
        phi = self.phi
        damp = h if phi == 1.0 else phi * (1.0 - phi**h) / (1.0 - phi)
        level, trend = self._level, self._trend

        season = self._season
        b, season_on, per_bin = 0, False, 1.0
        if self.season_s is not None:
            period = self.season_s
            b = min(self.season_bins - 1, int((ts % period) / period * self.season_bins))
            per_bin = max(1.0, period / self.season_bins / self._dts.median())
            season_on = ts - self._first_ts >= 2.0 * period and period >= 4.0 * self._dts.median()
        s = season[b] if season_on else 0.0

        pred = level + trend * damp + s
        resid = value - pred
        scale = max(self._resid.scale(), robust_eps(pred))
        warm = len(self._resid) >= self.warmup - 1
        score = squash(abs(resid - self._resid.median()) / scale, self.half) if warm else None
        self._resid.add(resid)

        x = pred + max(-self.huber * scale, min(self.huber * scale, resid)) if warm else value
        a = 1.0 - (1.0 - self.alpha) ** min(h, 1e3)
        new_level = a * (x - s) + (1.0 - a) * (level + trend * damp)
        self._trend = self.beta * (new_level - level) / max(h, 1.0) + (1.0 - self.beta) * trend * phi ** min(h, 1e3)
        self._level = new_level
        if season:
            g = self.gamma / per_bin
            season[b] += g * (x - new_level - season[b])
        return score

    def _data(self) -> dict[str, Any]:
        return {
            "level": self._level,
            "trend": self._trend,
            "first_ts": self._first_ts,
            "season": list(self._season),
            "dts": self._dts.state(),
            "resid": self._resid.state(),
        }

    def _load(self, data: dict[str, Any]) -> None:
        self._level = _finite(data["level"])
        self._trend = _finite(data["trend"])
        self._first_ts = None if data["first_ts"] is None else _finite(data["first_ts"])
        season = finite_list(data["season"], len(self._season))
        if len(season) != len(self._season):
            raise ValueError("season does not match params")
        self._season = season
        self._dts = RollingMedian.from_state(data["dts"])
        self._resid = RollingMedian.from_state(data["resid"])
        if self._resid.n != self.window or any(x <= 0 for x in self._dts.state()["values"]):
            raise ValueError("windows do not match params")


class EnsembleDetector(BaseDetector):
    """``mad`` and ``forecast`` side by side; the score combines theirs.

    ``combine="min"`` (default) scores the lower of the two, so a value is
    anomalous only when it is far from both the robust level and the
    forecast; ``"mean"`` averages them. None until both score. Both parts
    share ``warmup`` and otherwise keep their default parameters.

    >>> d = EnsembleDetector()
    >>> s = [d.update(float(t), 10.0 + (t % 3)) for t in range(60)]
    >>> s[0] is None, round(d.update(60.0, 80.0), 3)
    (True, 1.0)
    """

    kind = "ensemble"
    COMBINE = ("min", "mean")

    def __init__(self, *, combine: str = "min", warmup: int = 10, **kw: Any) -> None:
        super().__init__(**kw)
        if combine not in self.COMBINE:
            raise ValueError(f"combine must be one of {', '.join(self.COMBINE)}, not {combine!r}")
        self.combine = combine
        self.warmup = max(2, int(warmup))
        self._mad = MADDetector(warmup=self.warmup, **kw)
        self._forecast = ForecastDetector(warmup=self.warmup, **kw)

    def params(self) -> dict[str, Any]:
        """Constructor arguments.

        >>> sorted(EnsembleDetector().params())
        ['combine', 'nonnegative', 'seed', 'warmup']
        """
        return {**super().params(), "combine": self.combine, "warmup": self.warmup}

    def _learn(self, ts: float, value: float, last_ts: float | None) -> float | None:
        a = self._mad.update(ts, value)
        b = self._forecast.update(ts, value)
        if a is None or b is None:
            return None
        return min(a, b) if self.combine == "min" else 0.5 * (a + b)

    def _data(self) -> dict[str, Any]:
        return {"mad": self._mad.state(), "forecast": self._forecast.state()}

    def _load(self, data: dict[str, Any]) -> None:
        mad = MADDetector.from_state(data["mad"])
        forecast = ForecastDetector.from_state(data["forecast"])
        if mad.params() != self._mad.params() or forecast.params() != self._forecast.params():
            raise ValueError("parts do not match params")
        self._mad, self._forecast = mad, forecast


#: kind name -> class; "auto" is resolved by :func:`build`.
KINDS: dict[str, type[BaseDetector]] = {
    "likelihood": LikelihoodDetector,
    "mad": MADDetector,
    "hst": HSTDetector,
    "forecast": ForecastDetector,
    "ensemble": EnsembleDetector,
    "joint": JointDetector,
    "river": RiverDetector,
}

#: the kinds a rule names by name alone, learning one value at a time (``joint`` learns a
#: vector per sample time; ``river`` is written ``{river: NAME, params: {...}}``)
SCALAR_KINDS = tuple(k for k in KINDS if k not in ("joint", "river"))

#: what ``build("auto")`` makes (the lead picks the default by benchmark).
AUTO = "likelihood"


#: the kinds that say which of their channels fired, and so judge their own onsets
JUDGING_KINDS = ("likelihood",)


def resolve(kind: str) -> str:
    """The kind ``kind`` names (``auto`` is the default's).

    >>> resolve("auto"), resolve("mad")
    ('likelihood', 'mad')
    """
    return AUTO if kind == "auto" else kind


def build(kind: str = "auto", **params: Any) -> Detector:
    """A new detector of ``kind`` (``auto``, ``likelihood``, ``mad``, ``hst``, ``forecast``, ``ensemble``); ValueError if unknown.

    >>> type(build()).__name__, type(build("hst", seed=7)).__name__
    ('LikelihoodDetector', 'HSTDetector')
    >>> build("lstm")
    Traceback (most recent call last):
    ...
    ValueError: unknown detector kind 'lstm' (auto, ensemble, forecast, hst, joint, likelihood, mad, river)
    """
    name = resolve(kind)
    if name not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r} ({', '.join(sorted(['auto', *KINDS]))})")
    return KINDS[name](**params)


def restore(d: dict[str, Any]) -> Detector:
    """Load a detector of any kind from its ``state()``; ValueError on a bad or old state.

    >>> restore(build("forecast").state()).kind
    'forecast'
    >>> restore({"kind": "nope"})
    Traceback (most recent call last):
    ...
    ValueError: unknown detector kind 'nope'
    """
    kind = d.get("kind") if isinstance(d, dict) else None
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}")
    return KINDS[kind].from_state(d)


def model_size_bytes(detector: object) -> int:
    """Memory footprint of a detector, measured as the length of its pickle.

    >>> model_size_bytes(build("mad")) < 1024
    True
    """
    return len(pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL))
