"""The daemon's middle stage without the kernel: batches of Samples in, alert
notices in the outbox, the web View out; reloads keep what they should."""

from __future__ import annotations

from pathlib import Path

from cgwatch.alerts.state import AlertManager
from cgwatch.alerts.store import Store
from cgwatch.daemon.pipeline import Pipeline
from cgwatch.model import Container, Event, Sample
from cgwatch.rules.engine import Engine
from cgwatch.rules.load import load_rules
from tests.alerts.conftest import ListSink

WEB = Container(id="a" * 64, name="web-1", runtime="docker", image="nginx")
DB = Container(id="b" * 64, name="db-1", runtime="docker")

HOT = """
rules:
  - name: hot
    expr: cpu.usage_cores > 1
    for: 2s
    severity: warning
  - name: oom
    event: oom_kill
    severity: critical
"""


def rules(tmp: Path, text: str, name: str = "r.yaml"):
    p = tmp / name
    p.write_text(text)
    got, errors = load_rules([p])
    assert errors == []
    return got


def pipeline(tmp: Path, text: str = HOT) -> tuple[Pipeline, ListSink]:
    sink = ListSink("list")
    rs = rules(tmp, text)
    m = AlertManager(Store.open(tmp / "state"), {"list": sink}, {r.name: r for r in rs}, host="h")
    return Pipeline(Engine(rs), m, interval_s=1.0), sink


def tick(p: Pipeline, t: float, **cpu: float) -> list:
    byname = {"web": WEB, "db": DB}
    p.counters.ticks += 1
    return p.process(t, [Sample(t, byname[k], "cpu.usage_cores", v) for k, v in cpu.items()], [])


def outbox(p: Pipeline) -> list[tuple[str, str]]:
    return [(r.notification.rule, r.notification.state) for r in p.manager.store.take("list", 1e18, 1000)]


def test_batches_become_alerts_notices_and_a_view(tmp_path):
    p, _ = pipeline(tmp_path)
    for t in range(5):
        tick(p, 100.0 + t, web=1.5, db=0.2)
    assert outbox(p) == [("hot", "firing")]
    [active] = p.manager.store.active_alerts()
    [rec] = p.recent_alerts()                  # the history the dashboard and /api show
    assert (rec.rule, rec.state) == ("hot", "firing") and rec.summary == active.summary != ""
    [a] = p.alerts()
    assert (a.rule, a.container, a.state, a.since, a.severity) == ("hot", "web-1", "firing", 100.0, "warning")
    views = {c.name: c for c in p.containers()}
    assert views["web-1"].metrics == {"cpu.usage_cores": 1.5} and views["web-1"].first_seen == 100.0
    assert views["web-1"].image == "nginx" and views["db-1"].last_seen == 104.0
    assert "2 containers, 1 alerts firing, 2 rules" in p.status_line()
    s = p.stats()
    assert (s.samples_total, s.rules_loaded, s.outbox_pending) == (10, 2, 1)
    p.process(105.0, [], [Event(105.0, WEB, "container_stop", {})])
    assert [c.name for c in p.containers()] == ["db-1"]
    assert outbox(p)[-1] == ("hot", "resolved")


def test_a_reload_keeps_alert_state_of_rules_that_stay_and_resolves_removed_ones(tmp_path):
    p, _ = pipeline(tmp_path, HOT + """
  - name: warm
    expr: cpu.usage_cores > 1.2
    severity: info
""")
    for t in range(4):
        tick(p, 100.0 + t, web=1.5)
    assert sorted(outbox(p)) == [("hot", "firing"), ("warm", "firing")]
    p.replace_rules(rules(tmp_path, HOT, "r2.yaml"), now=104.0)      # 'warm' is gone
    tick(p, 105.0, web=1.5)                                           # 'hot' goes on firing: no new notice
    assert outbox(p)[2:] == [("warm", "resolved")]
    assert [a.rule for a in p.alerts()] == ["hot"]
    tick(p, 106.0, web=0.1)
    assert outbox(p)[3:] == [("hot", "resolved")]


def test_after_a_restart_alerts_that_no_longer_hold_resolve(tmp_path):
    p, _ = pipeline(tmp_path)
    for t in range(4):
        tick(p, 100.0 + t, web=1.5, db=1.5)
    p.manager.store.close()
    again, _ = pipeline(tmp_path)                 # same state dir: both alerts are on record
    assert again.reconcile_after == 5             # the longest for: (2 s) + three intervals
    for t in range(5):
        tick(again, 200.0 + t, web=1.5, db=0.1)   # web still burns, db calmed down while we were away
    resolved = [(r.notification.container, r.notification.state) for r in again.manager.store.take("list", 1e18, 99)
                if r.notification.state == "resolved"]
    assert resolved == [("db-1", "resolved")]
    assert [a.container for a in again.alerts()] == ["web-1"]


def test_after_a_restart_an_alert_pending_again_at_reconcile_still_resolves(tmp_path):
    p, _ = pipeline(tmp_path)
    for t in range(4):
        tick(p, 100.0 + t, web=1.5, db=1.5)
    p.manager.store.close()
    again, _ = pipeline(tmp_path)
    for t, cpu in enumerate((1.5, 1.5, 0.1, 1.5, 1.5)):   # a dip: both are pending when reconciled
        tick(again, 200.0 + t, web=cpu, db=cpu)
    assert outbox(again) == [("hot", "firing")] * 2      # the two from before: nothing new, none resolved
    tick(again, 205.0, web=0.1, db=1.5)                   # web calms down
    again.process(206.0, [], [Event(206.0, DB, "container_stop", {})])   # db goes away
    resolved = [r.notification.container for r in again.manager.store.take("list", 1e18, 99)
                if r.notification.state == "resolved"]
    assert sorted(resolved) == ["db-1", "web-1"]
    assert again.manager.store.active_alerts() == []


def test_event_alerts_notify_each_time(tmp_path):
    p, _ = pipeline(tmp_path)
    for t in (100.0, 130.0):
        p.process(t, [], [Event(t, WEB, "oom_kill", {"pid": 1})])
    assert outbox(p) == [("oom", "firing"), ("oom", "firing")]
