#!/usr/bin/env python3
"""Replay throughput of the rules engine: 10 threshold rules over 1,000 containers.

Prints samples per second for the engine and, in the same run, for a plain
loop that only files each sample by container and metric (the least any
consumer pays), and the ratio between them. Target: >= 300k samples/s.

    .venv/bin/python bench/bench_rules.py [--ticks 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from cgwatch.anomaly.stage import AnomalyStage
from cgwatch.model import Container, Sample
from cgwatch.rules.engine import Engine
from cgwatch.rules.load import load_rules

RULES = """
rules:
  - {name: cpu-near-limit, expr: cpu.usage_cores > 0.9 * cpu.limit_cores, for: 5m, severity: warning}
  - {name: mem-near-limit, expr: mem.usage_ratio > 0.9, for: 2m, severity: warning}
  - {name: fork-storm, expr: proc.forks > 500, for: 30s, severity: warning}
  - {name: exec-storm, expr: proc.execs > 200, for: 30s, severity: info}
  - {name: runq, expr: cpu.runq_latency_p99_ms > 50, for: 2m, severity: warning}
  - {name: throttled, expr: cpu.throttled_ratio > 0.25, for: 5m, severity: warning}
  - {name: retrans, expr: net.tcp_retransmits > 5, for: 5m, severity: warning}
  - {name: faults, expr: mem.page_faults > 100000, for: 1m, severity: info}
  - {name: exits, expr: proc.exits_nonzero > 1, severity: warning}
  - {name: ctx, expr: cpu.involuntary_ctx_switches > 10000 and cpu.usage_cores > 1, for: 1m, severity: info}
"""
# what a live tick carries per container: the metrics above plus some no rule reads
METRICS = ("cpu.usage_cores", "cpu.limit_cores", "mem.usage_ratio", "proc.forks", "proc.execs",
           "cpu.runq_latency_p99_ms", "cpu.throttled_ratio", "net.tcp_retransmits", "mem.page_faults",
           "proc.exits_nonzero", "cpu.involuntary_ctx_switches", "cpu.ctx_switches", "io.read_bytes",
           "io.write_bytes", "net.rx_bytes", "net.tx_bytes")


def stream(containers: int, ticks: int) -> list[Sample]:
    rng = random.Random(42)
    cs = [Container(id=f"{i:064x}", name=f"c{i}", runtime="docker") for i in range(containers)]
    out = []
    for t in range(ticks):
        for c in cs:
            for m in METRICS:
                out.append(Sample(float(t), c, m, rng.random()))
    return out


ANOMALY = """
rules:
  - {name: cpu-baseline, anomaly: {metric: cpu.usage_cores}, severity: info}
"""
MAD = """
rules:
  - {name: cpu-baseline, anomaly: {metric: cpu.usage_cores, model: mad}, severity: info}
"""
THRESHOLD = """
rules:
  - {name: cpu-hot, expr: cpu.usage_cores > 0.9, for: 1m, severity: info}
"""


def one_metric(containers: int, ticks: int) -> list[Sample]:
    rng = random.Random(7)
    cs = [Container(id=f"{i:064x}", name=f"c{i}", runtime="docker") for i in range(containers)]
    return [Sample(float(t), c, "cpu.usage_cores", 0.5 + 0.1 * rng.random())
            for t in range(ticks) for c in cs]


def baseline(samples: list[Sample]) -> None:
    last: dict[str, dict[str, float]] = {}
    for s in samples:
        d = last.get(s.container.id)
        if d is None:
            d = last[s.container.id] = {}
        d[s.metric] = s.value


def engine(rules, samples: list[Sample]) -> int:
    return sum(1 for _ in Engine(rules).feed(samples))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--containers", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        f = Path(d, "r.yaml")
        f.write_text(RULES)
        rules, errors = load_rules([str(f)])
    assert not errors and len(rules) == 10
    samples = stream(args.containers, args.ticks)
    base, eng = [], []
    for _ in range(args.rounds):          # interleaved: both see the same machine state
        t = time.perf_counter()
        baseline(samples)
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine(rules, samples)
        eng.append(time.perf_counter() - t)
    n = len(samples)
    b, e = n / statistics.median(base), n / statistics.median(eng)
    print(f"{n} samples ({args.containers} containers x {len(METRICS)} metrics x {args.ticks} ticks), "
          f"10 threshold rules, median of {args.rounds} rounds")
    print(f"baseline (file each sample)  {b / 1e3:8.0f}k samples/s")
    print(f"rules engine                 {e / 1e3:8.0f}k samples/s")
    print(f"engine / baseline = {b / e:.1f}x the time   target >= 300k samples/s: {'PASS' if e >= 300e3 else 'FAIL'}")

    # one anomaly rule per container (the default model and mad), beside one plain threshold rule,
    # same samples, through the anomaly stage and the engine as the daemon and replay run them
    an_rules, mad_rules, thr_rules = _load(ANOMALY), _load(MAD), _load(THRESHOLD)
    samples = one_metric(args.containers, max(args.ticks * 2, 60))
    thr, an, mad = [], [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        engine(thr_rules, samples)
        thr.append(time.perf_counter() - t)
        for rs, times in ((an_rules, an), (mad_rules, mad)):
            stage = AnomalyStage.for_rules(rs)
            t = time.perf_counter()
            for _ in Engine(rs).feed(samples, stage):
                pass
            times.append(time.perf_counter() - t)
            if rs is an_rules:
                models = stage.baselines
    from cgwatch.anomaly import model_size_bytes

    sizes = [model_size_bytes(m.detector) for _, m in models.items()]
    n = len(samples)
    tr, ar, mr = n / statistics.median(thr), n / statistics.median(an), n / statistics.median(mad)
    print(f"\n{n} samples ({args.containers} containers x 1 metric), one rule per container")
    print(f"threshold rule               {tr / 1e3:8.0f}k samples/s")
    print(f"anomaly rule, model: mad     {mr / 1e3:8.0f}k samples/s")
    print(f"anomaly rule (default model) {ar / 1e3:8.0f}k samples/s   target >= 50k: {'PASS' if ar >= 50e3 else 'FAIL'}")
    print(f"model size: max {max(sizes) / 1024:.1f} KiB over {len(sizes)} models   "
          f"target <= 50 KiB: {'PASS' if max(sizes) <= 50 * 1024 else 'FAIL'}")


def _load(text: str) -> list:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d, "r.yaml")
        f.write_text(text)
        rules, errors = load_rules([str(f)])
    assert not errors, errors
    return rules


if __name__ == "__main__":
    main()
