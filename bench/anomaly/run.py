#!/usr/bin/env python3
"""Run candidate anomaly detectors over the labelled corpus and print a table.

    .venv/bin/python bench/anomaly/run.py [--seed 1] [--series 60] [--json FILE] [--detectors never,static_z]

A detector is made by a factory ``make() -> Detector`` and sees one series,
sample by sample, through ``update(ts, value) -> bool`` (True = an alert's
onset at this sample). A fresh detector is made for every series; nothing is
tuned per series. Register candidates in :data:`DETECTORS`.

A detector may also have ``prepare(n_samples, interval_s)``: the runner calls
it before the first sample. Only the static baseline uses it (to learn from
the first 10 % of the series); a real detector must not need it, since a live
daemon does not know how long a container will run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

if __package__ in (None, ""):  # run as a script: make `bench.anomaly` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.anomaly.generate import Series, describe, make_corpus  # noqa: E402
from bench.anomaly.score import Report, score  # noqa: E402


class Detector(Protocol):
    def update(self, ts: float, value: float) -> bool: ...


class Never:
    """Never alerts: the NAB null detector (score 0)."""

    def update(self, ts: float, value: float) -> bool:
        return False


class StaticZ:
    """Static threshold on a z-score: mean and std of the first ``warmup_fraction``
    of the series (or ``warmup`` samples without ``prepare``); alert onset when
    |z| > ``enter`` for ``confirm`` consecutive samples; the alert holds until
    |z| < ``leave`` for ``confirm`` consecutive samples (hysteresis), and only
    the onset is reported."""

    def __init__(self, enter: float = 4.0, leave: float = 3.0, confirm: int = 3, warmup_fraction: float = 0.1,
                 warmup: int = 100) -> None:
        self.enter, self.leave, self.confirm = enter, leave, confirm
        self.warmup_fraction, self.warmup = warmup_fraction, warmup
        self.n = 0
        self.sum = self.sumsq = 0.0
        self.mean = self.std = 0.0
        self.run = 0
        self.alerting = False

    def prepare(self, n_samples: int, interval_s: float) -> None:
        self.warmup = max(int(self.warmup_fraction * n_samples), 2)

    def update(self, ts: float, value: float) -> bool:
        if value != value or value in (float("inf"), float("-inf")):
            return False
        if self.n < self.warmup:
            self.n += 1
            self.sum += value
            self.sumsq += value * value
            if self.n == self.warmup:
                self.mean = self.sum / self.n
                var = max(self.sumsq / self.n - self.mean * self.mean, 0.0)
                # a flat warm-up (e.g. execs all 0) would make every change infinite
                self.std = max(var**0.5, 1e-6 * max(abs(self.mean), 1.0))
            return False
        z = abs(value - self.mean) / self.std
        if not self.alerting:
            self.run = self.run + 1 if z > self.enter else 0
            if self.run >= self.confirm:
                self.alerting, self.run = True, 0
                return True
        else:
            self.run = self.run + 1 if z < self.leave else 0
            if self.run >= self.confirm:
                self.alerting, self.run = False, 0
        return False


class Cgwatch:
    """A cgwatch detector kind behind its Thresholder, with its default knobs:
    exactly what an ``anomaly: {metric: ..., model: KIND}`` rule would run."""

    def __init__(self, kind: str, **params: object) -> None:
        from cgwatch.anomaly import Thresholder, build

        self.t = Thresholder(build(kind, **params))

    def update(self, ts: float, value: float) -> bool:
        return self.t.update(ts, value)[1]


#: name -> factory
DETECTORS: dict[str, Callable[[], Detector]] = {
    "never": Never,
    "static_z": StaticZ,
    "likelihood": lambda: Cgwatch("likelihood"),
    "mad": lambda: Cgwatch("mad"),
    "forecast": lambda: Cgwatch("forecast"),
    "hst": lambda: Cgwatch("hst"),
    "ensemble": lambda: Cgwatch("ensemble"),
    "ensemble-mean": lambda: Cgwatch("ensemble", combine="mean"),
}


def run_detector(make: Callable[[], Detector], s: Series) -> list[float]:
    """Alert onset timestamps of a fresh detector over one series."""
    det = make()
    prepare = getattr(det, "prepare", None)
    if prepare is not None:
        prepare(len(s.ts), s.interval_s)
    update = det.update
    return [t for t, v in zip(s.ts.tolist(), s.values.tolist()) if update(t, v)]


@dataclass
class Result:
    name: str
    report: Report
    seconds: float
    samples: int
    alerts: dict[str, list[float]] = field(default_factory=dict)

    @property
    def us_per_sample(self) -> float:
        return 1e6 * self.seconds / max(self.samples, 1)


def evaluate(corpus: Sequence[Series], detectors: dict[str, Callable[[], Detector]]) -> list[Result]:
    out = []
    n = sum(len(s.ts) for s in corpus)
    for name, make in detectors.items():
        t0 = time.perf_counter()
        alerts = {s.name: run_detector(make, s) for s in corpus}
        dt = time.perf_counter() - t0
        out.append(Result(name, score(corpus, alerts), dt, n, alerts))
    return out


def _f(x: float | None, fmt: str) -> str:
    return format("-", fmt.rstrip("fd").rsplit(".", 1)[0]) if x is None else format(x, fmt)


def table(results: Sequence[Result]) -> str:
    head = (f"{'detector':<16} {'prec':>5} {'recall':>6} {'F1':>5} {'TP':>4} {'FN':>4} {'FP':>5} {'FA/day':>7} "
            f"{'delay s':>8} {'delay n':>7} {'NAB':>7} {'us/smp':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        p = r.report
        lines.append(
            f"{r.name:<16} {p.precision:>5.2f} {p.recall:>6.2f} {p.f1:>5.2f} {p.tp:>4} {p.fn:>4} {p.fp:>5} "
            f"{p.false_alarms_per_day:>7.2f} {_f(p.median_delay_s, '>8.0f')} {_f(p.median_delay_samples, '>7.1f')} "
            f"{p.nab_score:>7.1f} {r.us_per_sample:>7.2f}")
    kinds = list(results[0].report.recall_by_kind) if results else []
    lines += ["", "recall by anomaly kind", f"{'detector':<16} " + " ".join(f"{k[:13]:>13}" for k in kinds)]
    for r in results:
        lines.append(f"{r.name:<16} " + " ".join(f"{_f(r.report.recall_by_kind[k], '>13.2f')}" for k in kinds))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--series", type=int, default=60, metavar="N")
    ap.add_argument("--json", metavar="FILE", help="write the full results (per series too) as JSON")
    ap.add_argument("--detectors", help=f"comma-separated subset of {', '.join(DETECTORS)}")
    args = ap.parse_args(argv)
    chosen = DETECTORS
    if args.detectors:
        names = [n.strip() for n in args.detectors.split(",") if n.strip()]
        unknown = [n for n in names if n not in DETECTORS]
        if unknown:
            ap.error(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(DETECTORS)}")
        chosen = {n: DETECTORS[n] for n in names}
    t0 = time.perf_counter()
    corpus = make_corpus(args.seed, args.series)
    info = describe(corpus)
    print(f"corpus seed={args.seed}: {info['series']} series ({info['clean_series']} clean), {info['samples']} samples, "
          f"{info['series_days']} series-days, {info['windows']} windows {info['windows_by_kind']} "
          f"[{time.perf_counter() - t0:.2f} s]\n")
    results = evaluate(corpus, chosen)
    print(table(results))
    if args.json:
        doc = {
            "seed": args.seed,
            "corpus": info,
            "detectors": {r.name: {**r.report.to_dict(), "seconds": r.seconds, "us_per_sample": r.us_per_sample,
                                   "alerts": r.alerts} for r in results},
        }
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
