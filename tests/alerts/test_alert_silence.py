"""Silences: globs on rule and container (name or id), expiry, early expiry, history."""

from __future__ import annotations

import pytest

from cgwatch.alerts.silence import Silences
from cgwatch.alerts.state import AlertManager
from cgwatch.alerts.store import Store
from tests.alerts.conftest import ListSink, box, fire, resolve


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_globs_on_rule_container_name_and_id(tmp_path):
    s = Silences(tmp_path)
    a = s.add(rule="cpu-*", duration_s=60, comment="deploy", created_by="ops")
    b = s.add(container="db-?", duration_s=60)
    c = s.add(rule="oom-kill", container="abcd*", duration_s=60)
    assert s.match("cpu-hog", "web-1").id == a
    assert s.match("mem-high", "db-1").id == b
    assert s.match("mem-high", "db-10") is None
    assert s.match("oom-kill", "web-1", "abcdef").id == c   # id glob
    assert s.match("oom-kill", "web-1", "ffff") is None     # both globs must match
    listed = {x.id: x for x in s.list()}
    assert listed[a].comment == "deploy" and listed[a].created_by == "ops" and listed[a].container is None
    s.close()


def test_needs_a_matcher_and_a_positive_duration(tmp_path):
    s = Silences(tmp_path)
    with pytest.raises(ValueError, match="rule glob"):
        s.add(duration_s=60)
    with pytest.raises(ValueError, match="positive"):
        s.add(rule="x", duration_s=0)


def test_expiry_and_early_expiry(tmp_path):
    clock = Clock()
    s = Silences(tmp_path, clock=clock)
    a = s.add(rule="a", duration_s=10)
    b = s.add(rule="b", duration_s=100)
    clock.t += 11
    assert [x.id for x in s.list()] == [b]
    assert [x.id for x in s.list(include_expired=True)] == [a, b]
    assert s.match("a", "c") is None
    assert s.expire(b) is True
    assert s.expire(b) is False and s.expire("nope") is False
    assert s.list() == [] and s.match("b", "c") is None


def test_silenced_notices_are_recorded_not_sent_and_resume_when_silence_ends(tmp_path):
    clock = Clock()
    store = Store.open(tmp_path, clock=clock)
    sink = ListSink()
    m = AlertManager(store, {"list": sink}, {}, host="h")
    sid = m.silences.add(container="web-*", duration_s=60, comment="maint", created_by="me")
    assert m.handle(fire("cpu-hog", box(1))) == []
    assert m.handle(fire("cpu-hog", box(2, "db-2")))  # not silenced
    hist = store.history()
    assert [(h["container"], h["state"], h["silenced_by"]) for h in hist] == [
        ("web-1", "silenced", sid), ("db-2", "firing", None)]
    assert m.tick(150.0) == []  # silence still in force
    m.silences.expire(sid)
    out = m.tick(160.0)
    assert [(n.container, n.state, n.ts) for n in out] == [("web-1", "firing", 160.0)]
    assert store.counts() == {"pending": 2}
    store.close()


def test_silence_from_another_process_is_seen(tmp_path):
    """The CLI writes silences through its own connection; the daemon's store sees them."""
    store = Store.open(tmp_path)
    m = AlertManager(store, {"list": ListSink()}, {}, host="h")
    cli = Silences(tmp_path)
    cli.add(rule="cpu-hog", duration_s=60)
    cli.close()
    assert m.handle(fire("cpu-hog", box(1))) == []
    assert m.handle(resolve("cpu-hog", box(1))) == []  # never notified: no resolved either
    store.close()
