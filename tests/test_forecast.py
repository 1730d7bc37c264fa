"""The time-to-limit forecast on working sets made here: a steady leak is forecast and close
to the truth; flat, cyclic, levelling-off and restarted memory is not (or no longer).
A real leak, recorded through Docker, is replayed in tests/runtimes/test_leak_forecast.py."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from cgwatch.config import default_rules
from cgwatch.daemon.pipeline import Pipeline
from cgwatch.forecast import CONFIDENCE, MIN_SPAN_S, TIME_TO_LIMIT, Forecast
from cgwatch.model import Container, Event, Frame, Sample, rows_of
from cgwatch.record import read_recording
from cgwatch.rules.engine import Engine, intervals
from cgwatch.rules.load import load_rules

MiB = 2.0**20
WEB = Container(id="w" * 64, name="web-1", runtime="docker")


def run(ws: Callable[[float], float], seconds: int, limit: float = 512 * MiB, noise: float = 0.5 * MiB,
        seed: int = 1, extra: Callable[[float], dict[str, float]] | None = None,
        events: Callable[[float], list[Event]] | None = None) -> list[tuple[float, dict[str, float]]]:
    """Feed one container's working set, once a second, with noise; returns (t, forecasts) per second."""
    rnd = random.Random(seed)
    f = Forecast()
    out = []
    for t in range(seconds):
        ts = 1_700_000_000.0 + t
        values = {"mem.working_set_bytes": max(0.0, ws(t) + rnd.gauss(0.0, noise)), "mem.limit_bytes": limit}
        if extra is not None:
            values.update(extra(t))
        frame = Frame([(WEB, ts, values)])
        got = f.step(ts, frame, events(t) if events is not None else [])
        row = got.rows[0][2]
        out.append((float(t), {m: row[m] for m in (TIME_TO_LIMIT, CONFIDENCE) if m in row and row[m] == row[m]}))
        withdrawn = [m for m in (TIME_TO_LIMIT, CONFIDENCE) if m in row and row[m] != row[m]]
        assert withdrawn in ([], [TIME_TO_LIMIT, CONFIDENCE])
        assert not withdrawn or (out[-2][1] and not out[-1][1]), "NaN only in the interval a forecast ends"
    return out


def forecast_times(out: list[tuple[float, dict[str, float]]]) -> list[float]:
    return [t for t, f in out if f]


def test_a_steady_leak_is_forecast_after_the_minimum_span_and_close_to_the_truth() -> None:
    rate = 0.25 * MiB       # per second, from 50 MiB toward 512 MiB: the limit at t = 1848 s
    out = run(lambda t: 50 * MiB + rate * t, 1800)
    times = forecast_times(out)
    assert times, "no forecast for a steady leak"
    assert MIN_SPAN_S <= times[0] <= MIN_SPAN_S + 60
    assert times == [float(t) for t in range(int(times[0]), 1800)]      # and it stays
    for t, f in out[int(times[0]):]:
        truth = (512 * MiB - 50 * MiB) / rate - t
        assert abs(f[TIME_TO_LIMIT] - truth) <= 0.1 * truth + 30, (t, f, truth)
        assert f[CONFIDENCE] >= 0.95


def test_flat_memory_gets_no_forecast() -> None:
    assert forecast_times(run(lambda t: 200 * MiB, 3600, noise=2 * MiB)) == []


def test_a_short_cycle_gets_no_forecast() -> None:
    # a batch: takes 75 MiB over 5 minutes, frees it, rests a minute (the recorded cgw-batch's shape)
    def ws(t: float) -> float:
        phase = t % 360
        return 4 * MiB + (0.25 * MiB * phase if phase < 300 else 0.0)
    assert forecast_times(run(ws, 3 * 3600, limit=128 * MiB)) == []


def test_a_long_cycle_is_forecast_at_most_on_its_first_ramp() -> None:
    # 10 minutes of growth, then it frees it all: the first ramp looks like any leak, the
    # next ones stay under the first one's peak and are not forecast
    def ws(t: float) -> float:
        phase = t % 720
        return 20 * MiB + (0.5 * MiB * phase if phase < 600 else 0.0)
    times = forecast_times(run(ws, 3000, limit=512 * MiB))
    assert times and max(times) < 720


def test_growth_that_levels_off_gets_no_forecast_once_flat() -> None:
    # a cache or a warm-up: fast at first, then level (exponential approach, 4 minute constant)
    out = run(lambda t: 100 * MiB + 300 * MiB * (1 - math.exp(-t / 240)), 3600)
    assert [t for t in forecast_times(out) if t > 1200] == []


