"""The shipped default baseline on series with daily and weekly cycles and lasting level shifts,
through the rules engine as a rule with every knob left as shipped: it fires when a departure
starts, stays quiet on the cycles once it has seen them, and does not page again for a new normal.

The series are seeded, so each check sees the same values every run.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from cgwatch.anomaly.stage import AnomalyStage
from cgwatch.model import Container, Sample
from cgwatch.rules.engine import Engine
from cgwatch.rules.load import load_rules

DAY = 86400.0
HOUR = 3600.0
WEB = Container(id="4f1c" * 16, name="web-1", runtime="docker")


def alerts(tmp_path: Path, values: list[float], step: float) -> list[tuple[float, str, str]]:
    """(hours since the start, state, summary) of the default rule over ``values``, ``step`` seconds apart."""
    p = tmp_path / "rules.yaml"
    p.write_text("rules:\n  - name: baseline\n    anomaly: {metric: cpu.usage_cores}\n    severity: info\n")
    rules, errors = load_rules([p])
    assert errors == []
    items = [Sample(i * step, WEB, "cpu.usage_cores", v) for i, v in enumerate(values)]
    return [(a.ts / HOUR, a.state, a.summary) for a in Engine(rules).feed(items, AnomalyStage.for_rules(rules))]


def onsets(got: list[tuple[float, str, str]], start_h: float = 0.0, end_h: float = math.inf) -> list[tuple[float, str]]:
    return [(h, summary) for h, state, summary in got if state == "firing" and start_h <= h < end_h]


def daily(t: float) -> float:
    """Busy by day, quiet at night: 0.2 to 1.8 cores."""
    return 1.0 + 0.8 * math.sin(2 * math.pi * (t % DAY) / DAY)


def test_a_daily_cycle_is_normal_and_its_peak_at_the_quiet_hour_is_not(tmp_path: Path) -> None:
    r = random.Random(7)
    step = 300.0
    values = [daily(i * step) + r.gauss(0.0, 0.05) for i in range(int(14 * DAY / step))]
    # two weeks of the cycle: at most one stray alert (a noise value past the range) after the first day
    quiet = onsets(alerts(tmp_path, values, step), 24.0)
    assert len(quiet) <= 1, quiet

    # day 10 at 18:00, the quiet hour, runs at the daytime peak for an hour: well inside the
    # range the series keeps every day, so only the time of day says it is wrong
    start = int((10 * DAY + 0.75 * DAY) / step)
    for i in range(start, start + 12):
        values[i] = 1.8 + r.gauss(0.0, 0.05)
    got = onsets(alerts(tmp_path, values, step), 24.0)
    hit = [(h, s) for h, s in got if start * step / HOUR <= h < start * step / HOUR + 1.0]
    assert len(hit) == 1, got
    assert "unlike this time on earlier days" in hit[0][1]


def test_a_weekly_cycle_alerts_the_first_weekend_only(tmp_path: Path) -> None:
    r = random.Random(11)
    step = 300.0
    # weekends (days 5 and 6 of each week) run at 40 % of the weekdays
    values = [daily(i * step) * (0.4 if (i * step // DAY) % 7 in (5, 6) else 1.0) + r.gauss(0.0, 0.05)
              for i in range(int(28 * DAY / step))]
    got = onsets(alerts(tmp_path, values, step), 24.0)
    assert any(int(h // 24) in (5, 6) for h, _ in got), got              # the first weekend is news
    later = [(h, s) for h, s in got if int(h // 24) in (12, 13, 19, 20, 26, 27)]
    assert later == [], got                                             # the next three are not


def test_a_lasting_level_shift_fires_once_and_the_new_level_becomes_normal(tmp_path: Path) -> None:
    r = random.Random(3)
    step = 60.0
    values = [1.0 + r.gauss(0.0, 0.05) for _ in range(2 * 1440)] + [2.0 + r.gauss(0.0, 0.1) for _ in range(3 * 1440)]
    got = alerts(tmp_path, values, step)
    at_shift = onsets(got, 48.0, 48.0 + 10 / 60)
    assert len(at_shift) == 1, got
    assert ", normal 0.8" in at_shift[0][1] and "–1.1" in at_shift[0][1], at_shift   # normal was ~1
    resolved = [h for h, state, _ in got if state == "resolved" and h > 48.0]
    assert resolved and resolved[0] < 48.0 + 2.0, got        # the new level is normal within two hours
    assert onsets(got, 48.0 + 10 / 60, 48.0 + 12.0) == [], got   # and no page for it in the twelve after
