"""The anomaly benchmark itself: a deterministic, correctly labelled corpus and
a scorer that does what bench/anomaly/score.py's docstring says."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.anomaly import run  # noqa: E402
from bench.anomaly.generate import ALL_KINDS, Series, make_corpus, window_tail  # noqa: E402
from bench.anomaly.score import A_FP, scaled_sigmoid, score  # noqa: E402

SEED = 3


@pytest.fixture(scope="module")
def corpus() -> list[Series]:
    return make_corpus(SEED, 30)


# --------------------------------------------------------------------------- generator


def test_corpus_is_deterministic_and_prefix_stable(corpus: list[Series]) -> None:
    again = make_corpus(SEED, 30)
    prefix = make_corpus(SEED, 7)
    for a, b in zip(corpus, again):
        assert a.name == b.name and a.interval_s == b.interval_s
        assert np.array_equal(a.ts, b.ts) and np.array_equal(a.values, b.values)
        assert a.windows == b.windows and a.kinds == b.kinds
    for a, b in zip(corpus, prefix):
        assert np.array_equal(a.values, b.values) and a.windows == b.windows
    other = make_corpus(SEED + 1, 7)
    assert any(len(a.values) != len(b.values) or not np.array_equal(a.values, b.values)
               for a, b in zip(prefix, other))


def test_corpus_covers_the_brief(corpus: list[Series]) -> None:
    big = corpus + make_corpus(SEED + 100, 30)
    assert {s.metric for s in big} == {"cpu.usage_cores", "mem.usage_bytes", "proc.execs", "net.rx_bytes",
                                       "cpu.runq_latency_p99_ms"}
    assert {s.interval_s for s in big} == {1.0, 10.0, 60.0}
    assert {k for s in big for k in s.kinds} == set(ALL_KINDS)
    assert any(not s.windows for s in big)
    assert all(0 <= len(s.windows) <= 3 for s in big)
    hours = [s.duration_s / 3600 for s in big]
    assert min(hours) >= 2 and max(hours) <= 72


def test_labels_are_where_the_anomalies_are(corpus: list[Series]) -> None:
    for s in corpus:
        assert len(s.windows) == len(s.kinds) == len(s.anomalies)
        assert np.all(np.diff(s.ts) == s.interval_s)
        assert np.all(np.isfinite(s.values)) and np.all(s.values >= 0)
        changed = s.values != s.base
        inside = np.zeros(len(s.ts), dtype=bool)
        prev_end = -math.inf
        for (ws, we), a in zip(s.windows, s.anomalies):
            assert prev_end < ws <= we <= s.ts[-1]
            prev_end = we
            assert ws == s.ts[a.i0] == a.onset_ts  # a window opens at the anomaly's onset
            assert we == min(a.end_ts + window_tail(s.interval_s), s.ts[-1])
            assert ws >= s.ts[0] + 0.2 * (s.ts[-1] - s.ts[0]) - s.interval_s  # clean warm-up
            assert changed[a.i0:a.i1].any(), (s.name, a.kind)
            inside[a.i0:a.i1] = True
        assert not (changed & ~inside).any(), s.name  # nothing changed outside the anomalies
        if s.metric == "cpu.usage_cores":
            assert s.values.max() <= s.meta["limit"]


def test_kinds_look_like_their_names(corpus: list[Series]) -> None:
    seen = set()
    for s in corpus + make_corpus(SEED + 100, 30):
        for a in s.anomalies:
            v, b = s.values[a.i0:a.i1], s.base[a.i0:a.i1]
            if a.kind == "stuck_at_zero":
                assert np.all(v == 0)
            elif a.kind == "crash_loop":
                assert np.any(v == 0) and (s.metric == "proc.execs" or np.any(v > 0))
            elif a.kind == "leak":
                d = v - b
                assert v[-1] == 0 and d[len(d) - 3] > d[0] > -1  # a ramp up, then the OOM drop
            elif a.kind == "spike":
                assert a.i1 - a.i0 <= 5 and np.all(v >= b)
            seen.add(a.kind)
    assert seen == set(ALL_KINDS)


# --------------------------------------------------------------------------- scorer


def _series(windows: list[tuple[float, float]], days: float = 1.0, interval: float = 60.0) -> Series:
    ts = np.arange(0.0, days * 86400, interval)
    return Series("hand", "cpu.usage_cores", interval, ts, np.zeros(len(ts)), windows, ["spike"] * len(windows))


W = [(10_000.0, 13_000.0), (40_000.0, 40_600.0)]


def test_perfect_detector_scores_100() -> None:
    s = _series(W)
    r = score([s], {"hand": [w[0] for w in W]})
    assert (r.tp, r.fn, r.fp) == (2, 0, 0)
    assert r.precision == r.recall == r.f1 == 1.0
    assert r.nab_score == pytest.approx(100.0)
    assert r.median_delay_s == 0.0 and r.median_delay_samples == 0.0
    assert r.false_alarms_per_day == 0.0


def test_never_scores_0() -> None:
    s = _series(W)
    r = score([s], {"hand": []})
    assert r.recall == 0.0 and r.f1 == 0.0 and r.tp == 0 and r.fn == 2
    assert r.nab_score == 0.0 and r.nab_raw == -2.0
    assert r.median_delay_s is None
    assert score([s], [[]]).nab_score == 0.0  # alerts may also come as a list in corpus order


def test_late_scores_less_than_early_and_delay_is_measured() -> None:
    s = _series(W)
    early = score([s], {"hand": [10_060.0, 40_060.0]})
    late = score([s], {"hand": [12_900.0, 40_500.0]})
    assert early.f1 == late.f1 == 1.0
    assert 0 < late.nab_score < early.nab_score < 100
    assert early.median_delay_s == 60.0 and early.median_delay_samples == 1.0
    assert late.median_delay_s == pytest.approx((2900 + 500) / 2)
    # only the earliest alert in a window counts; extra alerts in it cost nothing
    assert score([s], {"hand": [10_060.0, 12_000.0, 12_900.0, 40_060.0]}).nab_raw == early.nab_raw
    # the sigmoid: ~1 at the start, 0 at the end, monotone
    assert scaled_sigmoid(-1.0) == pytest.approx(0.9866, abs=1e-4) and scaled_sigmoid(0.0) == 0.0
    assert score([s], {"hand": [13_000.0, 40_600.0]}).nab_raw == pytest.approx(0.0)  # end of both windows


def test_false_alarms_cost_011_each_and_merge_within_10_minutes() -> None:
    s = _series(W)
    base = score([s], {"hand": [10_000.0, 40_000.0]})
    fps = [1_000.0, 20_000.0, 60_000.0]
    r = score([s], {"hand": [10_000.0, 40_000.0, *fps]})
    assert r.fp == 3 and r.tp == 2
    assert r.nab_raw == pytest.approx(base.nab_raw - 3 * A_FP)
    assert r.nab_score < base.nab_score
    assert r.precision == pytest.approx(2 / 5)
    assert r.false_alarms_per_day == pytest.approx(3.0)
    # a flapping detector: alerts every minute for 25 minutes = 3 events (0-10, 10-20, 20-25 min)
    flap = [70_000.0 + 60 * k for k in range(25)]
    assert score([s], {"hand": flap}).fp == 3
    # alerts just outside a window are false alarms; at its bounds they are hits
    edges = score([s], {"hand": [9_999.0, 13_001.0]})
    assert edges.tp == 0 and edges.fp == 2 and edges.fn == 2
    assert score([s], {"hand": [13_000.0]}).tp == 1


def test_pooled_over_series_and_by_kind() -> None:
    a, b = _series(W), _series([], days=2.0)
    a.name, b.name = "a", "b"
    a.kinds = ["spike", "leak"]
    r = score([a, b], {"a": [10_000.0], "b": [5_000.0]})
    assert r.series == 2 and r.windows == 2 and r.series_days == pytest.approx(3.0)
    assert r.false_alarms_per_day == pytest.approx(1 / 3)
    assert r.recall_by_kind["spike"] == 1.0 and r.recall_by_kind["leak"] == 0.0
    assert r.recall_by_kind["crash_loop"] is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 86_400, allow_nan=False), max_size=30))
def test_score_bounds_hold_for_any_alerts(alerts: list[float]) -> None:
    s = _series(W)
    r = score([s], {"hand": alerts})
    assert 0 <= r.precision <= 1 and 0 <= r.recall <= 1 and 0 <= r.f1 <= 1
    assert r.nab_score <= 100 + 1e-9
    assert r.tp + r.fn == 2
    assert r.nab_raw == pytest.approx(sum(scaled_sigmoid((t - we) / (we - ws))
                                          for ws, we in W
                                          for t in [min((a for a in alerts if ws <= a <= we), default=None)]
                                          if t is not None) - r.fn - A_FP * r.fp)


# --------------------------------------------------------------------------- harness


def test_harness_runs_the_baselines(corpus: list[Series], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    small = corpus[:10]
    results = {r.name: r for r in run.evaluate(small, run.DETECTORS)}
    assert {"never", "static_z"} <= set(results)
    assert results["never"].report.nab_score == 0.0 and results["never"].report.recall == 0.0
    z = results["static_z"].report
    assert z.tp > 0 and 0 < z.nab_score < 100
    assert run.main(["--seed", "5", "--series", "4", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "static_z" in out and "NAB" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["seed"] == 5 and set(doc["detectors"]) == set(run.DETECTORS)
    assert doc["detectors"]["never"]["nab_score"] == 0.0


def test_static_z_has_hysteresis() -> None:
    d = run.StaticZ(warmup=50)
    rng = np.random.default_rng(0)
    for v in rng.normal(0, 1, 50):
        assert not d.update(0.0, float(v))
    stream = [10, 10, 10, 10, 3.5, 10, 3.5, 10, 0, 0, 0, 10, 10, 10]
    onsets = [i for i, v in enumerate(stream) if d.update(0.0, float(v))]
    assert len(onsets) == 2  # first at the third 10; re-armed only after three calm samples
