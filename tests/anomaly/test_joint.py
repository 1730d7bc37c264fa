"""The joint model (``metrics: [a, b]``): one score for a container's metrics together."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgwatch.anomaly import Thresholder, build, model_size_bytes, restore
from cgwatch.anomaly.joint import MAX_DIMS, JointDetector
from cgwatch.anomaly.mad import MADDetector


def vectors(n: int, seed: int = 1, start: int = 0) -> list[tuple[float, tuple[float, float]]]:
    r = random.Random(seed)
    return [(float(start + i), (10.0 + r.gauss(0, 1.0), 200.0 + r.gauss(0, 20.0))) for i in range(n)]


def onsets(th: Thresholder, pts) -> int:
    return sum(th.update(ts, v)[1] for ts, v in pts)


def test_warm_up_then_scores_in_unit_interval() -> None:
    d = JointDetector(dims=2)
    scores = [d.update(ts, v) for ts, v in vectors(300)]
    assert scores[0] is None
    got = [s for s in scores if s is not None]
    assert len(got) > 250 and all(0.0 <= s <= 1.0 for s in got)


def test_quiet_vectors_never_alert() -> None:
    th = Thresholder(JointDetector(dims=2))
    assert onsets(th, vectors(5000)) == 0


def test_one_metric_far_out_fires() -> None:
    th = Thresholder(JointDetector(dims=2))
    onsets(th, vectors(1000))
    assert onsets(th, [(1000.0, (10.0, 2000.0)), (1001.0, (10.0, 2000.0))]) == 1


def test_together_is_news_where_each_alone_is_not() -> None:
    """Both metrics 4.5 sigmas out at once score higher than either alone, and
    higher than a single-metric model scores either of them."""
    base = vectors(2000)
    def last_score(vec: tuple[float, float]) -> float:
        d = JointDetector(dims=2)
        for ts, v in base:
            d.update(ts, v)
        s = d.update(2000.0, vec)
        assert s is not None
        return s
    both = last_score((10.0 * 1.45, 200.0 * 1.45))
    one = last_score((10.0 * 1.45, 200.0))
    single = MADDetector()
    for ts, v in base:
        single.update(ts, v[0])
    alone = single.update(2000.0, 10.0 * 1.45)
    assert alone is not None
    assert both > one and both > alone


def test_bad_parts_skip_the_whole_vector() -> None:
    d = JointDetector(dims=2)
    pts = vectors(200)
    for ts, v in pts[:100]:
        d.update(ts, v)
    for bad in [(1.0, float("nan")), (float("inf"), 1.0), (1.0,), (1.0, 2.0, 3.0), "ab", None, 5.0]:
        assert d.update(150.0, bad) is None   # type: ignore[arg-type]
    assert d.skipped == 7 and d.samples == 100
    assert d.update(99.0, (10.0, 200.0)) is None   # time went backwards
    assert d.skipped == 8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.lists(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10)), min_size=0, max_size=3)),
    max_size=200))
def test_any_input_never_raises(pts) -> None:
    th = Thresholder(build("joint", dims=2))
    for ts, v in pts:
        score, _ = th.update(ts, v)
        assert score is None or 0.0 <= score <= 1.0
    assert th.detector.samples + th.detector.skipped == len(pts)
    Thresholder.from_state(json.loads(json.dumps(th.state())))


def test_state_round_trip_gives_the_same_scores() -> None:
    a = JointDetector(dims=3)
    r = random.Random(3)
    pts = [(float(i), (r.random(), 5 + r.random(), 100 * r.random())) for i in range(600)]
    for ts, v in pts[:300]:
        a.update(ts, v)
    b = restore(json.loads(json.dumps(a.state())))
    assert [a.update(ts, v) for ts, v in pts[300:]] == [b.update(ts, v) for ts, v in pts[300:]]


def test_bad_state_is_a_value_error() -> None:
    s = JointDetector(dims=2).state()
    s["data"]["parts"] = s["data"]["parts"][:1]
    with pytest.raises(ValueError):
        restore(s)
    with pytest.raises(ValueError):
        JointDetector(dims=MAX_DIMS + 1)


def test_memory_bounded_after_100k_updates() -> None:
    d = JointDetector(dims=MAX_DIMS)
    r = random.Random(4)
    for i in range(100_000):
        d.update(float(i), tuple(r.random() * 10**k for k in range(MAX_DIMS)))
    assert model_size_bytes(d) < 50 * 1024
