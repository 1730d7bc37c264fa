"""Event-level and NAB-style scoring of alert onsets against labelled windows.

``score(series_list, alerts_by_series) -> Report``. Alerts are the onset
timestamps a detector raised, per series (a mapping by ``Series.name`` or a
sequence in the order of ``series_list``). Windows are closed intervals
``[start, end]``, sorted and disjoint within a series.

Event-level counts
------------------
* A window is **detected** (TP) if at least one alert lies in it, **missed**
  (FN) otherwise. Only the earliest alert in a window counts; later alerts in
  the same window are neither rewarded nor punished.
* Alerts outside every window are **false alarms**. Alerts close together are
  one false alarm: a false-alarm event starts at an alert and absorbs every
  later outside-window alert less than ``fp_merge_s`` (default 600 s) after
  that event's *first* alert; the next alert after that starts a new event.
  So a detector that flaps continuously pays one false alarm per 10 minutes,
  and a burst of onsets counts once.
* precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = 2 P R / (P + R); each is 0 when its denominator is 0.
* detection delay of a detected window = earliest alert - window start, in
  seconds and in samples (/ interval); the report gives the median (and
  90th percentile) over detected windows, ``None`` if none was detected.
* false alarms per day = FP / series-days, where series-days is the sum over
  all series of their duration (last - first timestamp + one interval) / 86400.

NAB-like score (standard profile)
---------------------------------
Following the Numenta Anomaly Benchmark (Lavin & Ahmad 2015), with
A_TP = 1, A_FN = 1, A_FP = 0.11:

* relative position of a time t in window [s, e]:  y = (t - e) / (e - s),
  so y = -1 at the start and 0 at the end (NAB uses sample indices; we use
  time, which is the same for regular sampling);
* scaled sigmoid  sigma(y) = 2 / (1 + exp(5 y)) - 1,
  = 0.987 at the start of a window, 0 at its end (NAB's exact curve);
* raw = sum over detected windows of  A_TP * sigma(y_first)
        - A_FN * (number of missed windows)
        - A_FP * (number of false alarms)
* null = -A_FN * (number of windows)            (a detector that never alerts)
* perfect = A_TP * sigma(-1) * (number of windows) (an alert at every window's start)
* NAB score = 100 * (raw - null) / (perfect - null)

so the null detector scores 0 and the perfect one 100; each false alarm lowers
``raw`` by exactly 0.11. Scores are pooled over the whole corpus, as NAB pools
over its files. One simplification from NAB: there a false positive shortly
after a window costs less than A_FP (the sigmoid continues past the window's
end); here every false alarm costs A_FP, and the labelled windows instead
extend a tail past each anomaly (see generate.py). Our false alarms are the
merged events above, not raw alert points.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from bench.anomaly.generate import ALL_KINDS, DAY, Series

A_TP, A_FN, A_FP = 1.0, 1.0, 0.11
FP_MERGE_S = 600.0


def scaled_sigmoid(y: float) -> float:
    """NAB's weight of a detection at relative position ``y`` (-1 = window
    start, 0 = window end)."""
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass
class SeriesScore:
    name: str
    windows: int
    tp: int
    fn: int
    fp: int
    delays_s: list[float]
    nab_raw: float


@dataclass
class Report:
    series: int
    windows: int
    tp: int
    fn: int
    fp: int
    precision: float
    recall: float
    f1: float
    median_delay_s: float | None
    median_delay_samples: float | None
    p90_delay_s: float | None
    series_days: float
    false_alarms_per_day: float
    nab_raw: float
    nab_null: float
    nab_perfect: float
    nab_score: float
    recall_by_kind: dict[str, float | None] = field(default_factory=dict)
    per_series: list[SeriesScore] = field(default_factory=list)

    def to_dict(self, per_series: bool = True) -> dict[str, object]:
        d = asdict(self)
        if not per_series:
            d.pop("per_series")
        return d


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _score_one(s: Series, alerts: Sequence[float], fp_merge_s: float) -> tuple[SeriesScore, list[float], list[bool]]:
    starts = [w[0] for w in s.windows]
    first: list[float | None] = [None] * len(s.windows)
    outside: list[float] = []
    for t in sorted(float(a) for a in alerts):
        k = bisect.bisect_right(starts, t) - 1
        if k >= 0 and t <= s.windows[k][1]:
            if first[k] is None:
                first[k] = t
        else:
            outside.append(t)
    fp = 0
    event_start = -math.inf
    for t in outside:
        if t - event_start >= fp_merge_s:
            fp += 1
            event_start = t
    raw = -A_FP * fp
    delays_s: list[float] = []
    samples: list[float] = []
    hit: list[bool] = []
    for (ws, we), t in zip(s.windows, first):
        hit.append(t is not None)
        if t is None:
            raw -= A_FN
            continue
        y = (t - we) / (we - ws) if we > ws else -1.0
        raw += A_TP * scaled_sigmoid(y)
        delays_s.append(t - ws)
        samples.append((t - ws) / s.interval_s)
    tp = sum(hit)
    sc = SeriesScore(s.name, len(s.windows), tp, len(s.windows) - tp, fp, delays_s, raw)
    return sc, samples, hit


def score(series_list: Sequence[Series], alerts_by_series: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
          fp_merge_s: float = FP_MERGE_S) -> Report:
    """Score alert onsets against the labelled windows (formulas in the module docstring)."""
    if isinstance(alerts_by_series, Mapping):
        alerts = [alerts_by_series.get(s.name, ()) for s in series_list]
    else:
        alerts = list(alerts_by_series)
        if len(alerts) != len(series_list):
            raise ValueError(f"{len(alerts)} alert lists for {len(series_list)} series")
    per: list[SeriesScore] = []
    delays_n: list[float] = []
    kind_hits: dict[str, list[bool]] = {k: [] for k in ALL_KINDS}
    for s, a in zip(series_list, alerts):
        sc, samples, hit = _score_one(s, a, fp_merge_s)
        per.append(sc)
        delays_n += samples
        for kind, h in zip(s.kinds, hit):
            kind_hits.setdefault(kind, []).append(h)
    n_win = sum(p.windows for p in per)
    tp = sum(p.tp for p in per)
    fp = sum(p.fp for p in per)
    fn = n_win - tp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, n_win)
    f1 = _ratio(2 * precision * recall, precision + recall)
    delays_s = [d for p in per for d in p.delays_s]
    days = sum(s.duration_s for s in series_list) / DAY
    raw = sum(p.nab_raw for p in per)
    null = -A_FN * n_win
    perfect = A_TP * scaled_sigmoid(-1.0) * n_win
    nab = 100.0 * (raw - null) / (perfect - null) if n_win else 0.0
    return Report(
        series=len(series_list), windows=n_win, tp=tp, fn=fn, fp=fp,
        precision=precision, recall=recall, f1=f1,
        median_delay_s=float(np.median(delays_s)) if delays_s else None,
        median_delay_samples=float(np.median(delays_n)) if delays_n else None,
        p90_delay_s=float(np.percentile(delays_s, 90)) if delays_s else None,
        series_days=days, false_alarms_per_day=_ratio(fp, days),
        nab_raw=raw, nab_null=null, nab_perfect=perfect, nab_score=nab,
        recall_by_kind={k: (sum(h) / len(h) if h else None) for k, h in kind_hits.items()},
        per_series=per,
    )
