"""The rules engine over streams of Samples and Events: for:, select, missing
data, staleness, event rules, determinism and bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cgwatch.anomaly.stage import AnomalyStage
from cgwatch.model import Container, Event, Sample
from cgwatch.rules.engine import Engine, Series
from cgwatch.rules.load import load_rules

WEB = Container(id="w" * 64, name="web-1", runtime="docker", image="nginx:1.27", labels={"env": "prod"})
DB = Container(id="d" * 64, name="db-1", runtime="podman", image="postgres:16")


def rules_from(tmp_path: Path, text: str) -> list:
    f = tmp_path / "r.yaml"
    f.write_text(text)
    rules, errors = load_rules([str(f)])
    assert errors == [], [e.format() for e in errors]
    return rules


def series(c: Container, metric: str, values: list[float | None], start: float = 0.0, step: float = 1.0):
    return [Sample(start + i * step, c, metric, v) for i, v in enumerate(values) if v is not None]


class Judged:
    """The engine behind the anomaly stage, as the daemon and replay run them."""

    def __init__(self, rules) -> None:
        self.engine = Engine(rules)
        self.stage = AnomalyStage.for_rules(rules)
        self.baselines = self.stage.baselines

    def feed(self, items):
        return self.engine.feed(items, self.stage)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def run(rules, items) -> list[tuple[float, str, str, str]]:
    items = sorted(items, key=lambda x: x.ts)
    return [(a.ts, a.rule, a.container.name, a.state) for a in Judged(rules).feed(items)]


HOT = """
rules:
  - name: hot
    expr: cpu.usage_cores > 0.9
    for: 10s
    severity: warning
    summary: "{{ container }} at {{ value }}"
"""


def test_for_pending_then_firing_then_resolved(tmp_path):
    rules = rules_from(tmp_path, HOT)
    got = run(rules, series(WEB, "cpu.usage_cores", [0.5] * 5 + [0.95] * 20 + [0.2] * 5))
    assert got == [(15.0, "hot", "web-1", "firing"), (25.0, "hot", "web-1", "resolved")]


def test_a_condition_shorter_than_for_never_fires(tmp_path):
    rules = rules_from(tmp_path, HOT)
    assert run(rules, series(WEB, "cpu.usage_cores", ([0.95] * 9 + [0.1]) * 5)) == []


def test_for_counts_ticks_not_the_milliseconds_they_jitter_by(tmp_path):
    """Ticks 1 s apart, each a few ms off: ``for: 2s`` fires at the third that holds, not the
    fourth; a first tick long after the one before is still only the start of pending."""
    rules = rules_from(tmp_path, HOT.replace("for: 10s", "for: 2s"))
    ts = [100.0, 101.004, 101.998, 103.001, 104.0]
    got = run(rules, [Sample(t, WEB, "cpu.usage_cores", 0.95) for t in ts])
    assert got == [(101.998, "hot", "web-1", "firing")]
    late = [Sample(100.0, WEB, "cpu.usage_cores", 0.1), Sample(130.0, WEB, "cpu.usage_cores", 0.95),
            Sample(131.0, WEB, "cpu.usage_cores", 0.95), Sample(132.0, WEB, "cpu.usage_cores", 0.95)]
    assert run(rules, late) == [(132.0, "hot", "web-1", "firing")]
    short = [Sample(100.0 + i * 0.98, WEB, "cpu.usage_cores", 0.95) for i in range(2)]
    assert run(rules, short) == []


def test_alert_lines_carry_value_severity_and_summary(tmp_path):
    rules = rules_from(tmp_path, HOT)
    alerts = list(Judged(rules).feed(series(WEB, "cpu.usage_cores", [0.97] * 12)))
    assert [a.to_json() for a in alerts] == [{
        "ts": 10.0, "rule": "hot", "container": "web-1", "state": "firing", "severity": "warning",
        "value": 0.97, "summary": "web-1 at 0.97", "id": WEB.id}]


def test_select_by_name_image_runtime_and_labels(tmp_path):
    rules = rules_from(tmp_path, """
rules:
  - name: prod-nginx-hot
    select: {name: "web-*", image: "nginx*", runtime: docker, labels: {env: prod}}
    expr: cpu.usage_cores > 0.9
    severity: info
