"""``cgwatch run`` as the DaemonSet runs it: pod labels from the kubelet's list select the
rule, and a changed rules file (a ConfigMap update) reloads without a signal."""

from __future__ import annotations

import json
import secrets
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import burner, pod_uid
from tests.daemon.running import Daemon
from tests.receiver import Receiver, free_port

pytestmark = pytest.mark.bpf


def test_pod_labels_select_and_a_changed_rules_file_reloads(tmp_path: Path, cgroups) -> None:
    uid, cid = pod_uid(), secrets.token_hex(32)
    app = "shop-" + secrets.token_hex(3)              # unique: other tests' containers never match
    (tmp_path / "pods.json").write_text(json.dumps({"kind": "PodList", "items": [{
        "metadata": {"uid": uid, "namespace": "shop", "name": "web-7d9f", "labels": {"app": app}},
        "status": {"containerStatuses": [{"name": "nginx", "containerID": f"containerd://{cid}"}]}}]}))
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "pods.yaml").write_text(f"""
rules:
  - name: pod-hot
    select: {{labels: {{app: {app}}}}}
    expr: cpu.usage_cores > 0.5
    for: 1s
    severity: warning
""")
    port, listen = free_port(), free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""interval: 1s
state_dir: {tmp_path / 'state'}
listen: 127.0.0.1:{listen}
rules: [{rules}]
reload_on_change: true
profiles: {{enabled: false}}
kubernetes: {{kubelet_url: "file://{tmp_path / 'pods.json'}", token_file: null}}
notify:
  hook: {{type: webhook, url: "http://127.0.0.1:{port}/hook", group_wait: 0.1s}}
""")
    with Receiver(port) as rx:
        d = Daemon(tmp_path, cfg)
        try:
            d.ready()
            cgroups(f"kubepods/besteffort/pod{uid}/{cid}").run(burner())
            assert rx.wait_for(lambda al: any(a["state"] == "firing" for a in al), 15.0), d.log_text()
            [a] = rx.alerts
            assert a["container"] == "shop/web-7d9f/nginx" and a["rule"] == "pod-hot"
            assert a["container_labels"]["app"] == app
            with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            assert "cgwatch_kubelet_pods 1.0" in metrics and "cgwatch_kubelet_errors_total 0.0" in metrics

            since = d.notify.mark()
            (rules / "more.yaml").write_text("rules:\n  - {name: extra, expr: cpu.usage_cores > 99, "
                                             "severity: info}\n")
            got = d.notify.wait_for(lambda m: "2 rules" in m.get("STATUS", ""), 15.0, since)
            assert got is not None, d.log_text()
            since = d.notify.mark()
            (rules / "more.yaml").write_text("rules:\n  - {name: broken\n")     # a bad edit: old rules stay
            assert d.notify.wait_for(lambda m: "reload FAILED" in m.get("STATUS", ""), 15.0, since) is not None
            assert d.proc.poll() is None
            time.sleep(0.5)
        finally:
            assert d.stop(signal.SIGTERM) == 0
    assert "config or rule files changed: reloading" in (tmp_path / "daemon.log").read_text()
