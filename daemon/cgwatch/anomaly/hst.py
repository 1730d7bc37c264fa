"""River's Half-Space Trees behind the detector contract.

``HalfSpaceTrees`` "assumes that each feature has values that are comprised
between 0 and 1" and scores 0 until its first window fills. So each feature
(the value, and its first difference) goes through its own rolling
median/MAD and ``0.5 + 0.5 * tanh(z / 8)``: the middle of the unit interval
is the median, +-3 robust sigmas land in about [0.32, 0.68], a 10-sigma spike
at 0.92, so the trees' padded splits still separate 4 from 10 sigmas. The scaler is robust, so one spike does not squeeze every later value
into a corner as a min-max scaler would. The detector returns None until
HST's first window has filled.

Trees are rebuilt from the seed when a state is loaded; their masses travel
in the state, bound to the River version that built them.

Examples
--------
>>> d = HSTDetector(window_size=20)
>>> s = [d.update(float(t), 1.0 + 0.1 * (t % 5)) for t in range(100)]
>>> s[0], round(d.update(100.0, 50.0), 2)
(None, 0.99)
"""

from __future__ import annotations

import math
from typing import Any

from cgwatch.anomaly.base import BaseDetector, _count, _finite
from cgwatch.anomaly.robust import RollingMedian

_FEATURES = ("v", "d")


def river_version() -> str:
    """The installed River's version, read from its metadata (importing River costs ~100 MB).

    >>> river_version().count(".") >= 1
    True
    """
    from importlib.metadata import version

    return version("river")


class HSTDetector(BaseDetector):
    """Half-Space Trees (River, seeded) over the robustly scaled value and its first difference.

    Defaults are smaller than River's (8 trees of height 6, window 100, not
    10 of height 8 and window 250) so one model pickles to about 41 KiB and
    warms up within 100 samples. Scores are River's, uncalibrated: on white
    noise they reach 0.95, a 10-sigma spike scores about 0.986 (the most a
    height-6 forest gives is 1 - 1/127).

    >>> d = HSTDetector(window_size=10)
    >>> [d.update(t, 3.0) for t in range(12)][-1]
    0.0
    """

    kind = "hst"

    def __init__(
        self,
        *,
        n_trees: int = 8,
        height: int = 6,
        window_size: int = 100,
        scale_window: int = 64,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.n_trees = int(n_trees)
        self.height = int(height)
        self.window_size = int(window_size)
        self.scale_window = int(scale_window)
        if min(self.n_trees, self.height, self.window_size) < 1:
            raise ValueError("n_trees, height and window_size must be positive")
        # River (and the scipy/pandas it brings, ~100 MB) loads only when a rule asks for hst
        from river import anomaly

        self._hst = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed
        )
        self._v = RollingMedian(self.scale_window)
        self._d = RollingMedian(self.scale_window)
        self._prev: float | None = None

    def params(self) -> dict[str, Any]:
        """Constructor arguments.

        >>> HSTDetector(seed=3).params()["seed"]
        3
        """
        return {
            **super().params(),
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "scale_window": self.scale_window,
        }

    def _learn(self, ts: float, value: float, last_ts: float | None) -> float | None:
        prev = self._prev
        self._prev = value
        if prev is None:
            self._v.add(value)
            return None
        diff = value - prev
        x = {"v": _unit(self._v.z(value)), "d": _unit(self._d.z(diff))}
        self._v.add(value)
        self._d.add(diff)
        hst = self._hst
        score = None if hst._first_window else float(hst.score_one(x))
        hst.learn_one(x)
        return score

    def _data(self) -> dict[str, Any]:
        hst = self._hst
        return {
            "river": river_version(),
            "prev": self._prev,
            "v": self._v.state(),
            "d": self._d.state(),
            "counter": hst.counter,
            "first_window": hst._first_window,
            "thresholds": [round(n.threshold, 12) for t in hst.trees for n in t.iter_branches()][:8],
            "l_mass": [[n.l_mass for n in nodes] for nodes in hst._tree_nodes],
            "r_mass": [[n.r_mass for n in nodes] for nodes in hst._tree_nodes],
        }

    def _load(self, data: dict[str, Any]) -> None:
        if data["river"] != river_version():
            raise ValueError(f"hst state from river {data['river']}, this is {river_version()}")
        self._prev = None if data["prev"] is None else _finite(data["prev"])
        self._v = RollingMedian.from_state(data["v"])
        self._d = RollingMedian.from_state(data["d"])
        if self._v.n != self.scale_window or self._d.n != self.scale_window:
            raise ValueError("scale windows do not match params")
        l_mass, r_mass = data["l_mass"], data["r_mass"]
        if not l_mass:  # never learned: the trees are built on the first value
            return
        hst = self._hst
        hst.learn_one({f: 0.5 for f in _FEATURES})  # builds the trees from the seed, as River does
        if [round(n.threshold, 12) for t in hst.trees for n in t.iter_branches()][:8] != data["thresholds"]:
            raise ValueError("hst trees differ from the ones this state was learned on")
        if len(l_mass) != len(hst._tree_nodes) or len(r_mass) != len(hst._tree_nodes):
            raise ValueError("hst state has the wrong number of trees")
        for nodes, ls, rs in zip(hst._tree_nodes, l_mass, r_mass, strict=True):
            if len(ls) != len(nodes) or len(rs) != len(nodes):
                raise ValueError("hst state has the wrong number of nodes")
            for node, lm, rm in zip(nodes, ls, rs, strict=True):
                node.l_mass, node.r_mass = _count(lm), _count(rm)
        counter = _count(data["counter"])
        if counter >= self.window_size or not isinstance(data["first_window"], bool):
            raise ValueError("hst window counter out of range")
        hst.counter = counter
        hst._first_window = data["first_window"]


def _unit(z: float) -> float:
    """A signed robust z mapped into (0, 1), 0.5 at the median.

    >>> _unit(0.0), round(_unit(3.0), 2), round(_unit(10.0), 2)
    (0.5, 0.68, 0.92)
    """
    return 0.5 + 0.5 * math.tanh(z / 8.0)
