"""Lifecycle: dedup, resolved only when notified, repeats, routing, stable ids, restart."""

from __future__ import annotations

from dataclasses import replace

from cgwatch.alerts.state import AlertManager, notification_id
from cgwatch.alerts.store import Store
from cgwatch.rules.load import Rule
from tests.alerts.conftest import ListSink, box, fire, policy, resolve


def manager(tmp_path, sinks=None, rules=(), host="node-1"):
    sinks = sinks if sinks is not None else {"list": ListSink()}
    return AlertManager(Store.open(tmp_path), sinks, {r.name: r for r in rules}, host=host)


def pending_ids(store, sink):
    return [r.notification.id for r in store.take(sink, float("inf"), 10_000)]


def test_firing_dedup_and_resolved(tmp_path):
    m = manager(tmp_path)
    web = box(1)
    [n] = m.handle(fire("cpu-hog", web, ts=100.0))
    assert (n.state, n.fingerprint, n.starts_at, n.repeat) == ("firing", f"cpu-hog/{web.id}", 100.0, 0)
    assert n.id == notification_id("node-1", n.fingerprint, "firing", 100.0, 0)
    assert m.handle(fire("cpu-hog", web, ts=110.0)) == []  # already firing: not a new notice
    [r] = m.handle(resolve("cpu-hog", web, ts=200.0))
    assert (r.state, r.starts_at, r.ends_at, r.ts) == ("resolved", 100.0, 200.0, 200.0)
    assert r.id != n.id
    assert m.handle(resolve("cpu-hog", web, ts=210.0)) == []  # not firing any more
    assert m.handle(resolve("other", web, ts=210.0)) == []    # never fired
    assert pending_ids(m.store, "list") == [n.id, r.id]
    # fires again later: a new alert, a new id
    [again] = m.handle(fire("cpu-hog", web, ts=300.0))
    assert again.id not in (n.id, r.id)


def test_ids_are_deterministic_across_runs(tmp_path):
    def run(d):
        m = manager(d)
        out = []
        for i in range(5):
            out += m.handle(fire("r", box(i), ts=10.0 + i))
        out += m.tick(10.0 + 5 * 3600)
        out += m.handle(resolve("r", box(2), ts=20_000.0))
        return [n.id for n in out]

    first = run(tmp_path / "a")
    assert first == run(tmp_path / "b")
    assert len(set(first)) == len(first) == 11
    assert run(tmp_path / "c") != [notification_id("other-host", "x", "firing", 0.0)]
    m = manager(tmp_path / "d", host="node-2")
    assert m.handle(fire("r", box(0), ts=10.0))[0].id != first[0]


def test_repeat_every_interval_while_firing(tmp_path):
    sink = ListSink(pol=policy(repeat_s=60.0))
    m = manager(tmp_path, {"list": sink})
    m.handle(fire("cpu-hog", box(1), ts=0.0))
    assert m.tick(59.0) == []
    [r1] = m.tick(60.0)
    assert (r1.repeat, r1.ts, r1.state) == (1, 60.0, "firing")
    assert m.tick(61.0) == []
    [r2] = m.tick(125.0)
    assert r2.repeat == 2 and r2.id != r1.id
    assert m.tick(1000.0)[0].repeat == 3  # missed repeats collapse into one
    assert m.tick(1001.0) == []
    m.handle(resolve("cpu-hog", box(1), ts=1010.0))
    assert m.tick(5000.0) == []  # resolved: no more repeats
    states = [h["state"] for h in m.store.history()]
    assert states == ["firing", "firing", "firing", "firing", "resolved"]


def test_rule_repeat_overrides_sink_and_zero_means_never(tmp_path):
    a, b = ListSink("a", policy(repeat_s=10.0)), ListSink("b", policy(repeat_s=1000.0))
    rules = [Rule(name="fast", severity="warning", repeat_s=5.0), Rule(name="never", severity="warning", repeat_s=0)]
    m = manager(tmp_path, {"a": a, "b": b}, rules)
    m.handle(fire("fast", box(1), ts=0.0))
    m.handle(fire("never", box(1), ts=0.0))
    m.handle(fire("default", box(1), ts=0.0))
    out = m.tick(12.0)
    assert sorted((n.rule, n.repeat) for n in out) == [("default", 1), ("fast", 1)]
    assert len(pending_ids(m.store, "b")) == 3 + 1  # fast repeated for b too (rule wins)