""")
    staging = Container(id="s" * 64, name="web-2", runtime="docker", image="nginx:1.27", labels={"env": "staging"})
    items = [*series(WEB, "cpu.usage_cores", [1.0] * 3), *series(DB, "cpu.usage_cores", [1.0] * 3),
             *series(staging, "cpu.usage_cores", [1.0] * 3)]
    assert run(rules, items) == [(0.0, "prod-nginx-hot", "web-1", "firing")]


def test_a_metric_without_data_makes_the_condition_false(tmp_path):
    rules = rules_from(tmp_path, """
rules:
  - name: near-limit
    expr: cpu.usage_cores > 0.9 * cpu.limit_cores
    severity: warning
""")
    no_limit = series(WEB, "cpu.usage_cores", [5.0] * 10)
    assert run(rules, no_limit) == []
    with_limit = no_limit + series(WEB, "cpu.limit_cores", [2.0] * 10)
    assert run(rules, with_limit)[0] == (0.0, "near-limit", "web-1", "firing")


def test_a_summary_shows_every_metric_its_condition_reads(tmp_path):
    rules = rules_from(tmp_path, """
rules:
  - name: near-limit
    expr: cpu.usage_cores > 0.9 * cpu.limit_cores
    severity: warning
    summary: "{{ container }} used {{ value }} of {{ values['cpu.limit_cores'] }} cores {{ values | list }}"
""")
    items = sorted(series(WEB, "cpu.usage_cores", [1.0, 1.9, 1.95]) + series(WEB, "cpu.limit_cores", [2.0] * 3)
                   + series(WEB, "cpu.limit_cores", [float("nan")], start=3.0), key=lambda x: x.ts)
    alerts = list(Judged(rules).feed(items))
    assert [(a.state, a.summary) for a in alerts] == [
        ("firing", "web-1 used 1.9 of 2.0 cores ['cpu.limit_cores', 'cpu.usage_cores']"),
        ("resolved", "web-1 used 1.95 of None cores ['cpu.limit_cores', 'cpu.usage_cores']")]   # NaN: none


def test_stale_data_resolves_and_container_stop_resolves(tmp_path):
    rules = rules_from(tmp_path, HOT.replace("for: 10s", "for: 0s"))
    items = series(WEB, "cpu.usage_cores", [1.0] * 3) + series(DB, "cpu.usage_cores", [1.0] * 3)
    items += series(DB, "cpu.usage_cores", [1.0], start=400.0)        # db still reports, web went quiet
    items.append(Event(500.0, DB, "container_stop", {}))
    assert run(rules, items) == [
        (0.0, "hot", "web-1", "firing"), (0.0, "hot", "db-1", "firing"),
        (400.0, "hot", "web-1", "resolved"), (500.0, "hot", "db-1", "resolved"),
    ]


def test_event_rules_with_where(tmp_path):
    rules = rules_from(tmp_path, """
rules:
  - name: shell-in-container
    event: exec
    where: event.comm in ["sh", "bash"] and container.image != "busybox"
    severity: warning
    summary: "{{ container }} ran {{ event.filename }}"
""")
    items = [Event(1.0, WEB, "exec", {"pid": 1, "comm": "nginx", "filename": "/usr/sbin/nginx"}),
             Event(2.0, WEB, "exec", {"pid": 2, "comm": "sh", "filename": "/bin/sh"})]
    alerts = list(Judged(rules).feed(items))
    assert [(a.ts, a.state, a.summary) for a in alerts] == [(2.0, "firing", "web-1 ran /bin/sh")]


def test_unread_metrics_cost_nothing_and_windows_stay_bounded(tmp_path):
    rules = rules_from(tmp_path, """
rules:
  - name: avg-hot
    expr: avg(cpu.usage_cores, 5m) > 0.9
    severity: info
""")
    e = Judged(rules)
    for s in series(WEB, "mem.page_faults", [1.0] * 100):
        e.push_sample(s)
    assert e._series == {}
    for s in series(WEB, "cpu.usage_cores", [0.5] * 10_000):
        e.push_sample(s)
    e.flush()
    assert len(e._series[WEB.id]._hist["cpu.usage_cores"]) <= 301


def test_replay_is_deterministic_and_writes_design_jsonl(tmp_path):
    rec = tmp_path / "rec.jsonl"
    lines = [s.to_json() for s in series(WEB, "cpu.usage_cores", [0.5] * 5 + [0.95] * 20 + [0.1] * 3,
                                         start=1732492800.0)]
    lines.insert(7, {"ts": 1732492806.5, "container": "web-1", "event": "oom_kill", "fields": {"pid": 9, "comm": "x"}})
    rec.write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "r.yaml").write_text(HOT + """
  - name: oom
    event: oom_kill
    severity: critical
