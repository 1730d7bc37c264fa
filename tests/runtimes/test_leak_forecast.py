"""Real leaks in real Docker containers, watched live by the collector, the forecast and the
**shipped** rule pack: ``memory-limit-forecast`` fires before the kernel OOM-kills a container
whose memory grows, and ``tasks-limit-forecast`` before a container that keeps starting
processes reaches its pids limit, each with a forecast close to the time that was really
left, while a container beside them that holds its memory and its tasks flat gets no
forecast at all. The three run side by side, so the test takes as long as the slowest.

The shipped pace needs 8 minutes of growth; this test cannot wait that long, so it runs the
same method on a shorter time scale (minima per 2 s, forecasts from 40 s of them). The shipped
pace is checked on a 19-minute recording of a real leak (tests/testdata/leak, replayed in
tests/test_forecast.py). Collection is cgroupfs only: these figures need no BPF.
"""

from __future__ import annotations

import time

import pytest

from cgwatch.collect import open_collector
from cgwatch.config import default_rules
from cgwatch.daemon.pipeline import Pipeline
from cgwatch.forecast import RESOURCES, Forecast, Pace
from cgwatch.model import rows_of
from cgwatch.rules.engine import Engine
from cgwatch.rules.load import load_rules

pytestmark = pytest.mark.bpf

PACE = Pace(step_s=2.0, window=60, min_span_s=40.0)
MEM, TASKS = RESOURCES
#: 2 MiB a second toward a 300 MiB limit: the OOM kill comes after ~150 s
LEAK = "(while :; do head -c 2097152 /dev/zero; sleep 1; done) | tail"
#: a process a second that never ends, toward a limit of 150 tasks: reached after ~150 s
FORKS = "while :; do sleep 3600 & sleep 1; done"
PIDS_LIMIT = 150
FLAT = "(head -c 41943040 /dev/zero; sleep 100000) | tail"
#: the test gives up after this many ticks (each leak needs ~150)
MAX_TICKS = 600


def test_real_leaks_are_forecast_before_their_limits_and_flat_ones_are_not(docker) -> None:
    rules, errors = load_rules(default_rules())
    assert errors == []
    col = open_collector(["cgroupfs"])
    pipeline = Pipeline(Engine(rules), None, forecast=Forecast(PACE))
    mem = ["--memory", "300m", "--memory-swap", "300m"]
    ends: dict[str, float] = {}      # container -> when it reached its limit
    try:
        col.tick(time.time())
        leak = docker.inspect(docker.run(*mem, cmd=LEAK))["Name"].lstrip("/")
        forks = docker.inspect(docker.run("--pids-limit", str(PIDS_LIMIT), cmd=FORKS))["Name"].lstrip("/")
        flat = docker.inspect(docker.run(*mem, "--pids-limit", str(PIDS_LIMIT), cmd=FLAT))["Name"].lstrip("/")
        ours = {leak, forks, flat}
        forecasts: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        fired = []
        for _ in range(MAX_TICKS):
            time.sleep(max(0.0, 1.0 - (time.time() % 1.0)))
            now = time.time()
            samples, events = col.tick(now)
            out = pipeline.process(now, samples, events)
            fired += [a for a in out.alerts if a.state == "firing" and a.container.name in ours
                      and a.rule in ("memory-limit-forecast", "tasks-limit-forecast")]
            for c, ts, values in rows_of(out.samples):
                if c.name not in ours:
                    continue                  # the host may run other containers
                for r in RESOURCES:
                    if r.ttl in values:
                        forecasts.setdefault((c.name, r.ttl), []).append((ts, values[r.ttl], values[r.confidence]))
                if c.name == leak and values.get("mem.oom_kills", 0.0) > 0.0:
                    ends.setdefault(leak, ts)
                if c.name == forks and values.get("proc.count", 0.0) >= PIDS_LIMIT - 1:
                    ends.setdefault(forks, ts)
            if len(ends) == 2:
                break
        docker("rm", "-f", forks)             # at its limit its loop fails to fork, over and over
    finally:
        col.close()

    assert set(ends) == {leak, forks}, f"limits reached: {ends}"
    assert [k for k in forecasts if k[0] == flat] == []
    assert sorted((a.rule, a.container.name) for a in fired) == [
        ("memory-limit-forecast", leak), ("tasks-limit-forecast", forks)], [a.to_json() for a in fired]
    for a in fired:
        r = MEM if a.rule == "memory-limit-forecast" else TASKS
        name = a.container.name
        left = ends[name] - a.ts
        assert left > 0, (a.to_json(), ends)
        assert 0.5 * left <= a.value <= 2.0 * left, (a.rule, a.value, left)
        what = "memory limit" if r is MEM else "task limit"
        assert a.summary.startswith(f"{name} will reach its {what} in about "), a.summary
        # while it forecast (a withdrawn forecast is NaN, for one interval: at the kill's drop)
        assert all(conf >= 0.8 for ts, _, conf in forecasts[(name, r.ttl)] if ts >= a.ts and conf == conf)
