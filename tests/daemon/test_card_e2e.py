"""The root-cause card end to end: ``cgwatch run`` watches a real Docker container that runs
quietly, has a command fail, then burns a core; the rule's first firing notice reaches a real
webhook receiver on loopback with a ``card`` saying what moved (its CPU, from near 0 to a
core, though the rule's own metric is left out) and what happened before (the failed
command); the dashboard's alerts API gives the same card (tests/web/test_browser.py draws
one), and ``/metrics`` counts it as attached."""

from __future__ import annotations

import json
import secrets
import signal
import urllib.request
from pathlib import Path

import pytest

from tests.daemon.running import Daemon
from tests.daemon.test_daemon_e2e import write_config
from tests.receiver import Receiver, free_port

pytestmark = pytest.mark.bpf

PREFIX = "card-" + secrets.token_hex(3)
#: 20 s quiet (its normal), a command that fails with code 3, then a busy core
WORK = "sleep 20; sh -c 'exit 3'; sleep 5; while :; do :; done"


def test_the_first_firing_notice_carries_what_changed_and_what_happened(tmp_path: Path, docker) -> None:
    port, listen = free_port(), free_port()
    cfg = write_config(tmp_path, port, listen, f"""
rules:
  - name: card-cpu-hot
    select: {{name: "{PREFIX}*"}}
    expr: cpu.usage_cores > 0.5
    for: 3s
    severity: warning
""")
    with Receiver(port) as rx:
        d = Daemon(tmp_path, cfg)
        try:
            d.ready()
            name = f"{PREFIX}-1"
            docker.run(cmd=WORK, cname=name)
            firing = lambda al: [a for a in al if a["container"] == name and a["state"] == "firing"]  # noqa: E731
            assert rx.wait_for(firing, 90.0), d.log_text()
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=5).read().decode()
            api = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{listen}/api/v1/alerts", timeout=5).read())
        finally:
            d.stop(signal.SIGTERM)
    [a] = firing(rx.alerts)
    card = a.get("card")
    assert card is not None, a
    moved = {c["metric"]: c for c in card["changed"]}
    assert "cpu.usage_cores" not in moved                 # the rule's own metric: the alert says it
    cpu = moved.get("cpu.cgroup_usage_cores")
    assert cpu is not None and cpu["before"] < 0.2 and cpu["now"] > 0.5 and cpu["z"] >= 3, card
    assert any(e["kind"] == "exit" and e["fields"].get("code") == 3 for e in card["events"]), card
    assert 'cgwatch_cards_total{outcome="attached"} 1.0' in metrics, metrics[-3000:]
    [shown] = [x for x in api["alerts"] if x["container"] == name]     # what the dashboard's alerts page draws
    assert shown["card"] == card
