"""PSI of real docker containers, read by the real cgroupfs source (issue 17's cadence).

Two busy containers pinned to one CPU wait for it all the time, so their ``cpu.pressure``
moves at every reading; an idle container's never does. At a 1 s interval a moving file
is read every other tick (the kernel's own PSI clock, 2 s) and a still one every tenth;
each reading is the share of wall time stalled since the previous one, which the test
checks against the cgroup's own ``cpu.pressure`` file read around the same ticks.
The ticks are counted, not timed: the source is given ``now`` 1 s apart whatever the
host's pace, so nothing here depends on how busy the host is.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from cgwatch.model import Container
from cgwatch.sources.cgroupfs import CgroupfsSource
from cgwatch.sources.cgroupfs_layout import Layout
from tests.engines import wait_until

pytestmark = pytest.mark.bpf

BUSY = "while :; do :; done"


def some_total_us(path: Path) -> int:
    return int(re.search(r"^some .*total=(\d+)", path.read_text(), re.M)[1])


def test_moving_pressure_is_read_every_two_ticks_and_still_pressure_every_ten(docker):
    layout = Layout.detect()
    assert layout.unified is not None
    if not (layout.unified / "cpu.pressure").exists():
        pytest.fail("this host's kernel has PSI off (psi=0): the machine type has it on")
    busy = [docker.run("--cpuset-cpus", "0", cmd=BUSY) for _ in range(2)]
    idle = docker.run(cmd="sleep 3600")
    cs = [Container(id=cid, name=cid[:12], runtime="docker", cgroup=f"docker/{cid}") for cid in (*busy, idle)]
    files = {c.id: layout.unified / c.cgroup / "cpu.pressure" for c in cs}
    wait_until(lambda: all(f.exists() for f in files.values()), 30, "the containers' cgroups")
    # the idle one's start (its shell, then sleep) may wait for a CPU on a busy host: its
    # pressure is still once two readings half a second apart agree
    settled = [some_total_us(files[idle])]

    def idle_still() -> bool:
        settled.append(some_total_us(files[idle]))
        return settled[-1] == settled[-2]

    wait_until(idle_still, 30, "the idle container to settle", step=0.5)
    src = CgroupfsSource()
    still = some_total_us(files[idle])
    seen: dict[str, list[tuple[int, float]]] = {c.id: [] for c in cs}
    t0 = 1_000_000.0
    for i in range(32):
        got = src.collect(t0 + i, cs)
        for s in got:
            if s.metric == "psi.cpu_some":
                seen[s.container.id].append((i, s.value))
        time.sleep(0.25)
    for cid in busy:
        ticks = [i for i, _ in seen[cid]]
        gaps = {b - a for a, b in zip(ticks, ticks[1:])}
        assert gaps == {2}, (cid[:12], ticks)              # moving: every other tick, every time
        assert all(0 < v <= 100 for _, v in seen[cid]), seen[cid]
    assert some_total_us(files[idle]) == still              # the idle one stalled on nothing
    ticks = [i for i, _ in seen[idle]]
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    # its first share (0) makes it quiet; from its next turn on, every tenth tick
    assert len(gaps) >= 3 and set(gaps[1:]) == {10}, ticks
    assert all(v == 0.0 for _, v in seen[idle]), seen[idle]


def test_a_reading_is_the_stall_share_since_the_one_before(docker):
    """The cgroup's own ``total=`` read just before and just after each tick brackets what
    cgwatch read: its share lies between the two extremes those allow."""
    layout = Layout.detect()
    assert layout.unified is not None
    busy = [docker.run("--cpuset-cpus", "0", cmd=BUSY) for _ in range(2)]
    c = Container(id=busy[0], name="busy", runtime="docker", cgroup=f"docker/{busy[0]}")
    f = layout.unified / c.cgroup / "cpu.pressure"
    wait_until(f.exists, 30, "the container's cgroup")
    src = CgroupfsSource(psi_period=1.0)        # every tick: each reading brackets one interval
    marks = []
    got = []
    for i in range(6):
        a, ta = some_total_us(f), time.monotonic()
        out = src.collect(1_000_000.0 + i, [c])
        b, tb = some_total_us(f), time.monotonic()
        marks.append((a, ta, b, tb))
        got.append(next((s.value for s in out if s.metric == "psi.cpu_some"), None))
        time.sleep(0.5)
    for (a0, ta0, b0, tb0), (a1, ta1, b1, tb1), v in zip(marks, marks[1:], got[1:]):
        assert v is not None
        lo = 100 * (a1 - b0) / 1e6 / (tb1 - ta0)
        hi = 100 * (b1 - a0) / 1e6 / (ta1 - tb0)
        assert lo - 0.01 <= v <= hi + 0.01, (lo, v, hi)
