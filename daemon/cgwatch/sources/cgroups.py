"""Cgroups as they are made and removed, from ``bpf/cgroup.bpf.c``.

Identity keeps its map of cgroup ids current from these events and walks the
whole cgroup tree only now and then as a safety net, so the cost of noticing
new containers grows with what changed, not with how many cgroups exist.
"""

from __future__ import annotations

import logging
from typing import Any

from .bpf import Probe, load, lost_count, probe_flags

log = logging.getLogger("cgwatch.sources")

Change = tuple[int, str, bool]   # (cgroup id, path, removed)


class CgroupFeed:
    """mkdir/rmdir of cgroup2 directories, polled once per interval."""

    name = "cgroups"
    probes = (
        Probe("cgroup", "cgroup_mkdir", "CGW_HAVE_MKDIR"),
        Probe("cgroup", "cgroup_rmdir", "CGW_HAVE_RMDIR"),
    )

    def __init__(self) -> None:
        flags, _ = probe_flags(self.probes, self.name)
        if len(flags) < len(self.probes):
            raise RuntimeError("cgroup tracepoints missing: identity re-walks the tree every interval")
        self.bpf: Any = load("cgroup")
        self._changes: list[Change] = []
        self._complete = True
        self._lost = 0
        self.bpf.open_ring_buffer("cgroup_events", self._on_event)

    def _on_event(self, data: memoryview) -> None:
        e = self.bpf["cgroup_events"].event(data)
        if e.truncated:
            self._complete = False
            return
        path = bytes(e.path).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        self._changes.append((int(e.id), path, bool(e.removed)))

    def poll(self) -> tuple[list[Change], bool]:
        """The changes since the last poll, in order, and whether none were lost."""
        self.bpf.ring_buffer_consume()
        lost = lost_count(self.bpf["cgroup_lost"])
        complete = self._complete and lost == self._lost
        if lost != self._lost:
            log.warning("cgroups: %d cgroup events lost; re-walking the cgroup tree", lost - self._lost)
            self._lost = lost
        out, self._changes, self._complete = self._changes, [], True
        return out, complete

    @property
    def lost_events(self) -> int:
        """cgroup events the ring buffer lost since start."""
        return self._lost

    def close(self) -> None:
        bpf, self.bpf = self.bpf, None
        if bpf is not None:
            bpf.cleanup()
