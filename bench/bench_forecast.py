#!/usr/bin/env python3
"""Cost of the time-to-limit forecast (cgwatch.forecast) per interval.

N containers with a memory limit (10 % of them leaking, the rest flat with noise), one
Frame a second for 30 minutes of sample time, through ``Forecast.step``; beside it, in the
same run, a loop that only looks up the two values the stage reads in every row (the least
any stage pays). Prints milliseconds per interval for both.

    .venv/bin/python bench/bench_forecast.py [--containers 500] [--ticks 1800]
"""

from __future__ import annotations

import argparse
import random
import time

from cgwatch.forecast import LIMIT, WORKING_SET, Forecast
from cgwatch.model import Container, Frame

MiB = 2.0**20


def frames(n: int, ticks: int) -> list[Frame]:
    rnd = random.Random(1)
    cs = [Container(id=f"{i:064x}", name=f"c{i}", runtime="docker") for i in range(n)]
    return [Frame([(c, float(t), {WORKING_SET: (50 + (0.1 * t if i % 10 == 0 else 0.0)) * MiB + rnd.random() * MiB,
                                  LIMIT: 512 * MiB}) for i, c in enumerate(cs)]) for t in range(ticks)]


def lookups(frame: Frame) -> int:
    n = 0
    for _, _, values in frame.rows:
        if values.get(WORKING_SET) is not None and values.get(LIMIT) is not None:
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=500)
    ap.add_argument("--ticks", type=int, default=1800)
    a = ap.parse_args()
    batches = frames(a.containers, a.ticks)
    f = Forecast()
    stage = base = 0.0
    for t, frame in enumerate(batches):
        t0 = time.perf_counter()
        lookups(frame)
        t1 = time.perf_counter()
        f.step(float(t), frame, [])
        stage += time.perf_counter() - t1
        base += t1 - t0
    made = sum(1 for tr in f.trends.values() if tr.shown)
    print(f"{a.containers} containers, {a.ticks} intervals, {made} forecast at the end")
    print(f"forecast stage: {stage / a.ticks * 1e3:.3f} ms per interval")
    print(f"lookups only:   {base / a.ticks * 1e3:.3f} ms per interval ({stage / base:.1f}x)")


if __name__ == "__main__":
    main()
