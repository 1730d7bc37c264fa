"""CgroupTree on the real cgroup2 mount (root only; makes and removes one cgroup)."""

from __future__ import annotations

import os
import secrets

import pytest

from cgwatch.identity import CgroupTree, Metadata, Resolver, find_cgroup2_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")


def test_a_docker_scope_is_seen_and_its_removal_reported() -> None:
    root = find_cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 mounted here")
    cid = secrets.token_hex(32)
    rel = f"system.slice/docker-{cid}.scope"
    made: list[str] = []  # what this test created, shallowest first
    try:
        for part in ("system.slice", rel):
            if not (root / part).exists():
                (root / part).mkdir()
                made.append(part)
        cgid = os.stat(root / rel).st_ino
        tree = CgroupTree(root)
        resolver = Resolver(tree, Metadata(root / "nonexistent-state"))
        started, _ = resolver.refresh(0.0)
        assert tree.path(cgid, 0.0) == rel
        assert cid in [c.id for c in started]
        c = resolver.container(cgid, 0.0)
        assert (c.id, c.runtime, c.cgroup) == (cid, "docker", rel)

        (root / rel).rmdir()
        made.remove(rel)
        _, stopped = resolver.refresh(1.0)
        assert cid in [c.id for c in stopped]
        assert cgid not in tree
    finally:
        for part in reversed(made):
            os.rmdir(root / part)