""")
    cmd = [str(Path(sys.executable).with_name("cgwatch")), "replay", "--rules", str(tmp_path / "r.yaml"),
           "--input", str(rec)]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    second = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert first == second
    got = [json.loads(x) for x in first.splitlines()]
    assert [(x["ts"] - 1732492800.0, x["rule"], x["state"]) for x in got] == [
        (6.5, "oom", "firing"), (15.0, "hot", "firing"), (25.0, "hot", "resolved")]
    assert set(got[1]) == {"ts", "rule", "container", "state", "severity", "value", "summary", "id"}


@pytest.mark.parametrize("line, message", [
    ("not json", "not JSON"),
    ('{"ts": "soon", "container": "w", "metric": "m", "value": 1}', '"ts" must be a number'),
    ('{"ts": 1, "container": "w", "metric": "m"}', 'a sample needs a numeric "value"'),
    ('{"ts": 1, "container": "w"}', 'a line needs "metric"'),
])
def test_a_bad_recording_line_is_one_error_naming_file_and_line(tmp_path, line, message):
    rec = tmp_path / "rec.jsonl"
    rec.write_text('{"ts": 0, "container": "w", "metric": "m", "value": 1}\n' + line + "\n")
    (tmp_path / "r.yaml").write_text(HOT)
    r = subprocess.run([str(Path(sys.executable).with_name("cgwatch")), "replay", "-r", str(tmp_path / "r.yaml"),
                        "-i", str(rec)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith(f"cgwatch: {rec}:2: ") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


ANOMALY = """
rules:
  - name: cpu-baseline
    anomaly: {metric: cpu.usage_cores, model: mad}
    severity: info
    summary: "{{ container }} left its CPU baseline: {{ value }} (score {{ score | round(3) }})"
"""


def wavy(n: int, level: float = 0.5) -> list[float]:
    return [level + 0.02 * ((i * 7) % 5 - 2) for i in range(n)]


#: every way a rule names its model: the default, a kind by name, a River detector with parameters
MODELS = ["auto", "mad", "{river: anomaly.GaussianScorer, params: {window_size: 200}}"]


@pytest.mark.parametrize("model", MODELS)
def test_anomaly_rule_fires_on_a_departure_and_resolves_after_it(tmp_path, model):
    rules = rules_from(tmp_path, ANOMALY.replace("model: mad", f"model: {model}"))
    values = wavy(900) + [5.0] * 3 + wavy(100)
    alerts = list(Judged(rules).feed(series(WEB, "cpu.usage_cores", values)))
    assert [a.state for a in alerts] == ["firing", "resolved"]
    # the first departing sample fires, or the second where the model asks for two in a row
    assert alerts[0].ts in (900.0, 901.0)
    assert alerts[0].value == 5.0                      # what was seen, not the model's score
    assert alerts[0].summary.startswith("web-1 left its CPU baseline: 5.0 (score ")
    assert float(alerts[0].summary.rsplit(" ", 1)[1].rstrip(")")) > 0.99
    assert 902.0 < alerts[1].ts < 940.0


@pytest.mark.parametrize("model, why", [("auto", ": beyond its recent range"), ("mad", "")])
def test_anomaly_alert_says_what_was_seen_and_what_is_normal(tmp_path, model, why):
    rules = rules_from(tmp_path, f"""
rules:
  - name: cpu
    anomaly: {{metric: cpu.usage_cores, model: {model}}}
    severity: info
  - name: mem
    anomaly: {{metric: mem.usage_bytes, model: {model}}}
    severity: info
