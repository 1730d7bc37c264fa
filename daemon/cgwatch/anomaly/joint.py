"""``joint``: one model over several metrics of one container (``metrics: [a, b]``).

Each metric keeps its own ``mad`` part (log scale, robust window); the joint
score asks how unusual the *combination* is: the parts' robust z-scores are
summed as squares (a chi-square with one degree of freedom per metric when
all is normal) and turned back into one normal-equivalent z by the
Wilson-Hilferty approximation, then squashed like every other score. Two
metrics each three sigmas out score about as high as one at four: together
they are news where each alone would not be, and one metric far out is still
caught.

A joint model learns only whole vectors: the engine feeds it once per
evaluation, when every metric has a fresh value. A vector with any bad part
is skipped and counted, like a bad scalar.

Examples
--------
>>> d = JointDetector(dims=2)
>>> s = [d.update(float(t), (10.0 + t % 3, 5.0 + t % 2)) for t in range(60)]
>>> s[0] is None, round(d.update(60.0, (10.0, 5.0)), 2) < 0.5
(True, True)
>>> round(d.update(61.0, (10.0, 50.0)), 3)          # one metric far out
1.0
>>> d.update(62.0, (10.0, float("nan"))), d.skipped  # one bad part: the vector is skipped
(None, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cgwatch.anomaly.base import BaseDetector
from cgwatch.anomaly.mad import MADDetector
from cgwatch.anomaly.robust import squash

#: at most this many metrics in one joint model (each part is ~10 KB; a model stays under 50 KiB)
MAX_DIMS = 4


def chi_to_z(sum_sq: float, dims: int) -> float:
    """The normal-equivalent z of a chi-square ``sum_sq`` with ``dims`` degrees
    of freedom (Wilson-Hilferty), floored at 0.

    >>> round(chi_to_z(9.0, 1), 2), round(chi_to_z(18.0, 2), 2), chi_to_z(0.0, 3)
    (2.76, 3.57, 0.0)
    """
    k = float(dims)
    v = 2.0 / (9.0 * k)
    return max(0.0, ((sum_sq / k) ** (1.0 / 3.0) - (1.0 - v)) / math.sqrt(v))


class JointDetector(BaseDetector):
    """One score for a vector of ``dims`` metrics; see the module docstring.

    Parameters: ``dims`` (2..4), and ``mad``'s ``window``, ``warmup``,
    ``half``, ``trim``, ``transform`` for every part.

    >>> JointDetector(dims=1)
    Traceback (most recent call last):
    ...
    ValueError: dims must be 2..4, not 1
    """

    kind = "joint"

    def __init__(self, *, dims: int = 2, window: int = 256, warmup: int = 10, half: float = 3.0,
                 trim: float | None = 0.01, transform: str = "log", **kw: Any) -> None:
        super().__init__(**kw)
        if isinstance(dims, bool) or not isinstance(dims, int) or not 2 <= dims <= MAX_DIMS:
            raise ValueError(f"dims must be 2..{MAX_DIMS}, not {dims}")
        self.dims = dims
        self.half = float(half)
        self._part_params = {"window": window, "warmup": warmup, "half": half, "trim": trim,
                             "transform": transform, "nonnegative": self.nonnegative}
        self._parts = [MADDetector(**self._part_params) for _ in range(dims)]

    def params(self) -> dict[str, Any]:
        """Constructor arguments.

        >>> sorted(JointDetector().params())
        ['dims', 'half', 'nonnegative', 'seed', 'transform', 'trim', 'warmup', 'window']
        """
        p = {k: v for k, v in self._part_params.items() if k != "nonnegative"}
        return {**super().params(), "dims": self.dims, **p}

    def _clean(self, value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != self.dims:
            return None
        out = [p._clean(v) for p, v in zip(self._parts, value)]
        return None if any(v is None for v in out) else out

    def _learn(self, ts: float, value: Any, last_ts: float | None) -> float | None:
        zs = [p.learn_z(v) for p, v in zip(self._parts, value)]
        if any(z is None for z in zs):
            return None
        return squash(chi_to_z(math.fsum(z * z for z in zs), self.dims), self.half)   # type: ignore[operator]

    def _data(self) -> dict[str, Any]:
        return {"parts": [p.state() for p in self._parts]}

    def _load(self, data: dict[str, Any]) -> None:
        parts = data["parts"]
        if not isinstance(parts, list) or len(parts) != self.dims:
            raise ValueError("parts do not match dims")
        loaded = [MADDetector.from_state(p) for p in parts]
        if any(p.params() != self._parts[0].params() for p in loaded):
            raise ValueError("parts do not match params")
        self._parts = loaded