def test_routing_notify_list_and_min_severity(tmp_path):
    slack = ListSink("slack", policy(min_severity="critical"))
    hook = ListSink("hook")
    journal = ListSink("journal")
    rules = [Rule(name="to-hook", severity="warning", notify=("hook",)),
             Rule(name="to-both", severity="critical", notify=("hook", "slack", "gone"))]
    m = manager(tmp_path, {"slack": slack, "hook": hook, "journal": journal}, rules)
    m.handle(fire("to-hook", box(1), severity="critical"))
    m.handle(fire("to-both", box(1), severity="warning"))   # slack wants critical only
    m.handle(fire("unlisted", box(1), severity="info"))     # all sinks that admit info
    m.handle(fire("unlisted", box(2), severity="critical"))
    assert m.route("to-both", "critical") == ["hook", "slack"]

    def rules_in(sink):
        return sorted(r.notification.rule + "@" + r.notification.container
                      for r in m.store.take(sink, float("inf"), 100))

    assert rules_in("hook") == ["to-both@web-1", "to-hook@web-1", "unlisted@web-1", "unlisted@web-2"]
    assert rules_in("slack") == ["unlisted@web-2"]
    assert rules_in("journal") == ["unlisted@web-1", "unlisted@web-2"]
    # the resolved goes exactly where the firing went
    m.handle(resolve("to-hook", box(1)))
    assert [r.notification.state for r in m.store.take("hook", float("inf"), 100)].count("resolved") == 1
    assert rules_in("journal") == ["unlisted@web-1", "unlisted@web-2"]


def test_restart_neither_resends_firing_nor_forgets_resolved(tmp_path):
    m = manager(tmp_path)
    [n] = m.handle(fire("cpu-hog", box(1), ts=100.0))
    m.store.close()
    m2 = manager(tmp_path)  # a new process: the engine sees the condition again
    assert m2.handle(fire("cpu-hog", box(1), ts=500.0)) == []
    [r] = m2.handle(resolve("cpu-hog", box(1), ts=600.0))
    assert r.starts_at == 100.0 and r.state == "resolved"
    assert pending_ids(m2.store, "list") == [n.id, r.id]


def test_replaying_into_the_same_state_dir_queues_nothing_twice(tmp_path):
    for _ in range(2):
        m = manager(tmp_path)
        m.handle(fire("r", box(1), ts=1.0))
        m.handle(resolve("r", box(1), ts=2.0))
        m.store.close()
    with Store.open(tmp_path) as s:
        assert s.counts() == {"pending": 2}


def test_event_rules_notify_every_event_and_never_hold_or_repeat(tmp_path):
    oom = Rule("oom-kill", "critical", event="oom_kill")
    m = manager(tmp_path, rules=[oom])
    web = box(1)
    first = m.handle(fire("oom-kill", web, ts=100.0, severity="critical"))
    second = m.handle(fire("oom-kill", web, ts=160.0, severity="critical"))
    assert len(first) == len(second) == 1 and first[0].id != second[0].id   # two kills, two notices
    assert m.store.active_count() == 0
    assert m.tick(100_000.0) == []                                            # nothing to repeat
    assert m.handle(resolve("oom-kill", web, ts=200.0, severity="critical")) == []


def test_reconcile_resolves_what_the_engine_no_longer_holds(tmp_path):
    m = manager(tmp_path)
    web, db = box(1), box(2)
    m.handle(fire("cpu-hog", web, ts=100.0))
    m.handle(fire("cpu-hog", db, ts=100.0))
    m.store.close()
    again = manager(tmp_path)            # a restart: the store remembers both, the engine only db
    [r] = again.reconcile({f"cpu-hog/{db.id}"}, now=500.0)
    assert (r.state, r.container_id, r.starts_at, r.ends_at) == ("resolved", web.id, 100.0, 500.0)
    assert "no longer seen after a restart" in r.summary
    assert again.store.active_count() == 1
    assert again.reconcile({f"cpu-hog/{db.id}"}, now=600.0) == []