def test_a_restart_or_an_oom_kill_starts_again_and_no_limit_means_no_forecast() -> None:
    leak = lambda t: 50 * MiB + 0.25 * MiB * (t % 1000)      # noqa: E731 - it restarts every 1000 s
    restarted = run(leak, 2000, extra=lambda t: {"proc.restarts": 1.0 if t == 1000 else 0.0})
    times = forecast_times(restarted)
    assert any(t < 1000 for t in times)
    assert [t for t in times if 1000 <= t < 1000 + MIN_SPAN_S] == []
    assert restarted[999][1] and restarted[1000][1] == {}       # withdrawn at the restart (NaN, above)
    assert any(t >= 1000 + MIN_SPAN_S for t in times)

    steady = lambda t: 50 * MiB + 0.25 * MiB * t              # noqa: E731
    killed = run(steady, 1600, events=lambda t: [Event(1_700_000_000.0 + t, WEB, "oom_kill")] if t == 900 else [])
    assert [t for t in forecast_times(killed) if 900 <= t < 900 + MIN_SPAN_S] == []

    f = Forecast()
    for t in range(1200):
        got = f.step(float(t), [Sample(float(t), WEB, "mem.working_set_bytes", 50 * MiB + 0.25 * MiB * t)], [])
        assert [s.metric for s in got] == ["mem.working_set_bytes"]
    assert f.trends == {}


def test_a_list_comes_back_extended_and_a_frame_gets_the_values_in_its_rows() -> None:
    f, g = Forecast(), Forecast()
    for t in range(700):
        values = {"mem.working_set_bytes": 50 * MiB + MiB * t, "mem.limit_bytes": 4096 * MiB}
        batch = [Sample(float(t), WEB, m, v) for m, v in values.items()]
        listed = f.step(float(t), batch, [])
        frame = Frame([(WEB, float(t), dict(values))])
        framed = g.step(float(t), frame, [])
    assert listed[:2] == batch and [s.metric for s in listed[2:]] == [TIME_TO_LIMIT, CONFIDENCE]
    assert framed is frame and list(framed) == listed
    stopped = f.step(700.0, [], [Event(700.0, WEB, "container_stop")])
    assert stopped == [] and f.trends == {}


LEAK = Path(__file__).parent / "testdata" / "leak" / "leak.jsonl.gz"


def test_a_recorded_real_leak_fires_the_shipped_rule_5_minutes_before_its_oom_kill() -> None:
    """tests/testdata/leak/README.md says how the recording was made: four real containers
    through Docker for 19 minutes, one of them leaking until the kernel OOM-killed it."""
    rules, errors = load_rules(default_rules())
    assert errors == []
    pipeline = Pipeline(Engine(rules), None)        # the daemon's stages, as `cgwatch replay` runs them
    fired, kills, forecast = [], [], set()
    for now, samples, events in intervals(read_recording(str(LEAK))):
        out = pipeline.process(now, samples, events)
        fired += [a for a in out.alerts if a.rule == "memory-limit-forecast" and a.state == "firing"]
        kills += [e for e in events if e.kind == "oom_kill"]
        forecast |= {c.name for c, _, values in rows_of(out.samples) if TIME_TO_LIMIT in values}
    assert {e.container.name for e in kills} == {"cgw-leak"}
    assert forecast == {"cgw-leak"}         # not the flat one, the batch, nor the page cache writer
    assert [a.container.name for a in fired] == ["cgw-leak"]
    ahead = kills[0].ts - fired[0].ts
    assert ahead >= 300, ahead
    assert 0.5 * ahead <= fired[0].value <= 2.0 * ahead, (fired[0].value, ahead)


def test_tasks_toward_the_pids_limit_are_forecast_and_an_oom_kill_does_not_start_them_again() -> None:
    f = Forecast()
    got = {}
    for t in range(900):
        row = {"proc.count": 10.0 + t / 4, "proc.limit": 512.0,       # a task every 4 s, toward 512
               "mem.working_set_bytes": 50 * MiB + 0.25 * MiB * t, "mem.limit_bytes": 1024 * MiB,
               "mem.oom_kills": 1.0 if t == 600 else 0.0}
        frame = f.step(float(t), Frame([(WEB, float(t), row)]), [])
        got[t] = {m: v for m, v in frame.rows[0][2].items() if m.endswith(("time_to_limit_s",)) and v == v}
    assert set(got[599]) == {TIME_TO_LIMIT, "proc.time_to_limit_s"}
    assert set(got[620]) == {"proc.time_to_limit_s"}           # memory starts again at the kill, tasks go on
    truth = (512 - (10 + 620 / 4)) * 4
    assert abs(got[620]["proc.time_to_limit_s"] - truth) <= 0.1 * truth
