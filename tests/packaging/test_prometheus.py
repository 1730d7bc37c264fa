"""packaging/prometheus: the rules pass promtool, their unit tests pass, and the rules and the
Grafana dashboard name only metrics cgwatch serves (read from a real ``/metrics`` rendering),
recording rules of the file, or Prometheus builtins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cgwatch.collect import all_metrics
from cgwatch.web.metrics import OUTCOMES, make_registry, render
from cgwatch.web.view import AlertInfo, ContainerInfo, Stats

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "packaging" / "prometheus"
RULES = PROM / "cgwatch.rules.yml"
RULES_TEST = PROM / "cgwatch.rules.test.yml"
DASHBOARD = PROM / "grafana-dashboard.json"
SCRAPE = PROM / "scrape.yml"
PROMTOOL = shutil.which("promtool")

#: Series Prometheus makes itself (per target, and for alerting rules).
BUILTINS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
                      "scrape_samples_post_metric_relabeling", "ALERTS", "ALERTS_FOR_STATE"})
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                       "unless", "offset", "inf", "nan", "atan2"})


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in the repository root; skip without it (fail under CI=true)."""
    if PROMTOOL is None:
        reason = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, and CI=true requires it")
        pytest.skip(reason)
    return subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


# -- what cgwatch serves -----------------------------------------------------------------------


class FullView:
    """A View in which every /metrics family has samples: a container with every metric a source
    declares (and anomaly.score), a firing and a pending alert, a sink, drops, maps, profiles."""

    def containers(self) -> list[ContainerInfo]:
        metrics = {m: 1.0 for m in all_metrics()} | {"anomaly.score": 0.2}
        return [ContainerInfo(id="4f1c" * 16, name="web-1", runtime="docker", image="nginx", labels={}, pod="",
                              qos="", cgroup="/docker/4f1c", first_seen=1.0, last_seen=2.0, metrics=metrics)]

    def alerts(self) -> list[AlertInfo]:
        return [AlertInfo(rule="cpu-hog", container="web-1", container_id="4f1c", runtime="docker", state=state,
                          severity="warning", since=2.0, value=0.97, summary="hot") for state in ("firing", "pending")]

    def stats(self) -> Stats:
        return Stats(started_at=0.0, ready=True, interval_s=1.0, ticks=2, last_tick_at=time.time(), last_tick_s=0.01,
                     rules_loaded=1, reload_ok=True, reload_error="", reloads=1, samples_total=10, events_total=3,
                     queue_drops={"rules": 1}, event_drops={"exec": 2}, bpf_maps={"cpu_usage": 40}, models=1,
                     models_evicted=0, delivery={"webhook": {o: 1 for o in OUTCOMES} | {"messages": 1}},
                     outbox_pending=0, profiles={"started": 1, "finished": 1, "lost_samples": 0})


def served_names() -> set[str]:
    """Every sample name of a real /metrics rendering; each family must have samples."""
    text = render(make_registry(FullView())).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        assert family.samples, f"{family.name} rendered without samples: make FullView fuller"
        names |= {s.name for s in family.samples}
    return names


def test_the_full_view_renders_every_cgwatch_family():
    names = served_names()
    for must in ("cgwatch_container_cpu_usage_cores", "cgwatch_container_mem_usage_bytes", "cgwatch_containers",
                 "cgwatch_alert_firing", "cgwatch_events_dropped_total", "cgwatch_queue_dropped_total",
                 "cgwatch_notifications_total", "cgwatch_outbox_pending", "cgwatch_config_reload_ok",
                 "cgwatch_last_tick_timestamp_seconds", "cgwatch_profiles_total", "process_cpu_seconds_total"):
        assert must in names


