"""``cgwatch run`` end to end, as systemd runs it: a real process with a
notify socket bound by the test, real BPF probes, real cgroups named as
docker names them, a real webhook receiver on loopback."""

from __future__ import annotations

import json
import secrets
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import burner
from tests.daemon.running import Daemon, healthy
from tests.receiver import Receiver, free_port, hook_sink

pytestmark = pytest.mark.bpf


def write_config(tmp: Path, port: int, listen: int, rules: str | None = None) -> Path:
    """config.yaml (1 s interval, a webhook to ``port``, the API on ``listen``) and its rules
    (:data:`RULES` unless given)."""
    (tmp / "rules.yaml").write_text(RULES if rules is None else rules)
    cfg = tmp / "config.yaml"
    cfg.write_text(f"""interval: 1s
state_dir: {tmp / 'state'}
listen: 127.0.0.1:{listen}
rules: [{tmp / 'rules.yaml'}]
notify:
{hook_sink(port, timeout="2s")}""")
    return cfg


PREFIX = secrets.token_hex(3)
RULES = f"""
rules:
  - name: e2e-cpu-hot
    select: {{name: "{PREFIX}*"}}
    expr: cpu.usage_cores > 0.5
    for: 2s
    severity: warning
    summary: "{{{{ container }}}} burns {{{{ value | round(2) }}}} cores"
"""


def container_id() -> str:
    return PREFIX + secrets.token_hex(29)


def firing_for(name: str):  # type: ignore[no-untyped-def]
    return lambda alerts: any(a["container"] == name and a["state"] == "firing" for a in alerts)


def test_run_ready_alerts_survives_a_broken_reload_and_stops_cleanly(tmp_path, cgroups):
    port, listen = free_port(), free_port()
    cfg = write_config(tmp_path, port, listen)
    with Receiver(port) as rx:
        d = Daemon(tmp_path, cfg)
        try:
            took = d.ready()
            print(f"READY=1 after {took:.1f}s")
            assert d.notify.wait_for(lambda m: m.get("WATCHDOG") == "1", 5.0) is not None
            assert healthy(listen, within=5.0), d.log_text()

            one = container_id()
            c1 = cgroups(f"docker/{one}")
            c1.run(burner())
            t0 = time.monotonic()
            assert rx.wait_for(firing_for(one[:12]), 10.0), d.log_text()
            print(f"alert at the webhook {time.monotonic() - t0:.1f}s after the burner started")  # bench/ measures it
            [a] = [a for a in rx.alerts if a["container"] == one[:12]]
            assert a["rule"] == "e2e-cpu-hot" and a["summary"].startswith(f"{one[:12]} burns")
            assert d.notify.wait_for(lambda m: "1 alerts firing" in m.get("STATUS", ""), 5.0) is not None

            (tmp_path / "rules.yaml").write_text("rules:\n  - name: [broken\n")
            since = d.notify.mark()
            d.proc.send_signal(signal.SIGHUP)
            assert d.notify.wait_for(lambda m: "reload FAILED" in m.get("STATUS", ""), 10.0, since) is not None, \
                d.log_text()
            assert d.proc.poll() is None
            c1.stop()          # one core busy at a time: this machine has two, and other work
            assert rx.wait_for(lambda al: any(a["state"] == "resolved" for a in al), 10.0), d.log_text()
            two = container_id()
            cgroups(f"docker/{two}").run(burner())
            assert rx.wait_for(firing_for(two[:12]), 10.0), "the old rules should still run: " + d.log_text()

            (tmp_path / "rules.yaml").write_text(RULES)
            since = d.notify.mark()
            d.proc.send_signal(signal.SIGHUP)
            assert d.notify.wait_for(lambda m: m.get("READY") == "1" and "FAILED" not in m.get("STATUS", ""),
                                     10.0, since) is not None
            assert rx.alerts.count(next(a for a in rx.alerts if a["container"] == one[:12])) == 1
        finally:
            code = d.stop(signal.SIGTERM)       # None if still running after 10 s, systemd's stop timeout
    assert code == 0, d.log_text()
    assert "took more than" not in d.log_text()     # no shutdown step ran over its budget
    assert (tmp_path / "state" / "baselines.json.gz").exists()


def test_kill_9_while_the_webhook_is_down_then_every_alert_arrives(tmp_path, cgroups):
    port, listen = free_port(), free_port()
    cfg = write_config(tmp_path, port, listen)
    d = Daemon(tmp_path, cfg)          # the receiver is down: connections are refused
    try:
        d.ready()
        one = container_id()
        c = cgroups(f"docker/{one}")
        c.run(burner())
        db = tmp_path / "state" / "alerts.db"
        deadline = time.monotonic() + 15
        pending = 0
        while time.monotonic() < deadline and not pending:
            time.sleep(0.2)
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                pending = conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
        assert pending == 1, d.log_text()
    finally:
        d.stop(signal.SIGKILL)
    with Receiver(port) as rx:
        d = Daemon(tmp_path, cfg)
        try:
            d.ready()
            assert rx.wait_for(firing_for(one[:12]), 10.0), d.log_text()
            c.stop()                       # the container goes away: its alert resolves
            assert rx.wait_for(lambda al: any(a["state"] == "resolved" for a in al), 15.0), d.log_text()
        finally:
            assert d.stop(signal.SIGTERM) == 0
    states = [(a["container"], a["state"]) for a in rx.alerts]
    assert states == [(one[:12], "firing"), (one[:12], "resolved")]
    assert len({a["id"] for a in rx.alerts}) == 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone()[0] == 0
    json.dumps(rx.alerts)