def test_a_notice_waiting_for_its_profile_goes_out_with_it_or_without_it(tmp_path):
    """Rules with ``profile:`` hold their first firing notice until the profile is attached
    (then it goes at once, carrying it), or until the profile's length plus a grace passed."""
    hot = Rule("cpu-hot", "warning", profile_s=10.0)
    m = manager(tmp_path, rules=[hot, Rule("plain", "warning")])
    m.profile_grace_s = 5.0
    clock = m.store.clock
    t = clock()
    [held] = m.handle(fire("cpu-hot", box(1), ts=100.0))
    [plain] = m.handle(fire("plain", box(1), ts=100.0))
    assert [r.notification.id for r in m.store.take("list", t + 1.0, 10)] == [plain.id]   # only the plain one is due
    assert [r.notification.id for r in m.store.take("list", t + 16.0, 10)] == [held.id, plain.id]  # then, without
    # (in the order they were queued)
    doc = {"id": "p1", "samples": 490, "partial": "", "top": [{"function": "hot_alpha", "share": 0.7}]}
    assert m.attach_profile(held.fingerprint, held.id, doc)
    [row] = [r for r in m.store.take("list", clock() + 0.5, 10) if r.notification.id == held.id]
    assert row.notification.profile == doc and row.notification.profile_text() == " 70%  hot_alpha"
    assert row.notification.summary == f"{held.summary}; hottest: hot_alpha 70%"
    assert m.store.get_alert(held.fingerprint)[0].profile == doc                 # what the dashboard shows too
    assert not m.attach_profile(held.fingerprint, "another-notice", doc)         # a later firing is another notice


def test_an_alert_that_resolves_while_its_profile_runs_sends_firing_then_resolved(tmp_path):
    m = manager(tmp_path, rules=[Rule("cpu-hot", "warning", profile_s=10.0)])
    m.profile_grace_s = 5.0
    [held] = m.handle(fire("cpu-hot", box(1), ts=100.0))
    [gone] = m.handle(resolve("cpu-hot", box(1), ts=103.0))
    due = m.store.take("list", m.store.clock() + 1.0, 10)          # both go now, the firing first
    assert [r.notification.id for r in due] == [held.id, gone.id]
    assert not m.attach_profile(held.fingerprint, held.id, {"id": "late", "top": []})


def test_a_first_notice_waits_for_its_card_and_goes_with_it(tmp_path):
    """With cards on, a first firing notice is held (at most ``card_hold_s``) until its card is
    attached, then goes at once carrying it; one that also waits for a profile keeps waiting."""
    hot = Rule("cpu-hot", "warning", profile_s=10.0)
    m = manager(tmp_path, rules=[hot, Rule("plain", "warning")])
    m.profile_grace_s, m.card_hold_s = 5.0, 5.0
    clock = m.store.clock
    t = clock()
    [plain] = m.handle(fire("plain", box(1), ts=100.0))
    [both] = m.handle(fire("cpu-hot", box(1), ts=100.0))
    assert m.store.take("list", t + 1.0, 10) == []                   # both held for their cards
    card = {"changed": [{"metric": "mem.usage_bytes", "before": 1.0, "now": 9.0, "z": 40.0}], "events": [],
            "neighbours": None, "missing": []}
    assert m.attach_card(plain, card) == "attached"
    assert m.attach_card(both, card) == "attached"
    due = m.store.take("list", clock() + 0.5, 10)
    assert [r.notification.id for r in due] == [plain.id]            # the profile's one waits on
    assert due[0].notification.card == card
    assert due[0].notification.card_lines() == ["changed: mem.usage_bytes 1B → 9B (z 40)"]
    assert m.store.get_alert(both.fingerprint)[0].card == card       # what the dashboard shows too
    assert m.attach_card(replace(both, id="another-notice"), card) == "gone"
    m.store.mark_sent([r.seq for r in due])
    assert m.attach_card(plain, card) == "late"     # every sink had it: counted as late


def test_an_event_rules_notice_waits_for_its_card_too(tmp_path):
    m = manager(tmp_path, rules=[Rule("oom-kill", "critical", event="oom_kill")])
    m.card_hold_s = 5.0
    clock = m.store.clock
    [n] = m.handle(fire("oom-kill", box(1), ts=100.0))
    assert m.store.take("list", clock() + 1.0, 10) == []                  # held for its card
    card = {"changed": [], "events": [], "neighbours": None, "missing": ["no history of this container"]}
    assert m.attach_card(n, card) == "attached"
    [row] = m.store.take("list", clock() + 0.5, 10)
    assert row.notification.id == n.id and row.notification.card == card
