"""Kind-specific behaviour of the anomaly detectors and the thresholder."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgwatch.anomaly import SCALAR_KINDS, Thresholder, build
from cgwatch.anomaly.hst import HSTDetector
from cgwatch.anomaly.likelihood import LikelihoodDetector
from cgwatch.anomaly.models import ForecastDetector, MADDetector
from cgwatch.anomaly.thresholds import ScoreQuantile


def onsets(th: Thresholder, pts) -> int:  # type: ignore[no-untyped-def]
    return sum(onset for _, onset in (th.update(ts, v) for ts, v in pts))


def test_auto_is_likelihood_and_unknown_kind_fails() -> None:
    assert isinstance(build(), LikelihoodDetector)
    assert isinstance(build("auto", window=32), LikelihoodDetector)
    with pytest.raises(ValueError):
        build("prophet")
    with pytest.raises(TypeError):
        build("mad", bogus=1)


# -- forecast -----------------------------------------------------------------


@pytest.mark.parametrize("slope", [0.05, -0.2, 3.0])
def test_forecast_follows_a_linear_trend_without_alerting(slope: float) -> None:
    r = random.Random(2)
    pts = [(60.0 * i, 100.0 + slope * i + r.gauss(0.0, 1.0)) for i in range(3000)]
    assert onsets(Thresholder(build("forecast")), pts) == 0


def test_forecast_level_shift_fires_then_adapts() -> None:
    r = random.Random(4)
    th = Thresholder(build("forecast"))
    onsets(th, [(float(i), 10.0 + r.gauss(0.0, 1.0)) for i in range(1000)])
    shifted = [th.update(float(i), 40.0 + r.gauss(0.0, 1.0)) for i in range(1000, 1500)]
    assert shifted[0][1]  # the shift is an onset
    assert sum(o for _, o in shifted) == 1
    assert max(s for s, _ in shifted[-100:] if s is not None) < 0.9  # the new level is normal now
    assert not th.active


def test_forecast_is_the_same_at_any_sampling_interval() -> None:
    r = random.Random(5)
    values = [10.0 + 0.01 * i + r.gauss(0.0, 1.0) for i in range(800)]
    fast = build("forecast", season_s=None)
    slow = build("forecast", season_s=None)
    a = [fast.update(float(i), v) for i, v in enumerate(values)]
    b = [slow.update(300.0 * i, v) for i, v in enumerate(values)]
    assert a == pytest.approx(b)


def _bump_scores(**params: object) -> list[float]:
    """Mean score per day of a job every day 03:00-03:30, sampled every 5 minutes."""
    r = random.Random(6)
    d = build("forecast", **params)
    days = []
    for day in range(8):
        out = []
        for i in range(288):
            ts = day * 86400.0 + i * 300.0
            busy = 3 * 3600 <= ts % 86400 < 3.5 * 3600
            s = d.update(ts, 10.0 + (8.0 if busy else 0.0) + r.gauss(0.0, 1.0))
            if busy and s is not None:
                out.append(s)
        days.append(sum(out) / len(out))
    return days


def test_forecast_learns_a_daily_bump() -> None:
    seasonal, flat = _bump_scores(), _bump_scores(season_s=None)
    assert seasonal[:2] == flat[:2]  # the season is not used before two days
    assert sum(seasonal[5:]) < 0.7 * sum(flat[5:])


def test_forecast_gap_does_not_explode_the_trend() -> None:
    d = ForecastDetector()
    for i in range(500):
        d.update(float(i), 1.0 * i)  # steep trend
    s = d.update(500.0 + 86400.0 * 30, 500.0)  # a month later, same level
    assert s is not None and math.isfinite(s)
    assert abs(d._trend) < 2.0


def test_forecast_rejects_bad_params() -> None:
    for bad in [{"alpha": 0.0}, {"beta": 1.5}, {"phi": -1}, {"season_s": 0}]:
        with pytest.raises(ValueError):
            ForecastDetector(**bad)


# -- MAD ------------------------------------------------------------------------


def test_mad_robust_to_five_percent_outliers_in_its_baseline() -> None:
    r = random.Random(7)
    d = MADDetector(transform="none", trim=None)   # the plain robust statistic
    for i in range(2000):
        d.update(float(i), 10.0 + (60.0 if r.random() < 0.05 else r.gauss(0.0, 1.0)))
    assert d._stats.median() == pytest.approx(10.0, abs=0.3)
    assert d._stats.scale() == pytest.approx(1.0, rel=0.35)
    normal = d.update(2000.0, 11.0)
    spike = d.update(2001.0, 20.0)
    assert normal is not None and normal < 0.2
    assert spike is not None and spike > 0.99


def test_mad_mostly_flat_series_with_blips_has_a_scale() -> None:
    d = MADDetector(transform="none", trim=None)
    scores = [d.update(float(i), 1.0 if i % 10 == 0 else 0.0) for i in range(1000)]
    assert d._stats.median() == 0.0
    assert d._stats.scale() == pytest.approx(1.2533 * 0.1, rel=0.05)  # mean absolute deviation, not 0
    assert max(s for s in scores[100:] if s is not None) < 1.0


def test_mad_defaults_take_heavy_tails_in_their_stride() -> None:
    """Log-normal noise with rare 3-10x outliers (latencies, bytes/s): the default
    (log scale, trimmed-RMS floor on the scale) fires far less than plain MAD, and
    still fires at once on a drop to zero and on a 20x burst."""
    r = random.Random(11)
    pts = [(float(i), 5.0 * math.exp(0.4 * r.gauss(0.0, 1.0)) * (r.uniform(3, 10) if r.random() < 0.01 else 1.0))
           for i in range(20_000)]
    plain = Thresholder(MADDetector(transform="none", trim=None))
    default = Thresholder(build("mad"))
    assert onsets(default, pts) * 4 < onsets(plain, pts)
    drop = [(20_000.0 + i, 0.0) for i in range(3)]
    assert onsets(default, drop) == 1
    calm = [(20_100.0 + i, 5.0 * math.exp(0.4 * r.gauss(0.0, 1.0))) for i in range(400)]
    onsets(default, calm)
    assert not default.active
    assert onsets(default, [(20_600.0, 100.0), (20_601.0, 100.0)]) == 1


def test_mad_negative_value_moves_it_to_the_raw_scale() -> None:
    d = MADDetector()
    for i in range(100):
        d.update(float(i), 10.0 + i % 3)
    assert d.scale_name == "log"
    assert d.update(100.0, -1.0) is None or d.scale_name == "raw"
    assert d.scale_name == "raw" and d.skipped == 0
    again = MADDetector.from_state(json.loads(json.dumps(d.state())))
    assert again.scale_name == "raw"


# -- HST ------------------------------------------------------------------------


def test_hst_seed_matters_and_is_kept() -> None:
    r = random.Random(8)
    pts = [(float(i), r.gauss(0.0, 1.0)) for i in range(400)]
    a = [HSTDetector(seed=1).update(ts, v) for ts, v in pts[:1]]
    one, two = HSTDetector(seed=1), HSTDetector(seed=2)
    a = [one.update(ts, v) for ts, v in pts]
    b = [two.update(ts, v) for ts, v in pts]
    assert a != b
    assert HSTDetector.from_state(one.state()).seed == 1


def test_hst_state_is_bound_to_the_river_version() -> None:
    d = HSTDetector()
    for i in range(200):
        d.update(float(i), float(i % 7))
    s = json.loads(json.dumps(d.state()))
    s["data"]["river"] = "0.0.1"
    with pytest.raises(ValueError, match="river"):
        HSTDetector.from_state(s)
    s = json.loads(json.dumps(d.state()))
    s["data"]["thresholds"][0] += 0.01
    with pytest.raises(ValueError, match="trees"):
        HSTDetector.from_state(s)


def test_hst_silent_until_its_first_window() -> None:
    d = HSTDetector(window_size=50)
    scores = [d.update(float(i), float(i % 3)) for i in range(60)]
    assert all(s is None for s in scores[:51])
    assert all(s is not None for s in scores[51:])


# -- thresholder ----------------------------------------------------------------


def test_thresholder_warm_up_counts_scored_samples() -> None:
    th = Thresholder(build("mad", warmup=2), warmup=30)
    out = [th.update(float(i), 1.0 if i % 2 else 1000.0) for i in range(31)]  # wild from the start
    assert not any(o for _, o in out)
    assert th.scored == 29


def test_thresholder_hysteresis_holds_a_flapping_anomaly() -> None:
    r = random.Random(9)
    th = Thresholder(build("mad"), clear_after=5)
    onsets(th, [(float(i), 10.0 + r.gauss(0.0, 1.0)) for i in range(500)])
    # spike every fourth sample: never 5 quiet samples in a row, so one onset
    flaps = [(500.0 + i, 40.0 if i % 4 == 0 else 10.0) for i in range(40)]
    assert onsets(th, flaps) == 1
    assert th.active


def test_thresholder_sensitivity_maps_to_quantile() -> None:
    assert Thresholder(build()).q == pytest.approx(0.995)
    assert Thresholder(build(), sensitivity=0.1).q == pytest.approx(0.999)
    for bad in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError):
            Thresholder(build(), sensitivity=bad)


def test_thresholder_quantile_raises_the_bar_for_a_noisy_detector() -> None:
    """Scores that are often high (MAD on a flat series with blips) stop firing on every blip.

    While the MAD window fills, each blip scores a little higher than the last and
    may fire; once it is full (256 samples), the blips are the usual and never fire.
    """
    th = Thresholder(build("mad"))
    blips = [(float(i), 5.0 if i % 20 == 0 else 0.0) for i in range(4000)]
    onsets(th, blips[:300])
    assert onsets(th, blips[300:]) == 0


def test_score_quantile_bounded_and_sane() -> None:
    q = ScoreQuantile(cap=1000.0)
    r = random.Random(10)
    for _ in range(10_000):
        q.add(r.random())
    assert q.total < 1000.0
    assert q.quantile(0.5) == pytest.approx(0.5, abs=0.1)
    assert 0.98 <= q.quantile(0.995) <= 1.0
    q.add(1.0)
    q.add(float("inf"))  # never raises


# -- any input, any kind --------------------------------------------------------

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e3, max_value=1e3),
    st.sampled_from([0.0, -0.0, 1e18, -1e18, 5e-324]),
)
stamps = st.one_of(st.floats(min_value=-1e10, max_value=1e10), st.sampled_from([float("nan"), float("inf"), 0.0]))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(SCALAR_KINDS)), pts=st.lists(st.tuples(stamps, values), max_size=300))
def test_any_input_never_raises(kind: str, pts: list[tuple[float, float]]) -> None:
    knobs = {"hst": {"window_size": 20}, "likelihood": {"range_samples": 300}}.get(kind, {"warmup": 3})
    th = Thresholder(build(kind, **knobs), warmup=3)
    for ts, v in pts:
        score, _ = th.update(ts, v)
        assert score is None or 0.0 <= score <= 1.0
    d = th.detector
    assert d.samples + d.skipped == len(pts)
    again = Thresholder.from_state(json.loads(json.dumps(th.state())))
    assert again.update(2e10, 1.0) == th.update(2e10, 1.0)