# -- names in PromQL ---------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENT = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names, functions, keywords, durations out).

    >>> sorted(metric_names('sum by (instance) (rate(x_total{a="b",c=~"$v"}[5m])) > on(i) 1e3 * up or vector(0)'))
    ['up', 'x_total']
    """
    expr = _GRAFANA_VAR.sub("", expr)
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)       # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)      # range and subquery durations
    expr = _GROUPING.sub("", expr)
    names = set()
    for m in _IDENT.finditer(expr):
        if expr[m.end():].lstrip().startswith("(") or m.group() in _KEYWORDS:
            continue                            # a function or aggregation, or a keyword
        names.add(m.group())
    return names


def rule_exprs(text: str) -> tuple[list[str], set[str]]:
    """Every expr of a rules file, and the names it records."""
    rules = [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]
    return [r["expr"] for r in rules], {r["record"] for r in rules if "record" in r}


def dashboard_exprs(text: str) -> list[str]:
    """Every panel target's expr, and the metric of each ``label_values(metric, label)`` variable."""
    dash = json.loads(text)
    exprs = [t.get("expr", "") for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else str(query or "")
        if (m := re.fullmatch(r"\s*label_values\(\s*(.*),\s*\w+\s*\)\s*", query)):
            exprs.append(m.group(1))
    return exprs


def unknown_names(rules_text: str, dashboard_text: str) -> set[str]:
    exprs, recorded = rule_exprs(rules_text)
    known = served_names() | recorded | BUILTINS
    used = set().union(*(metric_names(e) for e in exprs + dashboard_exprs(dashboard_text)))
    return used - known


def test_rules_and_dashboard_use_only_served_or_recorded_names():
    assert unknown_names(RULES.read_text(), DASHBOARD.read_text()) == set()


@pytest.mark.parametrize(("where", "good", "bad"), [
    ("rules", "cgwatch_outbox_pending > 100", "cgwatch_outbox_pendng > 100"),
    ("rules", "rate(cgwatch_events_dropped_total[5m])", "rate(cgwatch_event_dropped_total[5m])"),
    ("rules", "sum(cgwatch:host_cpu_usage_cores:sum)", "sum(cgwatch:host_cpu_usage_core:sum)"),
    ("dashboard", "cgwatch:host_mem_usage_bytes:sum{", "cgwatch_host_mem_usage_bytes{"),
    ("dashboard", "label_values(cgwatch_containers, instance)", "label_values(cgwatch_container, instance)"),
])
def test_a_misspelled_name_is_caught(where: str, good: str, bad: str):
    rules, dashboard = RULES.read_text(), DASHBOARD.read_text()
    if where == "rules":
        assert good in rules
        rules = rules.replace(good, bad, 1)
    else:
        assert good in dashboard
        dashboard = dashboard.replace(good, bad)
    assert unknown_names(rules, dashboard) != set()


# -- promtool ----------------------------------------------------------------------------------


def test_promtool_check_rules():
    done = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_test_rules():
    done = promtool("test", "rules", str(RULES_TEST.relative_to(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alerts == fires == quiet
    for c in cases:
        for a in c.get("exp_alerts") or []:
            assert a["exp_labels"]["severity"] in ("info", "warning", "critical")
            assert a["exp_annotations"]["summary"] and a["exp_annotations"]["description"]
    exprs = [e["expr"] for t in tests for e in t.get("promql_expr_test", [])]
    assert "cgwatch:container_cpu_usage_cores:top10" in exprs


def test_every_alert_has_severity_and_operator_text():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
                assert set(rule["annotations"]) >= {"summary", "description"}, rule["alert"]


def test_dashboard_exprs_are_valid_promql(tmp_path: Path):
    exprs = [_GRAFANA_VAR.sub(".*", e) for e in dashboard_exprs(DASHBOARD.read_text())]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr_{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# -- the dashboard and the scrape config ----------------------------------------------------------


def test_dashboard_shape():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] == 39
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_scrape_config_matches_the_service_and_the_down_alert():
    jobs = {j["job_name"]: j for j in yaml.safe_load(SCRAPE.read_text())["scrape_configs"]}
    k8s = jobs["cgwatch"]
    assert k8s["kubernetes_sd_configs"] == [{"role": "endpoints", "namespaces": {"names": ["cgwatch"]}}]
    keeps = {(tuple(r["source_labels"]), r["regex"]) for r in k8s["relabel_configs"] if r.get("action") == "keep"}
    assert keeps == {(("__meta_kubernetes_service_name",), "cgwatch"),
                     (("__meta_kubernetes_endpoint_port_name",), "http")}
    assert any("static_configs" in j for j in jobs.values())
    down = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == "CgwatchDown")
    job_re = re.search(r'job=~"([^"]+)"', down["expr"]).group(1)
    assert all(re.fullmatch(job_re, name) for name in jobs)
