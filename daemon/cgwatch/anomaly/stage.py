"""The anomaly stage: every anomaly rule's models, scored before the rules engine.

One :class:`Watch` per anomaly rule says what it learns (its metrics, the model
to build, which containers it selects). Each interval :meth:`AnomalyStage.step`
teaches the interval's samples to the models of the rules that read them and
hands on one :class:`~cgwatch.model.Verdict` per value judged; the engine fires
an anomaly rule while its verdict is ``active``, and the dashboard draws the
verdicts' bands. A joint model (``metrics: [a, b]``) learns one vector per
interval, once every metric in it has a value newer than its last vector.

The stage owns the models (:class:`~cgwatch.anomaly.baselines.Baselines`); the
daemon saves and loads them through it, the same in ``replay``.

Examples
--------
>>> from cgwatch.model import Container, Sample
>>> web = Container(id="4f1c", name="web-1", runtime="docker")
>>> stage = AnomalyStage([Watch("baseline", ("cpu.usage_cores",), ModelSpec())])
>>> out = [stage.step(float(t), [Sample(float(t), web, "cpu.usage_cores", 1.0 + t % 3)]) for t in range(200)]
>>> v = stage.step(200.0, [Sample(200.0, web, "cpu.usage_cores", 50.0)])[0]
>>> v.rule, v.value, v.score, v.active, v.channels
('baseline', 50.0, 1.0, True, ('range',))
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import Container, Sample, Verdict, rows_of
from .base import Band
from .baselines import Baselines, ModelSpec
from .thresholds import Thresholder

#: containers whose latest values a joint model waits on, at most (least recently seen go first)
MAX_JOINT_WORKLOADS = 20_000


def _everyone(c: Container) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Watch:
    """One anomaly rule, as the stage needs it."""

    rule: str
    metrics: tuple[str, ...]
    spec: ModelSpec
    selects: Callable[[Container], bool] = _everyone

    def key(self, workload: str) -> tuple[str, str, str]:
        """The key of this rule's model for ``workload`` (rule, workload, metric or ``a+b``):
        the one place it is written; the store saves models under it."""
        return self.rule, workload, "+".join(self.metrics)

    @classmethod
    def of(cls, rule: Any) -> Watch:
        """The watch of a loaded anomaly rule (anything with ``name``, ``anomaly`` and ``select``)."""
        a = rule.anomaly
        return cls(rule.name, tuple(a.metrics), ModelSpec(a.model, a.sensitivity, a.warmup, len(a.metrics), a.river),
                   rule.select.matches)


class AnomalyStage:
    """The models of the anomaly rules, and their verdicts each interval."""

    def __init__(self, watches: Sequence[Watch], baselines: Baselines | None = None, bands: bool = False) -> None:
        self.watches = list(watches)
        self.baselines = Baselines() if baselines is None else baselines
        #: give every verdict its normal band (the dashboard draws it); otherwise only those an
        #: alert's summary reads: while the model says anomalous and the one after
        self.bands = bands
        single: dict[str, list[int]] = {}
        joint: dict[str, list[int]] = {}
        for i, w in enumerate(self.watches):
            for m in w.metrics:
                (joint if len(w.metrics) > 1 else single).setdefault(m, []).append(i)
        self._single = {m: tuple(v) for m, v in single.items()}
        self._joint = {m: tuple(v) for m, v in joint.items()}
        # workload -> metric -> (ts, value), for joint models: the latest of each metric they read
        self._latest: OrderedDict[str, dict[str, tuple[float, float]]] = OrderedDict()
        # (watch index, workload) -> (the container it was decided for, its model's key or None: not selected)
        self._selected: dict[tuple[int, str], tuple[Container, tuple[str, str, str] | None]] = {}

    @classmethod
    def for_rules(cls, rules: Iterable[Any], baselines: Baselines | None = None, bands: bool = False) -> AnomalyStage:
        """The stage for the enabled anomaly rules among ``rules``."""
        return cls([Watch.of(r) for r in rules if getattr(r, "enabled", True) and r.anomaly is not None],
                   baselines, bands)

    def __bool__(self) -> bool:
        return bool(self.watches)

    def step(self, now: float, samples: Iterable[Sample]) -> list[Verdict]:
        """Teach one interval's samples; the verdicts on the values judged."""
        out: list[Verdict] = []
        touched: dict[str, Container] = {}
        single, joint = self._single, self._joint
        for c, ts, values in rows_of(samples):
            for m in sorted(values.keys() & single) if single else ():    # in one order, run after run
                for i in single[m]:
                    self._learn(i, c, ts, m, values[m], out)
            if joint and (read := values.keys() & joint):
                w = c.workload
                latest = self._latest.get(w)
                if latest is None:
                    latest = self._latest[w] = {}
                    if len(self._latest) > MAX_JOINT_WORKLOADS:
                        self._latest.popitem(last=False)
                else:
                    self._latest.move_to_end(w)
                for m in sorted(read):
                    latest[m] = (ts, values[m])
                touched[w] = c
        for w, c in touched.items():
            done: set[int] = set()
            for m in self._latest[w]:
                for i in joint.get(m, ()):
                    if i not in done:
                        done.add(i)
                        self._learn_joint(i, c, now, out)
        return out

    def _model_key(self, i: int, c: Container) -> tuple[str, str, str] | None:
        """The key of watch ``i``'s model for ``c``, or None when the watch does not select it."""
        at = (i, c.workload)
        hit = self._selected.get(at)
        if hit is None or hit[0] is not c:   # new, or renamed: decide again
            if len(self._selected) > 4 * MAX_JOINT_WORKLOADS:
                self._selected.clear()
            w = self.watches[i]
            hit = self._selected[at] = (c, w.key(c.workload) if w.selects(c) else None)
        return hit[1]

    def _learn(self, i: int, c: Container, ts: float, metric: str, value: float, out: list[Verdict]) -> None:
        key = self._model_key(i, c)
        if key is None:
            return
        w = self.watches[i]
        model = self.baselines.get(key, w.spec, ts)
        was = model.active
        score, _ = model.update(ts, value)
        if score is not None or model.active:
            band = model.detector.band() if self.bands or was or model.active else None
            out.append(_verdict(model, ts, c, w.rule, metric, value, band))

    def _learn_joint(self, i: int, c: Container, now: float, out: list[Verdict]) -> None:
        key = self._model_key(i, c)
        if key is None:
            return
        w = self.watches[i]
        model = self.baselines.peek(key)
        fed = None if model is None else model.detector.last_ts
        latest = self._latest[c.workload]
        values, ts = [], None
        for m in w.metrics:
            got = latest.get(m)
            if got is None or (fed is not None and got[0] <= fed):
                return
            values.append(got[1])
            ts = got[0] if ts is None else max(ts, got[0])
        assert ts is not None
        model = self.baselines.get(key, w.spec, now)
        score, _ = model.update(ts, values)  # type: ignore[arg-type]
        if score is not None or model.active:
            out.append(_verdict(model, ts, c, w.rule, key[2], score, None))

    def threshold(self, rule: str, workload: str) -> float | None:
        """The score the rule's model for this workload must pass to fire now (None: no model yet)."""
        w = next((w for w in self.watches if w.rule == rule), None)
        model = None if w is None else self.baselines.peek(w.key(workload))
        return None if model is None else model.threshold()


def _verdict(model: Thresholder, ts: float, c: Container, rule: str, metric: str, value: float | None,
             band: Band | None) -> Verdict:
    fired = getattr(model.detector, "fired", ())
    if band is None:
        return Verdict(ts, c, rule, metric, value, model.last_score, model.active, model.threshold(), channels=fired)
    return Verdict(ts, c, rule, metric, value, model.last_score, model.active, model.threshold(), band.low, band.high,
                   band.span_s, fired)
