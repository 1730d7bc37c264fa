"""Every detector kind through the same checks (River's test_estimators style).

Each check takes a fresh detector from ``make(kind)``; a new kind only has to
join ``KINDS`` to be held to all of them. ``river`` is a River detector named in
a rule, here River's ``GaussianScorer``.
"""

from __future__ import annotations

import json
import math
import random
import time

import pytest

from cgwatch.anomaly import KINDS, SCALAR_KINDS, Detector, Thresholder, build, model_size_bytes, restore

ALL = [*sorted(SCALAR_KINDS), "river"]   # joint has its own checks (tests/anomaly/test_joint.py)
RIVER = {"model": "anomaly.GaussianScorer", "params": {"window_size": 250}}


def make(kind: str, **params: object) -> Detector:
    """A fresh detector of ``kind``, as a rule would get it."""
    return build(kind, **RIVER, **params) if kind == "river" else build(kind, **params)


def noise(n: int, seed: int = 1, mu: float = 10.0, sigma: float = 1.0, dt: float = 1.0) -> list[tuple[float, float]]:
    r = random.Random(seed)
    return [(i * dt, mu + r.gauss(0.0, sigma)) for i in range(n)]


def feed(d: Detector | Thresholder, points: list[tuple[float, float]]) -> list:
    return [d.update(ts, v) for ts, v in points]


@pytest.mark.parametrize("kind", ALL)
def test_implements_protocol(kind: str) -> None:
    d = make(kind)
    assert isinstance(d, Detector)
    assert d.samples == 0 and d.skipped == 0
    assert d.state()["kind"] == kind


@pytest.mark.parametrize("kind", ALL)
def test_deterministic(kind: str) -> None:
    pts = noise(600)
    assert feed(make(kind), pts) == feed(make(kind), pts)


@pytest.mark.parametrize("kind", ALL)
def test_scores_in_unit_interval_and_warm_up(kind: str) -> None:
    scores = feed(make(kind), noise(600))
    assert scores[0] is None
    got = [s for s in scores if s is not None]
    assert len(got) > 400
    assert all(0.0 <= s <= 1.0 for s in got)


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("dt", [1.0, 300.0])
def test_constant_series_never_alerts(kind: str, dt: float) -> None:
    th = Thresholder(make(kind))
    out = feed(th, [(i * dt, 42.0) for i in range(2000)])
    assert not any(onset for _, onset in out)
    assert max(s for s, _ in out if s is not None) < 0.5


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("dt", [1.0, 60.0])
def test_ten_sigma_spike_scores_high_and_fires(kind: str, dt: float) -> None:
    th = Thresholder(make(kind))
    pts = noise(1000, dt=dt)
    out = feed(th, pts)
    assert sum(onset for _, onset in out) <= 2  # white noise: at most a stray onset
    score, onset = th.update(1000 * dt, 10.0 + 10.0)
    assert score is not None and score > 0.9
    if th.judges:   # a channel broke (the value left the range): an onset at once
        assert onset and th.active
        return
    # by default (confirm=2) a 10-sigma departure fires on its second sample; only ~12+ sigma fire at once
    assert onset is (th.confirm == 1)
    score, onset = th.update(1001 * dt, 10.0 + 10.0)
    assert score is not None and score > 0.9
    assert onset and th.active
    single = Thresholder(make(kind), confirm=1)  # one sample is enough without confirmation
    feed(single, pts)
    score, onset = single.update(1000 * dt, 10.0 + 10.0)
    assert score is not None and score > 0.9
    assert onset and single.active


# whether an alternating value is one anomaly is River's GaussianScorer's call, not cgwatch's
@pytest.mark.parametrize("kind", sorted(SCALAR_KINDS))
def test_spike_onset_once_then_clears(kind: str) -> None:
    th = Thresholder(make(kind))
    feed(th, noise(1000))
    out = feed(th, [(1000.0 + i, 60.0 if i % 2 == 0 else 10.0) for i in range(6)])  # a flapping anomaly
    assert sum(onset for _, onset in out) == 1
    assert th.active
    out = feed(th, [(1010.0 + i, v) for i, (_, v) in enumerate(noise(200, seed=5))])
    assert not th.active
    assert not any(onset for _, onset in out)


@pytest.mark.parametrize("kind", ALL)
def test_river_contract_score_one_then_learn_one_is_update(kind: str) -> None:
    pts = noise(400) + [(400.0, 30.0), (401.0, 10.0)]
    by_update = feed(make(kind), pts)
    d = make(kind)
    scores = []
    for ts, v in pts:
        before = json.dumps(d.state())
        scores.append(d.score_one({"ts": ts, "value": v}))
        assert json.dumps(d.state()) == before          # scoring learnt nothing
        d.learn_one({"ts": ts, "value": v})
    assert scores == [0.0 if s is None else s for s in by_update]


BAD = [float("nan"), float("inf"), -float("inf"), 1e300, "x", None]


