"""A real docker container running busybox's own shell (static, stripped) in a busy loop: its
profile names busybox, and the top functions say so, rather than the little that could be named."""

from __future__ import annotations

from pathlib import Path

import pytest

from cgwatch.identity.cgroups import find_cgroup2_root
from cgwatch.model import Container
from cgwatch.profile.formats import folded, top_functions, top_text
from cgwatch.profile.model import Profile
from cgwatch.profile.profiler import Profiler
from tests.engines import wait_until
from tests.profile.test_profile_bpf import shares

pytestmark = pytest.mark.bpf


def own_cgroup(pid: int) -> str:
    """pid's cgroup2 path, relative to the cgroup2 mount (docker/ID with the cgroupfs driver)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line.split(":", 2)[2].strip().lstrip("/")
    raise AssertionError(f"pid {pid} has no cgroup2 line")


def test_a_busy_busybox_container_is_summarised_as_busybox(docker) -> None:  # type: ignore[no-untyped-def]
    cid = docker.run(cmd="while :; do :; done")
    pid = docker.pid(cid)
    rel = own_cgroup(pid)
    root = find_cgroup2_root()
    assert root is not None and cid in rel and (root / rel).is_dir(), rel
    prof = Profiler(None, root, hz=99)
    assert prof.load(), prof.unavailable
    try:
        box = Container(id=cid, name="busy-busybox", runtime="docker", cgroup=rel)
        assert prof.start(box, 2.0)
        done = wait_until(prof.poll, 60, "the 2 s profile to end", step=0.5)
    finally:
        prof.close()
    [d] = done  # type: ignore[misc]
    p: Profile = d.profile
    assert p.samples >= 20 and not p.partial, (p.samples, p.partial)
    top = top_functions(p)
    assert top, folded(p)
    name, share = top[0]
    assert name == "[busybox]" and share > 0.5, top_text(top) + "\n" + folded(p)
    # the folded stacks (what a flame graph draws) carry the same name, under the shell's process
    s = shares(folded(p))
    assert s["[busybox]"] == pytest.approx(share, abs=1e-3), s
    assert not any(f.startswith("[unknown] (") for f in s), s