""")
    values = wavy(900) + [5.0] * 3 + wavy(100)
    items = series(WEB, "cpu.usage_cores", values, step=60.0) + \
        series(WEB, "mem.usage_bytes", [v * 2**30 for v in values], step=60.0)
    firing = {a.rule: a for a in Judged(rules).feed(sorted(items, key=lambda x: x.ts)) if a.state == "firing"}
    # 256 values a minute apart are 4h16m; wavy() takes five levels from 0.46 to 0.54
    assert firing["cpu"].summary == f"web-1 cpu.usage_cores 5, normal 0.46–0.54 over the last 4h16m{why}"
    assert firing["mem"].summary.startswith("web-1 mem.usage_bytes 5.00GiB, normal 47")
    assert firing["mem"].value == 5.0 * 2**30


def test_a_river_model_cannot_say_what_is_normal_and_says_so(tmp_path):
    rules = rules_from(tmp_path, ANOMALY.replace("model: mad", "model: {river: anomaly.GaussianScorer}")
                       .replace('    summary: "{{ container }} left its CPU baseline: {{ value }} (score {{ score | round(3) }})"\n', ""))
    alerts = list(Judged(rules).feed(series(WEB, "cpu.usage_cores", wavy(900) + [5.0] * 3)))
    assert [a.summary for a in alerts] == ["web-1 cpu.usage_cores 5, unusual for it"]


@pytest.mark.parametrize("model", MODELS)
def test_anomaly_rules_learn_per_container_and_stay_quiet_on_normal_data(tmp_path, model):
    rules = rules_from(tmp_path, ANOMALY.replace("model: mad", f"model: {model}"))
    e = Judged(rules)
    items = series(WEB, "cpu.usage_cores", wavy(500)) + series(DB, "cpu.usage_cores", wavy(500, level=3.0))
    assert list(e.feed(sorted(items, key=lambda x: x.ts))) == []
    assert sorted(k[1] for k in e.baselines.keys()) == sorted([WEB.id, DB.id])


def test_anomaly_score_is_a_metric_expressions_can_read(tmp_path):
    rules = rules_from(tmp_path, ANOMALY + """
  - name: busy-and-odd
    expr: anomaly.score > 0.99 and cpu.usage_cores > 1
    severity: warning
""")
    alerts = list(Judged(rules).feed(series(WEB, "cpu.usage_cores", wavy(300) + [5.0] * 2)))
    assert {(a.rule, a.state) for a in alerts} == {("cpu-baseline", "firing"), ("busy-and-odd", "firing")}


def test_bad_values_do_not_poison_the_baseline(tmp_path):
    rules = rules_from(tmp_path, ANOMALY)
    e = Judged(rules)
    values = wavy(300)
    values[100:105] = [float("nan"), float("inf"), float("-inf"), float("nan"), 1e300]
    assert list(e.feed(series(WEB, "cpu.usage_cores", values))) == []
    model = e.baselines.peek(("cpu-baseline", WEB.id, "cpu.usage_cores"))
    assert model is not None and model.skipped == 5


JOINT = """
rules:
  - name: cpu-and-memory
    anomaly: {metrics: [cpu.usage_cores, mem.usage_bytes]}
    severity: warning
"""


def both(n: int, cpu: list[float], mem: list[float], c=WEB):
    out = []
    for i in range(n):
        out.append(Sample(float(i), c, "cpu.usage_cores", cpu[i]))
        out.append(Sample(float(i), c, "mem.usage_bytes", mem[i]))
    return out


def test_a_joint_rule_keeps_one_model_fed_whole_vectors(tmp_path):
    rules = rules_from(tmp_path, JOINT)
    e = Judged(rules)
    mem = [1e8 * (1 + 0.01 * ((i * 3) % 7 - 3)) for i in range(400)]
    assert list(e.feed(both(400, wavy(400), mem))) == []
    assert list(e.baselines.keys()) == [("cpu-and-memory", WEB.id, "cpu.usage_cores+mem.usage_bytes")]
    model = e.baselines.peek(("cpu-and-memory", WEB.id, "cpu.usage_cores+mem.usage_bytes"))
    assert model is not None and model.detector.samples == 400    # one vector per time, not per sample
    # memory alone jumps: the joint model fires once and resolves after
    jump = both(3, [0.5] * 3, [3e8] * 3)
    calm = both(60, wavy(60), mem[:60])
    items = [Sample(s.ts + 400, s.container, s.metric, s.value) for s in jump]
    items += [Sample(s.ts + 403, s.container, s.metric, s.value) for s in calm]
    alerts = list(e.feed(items))
    assert [(a.rule, a.state) for a in alerts] == [("cpu-and-memory", "firing"), ("cpu-and-memory", "resolved")]
    assert alerts[0].ts == 400.0      # 3x the usual memory: past the instant mark, no second sample needed


def test_a_joint_rule_waits_for_every_metric(tmp_path):
    rules = rules_from(tmp_path, JOINT)
    e = Judged(rules)
    assert list(e.feed(series(WEB, "cpu.usage_cores", wavy(100)))) == []
    assert len(e.baselines) == 0     # no memory samples: nothing to learn


def test_a_joint_rule_over_too_many_metrics_is_a_load_error(tmp_path):
    from cgwatch.rules.load import load
    p = tmp_path / "r.yaml"
    p.write_text("rules:\n  - name: x\n    severity: info\n    anomaly: {metrics: [a.b, c.d, e.f, g.h, i.j]}\n")
    errs = [str(x) for x in load([p]).errors]
    assert len(errs) == 1 and ":4:" in errs[0] and "at most 4 metrics" in errs[0]


CRASH = """
rules:
  - name: crash-loop
    expr: total(proc.restarts, 5m) >= 3
    severity: warning
  - name: hot
    expr: cpu.usage_cores > 0.5
    severity: warning