@pytest.mark.parametrize("kind", ALL)
def test_bad_values_skipped_and_counted(kind: str) -> None:
    pts = noise(400)
    clean = make(kind)
    clean_scores = feed(clean, pts)
    d = make(kind)
    scores, n_bad = [], 0
    for i, (ts, v) in enumerate(pts):
        if i % 7 == 3:
            bad = BAD[i % len(BAD)]
            assert d.update(ts - 0.5, bad) is None  # type: ignore[arg-type]
            n_bad += 1
        scores.append(d.update(ts, v))
    assert d.skipped == n_bad
    assert d.samples == len(pts)
    assert scores == clean_scores  # skipped values left no trace


@pytest.mark.parametrize("kind", ALL)
def test_backwards_and_repeated_timestamps_skipped(kind: str) -> None:
    d = make(kind)
    feed(d, noise(300))
    before = json.dumps(d.state())
    assert d.update(100.0, 10.0) is None  # backwards
    assert d.update(299.0, 10.0) is None  # repeated
    assert d.update(float("nan"), 10.0) is None
    assert d.skipped == 3
    after = d.state()
    after["skipped"] = 0
    assert json.dumps(after) == before
    assert d.update(300.0, 10.0) is not None


@pytest.mark.parametrize("kind", ALL)
def test_gaps_and_single_sample(kind: str) -> None:
    d = make(kind)
    assert d.update(0.0, 1.0) is None
    assert d.samples == 1
    restore(json.loads(json.dumps(d.state())))
    pts = noise(500)
    pts = pts[:250] + [(ts + 86400.0 * 3, v) for ts, v in pts[250:]]  # three days of silence
    scores = [s for s in feed(d, pts) if s is not None]
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize("kind", ALL)
def test_negative_counters_skipped(kind: str) -> None:
    d = make(kind, nonnegative=True)
    feed(d, [(0.0, 1.0), (1.0, -1.0), (2.0, 2.0)])
    assert (d.samples, d.skipped) == (2, 1)


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("n", [0, 1, 50, 700])
def test_state_round_trip_gives_same_scores(kind: str, n: int) -> None:
    pts = noise(n + 300)
    a = Thresholder(make(kind))
    feed(a, pts[:n])
    b = Thresholder.from_state(json.loads(json.dumps(a.state())))
    assert b.detector.samples == a.detector.samples
    rest = pts[n:] + [(pts[-1][0] + 1.0, 25.0)]
    assert feed(b, rest) == feed(a, rest)
    c = restore(json.loads(json.dumps(a.detector.state())))
    assert feed(c, [(1e6, 10.0)]) == feed(a.detector, [(1e6, 10.0)])


def _bad_states(kind: str) -> list:
    d = make(kind)
    feed(d, noise(400))
    good = json.loads(json.dumps(d.state()))

    def edited(f):  # type: ignore[no-untyped-def]
        s = json.loads(json.dumps(good))
        f(s)
        return s

    return [
        None,
        [],
        {},
        {**good, "version": 0},
        {**good, "kind": "other"},
        edited(lambda s: s.pop("data")),
        edited(lambda s: s["params"].update(bogus=1)),
        edited(lambda s: s.update(samples=-1)),
        edited(lambda s: s["data"].update(last_ts="yesterday")),
        edited(lambda s: s["data"].clear()),
        *[edited(lambda s, k=k: s["data"].update({k: "garbage"})) for k in good["data"]],
        *[edited(lambda s, k=k: s["data"].update({k: [float("nan")]})) for k in good["data"]],
    ]


@pytest.mark.parametrize("kind", ALL)
def test_bad_state_raises_value_error(kind: str) -> None:
    cls = KINDS[kind]
    for bad in _bad_states(kind):
        with pytest.raises(ValueError):
            cls.from_state(bad)
        with pytest.raises(ValueError):
            restore(bad)


def test_bad_thresholder_state_raises_value_error() -> None:
    th = Thresholder(build("mad"))
    feed(th, noise(100))
    good = json.loads(json.dumps(th.state()))
    for bad in [
        None,
        {**good, "version": 2},
        {**good, "scores": {"counts": []}},
        {**good, "active": "yes"},
        {**good, "detector": {**good["detector"], "kind": "x"}},
        {k: v for k, v in good.items() if k != "scored"},
    ]:
        with pytest.raises(ValueError):
            Thresholder.from_state(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ALL)
def test_bounded_memory_and_speed(kind: str) -> None:
    d = make(kind)
    r = random.Random(3)
    n = 100_000
    t0 = time.perf_counter()
    for i in range(n):
        x = 10.0 + r.gauss(0.0, 1.0) if i % 1000 else 1e6  # occasional wild values too
        d.update(float(i), x)
    us = (time.perf_counter() - t0) / n * 1e6
    size = model_size_bytes(d)
    state = len(json.dumps(d.state()))
    print(f"\n{kind}: {us:.1f} us/update, {size} B pickled, {state} B JSON state after {n} updates")
    assert size <= 50 * 1024
    assert state <= 50 * 1024
    assert d.samples == n
    assert all(math.isfinite(float(v)) for v in _numbers(d.state()))


def _numbers(x):  # type: ignore[no-untyped-def]
    if isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield x
