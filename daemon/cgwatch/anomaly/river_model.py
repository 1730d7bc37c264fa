"""``river``: any River anomaly detector, named in a rule, behind the detector contract.

.. code-block:: yaml

    anomaly:
      metric: cpu.usage_cores
      model: {river: anomaly.GaussianScorer, params: {window_size: 500}}

The value reaches River as ``{"x": value}`` (as the target ``y`` for
River's supervised detectors, ``GaussianScorer`` and
``StandardAbsoluteDeviation``); each sample is scored
(``score_one``) and then learnt (``learn_one``), River's own order. River's
detectors score on scales of their own (Half-Space Trees in [0, 1], a
standard absolute deviation without bound), so the score cgwatch reports is
the raw score's **rank** among the detector's last 512: the share of them
below it, 0.999 for one above all of them. Scores of exactly 0 before the first
other one are River's warm-up (``GaussianScorer``'s grace period, the first
window of Half-Space Trees) and are not ranked. The :class:`~cgwatch.anomaly.thresholds.Thresholder`
turns ranks into onsets as for every scoring kind.

A parameter may itself be a River object, written the same way:
``{river: anomaly.QuantileFilter, params: {anomaly_detector: {river:
anomaly.StandardAbsoluteDeviation}, q: 0.99}}``.

:func:`make` is what the rule loader runs too: the name must be a River
anomaly detector (a did-you-mean when it is not) and the parameters ones its
constructor takes. River and its scipy/pandas load only when a rule names
one (about 70 MB more resident memory).

A state carries River's own pickle of the detector and the River version
that wrote it; another version relearns. The store reads only files the
daemon wrote into its own ``state_dir``.

Examples
--------
>>> d = RiverDetector(model="anomaly.GaussianScorer")
>>> s = [d.update(float(t), 10.0 + (t % 5) * 0.1) for t in range(200)]
>>> s[0] is None, round(d.update(200.0, 30.0), 3)      # above all 100 scores since River's warm-up
(True, 0.995)
"""

from __future__ import annotations

import base64
import difflib
import importlib
import inspect
import json
import logging
import pickle
from array import array
from bisect import bisect_left
from typing import Any

from cgwatch.anomaly.base import BaseDetector, finite_list
from cgwatch.anomaly.hst import river_version
from cgwatch.anomaly.robust import _push, _Ring

log = logging.getLogger("cgwatch.anomaly")

#: how many past raw scores a score is ranked among, and how many before the first rank
RANK_WINDOW = 512
RANK_WARMUP = 10