"""


def restart_loop(c: Container, restarts_at: list[int], end: int, stop_for: int = 2) -> list:
    """A container sampled every second, stopped for ``stop_for`` s before each restart."""
    items: list = []
    down: set[int] = set()
    for t in restarts_at:
        items.append(Event(float(t - stop_for), c, "container_stop", {}))
        items.append(Event(float(t), c, "container_start", {}))
        down.update(range(t - stop_for + 1, t))
    for t in range(end):
        if t not in down:
            items.append(Sample(float(t), c, "proc.restarts", 1.0 if t in restarts_at else 0.0))
            items.append(Sample(float(t), c, "cpu.usage_cores", 1.0))
    return sorted(items, key=lambda x: (x.ts, isinstance(x, Sample)))


def test_a_restart_loop_is_one_workload_whose_window_outlives_each_stop(tmp_path) -> None:
    got = run(rules_from(tmp_path, CRASH), restart_loop(WEB, [10, 20, 30], end=40))
    crash = [a for a in got if a[1] == "crash-loop"]
    assert crash == [(30.0, "crash-loop", "web-1", "firing")]
    # a threshold on the current value resolves at each stop and fires again after it
    hot = [a[3] for a in got if a[1] == "hot"]
    assert hot == ["firing", "resolved"] * 3 + ["firing"]


def test_a_kubernetes_restart_with_a_new_id_keeps_the_alert(tmp_path) -> None:
    labels = {"io.kubernetes.container.name": "app"}
    old = Container(id="1" * 64, name="ns/p/app", runtime="containerd", pod="0a1b", labels=labels)
    new = Container(id="2" * 64, name="ns/p/app", runtime="containerd", pod="0a1b", labels=labels)
    items = restart_loop(old, [10, 20], end=21)
    items += [x for x in restart_loop(new, [30], end=40) if x.ts >= 21]   # the pod's new container
    alerts = list(Judged(rules_from(tmp_path, CRASH)).feed(sorted(items, key=lambda x: (x.ts, isinstance(x, Sample)))))
    [a] = [a for a in alerts if a.rule == "crash-loop"]
    assert (a.ts, a.state, a.container.id) == (30.0, "firing", new.id)


def test_a_stopped_workload_is_forgotten_and_its_alerts_resolve(tmp_path) -> None:
    items = restart_loop(WEB, [10, 20, 30], end=31)
    items.append(Event(31.0, WEB, "container_stop", {}))
    items += series(DB, "cpu.usage_cores", [0.0] * 400, start=31.0)      # time goes on
    got = [a for a in run(rules_from(tmp_path, CRASH), items) if a[1] == "crash-loop"]
    # its window still held 3 restarts while it was stopped; then they left the window
    assert [a[3] for a in got] == ["firing", "resolved"]
    assert got[1][0] <= 31.0 + 300.0


def test_replay_orders_a_tick_as_live_does(tmp_path) -> None:
    """feed() (a recording) and step() (live) give the same alerts for the same ticks,
    whatever order a tick's lines are written in."""
    rules = rules_from(tmp_path, CRASH)
    ticks = []
    for t in range(1, 40):
        samples = [Sample(float(t), WEB, "cpu.usage_cores", 1.0),
                   Sample(float(t), WEB, "proc.restarts", 1.0 if t in (10, 20, 30) else 0.0)]
        events = [Event(t - 0.4, WEB, "exit", {"code": 3})] if t in (10, 20, 30) else []
        if t in (10, 20, 30):
            events += [Event(float(t), WEB, "container_stop", {}), Event(float(t), WEB, "container_start", {})]
        ticks.append((float(t), samples, events))
    live_engine = Judged(rules)
    live = [a.to_json() for t, s, e in ticks for a in live_engine.step(t, s, e)]
    for events_first in (True, False):
        stream = [x for _, s, e in ticks for x in ((*e, *s) if events_first else (*s, *e))]
        stream.sort(key=lambda x: x.ts)
        assert [a.to_json() for a in Judged(rules).feed(stream)] == live


