"""A real restart loop and a real OOM kill through the real Docker engine, watched by
cgwatch's collector and the **shipped** rule pack, beside a host whose shell commands
fail five times a second; then the recording of that run replays to the same alerts.

The collector and the engine are driven here the way the daemon drives them (one
``Collector.tick`` and one ``Engine.step`` per interval), so the recording holds
exactly what the live engine saw.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from cgwatch.collect import open_collector
from cgwatch.config import default_rules
from cgwatch.daemon.pipeline import Pipeline
from cgwatch.record import read_recording, write_interval
from cgwatch.rules.engine import Engine, intervals
from cgwatch.rules.load import load_rules

pytestmark = pytest.mark.bpf

#: the issue's promise: a restart loop fires within a minute (of sample time)
FIRES_WITHIN_S = 60.0
#: host noise: ordinary commands that exit non-zero, five times a second
HOST_NOISE = ("while :; do ls /nonexistent-cgwatch 2>/dev/null; grep -q cgwatch /dev/null; "
              "sleep 0.2; done")


def test_restart_loop_and_oom_kill_fire_the_host_stays_quiet_and_replay_is_live(docker, tmp_path: Path) -> None:
    rules, errors = load_rules(default_rules())
    assert errors == []
    col = open_collector()
    pipeline = Pipeline(Engine(rules), None)     # the daemon's stages: anomaly models, then rules
    live = []
    rec = tmp_path / "run.jsonl"
    noise = subprocess.Popen(["sh", "-c", HOST_NOISE])
    try:
        with rec.open("w") as out:
            def tick() -> None:
                now = time.time()
                samples, events = col.tick(now)
                write_interval(out, samples, events)
                live.extend(pipeline.process(now, samples, events).alerts)

            tick()                                  # the first interval: what runs already
            loop = docker.run("--restart", "always", cmd="sleep 1; exit 3")
            oom = docker.run("--memory", "32m", "--memory-swap", "32m",
                             cmd="sleep 2; head -c 200m /dev/zero | tail")
            loop_name, oom_name = docker.inspect(loop)["Name"].lstrip("/"), docker.inspect(oom)["Name"].lstrip("/")
            started = time.time()

            def fired(rule: str, name: str) -> list:
                return [a for a in live if a.rule == rule and a.container.name == name and a.state == "firing"]

            while time.time() - started < FIRES_WITHIN_S + 5:
                time.sleep(max(0.0, 1.0 - (time.time() % 1.0)))
                tick()
                if fired("crash-loop", loop_name) and fired("oom-kill", oom_name) and \
                        time.time() - started > 15:    # and a while of host noise
                    break
            docker("rm", "-f", loop, oom)
            for _ in range(3):                      # their stops are in the recording too
                time.sleep(1.0)
                tick()
    finally:
        noise.kill()
        noise.wait()
        col.close()

    crash = fired("crash-loop", loop_name)
    assert crash, [a.to_json() for a in live]
    assert crash[0].ts - started <= FIRES_WITHIN_S
    assert crash[0].summary.startswith(f"{loop_name} restarted ")
    assert crash[0].container.image.startswith("cgwatch-test/busybox")
    kills = fired("oom-kill", oom_name)         # one per victim: the kernel may need more than one
    assert kills, [a.to_json() for a in live]
    assert "tail" in kills[0].summary, [k.summary for k in kills]
    assert [a.to_json() for a in live if a.container.name == "host"] == []
    assert not fired("crash-loop", oom_name)        # an OOM kill without a restart is no loop

    again = Pipeline(Engine(rules), None)
    replayed = [a.to_json() for now, samples, events in intervals(read_recording(str(rec)))
                for a in again.process(now, samples, events).alerts]
    assert replayed == [a.to_json() for a in live]
