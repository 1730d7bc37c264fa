"""A live daemon under 2,000 idle connections gets a SIGHUP with each bad file of issue 15,
and keeps its interval, keeps delivering, and stays up.

The pieces are tested alone elsewhere (tests/web/test_flood.py, tests/daemon/
test_reload_badconfig.py, tests/rules/test_template_bounds.py); this is them at once, as an
operator's mistakes and a careless client would come. The containers are docker-named cgroups
with real processes; only the cgroupfs collector runs (as in test_fault_injection.py), since
the BPF side has nothing to do with reloads or HTTP.
"""

from __future__ import annotations

import resource
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.daemon.running import Daemon
from tests.daemon.test_fault_injection import Box, busy_rules
from tests.receiver import Receiver, free_port, hook_sink

pytestmark = pytest.mark.bpf   # root: cgroups, and the daemon's collection

FLOOD = 2000
RULES = busy_rules("hl-busy")


def config(tmp: Path, port: int, listen: int, notify: str | None = None, rules: str | None = None) -> str:
    return f"""interval: 1s
state_dir: {tmp / 'state'}
listen: 127.0.0.1:{listen}
rules: [{rules or tmp / 'rules.yaml'}]
collectors: {{cpu: false, proc: false, mem: false, net: false, exit_codes: false}}
notify:
{notify or hook_sink(port)}"""


def bad_files(tmp: Path, port: int, listen: int) -> dict[str, tuple[str, str]]:
    """What an operator might SIGHUP with: (config text, rules text) each, one mistake each."""
    good_rules = RULES
    return {
        "a sink type that is a list": (config(tmp, port, listen, notify=(
            f"  hook: {{type: [webhook], url: 'http://127.0.0.1:{port}/hook'}}\n")), good_rules),
        "url_file is /dev/zero": (config(tmp, port, listen, notify=(
            "  hook: {type: webhook, url_file: /dev/zero}\n")), good_rules),
        "a rule file that is /dev/zero": (config(tmp, port, listen, rules="/dev/zero"), good_rules),
        "a padding bomb in a summary": (config(tmp, port, listen),
                                        good_rules.replace("runs {{ value }} tasks", "{{ '%0999999999d' % 1 }}")),
        "an indent bomb in a summary": (config(tmp, port, listen),
                                        good_rules.replace("runs {{ value }} tasks",
                                                           "{{ container | indent(2000000000, true) }}")),
        "a loop bomb in a summary": (config(tmp, port, listen), good_rules.replace(
            "runs {{ value }} tasks",
            "{% for a in container*2500 %}{% for b in container*2500 %}x{% endfor %}{% endfor %}")),
        "an expression nested 10,000 deep": (config(tmp, port, listen),
                                             good_rules.replace("proc.count >= 2", "(" * 10000 + "proc.count" + ")" * 10000 + " >= 2")),
        "YAML that is not a mapping": ("- just\n- a list\n", good_rules),
    }


def ticks(listen: int, timeout: float = 60.0) -> int:
    """cgwatch_ticks_total from /metrics; while the connection cap is full, asked again."""
    end, error = time.monotonic() + timeout, None
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=10) as r:  # noqa: S310
                text = r.read().decode()
        except OSError as e:            # refused or reset: over the cap, for the flood's first seconds
            error = e
            time.sleep(0.5)
            continue
        for line in text.splitlines():
            if line.startswith("cgwatch_ticks_total "):
                return int(float(line.split()[1]))
        raise AssertionError("no cgwatch_ticks_total on /metrics")
    raise AssertionError(f"/metrics not answering: {error}")


def flood(listen: int) -> list[socket.socket]:
    """2,000 connections that never send a byte (the ones the server refuses are kept too)."""
    out = []
    for _ in range(FLOOD):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", listen))
        out.append(s)
    return out


def test_idle_connections_and_every_bad_reload_at_once_leave_the_daemon_working(tmp_path, cgroups):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, FLOOD + 1024)), hard))
    port, listen = free_port(), free_port()
    cfg, rules = tmp_path / "config.yaml", tmp_path / "rules.yaml"
    good = config(tmp_path, port, listen)
    cfg.write_text(good)
    rules.write_text(RULES)
    box = Box(cgroups)
    conns: list[socket.socket] = []
    try:
        with Receiver(port) as rx:
            d = Daemon(tmp_path, cfg)
            try:
                d.ready()
                conns = flood(listen)
                before = ticks(listen)
                for what, (config_text, rules_text) in bad_files(tmp_path, port, listen).items():
                    cfg.write_text(config_text)
                    rules.write_text(rules_text)
                    since = d.notify.mark()
                    d.proc.send_signal(signal.SIGHUP)
                    done = d.notify.wait_for(lambda m: m.get("READY") == "1", 60, since)
                    assert done is not None and d.proc.poll() is None, (what, d.log_text()[-3000:])
                    if "summary" not in what:   # a bounded template may load (its render is cut short)
                        assert "reload FAILED" in done.get("STATUS", ""), (what, done)
                    box.set_busy(not box.busy)  # alerts fire and resolve through it all
                cfg.write_text(good)
                rules.write_text(RULES)
                since = d.notify.mark()
                d.proc.send_signal(signal.SIGHUP)
                ok = d.notify.wait_for(lambda m: m.get("READY") == "1", 60, since)
                assert ok is not None and "FAILED" not in ok.get("STATUS", ""), d.log_text()[-3000:]
                box.set_busy(True)
                assert rx.wait_for(lambda al: any(a["state"] == "firing" for a in al), 30), d.log_text()[-3000:]
                box.set_busy(False)
                assert rx.wait_for(lambda al: al[-1]["state"] == "resolved", 30), d.log_text()[-3000:]
                assert ticks(listen) > before               # collection went on
                log = d.log_text()
                assert "dropped an interval" not in log, log[-3000:]     # and kept its interval
                assert "Traceback" not in log, log[-3000:]
                assert log.count("Too many open files") <= 1, log[-3000:]
            finally:
                for s in conns:
                    s.close()
                code = d.stop(signal.SIGTERM)
    finally:
        box.remove()
    assert code == 0
    states = [a["state"] for a in rx.alerts]
    assert states[-2:] == ["firing", "resolved"] and states.count("firing") == states.count("resolved"), states