@pytest.mark.parametrize("pushes, seconds, now, want", [
    ([10.0, 11.0, 12.0], 10.0, 12.0, [10.0, 11.0, 12.0]),    # in order, all inside: the whole history
    ([10.0, 11.0, 12.0], 1.5, 12.0, [11.0, 12.0]),           # in order, partly inside
    ([10.0, 11.0, 12.0], 10.0, 11.0, [10.0, 11.0]),          # one after now
    ([10.0, 1.0, 11.0], 10.0, 15.0, [11.0]),                 # the clock stepped back: the scan stops at 1
    ([10.0, 20.0, 11.0], 10.0, 15.0, [10.0, 11.0]),          # a value from after now in the middle
])
def test_series_window_is_the_values_since_the_last_one_before_the_window(pushes, seconds, now, want):
    """The newest values back to the first one at or before ``now - seconds``, none after ``now``:
    the same whether or not the history was pushed in time order."""
    ser = Series(Container(id="c", name="c", runtime="docker"), {"m": 300.0}, 300.0)
    for t in pushes:
        ser.push("m", t, t)
    assert [t for t, _ in ser.window("m", seconds, now)] == want


def test_firing_count_is_how_many_alerts_fire(tmp_path):
    """What systemd's STATUS= says every interval, counted without writing summaries."""
    e = Engine(rules_from(tmp_path, HOT.replace("for: 10s", "for: 2s")))
    counts = []
    for t in range(8):
        e.step(float(t), [Sample(float(t), WEB, "cpu.usage_cores", 0.95),
                          Sample(float(t), DB, "cpu.usage_cores", 0.95 if t >= 3 else 0.1)], [])
        assert e.firing_count() == sum(1 for a in e.alerts() if a[2] == "firing")
        counts.append(e.firing_count())
    assert counts == [0, 0, 1, 1, 1, 2, 2, 2]


def test_a_quiet_window_gives_the_total_its_points_give():
    """``total`` of a window of zeros comes from a count kept as values come and go
    (no read of 300 points an interval); it must always be what the points give:
    random histories of zeros, counts and NaN, some pushed out of order, windows
    shorter and longer than what is kept, and histories that drop their oldest."""
    import random

    from cgwatch.rules.expr import _read_total
    from cgwatch.rules.windows import total

    rng = random.Random(7)
    for trial in range(400):
        keep = rng.choice([5.0, 30.0, 300.0])
        ser = Series(Container(id="c", name="c", runtime="docker"), {"m": keep}, 300.0)
        t = 0.0
        for _ in range(rng.randint(0, 60)):
            t += rng.choice([1.0, 1.0, 1.0, 0.0, 7.0])
            ts = t - 3.0 if rng.random() < 0.03 else t                       # a clock step now and then
            v = rng.choice([0.0] * 8 + [1.0, 2.5, float("nan")])
            ser.push("m", ts, v)
            for seconds in (2.0, keep, 400.0):
                now = t + rng.choice([0.0, 0.0, 0.5, -1.0])
                points = ser.window("m", seconds, now)
                want = total(points) if points else None
                got = _read_total("m", seconds, ser, now)
                assert got == want or (got != got and want != want), (trial, seconds, now, list(points))


