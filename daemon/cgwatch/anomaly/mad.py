"""``mad``: the robust streaming z-score, cgwatch's default detector.

Examples
--------
>>> d = MADDetector()
>>> scores = [d.update(float(t), 10.0 + (t % 3)) for t in range(50)]
>>> round(d.update(50.0, 80.0), 3)
1.0
"""

from __future__ import annotations

from typing import Any

from cgwatch.anomaly.base import Band, BaseDetector, _finite, band_of
from cgwatch.anomaly.robust import LogScale, RollingMedian, squash


class MADDetector(BaseDetector):
    """Robust streaming z-score: distance from the rolling median in robust sigmas.

    Parameters: ``window`` values kept (default 256), ``warmup`` values before
    the first score (default 10), ``half`` the z scoring 0.5 (default 3),
    ``trim`` (default 0.01): the scale is at least the RMS deviation of all
    but the largest 1 % (see :meth:`RollingMedian.scale`; None for plain
    1.4826 x MAD),
    ``transform``: ``"log"`` (the default) scores ``log(x + c)`` with ``c`` 1 %
    of the series' long-run mean, ``"none"`` the raw value.

    Why log by default: container metrics are rates, bytes and latencies —
    non-negative, multiplicative, heavy-tailed. On the log scale their noise
    is close to symmetric and a doubling means the same at any level, so the
    everyday tail stops looking anomalous while a drop to zero (a crash, a
    stuck exporter) stands out. It was chosen by the benchmark
    (docs/anomaly.md). A negative value cannot be logged: the first one
    switches the detector to the raw scale for good, and it learns afresh.

    >>> d = MADDetector(warmup=3)
    >>> [d.update(t, 1.0) for t in range(4)]
    [None, None, None, 0.0]
    >>> d = MADDetector()
    >>> s = [d.update(t, 100.0 + t % 7) for t in range(100)]
    >>> round(d.update(100, 0.0), 3), d.scale_name      # a drop to zero
    (1.0, 'log')
    >>> _ = d.update(101, -5.0); d.scale_name
    'raw'
    """

    kind = "mad"
    TRANSFORMS = ("log", "none")

    def __init__(self, *, window: int = 256, warmup: int = 10, half: float = 3.0, trim: float | None = 0.01,
                 transform: str = "log", **kw: Any) -> None:
        super().__init__(**kw)
        if transform not in self.TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(self.TRANSFORMS)}, not {transform!r}")
        self.window = int(window)
        self.warmup = max(1, int(warmup))
        self.half = float(half)
        self.trim = None if trim is None else float(trim)
        self.transform = transform
        self._stats = RollingMedian(self.window, self.trim)
        self._scale = LogScale(transform == "log")

    def params(self) -> dict[str, Any]:
        """Constructor arguments.

        >>> sorted(MADDetector().params())
        ['half', 'nonnegative', 'seed', 'transform', 'trim', 'warmup', 'window']
        """
        return {**super().params(), "window": self.window, "warmup": self.warmup, "half": self.half,
                "trim": self.trim, "transform": self.transform}

    def _learn(self, ts: float, value: float, last_ts: float | None) -> float | None:
        z = self.learn_z(value)
        return None if z is None else squash(z, self.half)

    def learn_z(self, value: float) -> float | None:
        """Learn a value that passed the input guard; return its distance from
        normal in robust sigmas (None while warming up). The joint model reads
        this, before the squash.

        >>> d = MADDetector(warmup=2, transform="none", trim=None)
        >>> [None if z is None else round(z, 2) for z in (d.learn_z(x) for x in (1.0, 3.0, 2.0))]
        [None, None, 0.34]
        """
        sc = self._scale
        if sc.on and value < 0.0:   # not a non-negative series after all: start over on the raw scale
            sc.on = False
            self._stats = RollingMedian(self.window, self.trim)
        value = sc(value, self._samples)
        stats = self._stats
        z = abs(stats.z(value)) if len(stats) >= self.warmup else None
        stats.add(value)
        return z

    def _data(self) -> dict[str, Any]:
        return {"stats": self._stats.state(), "mean": self._scale.mean, "log": self._scale.on}

    def _load(self, data: dict[str, Any]) -> None:
        stats = RollingMedian.from_state(data["stats"])
        if stats.n != self.window or stats.trim != self.trim:
            raise ValueError("window does not match params")
        self._stats = stats
        self._scale.mean = None if data["mean"] is None else _finite(data["mean"])
        if not isinstance(data["log"], bool) or (data["log"] and self.transform != "log"):
            raise ValueError("log flag does not match params")
        self._scale.on = data["log"]

    def band(self) -> Band | None:
        """Where 98 % of the window's values lie (on the value's own scale), and its span."""
        return band_of(self._stats._sorted, self._span(self.window), self._scale.back)

    @property
    def scale_name(self) -> str:
        """The scale it scores on now: ``log`` or ``raw``."""
        return "log" if self._scale.on else "raw"
