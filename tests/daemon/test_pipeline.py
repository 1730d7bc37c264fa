"""The daemon's middle stage without the kernel: batches of Samples in, alert
notices in the outbox, and the web View fed from what the pipeline returns;
reloads keep what they should."""

from __future__ import annotations

from pathlib import Path

from cgwatch.alerts.state import AlertManager
from cgwatch.alerts.store import Store
from cgwatch.anomaly.stage import AnomalyStage
from cgwatch.daemon.pipeline import Pipeline
from cgwatch.daemon.view import DaemonView
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


def pipeline(tmp: Path, text: str = HOT) -> tuple[Pipeline, DaemonView]:
    rs = rules(tmp, text)
    m = AlertManager(Store.open(tmp / "state"), {"list": ListSink("list")}, {r.name: r for r in rs}, host="h")
    p = Pipeline(Engine(rs), m, interval_s=1.0, anomaly=AnomalyStage.for_rules(rs, bands=True))   # as the daemon
    return p, DaemonView(p)


def feed(p: Pipeline, view: DaemonView, t: float, samples: list[Sample], events: list[Event]) -> list:
    """One interval as the daemon runs it: the pipeline, then the view with what it returned."""
    out = p.process(t, samples, events)
    view.update(t, samples, events, out.alerts, out.verdicts)
    return out.alerts


def tick(p: Pipeline, view: DaemonView, t: float, **cpu: float) -> list:
    byname = {"web": WEB, "db": DB}
    p.counters.ticks += 1
    return feed(p, view, t, [Sample(t, byname[k], "cpu.usage_cores", v) for k, v in cpu.items()], [])


def outbox(p: Pipeline) -> list[tuple[str, str]]:
    return [(r.notification.rule, r.notification.state) for r in p.manager.store.take("list", 1e18, 1000)]


def test_batches_become_alerts_notices_and_a_view(tmp_path):
    p, view = pipeline(tmp_path)
    for t in range(5):
        tick(p, view, 100.0 + t, web=1.5, db=0.2)
    assert outbox(p) == [("hot", "firing")]
    [active] = p.manager.store.active_alerts()
    [rec] = view.recent_alerts()               # the history the dashboard and /api show
    assert (rec.rule, rec.state) == ("hot", "firing") and rec.summary == active.summary != ""
    [a] = view.alerts()
    assert (a.rule, a.container, a.state, a.since, a.severity) == ("hot", "web-1", "firing", 100.0, "warning")
    views = {c.name: c for c in view.containers()}
    assert views["web-1"].metrics == {"cpu.usage_cores": 1.5} and views["web-1"].first_seen == 100.0
    assert views["web-1"].image == "nginx" and views["db-1"].last_seen == 104.0
    assert view.watching() == 2
    assert "2 containers, 1 alerts firing, 2 rules" in p.status_line(view.watching())
    s = view.stats()
    assert (s.samples_total, s.rules_loaded, s.outbox_pending) == (10, 2, 1)
    feed(p, view, 105.0, [], [Event(105.0, WEB, "container_stop", {})])
    assert [c.name for c in view.containers()] == ["db-1"]
    assert outbox(p)[-1] == ("hot", "resolved")
    assert [x["state"] for x in view.history.alert_changes(WEB.id)] == ["firing", "resolved"]   # the charts' too


def test_a_reload_keeps_alert_state_of_rules_that_stay_and_resolves_removed_ones(tmp_path):
    p, view = pipeline(tmp_path, HOT + """
  - name: warm
    expr: cpu.usage_cores > 1.2
    severity: info
""")
    for t in range(4):
        tick(p, view, 100.0 + t, web=1.5)
    assert sorted(outbox(p)) == [("hot", "firing"), ("warm", "firing")]
    p.replace_rules(rules(tmp_path, HOT, "r2.yaml"), now=104.0)      # 'warm' is gone
    tick(p, view, 105.0, web=1.5)                                     # 'hot' goes on firing: no new notice
    assert outbox(p)[2:] == [("warm", "resolved")]
    assert [a.rule for a in view.alerts()] == ["hot"]
    tick(p, view, 106.0, web=0.1)
    assert outbox(p)[3:] == [("hot", "resolved")]


def test_after_a_restart_alerts_that_no_longer_hold_resolve(tmp_path):
    p, view = pipeline(tmp_path)
    for t in range(4):
        tick(p, view, 100.0 + t, web=1.5, db=1.5)
    p.manager.store.close()
    again, again_view = pipeline(tmp_path)        # same state dir: both alerts are on record
    assert again.reconcile_after == 5             # the longest for: (2 s) + three intervals
    for t in range(5):
        tick(again, again_view, 200.0 + t, web=1.5, db=0.1)   # web still burns, db calmed down meanwhile
    resolved = [(r.notification.container, r.notification.state) for r in again.manager.store.take("list", 1e18, 99)
                if r.notification.state == "resolved"]
    assert resolved == [("db-1", "resolved")]
    assert [a.container for a in again_view.alerts()] == ["web-1"]