class RiverModelError(ValueError):
    """A River model named in a rule that cannot be built; ``path`` says which parameter."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


def _detector_names(module: Any) -> list[str]:
    return sorted(n for n, v in vars(module).items()
                  if inspect.isclass(v) and callable(getattr(v, "score_one", None))
                  and callable(getattr(v, "learn_one", None)))


def resolve(name: str) -> type:
    """The River class ``name`` names (``anomaly.GaussianScorer``, ``river.`` optional).

    >>> resolve("anomaly.HalfSpaceTrees").__name__
    'HalfSpaceTrees'
    >>> resolve("anomaly.GausianScorer")
    Traceback (most recent call last):
    ...
    cgwatch.anomaly.river_model.RiverModelError: River has no anomaly.GausianScorer (did you mean anomaly.GaussianScorer?)
    """
    import river

    dotted = name.removeprefix("river.")
    mod_name, _, cls_name = dotted.rpartition(".")
    if not mod_name or not cls_name:
        raise RiverModelError(f"{name!r} is not a River class name such as anomaly.GaussianScorer")
    try:
        module = importlib.import_module(f"river.{mod_name}")
    except ImportError:
        import pkgutil

        mods = [m.name for m in pkgutil.iter_modules(river.__path__)]
        close = difflib.get_close_matches(mod_name, mods, n=1)
        hint = f" (did you mean {close[0]}.{cls_name}?)" if close else ""
        raise RiverModelError(f"River has no module {mod_name!r}{hint}") from None
    cls = getattr(module, cls_name, None)
    if not inspect.isclass(cls):
        close = difflib.get_close_matches(cls_name, _detector_names(module), n=1)
        hint = f" (did you mean {mod_name}.{close[0]}?)" if close else ""
        raise RiverModelError(f"River has no {mod_name}.{cls_name}{hint}")
    if not (callable(getattr(cls, "score_one", None)) and callable(getattr(cls, "learn_one", None))):
        raise RiverModelError(f"river.{mod_name}.{cls_name} is not an anomaly detector (it has no score_one)")
    return cls


def make(name: str, params: dict[str, Any] | None = None, path: tuple[str, ...] = ()) -> Any:
    """A River detector ``name`` built with ``params``; RiverModelError naming the parameter at fault.

    >>> make("anomaly.GaussianScorer", {"window_size": 10}).window_size
    10
    >>> make("anomaly.GaussianScorer", {"windowsize": 10})
    Traceback (most recent call last):
    ...
    cgwatch.anomaly.river_model.RiverModelError: anomaly.GaussianScorer takes no parameter 'windowsize' (did you mean 'window_size'?)
    """
    cls = resolve(name)
    params = dict(params or {})
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        names = [p for p, v in sig.parameters.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
        for key in params:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(names) or 'none'}"
                raise RiverModelError(f"{name} takes no parameter {key!r} ({hint})", (*path, key))
    built = {}
    for key, value in params.items():
        if isinstance(value, dict) and "river" in value:
            inner = value.get("params")
            if set(value) - {"river", "params"} or not isinstance(value["river"], str) \
                    or not (inner is None or isinstance(inner, dict)):
                raise RiverModelError(f"{key}: a River object is written {{river: NAME, params: {{...}}}}",
                                      (*path, key))
            value = make(value["river"], inner, (*path, key))
        built[key] = value
    try:
        return cls(**built)
    except Exception as exc:  # River's own checks: a bad value for a parameter it takes
        raise RiverModelError(f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())}) failed: "
                              f"{type(exc).__name__}: {exc}", path) from None


class RiverDetector(BaseDetector):
    """A River anomaly detector over the value; its raw score ranked among its last 512.

    >>> RiverDetector(model="anomaly.StandardAbsoluteDeviation").params()["model"]
    'anomaly.StandardAbsoluteDeviation'
    """

    kind = "river"

    def __init__(self, *, model: str, params: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = str(model)
        self.model_params: dict[str, Any] = json.loads(json.dumps(params or {}))
        self._river = make(self.model, self.model_params)
        self.failed = 0
        self._supervised = "y" in inspect.signature(self._river.score_one).parameters
        self._ring = _Ring(RANK_WINDOW)
        self._sorted = array("d")

    def params(self) -> dict[str, Any]:
        return {**super().params(), "model": self.model, "params": self.model_params}

    def _learn(self, ts: float, value: float, last_ts: float | None) -> float | None:
        try:
            if self._supervised:   # GaussianScorer, StandardAbsoluteDeviation: they model the target y
                raw = float(self._river.score_one({}, value))
                self._river.learn_one({}, value)
            else:
                x = {"x": value}
                raw = float(self._river.score_one(x))
                self._river.learn_one(x)
        except Exception as exc:  # a River model's own failure costs this sample, not the daemon
            self.failed += 1
            if self.failed == 1:
                log.warning("river model %s failed on a value (%s: %s); such values are skipped",
                            self.model, type(exc).__name__, exc)
            return None
        if raw != raw:   # NaN from the model: no rank, nothing learnt into the ranks
            return None
        raw = max(-1e300, min(1e300, raw))
        s = self._sorted
        n = len(s)
        if n == 0 and raw == 0.0:   # River's own warm-up (a grace period, a first window) scores 0
            return None
        rank = None
        if n >= RANK_WARMUP:
            # the share of past scores strictly below (a flat series ranks 0: a tie is not news);
            # one above all 512 ranks 0.999, so it takes two in a row to fire (the Thresholder's
            # ``confirm``), never one lucky draw
            rank = (bisect_left(s, raw) + 0.5) / (n + 1)
        _push(self._ring, s, raw, RANK_WINDOW)
        return rank

    def _data(self) -> dict[str, Any]:
        blob = pickle.dumps(self._river, protocol=pickle.HIGHEST_PROTOCOL)
        return {"river": river_version(), "pickle": base64.b64encode(blob).decode(), "scores": self._ring.ordered()}

    def _load(self, data: dict[str, Any]) -> None:
        if data["river"] != river_version():
            raise ValueError(f"river state from river {data['river']}, this is {river_version()}")
        try:
            obj = pickle.loads(base64.b64decode(data["pickle"]))  # noqa: S301 - this daemon wrote it, in its state_dir
        except (pickle.UnpicklingError, EOFError, ImportError) as exc:
            raise ValueError(f"river state does not unpickle: {exc}") from None
        if type(obj) is not type(self._river):
            raise ValueError(f"river state holds a {type(obj).__name__}, not {type(self._river).__name__}")
        self._river = obj
        for x in finite_list(data["scores"], RANK_WINDOW):
            _push(self._ring, self._sorted, x, RANK_WINDOW)
