"""A real docker container doing direct I/O, watched by the real io source (issue 18).

The container writes a known number of 64 KiB blocks with O_DIRECT to a file on this
host's disk (a bind mount): each write is one request that the container itself queues,
so cgwatch must count that many, charged to that container, with a latency in the unit
and range the device's own statistics (``/sys/dev/block/M:m/stat``) give for the same
seconds.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgwatch.collect import open_collector
from tests.engines import wait_until

pytestmark = pytest.mark.bpf

#: 64 KiB direct writes the container makes, then it sleeps
WRITES = 400


@pytest.fixture
def collector() -> Iterator[object]:
    col = open_collector(["io"])
    yield col
    col.close()


def device_writes(path: Path) -> tuple[int, int]:
    """(writes completed, ms spent writing) of the block device that holds ``path``."""
    st = os.stat(path)
    stat = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
    f = stat.read_text().split()
    return int(f[4]), int(f[7])


def test_a_container_doing_direct_io_gets_its_requests_and_their_latency(docker, collector, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "go").touch()
    # the file exists at its full size first: the timed writes then allocate nothing
    cmd = (f"dd if=/dev/zero of=/data/f bs=64k count={WRITES} 2>/dev/null && sync && touch /data/ready && "
           "while [ -e /data/go ]; do sleep 0.1; done; "
           f"dd if=/dev/zero of=/data/f bs=64k count={WRITES} oflag=direct conv=notrunc 2>/dev/null; "
           "touch /data/done; sleep 3600")
    cid = docker.run("-v", f"{data}:/data", cmd=cmd)
    wait_until(lambda: (data / "ready").exists(), 60, "the container's file to be written and synced")
    collector.tick(time.time())                       # the map counts from here on
    dev0 = device_writes(data)
    (data / "go").unlink()
    ops, p99s = 0.0, []
    last = time.monotonic()

    def tick() -> bool:
        nonlocal ops, last
        samples, _ = collector.tick(time.time())
        t = time.monotonic()
        dt, last = t - last, t
        mine = {s.metric: s.value for s in samples if s.container.id == cid}
        if "io.ops" in mine:
            ops += mine["io.ops"] * dt                # back to a count: the rate is over (about) dt
        if mine.get("io.latency_p99_ms") is not None:
            p99s.append(mine["io.latency_p99_ms"])
        return (data / "done").exists()

    wait_until(tick, 120, "the container's direct writes", step=0.5)
    time.sleep(0.5)
    tick()
    dev1 = device_writes(data)
    writes, ms = dev1[0] - dev0[0], dev1[1] - dev0[1]
    assert writes >= WRITES                           # the device saw them (and whatever else the host wrote)
    # every write was one request the container queued; the rate is over the map's own
    # read times, which the loop's dt follows to a few ms a second
    assert WRITES * 0.8 <= ops <= WRITES * 1.2, ops
    assert p99s, "no latency for the container"
    device_avg = ms / writes                          # queue + device, every write on the disk meanwhile
    p99 = statistics.median(p99s)
    assert device_avg / 20 <= p99 <= device_avg * 20 + 1.0, (p99s, device_avg)
