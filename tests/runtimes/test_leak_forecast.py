"""A real leak in a real Docker container, watched live by the collector, the forecast and the
**shipped** rule pack: ``memory-limit-forecast`` fires before the kernel OOM-kills it, with a
forecast close to the time that was really left, while a container beside it that holds its
memory flat gets no forecast at all.

The shipped pace needs 8 minutes of growth; this test cannot wait that long, so it runs the
same method on a shorter time scale (minima per 2 s, forecasts from 40 s of them). The shipped
pace is checked on a 19-minute recording of a real leak (tests/testdata/leak, replayed in
tests/test_forecast.py). Collection is cgroupfs only: the memory figures need no BPF.
"""

from __future__ import annotations

import time

import pytest

from cgwatch.collect import open_collector
from cgwatch.config import default_rules
from cgwatch.daemon.pipeline import Pipeline
from cgwatch.forecast import CONFIDENCE, TIME_TO_LIMIT, Forecast, Pace
from cgwatch.model import rows_of
from cgwatch.rules.engine import Engine
from cgwatch.rules.load import load_rules

pytestmark = pytest.mark.bpf

PACE = Pace(step_s=2.0, window=60, min_span_s=40.0)
#: 2 MiB a second toward a 300 MiB limit: the OOM kill comes after ~150 s
LEAK = "(while :; do head -c 2097152 /dev/zero; sleep 1; done) | tail"
FLAT = "(head -c 41943040 /dev/zero; sleep 100000) | tail"
#: the test gives up after this many ticks (the leak needs ~150)
MAX_TICKS = 600


def test_a_real_leak_is_forecast_before_its_oom_kill_and_flat_memory_is_not(docker) -> None:
    rules, errors = load_rules(default_rules())
    assert errors == []
    col = open_collector(["cgroupfs"])
    pipeline = Pipeline(Engine(rules), None, forecast=Forecast(PACE))
    limit = ["--memory", "300m", "--memory-swap", "300m"]
    try:
        col.tick(time.time())
        leak = docker.inspect(docker.run(*limit, cmd=LEAK))["Name"].lstrip("/")
        flat = docker.inspect(docker.run(*limit, cmd=FLAT))["Name"].lstrip("/")
        forecasts: dict[str, list[tuple[float, float, float]]] = {leak: [], flat: []}
        fired, killed_at = [], None
        for _ in range(MAX_TICKS):
            time.sleep(max(0.0, 1.0 - (time.time() % 1.0)))
            now = time.time()
            samples, events = col.tick(now)
            out = pipeline.process(now, samples, events)
            fired += [a for a in out.alerts if a.rule == "memory-limit-forecast" and a.state == "firing"
                      and a.container.name in forecasts]      # the host may run other containers
            for c, ts, values in rows_of(out.samples):
                if c.name in forecasts and TIME_TO_LIMIT in values:
                    forecasts[c.name].append((ts, values[TIME_TO_LIMIT], values[CONFIDENCE]))
                if c.name == leak and values.get("mem.oom_kills", 0.0) > 0.0:
                    killed_at = ts
            if killed_at is not None:
                break
    finally:
        col.close()

    assert killed_at is not None, "the leaking container was not OOM-killed"
    assert forecasts[flat] == []
    assert [a.container.name for a in fired] == [leak], [a.to_json() for a in fired]
    alert = fired[0]
    assert alert.ts < killed_at
    left = killed_at - alert.ts
    assert 0.5 * left <= alert.value <= 2.0 * left, (alert.value, left)
    assert alert.summary.startswith(f"{leak} will reach its memory limit in about ")
    # while it forecast (a withdrawn forecast is NaN, for one interval: at the kill's drop)
    assert all(conf >= 0.8 for ts, _, conf in forecasts[leak] if ts >= alert.ts and conf == conf)
