"""The engines the runtime tests drive are real and run the test image."""

from __future__ import annotations

import pytest

from cgwatch.identity.cgroups import find_cgroup2_root

pytestmark = pytest.mark.bpf


@pytest.mark.parametrize("which", ["docker", "podman"])
def test_engine_runs_a_container_in_its_own_cgroup(which: str, request: pytest.FixtureRequest) -> None:
    engine = request.getfixturevalue(which)
    cid = engine.run(cmd="echo hello; sleep 600")
    pid = engine.pid(cid)
    own = [line.strip().split(":", 2)[2] for line in open(f"/proc/{pid}/cgroup") if line.startswith("0::")][0]
    assert cid in own
    root = find_cgroup2_root()
    assert root is not None and (root / own.lstrip("/")).is_dir()
    engine("rm", "-f", cid)
