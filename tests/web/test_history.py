"""History.add_many stores a batch as add() of each sample would, however the batch is ordered."""

from __future__ import annotations

import random

import pytest

from cgwatch.model import Container, Sample
from cgwatch.web.history import History


def _state(h: History) -> dict:
    out = {}
    for cid in h.containers():
        c = h.container(cid)
        out[cid] = (c, {m: h.series(cid, m, 0.0) for m in h.metrics(cid)})
    return out


@pytest.mark.parametrize("seed", range(20))
def test_add_many_equals_add_of_each_sample(seed):
    rng = random.Random(seed)
    cs = [Container(id=f"c{i}", name=f"n{i}", runtime="docker") for i in range(5)]
    renamed = {c.id: Container(id=c.id, name=c.name + "-renamed", runtime="docker") for c in cs}
    batched, one_by_one = History(interval_s=1.0, max_containers=4), History(interval_s=1.0, max_containers=4)
    t = 100.0
    for _ in range(40):
        t += rng.choice([1.0, 1.0, 1.0, 0.5, 25.0])
        batch = []
        for c in rng.sample(cs, rng.randint(1, 5)):
            who = renamed[c.id] if rng.random() < 0.1 else c
            ts = t - rng.choice([0.0, 0.0, 0.0, 3.0])          # now and then late: not kept
            batch += [Sample(ts, who, f"m{k}", rng.random()) for k in rng.sample(range(6), rng.randint(1, 6))]
        if rng.random() < 0.3:
            rng.shuffle(batch)
        batched.add_many(batch)
        for s in batch:
            one_by_one.add(s.ts, s.container.id, s.metric, s.value)
            r = one_by_one._rings.get(s.container.id)
            if r is not None:
                r.container = s.container
    a, b = _state(batched), _state(one_by_one)
    assert a.keys() == b.keys()
    for cid in a:
        assert a[cid][1] == b[cid][1]
