"""The delivery commands as an operator runs them: real processes, a real
loopback webhook receiver, a real SQLite state directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.receiver import Receiver, free_port, hook_sink

CGWATCH = str(Path(sys.executable).with_name("cgwatch"))


def run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CGWATCH, *args], capture_output=True, text=True, timeout=timeout)


RULES = """
rules:
  - name: cpu-hot
    expr: cpu.usage_cores > 1
    for: 2s
    severity: warning
    summary: "{{ container }} at {{ value }} cores"
"""


def recording(path: Path, containers: int = 3) -> Path:
    lines = []
    for t in range(12):
        for i in range(containers):
            hot = 3 <= t < 8
            lines.append(json.dumps({"ts": 1000.0 + t, "container": f"web-{i}", "metric": "cpu.usage_cores",
                                     "value": 1.5 if hot else 0.2, "id": f"c{i:03d}", "runtime": "docker"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp: Path, port: int, extra: str = "") -> Path:
    p = tmp / "config.yaml"
    p.write_text(f"""state_dir: {tmp / 'state'}
host: test-node
notify:
{hook_sink(port)}{extra}""")
    return p


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "r.yaml").write_text(RULES)
    return tmp_path / "r.yaml", recording(tmp_path / "rec.jsonl")


def test_replay_with_config_delivers_every_notice_once_grouped(tmp_path, files):
    rules, rec = files
    port = free_port()
    with Receiver(port) as rx:
        r = run("replay", "-r", str(rules), "-i", str(rec), "--config", str(config(tmp_path, port)), "-o",
                str(tmp_path / "alerts.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "delivered 6 notification(s)" in r.stderr and "outbox" not in r.stderr
    states = sorted((a["container"], a["state"]) for a in rx.alerts)
    assert states == sorted((f"web-{i}", s) for i in range(3) for s in ("firing", "resolved"))
    assert len(rx.bodies) < 6                                  # grouped: the three firings went together
    assert all(a["host"] == "test-node" and a["id"] for a in rx.alerts)
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 6


def test_replay_while_the_receiver_is_down_keeps_notices_for_the_next_run(tmp_path, files):
    rules, rec = files
    port = free_port()
    cfg = str(config(tmp_path, port))
    r = run("replay", "-r", str(rules), "-i", str(rec), "--config", cfg, "--deliver-timeout", "1s", "-o", "/dev/null")
    assert r.returncode == 0, r.stderr
    assert "6 still in the outbox" in r.stderr and str(tmp_path / "state" / "alerts.db") in r.stderr
    with Receiver(port) as rx:   # the same recording again: nothing new is queued, the outbox is sent
        r = run("replay", "-r", str(rules), "-i", str(rec), "--config", cfg, "-o", "/dev/null")
    assert r.returncode == 0, r.stderr
    ids = [a["id"] for a in rx.alerts]
    assert len(ids) == 6 and len(set(ids)) == 6


def test_notify_test_prints_each_sink_and_fails_if_one_does(tmp_path):
    port = free_port()
    dead = free_port()
    cfg = config(tmp_path, port, extra=f"""  dead:
    type: webhook
    url: http://127.0.0.1:{dead}/hook
    timeout: 1s
  log:
    type: file
    path: {tmp_path / 'alerts.log'}
""")
    with Receiver(port) as rx:
        r = run("notify", "test", "--config", str(cfg))
    assert r.returncode == 1
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert lines["hook"].split() == ["webhook", "ok"]
    assert lines["dead"].startswith("webhook") and "FAILED" in lines["dead"] and "would be retried" in lines["dead"]
    assert lines["log"].split() == ["file", "ok"]
    assert [a["rule"] for a in rx.alerts] == ["cgwatch-test"]
    assert json.loads((tmp_path / "alerts.log").read_text())["rule"] == "cgwatch-test"


def test_silence_add_list_expire(tmp_path):
    state = str(tmp_path / "state")
    r = run("silence", "add", "--rule", "cpu-*", "--container", "web-*", "--duration", "2h", "-m", "load test",
            "--by", "ops", "--state-dir", state)
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip()
    r = run("silence", "list", "--state-dir", state)
    assert r.returncode == 0 and sid in r.stdout and "cpu-*" in r.stdout and "load test" in r.stdout
    assert run("silence", "expire", sid, "--state-dir", state).returncode == 0
    assert "no silences in force" in run("silence", "list", "--state-dir", state).stdout
    assert sid in run("silence", "list", "--all", "--state-dir", state).stdout
    r = run("silence", "expire", sid, "--state-dir", state)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no silence in force" in r.stderr
    r = run("silence", "add", "--duration", "1h", "--state-dir", state)
    assert r.returncode == 2 and "--rule and/or --container" in r.stderr


def test_a_silenced_alert_is_not_delivered(tmp_path, files):
    rules, rec = files
    port = free_port()
    cfg = str(config(tmp_path, port))
    assert run("silence", "add", "--container", "web-1", "--duration", "1h", "--config", cfg).returncode == 0
    with Receiver(port) as rx:
        r = run("replay", "-r", str(rules), "-i", str(rec), "--config", cfg, "-o", "/dev/null")
    assert r.returncode == 0, r.stderr
    assert {a["container"] for a in rx.alerts} == {"web-0", "web-2"}


def test_rules_check_with_config_names_unknown_sinks_and_config_mistakes(tmp_path):
    port = free_port()
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES.replace("severity: warning", "severity: warning\n    notify: [hook, pager]"))
    cfg = config(tmp_path, port)
    r = run("rules", "check", "--config", str(cfg), str(rules))
    assert r.returncode == 1
    assert f"{rules}:3: rule 'cpu-hot' notifies 'pager', which {cfg} does not define" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("notify:\n  hook:\n    type: webhok\n")
    r = run("rules", "check", "--config", str(bad), str(rules))
    assert r.returncode == 1 and r.stderr.startswith(f"{bad}:3:") and r.stderr.count("\n") == 1
    r = run("replay", "-r", str(rules), "-i", str(recording(tmp_path / "x.jsonl")), "--config", str(bad))
    assert r.returncode == 2 and r.stderr.startswith(f"cgwatch: {bad}:3:") and r.stderr.count("\n") == 1
