"""Anomaly detection: one streaming model per container x metric.

- :mod:`~cgwatch.anomaly.base`: the :class:`Detector` contract and the input guard.
- :mod:`~cgwatch.anomaly.models`: the kinds (``mad``, ``hst``, ``forecast``, ``ensemble``), ``build``, ``restore``.
- :mod:`~cgwatch.anomaly.joint`: ``joint``, one model over several metrics (``metrics: [a, b]``).
- :mod:`~cgwatch.anomaly.thresholds`: :class:`Thresholder`, scores to alert onsets.

Examples
--------
>>> from cgwatch.anomaly import Thresholder, build
>>> th = Thresholder(build("auto"))
>>> th.update(0.0, 1.0)
(None, False)
"""

from cgwatch.anomaly.base import Detector
from cgwatch.anomaly.models import KINDS, SCALAR_KINDS, build, model_size_bytes, restore
from cgwatch.anomaly.thresholds import Thresholder

__all__ = ["Detector", "KINDS", "SCALAR_KINDS", "Thresholder", "build", "model_size_bytes", "restore"]