def test_after_a_restart_an_alert_pending_again_at_reconcile_still_resolves(tmp_path):
    p, view = pipeline(tmp_path)
    for t in range(4):
        tick(p, view, 100.0 + t, web=1.5, db=1.5)
    p.manager.store.close()
    again, again_view = pipeline(tmp_path)
    for t, cpu in enumerate((1.5, 1.5, 0.1, 1.5, 1.5)):   # a dip: both are pending when reconciled
        tick(again, again_view, 200.0 + t, web=cpu, db=cpu)
    assert outbox(again) == [("hot", "firing")] * 2      # the two from before: nothing new, none resolved
    tick(again, again_view, 205.0, web=0.1, db=1.5)      # web calms down
    feed(again, again_view, 206.0, [], [Event(206.0, DB, "container_stop", {})])   # db goes away
    resolved = [r.notification.container for r in again.manager.store.take("list", 1e18, 99)
                if r.notification.state == "resolved"]
    assert sorted(resolved) == ["db-1", "web-1"]
    assert again.manager.store.active_alerts() == []


def test_event_alerts_notify_each_time(tmp_path):
    p, view = pipeline(tmp_path)
    for t in (100.0, 130.0):
        feed(p, view, t, [], [Event(t, WEB, "oom_kill", {"pid": 1})])
    assert outbox(p) == [("oom", "firing"), ("oom", "firing")]


def test_a_reload_that_changes_only_the_host_keeps_the_sinks_open_and_the_profile_wait(tmp_path):
    """The new manager shares the old one's sink objects: closing the old must not close them;
    and a rule with profile: still holds its first notice for the profile after any reload."""
    import asyncio

    p, view = pipeline(tmp_path)
    p.manager.profile_grace_s = 5.0
    old = p.manager
    [sink] = old.sinks.values()
    new = AlertManager(old.store, old.sinks, old.rules, host="renamed")

    async def main() -> bool:
        old.start()
        await p.replace_sinks(new)
        closed_by_the_reload = sink.closed
        for t in range(4):
            tick(p, view, 100.0 + t, web=1.5)
        await new.drain(5.0)
        await new.close()
        return closed_by_the_reload

    assert asyncio.run(main()) is False
    assert p.manager is new and new.profile_grace_s == 5.0
    assert [(n.rule, n.state, n.host) for g in sink.groups for n in g] == [("hot", "firing", "renamed")]
    assert sink.closed                  # by the manager that used it last, not before


BASELINE = """
rules:
  - name: baseline
    anomaly: {metric: cpu.usage_cores}
    severity: info
"""


def wavy(t: int) -> float:
    return 0.5 + 0.02 * ((t * 7) % 5 - 2)


def test_the_anomaly_stage_judges_before_the_rules_and_the_view_draws_its_band(tmp_path):
    p, view = pipeline(tmp_path, BASELINE)
    for t in range(300):
        tick(p, view, 1000.0 + t, web=wavy(t))
    assert outbox(p) == []
    tick(p, view, 1300.0, web=5.0)
    assert outbox(p) == [("baseline", "firing")]
    [a] = view.alerts()
    assert a.summary.startswith("web-1 cpu.usage_cores 5, normal 0.46–0.54 over the last 4m16s")
    assert view.containers()[0].metrics["anomaly.score"] == 1.0       # the score, for /metrics and charts
    low = view.history.series(WEB.id, "cpu.usage_cores~low", 0.0)
    high = view.history.series(WEB.id, "cpu.usage_cores~high", 0.0)
    marked = view.history.series(WEB.id, "cpu.usage_cores~anomalous", 0.0)
    assert len(low) == len(high) > 100             # every judged point (from warm-up on) has its band
    assert round(low[-1][1], 2) == 0.46 and round(high[-1][1], 2) == 0.54
    assert [ts for ts, _ in marked] == [1300.0]                        # the one point judged anomalous
    # a reload keeps the models: the departure is still news to no one
    p.replace_rules(rules(tmp_path, BASELINE, "r2.yaml"), now=1301.0)
    assert len(p.anomaly.baselines) == 1
    tick(p, view, 1301.0, web=5.0)
    assert outbox(p) == [("baseline", "firing")]


def test_replay_runs_the_daemons_stages_to_the_same_alerts(tmp_path):
    import json
    import subprocess
    import sys

    p, view = pipeline(tmp_path, BASELINE)
    lines, live = [], []
    for t in range(400):
        v = 5.0 if t in (300, 301, 302) else wavy(t)
        lines.append(json.dumps({"ts": 1000.0 + t, "container": WEB.name, "metric": "cpu.usage_cores", "value": v}))
        live += [a.to_json() for a in feed(p, view, 1000.0 + t, [Sample(1000.0 + t, WEB, "cpu.usage_cores", v)], [])]
    (tmp_path / "rec.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "b.yaml").write_text(BASELINE)
    out = subprocess.run([str(Path(sys.executable).with_name("cgwatch")), "replay", "--rules", str(tmp_path / "b.yaml"),
                          "--input", str(tmp_path / "rec.jsonl")], capture_output=True, text=True, check=True).stdout
    replayed = [json.loads(x) for x in out.splitlines()]
    assert [x["state"] for x in replayed] == ["firing", "resolved"]
    assert [(x["ts"], x["state"], x["value"], x["summary"]) for x in replayed] == \
        [(x["ts"], x["state"], x["value"], x["summary"]) for x in live]