class EveryPush(Engine):
    """The engine as it was: every rule that reads a pushed metric is evaluated, value
    changed or not (each series starts a new :attr:`~Series.epoch` every interval), and
    whether or not the container has every metric the rule needs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._needs = [frozenset()] * len(self.rules)

    def step(self, now, samples, events, verdicts=()):
        for ser in self._series.values():
            ser.epoch += 1
        return super().step(now, samples, events, verdicts)


def test_skipping_rules_whose_inputs_kept_their_values_changes_no_alert(tmp_path):
    """A rule that did not hold is evaluated again only when a value it reads changed: the
    alerts must be the very ones of evaluating it for every sample. Random streams of a few
    repeating values over rules with and without ``for:``, several metrics, a window and a
    container field, and one that cannot hold for a container without a limit; with gaps
    longer than ``stale_after``, stops and starts, renames and a
    reload half-way (a new rule must see values that never change again). Within one interval
    the order may differ (a pending rule is evaluated with the pending ones, not with its
    metric), so each interval's alerts are compared as a set."""
    import random

    rules = rules_from(tmp_path, """
rules:
  - name: hot
    expr: cpu.usage_cores > 0.5
    severity: warning
  - name: hot-held
    expr: cpu.usage_cores > 0.5 and mem.usage_ratio >= 0.5
    severity: warning
    for: 3s
  - name: not-low
    expr: not (mem.usage_ratio < 0.5) or net.tcp_retransmits > 1
    severity: warning
  - name: named
    expr: proc.forks > 1
    severity: warning
    select: {name: "web-*"}
  - name: loop
    expr: total(proc.restarts, 10s) >= 2 and cpu.usage_cores > 0
    severity: warning
  - name: near-limit
    expr: cpu.usage_cores > 0.8 * cpu.limit_cores or not (mem.usage_ratio < 0.5) and cpu.limit_cores > 0.5
    severity: warning
""")
    later = rules_from(tmp_path, """
rules:
  - name: hot
    expr: cpu.usage_cores > 0.5
    severity: warning
  - name: added
    expr: net.tcp_retransmits >= 1 and mem.usage_ratio > 0
    severity: warning
""")
    rng = random.Random(11)
    names = {"a": ["web-a", "db-a"], "b": ["web-b"]}
    for trial in range(150):
        engines = [Engine(rules, stale_after=8.0), EveryPush(rules, stale_after=8.0)]
        got: list[list] = [[], []]
        cons = {k: Container(id=k * 64, name=v[0], runtime="docker") for k, v in names.items()}
        t = 0.0
        for tick in range(60):
            t += rng.choice([1.0] * 12 + [10.0])
            if tick == 30:
                for i, e in enumerate(list(engines)):
                    fresh = (Engine if i == 0 else EveryPush)(later, stale_after=8.0)
                    got[i] += sorted((t, a.rule, a.container.name, a.state) for a in fresh.adopt(e, t))
                    engines[i] = fresh
            events = []
            for k in cons:
                r = rng.random()
                if r < 0.04:
                    cons[k] = Container(id=k * 64, name=rng.choice(names[k]), runtime="docker")
                elif r < 0.07:
                    events.append(Event(t, cons[k], rng.choice(["container_stop", "container_start"])))
            samples = [Sample(t, c, m, rng.choice(vals)) for c in cons.values() for m, vals in (
                ("cpu.usage_cores", [0.1, 0.9]), ("mem.usage_ratio", [0.2, 0.6, 0.6, 0.6]),
                ("net.tcp_retransmits", [0.0, 0.0, 0.0, 2.0, float("nan")]), ("proc.forks", [0.0, 3.0, 3.0]),
                ("proc.restarts", [0.0] * 6 + [1.0]), ("cpu.limit_cores", [1.0, 1.0, 1.0, 0.6]))
                if rng.random() < (0.85 if m != "cpu.limit_cores" or c.id[0] == "a" else 0.01)]
            for i, e in enumerate(engines):
                got[i] += sorted((t, a.rule, a.container.name, a.state) for a in e.step(t, samples, events))
        assert got[0] == got[1], (trial, [(i, a, b) for i, (a, b) in enumerate(zip(got[0], got[1])) if a != b][:3], len(got[0]), len(got[1]))
    assert any(got[0]), "the streams make alerts"
