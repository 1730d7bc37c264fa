"""A real docker container's life as cgwatch's collector reports it: its memory and
limit, then pause, restart, and kill, each as an operator would see it in the stream."""

from __future__ import annotations

import time

import pytest

from cgwatch.collect import Collector, open_collector
from cgwatch.model import Event, Sample

pytestmark = pytest.mark.bpf

LIMIT = 64 * 1024 * 1024


class Stream:
    """The collector ticked once a second; everything it said, kept."""

    def __init__(self, col: Collector) -> None:
        self.col = col
        self.samples: list[Sample] = []
        self.events: list[Event] = []

    def tick(self) -> None:
        time.sleep(max(0.0, 1.0 - (time.time() % 1.0)))
        samples, events = self.col.tick(time.time())
        self.samples += samples
        self.events += events

    def until(self, pred, what: str, ticks: int = 60) -> None:  # type: ignore[no-untyped-def]
        for _ in range(ticks):
            self.tick()
            if pred():
                return
        raise AssertionError(f"no {what} after {ticks} intervals")

    def lifecycle(self, cid: str) -> list[tuple[str, int]]:
        return [(e.kind, e.fields["restarts"]) for e in self.events
                if e.container.id == cid and e.kind in ("container_start", "container_stop")]

    def last(self, cid: str, metric: str) -> float | None:
        got = [s.value for s in self.samples if s.container.id == cid and s.metric == metric]
        return got[-1] if got else None


def test_memory_pause_restart_and_kill_of_a_real_container(docker) -> None:
    col = open_collector()
    try:
        s = Stream(col)
        s.tick()
        cid = docker.run("--memory", str(LIMIT), cmd="head -c 20m /dev/zero > /dev/shm/hold; sleep 3600")  # shmem is charged to it
        s.until(lambda: s.last(cid, "mem.usage_ratio") is not None, "mem.usage_ratio")
        assert s.last(cid, "mem.limit_bytes") == LIMIT
        s.until(lambda: (s.last(cid, "mem.usage_ratio") or 0) > 0.2, "20 MiB of 64 in use")
        assert s.last(cid, "mem.usage_ratio") < 1.0
        ws, usage = s.last(cid, "mem.working_set_bytes"), s.last(cid, "mem.usage_bytes")
        assert ws is not None and 20 * 2**20 <= ws <= usage    # the 20 MiB in /dev/shm is not reclaimable
        [c] = {x.container for x in s.samples if x.container.id == cid}
        assert (c.runtime, c.name) == ("docker", docker.inspect(cid)["Name"].lstrip("/"))
        assert s.lifecycle(cid) == [("container_start", 0)]

        docker("pause", cid)
        for _ in range(2):
            s.tick()
        docker("unpause", cid)
        s.tick()
        assert s.lifecycle(cid) == [("container_start", 0)]      # paused is not stopped

        docker("restart", "-t", "0", cid)
        s.until(lambda: len(s.lifecycle(cid)) >= 3, "the restart's stop and start")
        assert s.lifecycle(cid) == [("container_start", 0), ("container_stop", 0), ("container_start", 1)]
        s.until(lambda: s.last(cid, "proc.restarts") == 0.0, "the restart counted and past")
        assert any(x.value > 0 for x in s.samples if x.container.id == cid and x.metric == "proc.restarts")

        docker("kill", cid)
        s.until(lambda: s.lifecycle(cid)[-1][0] == "container_stop", "the kill's stop")
        assert s.lifecycle(cid)[-1] == ("container_stop", 1)
    finally:
        col.close()
