"""One baseline per rule × container × metric, bounded in number.

:class:`Baselines` hands out a :class:`~cgwatch.anomaly.thresholds.Thresholder`
per key, made on first use, and keeps at most ``max_models`` of them: when
full, the least recently used goes. Models of containers that sent nothing
for ``idle_evict_s`` are evicted by :meth:`evict_idle`, so a host that churns
through short-lived containers does not grow without end.

Examples
--------
>>> b = Baselines(max_models=2)
>>> spec = ModelSpec("mad")
>>> m1 = b.get(("r", "web", "cpu.usage_cores"), spec, now=0.0)
>>> m2 = b.get(("r", "db", "cpu.usage_cores"), spec, now=1.0)
>>> b.get(("r", "web", "cpu.usage_cores"), spec, now=2.0) is m1
True
>>> _ = b.get(("r", "cache", "cpu.usage_cores"), spec, now=3.0)   # full: db, least recent, goes
>>> sorted(k[1] for k in b.keys())
['cache', 'web']
>>> b.evicted
1
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .models import JUDGING_KINDS, SCALAR_KINDS, build, resolve
from .thresholds import Thresholder

log = logging.getLogger("cgwatch.anomaly")

Key = tuple[str, str, str]   # (rule name, container id, metric)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to build a fresh model: the kind and the rule's knobs (None: default)."""

    kind: str = "auto"
    sensitivity: float | None = None
    warmup: int | None = None
    dims: int = 1
    """How many metrics the model learns together; more than one makes a ``joint`` model."""
    river: tuple[str, str] | None = None
    """A River detector the rule named: its name and its parameters as JSON."""

    def build(self) -> Thresholder:
        """A fresh, untrained model.

        >>> ModelSpec("mad", sensitivity=1.0).build().update(0.0, 1.0)
        (None, False)
        >>> ModelSpec(dims=2).build().detector.kind
        'joint'
        """
        kw: dict[str, float | int] = {}
        if self.sensitivity is not None:
            kw["sensitivity"] = self.sensitivity
        if self.warmup is not None:
            kw["warmup"] = self.warmup
        if self.dims > 1:
            return Thresholder(build("joint", dims=self.dims), **kw)  # type: ignore[arg-type]
        if self.river is not None:
            name, params = self.river
            return Thresholder(build("river", model=name, params=json.loads(params)), **kw)  # type: ignore[arg-type]
        kind = self.kind if self.kind in SCALAR_KINDS or self.kind == "auto" else "auto"
        if "sensitivity" in kw and resolve(kind) in JUDGING_KINDS:   # it sets the detector's own thresholds
            return Thresholder(build(kind, sensitivity=kw.pop("sensitivity")), **kw)  # type: ignore[arg-type]
        return Thresholder(build(kind), **kw)  # type: ignore[arg-type]


class Baselines:
    """The live models, least recently used first."""

    def __init__(self, max_models: int = 20_000, idle_evict_s: float = 6 * 3600.0) -> None:
        self.max_models = max_models
        self.idle_evict_s = idle_evict_s
        self._models: OrderedDict[Key, list[Any]] = OrderedDict()     # key -> [model, last used]
        self.evicted = 0
        self._warned_kinds: set[str] = set()

    def __len__(self) -> int:
        return len(self._models)

    def keys(self) -> Iterator[Key]:
        return iter(self._models)

    def items(self) -> Iterator[tuple[Key, Thresholder]]:
        for k, (m, _) in self._models.items():
            yield k, m

    def get(self, key: Key, spec: ModelSpec, now: float) -> Thresholder:
        """The model for ``key``, made from ``spec`` if there is none."""
        hit = self._models.get(key)
        if hit is not None:
            hit[1] = now
            self._models.move_to_end(key)
            return hit[0]
        if spec.dims == 1 and spec.river is None and spec.kind not in SCALAR_KINDS and spec.kind != "auto" \
                and spec.kind not in self._warned_kinds:
            self._warned_kinds.add(spec.kind)
            log.warning("anomaly model %r is unknown (known: auto, %s); using auto", spec.kind,
                        ", ".join(SCALAR_KINDS))
        model = spec.build()
        self._models[key] = [model, now]
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)
            self.evicted += 1
        return model

    def peek(self, key: Key) -> Thresholder | None:
        """The model for ``key`` if there is one, without counting it as used."""
        hit = self._models.get(key)
        return None if hit is None else hit[0]

    def put(self, key: Key, model: Thresholder, now: float) -> None:
        """Adopt a model (one loaded from disk)."""
        self._models[key] = [model, now]
        self._models.move_to_end(key)

    def evict_idle(self, now: float) -> int:
        """Drop the models not used for ``idle_evict_s``; returns how many.

        >>> b = Baselines(idle_evict_s=60.0)
        >>> _ = b.get(("r", "web", "m"), ModelSpec(), now=0.0)
        >>> b.evict_idle(now=30.0), b.evict_idle(now=61.0), len(b)
        (0, 1, 0)
        """
        gone = 0
        while self._models:
            key, (_, used) = next(iter(self._models.items()))
            if now - used < self.idle_evict_s:
                break
            del self._models[key]
            gone += 1
        self.evicted += gone
        return gone
