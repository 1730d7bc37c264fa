"""cgroupfs source against this host's real cgroup trees (root only).

Makes a container-shaped cgroup2 directory ``docker/<64 hex>`` and, on a
hybrid host, a v1 memory child of this process's own v1 memory cgroup (the
runtime-independent place EBPF.md describes) with a 64 MiB limit; on a
unified host the limit goes into the cgroup2 directory's ``memory.max``.
A small workload runs in both; the source must find all of it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgwatch.model import Container
from cgwatch.sources.cgroupfs import CgroupfsSource, Layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make cgroups")

LIMIT = 64 * 2**20
# Waits to be moved, then dirties 8 MiB (charged to the new memory cgroup) and
# burns a little CPU, then sleeps until killed.
WORKLOAD = """
import sys, time
sys.stdin.readline()
buf = bytes(range(256)) * (8 << 12)
end = time.monotonic() + 0.05
while time.monotonic() < end:
    pass
print("ready", flush=True)
time.sleep(600)
"""


def own_v1_memory_cgroup() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


def rmdir_retrying(d: Path) -> None:
    for _ in range(50):  # a killed task can take a moment to leave the cgroup
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    d.rmdir()


def test_live_container_cgroup():
    layout = Layout.detect()
    if layout.unified is None:
        pytest.skip("no cgroup2 mount")
    cid = secrets.token_hex(32)
    parent = layout.unified / "docker"
    made: list[Path] = []  # created dirs, shallowest first
    proc = None
    try:
        if not parent.exists():
            parent.mkdir()
            made.append(parent)
        v2 = parent / cid
        v2.mkdir()
        made.append(v2)
        own = own_v1_memory_cgroup() if "memory" in layout.v1 else None
        if own is not None:  # hybrid: memory lives in v1, beside this process's cgroup
            v1 = layout.v1["memory"] / own.strip("/") / f"cgwatch-test-{cid[:12]}"
            v1.mkdir()
            made.append(v1)
            (v1 / "memory.limit_in_bytes").write_text(str(LIMIT))
            homes = [v2, v1]
        elif (v2 / "memory.max").exists():
            (v2 / "memory.max").write_text(str(LIMIT))
            homes = [v2]
        else:
            pytest.skip("memory controller not available to docker/ on this host")

        proc = subprocess.Popen([sys.executable, "-c", WORKLOAD],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for home in homes:
            (home / "cgroup.procs").write_text(str(proc.pid))
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"ready\n"

        src = CgroupfsSource(layout)
        c = Container(id=cid, name="cgwatch-live", runtime="docker", cgroup=f"docker/{cid}")
        first = {s.metric: s.value for s in src.collect(time.time(), [c])}
        time.sleep(0.3)
        second = {s.metric: s.value for s in src.collect(time.time(), [c])}

        for got in (first, second):
            assert got["mem.limit_bytes"] == LIMIT
            assert got["mem.usage_bytes"] > 0
            assert 0 < got["mem.usage_ratio"] <= 1
            assert got["proc.count"] >= 1
        assert "cpu.cgroup_usage_cores" not in first  # a rate needs two readings
        assert second["cpu.cgroup_usage_cores"] >= 0
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        for d in reversed(made):  # deepest first
            rmdir_retrying(d)


def test_a_shared_v1_memory_cgroup_is_not_reported_as_the_containers(cgroups):
    """On a hybrid host, a container whose processes sit in a bigger, shared v1
    memory group (here: this test's own) gets no memory figures rather than
    everybody's."""
    from tests.conftest import hexid, v1_memory_parent

    if v1_memory_parent() is None:
        pytest.skip("not a hybrid host")
    cid = hexid()
    c = cgroups(f"docker/{cid}")
    c.run(["sleep", "30"])
    src = CgroupfsSource(Layout.detect())
    got = {s.metric for s in src.collect(time.time(), [Container(id=cid, name="x", runtime="docker",
                                                                  cgroup=f"docker/{cid}")])}
    assert "proc.count" in got
    assert not {"mem.usage_bytes", "mem.limit_bytes", "mem.usage_ratio"} & got
