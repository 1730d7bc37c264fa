"""``cgwatch run`` with a CPU rule that asks for a profile: the alert the webhook
receives names the container's hottest function, and the dashboard serves the profile."""

from __future__ import annotations

import json
import secrets
import signal
import urllib.request
from pathlib import Path

import pytest

from tests.daemon.running import Daemon
from tests.profile.test_profile_bpf import HOT, cc
from tests.receiver import Receiver, free_port

pytestmark = pytest.mark.bpf

PREFIX = secrets.token_hex(3)


def config(tmp: Path, port: int, listen: int) -> Path:
    (tmp / "rules.yaml").write_text(f"""
rules:
  - name: hot-with-profile
    select: {{name: "{PREFIX}*"}}
    expr: cpu.usage_cores > 0.5
    for: 1s
    severity: warning
    profile: {{duration: 3s}}
""")
    cfg = tmp / "config.yaml"
    cfg.write_text(f"""interval: 1s
state_dir: {tmp / 'state'}
listen: 127.0.0.1:{listen}
rules: [{tmp / 'rules.yaml'}]
profiles: {{hz: 99}}
notify:
  hook: {{type: webhook, url: "http://127.0.0.1:{port}/hook", group_wait: 0.1s, timeout: 2s}}
""")
    return cfg


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_a_firing_cpu_rule_sends_its_alert_with_the_hottest_functions(tmp_path, cgroups):
    prog = cc(tmp_path, "hotprog", HOT)
    port, listen = free_port(), free_port()
    with Receiver(port) as rx:
        d = Daemon(tmp_path, config(tmp_path, port, listen))
        try:
            d.ready()
            one = PREFIX + secrets.token_hex(29)
            cgroups(f"docker/{one}").run([str(prog)])
            assert rx.wait_for(lambda al: any(a["state"] == "firing" for a in al), 30.0), d.log_text()
            [alert] = [a for a in rx.alerts if a["state"] == "firing"]
            profile = alert["profile"]
            tops = [t["function"] for t in profile["top"]]
            assert tops[0] == "hot_alpha", profile
            assert "; hottest: hot_alpha " in alert["summary"]
            assert "hot_beta" in tops and profile["samples"] > 100 and not profile["partial"]
            assert profile["url"] == f"http://127.0.0.1:{listen}/containers/{one}#profile={profile['id']}"
            got = get(f"http://127.0.0.1:{listen}/api/v1/profiles/{profile['id']}")
            assert got["profile"]["container"]["id"] == one
            listed = get(f"http://127.0.0.1:{listen}/api/v1/containers/{one}/profiles")["profiles"]
            assert [p["id"] for p in listed] == [profile["id"]]
            with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            assert 'cgwatch_profiles_total{outcome="finished"} 1.0' in metrics
            assert "cgwatch_profile_lost_samples_total 0.0" in metrics
        finally:
            assert d.stop(signal.SIGTERM) == 0
    assert len([a for a in rx.alerts if a["state"] == "firing"]) == 1
