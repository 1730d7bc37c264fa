"""Identity: cgroup id → cgroup path → container, runtime, name, image, labels.

A decoder chain, each step small and tested on its own:

- :mod:`.cgroups` — cgroup id (the inode BPF reports) → path, by walking cgroup2;
- :mod:`.runtimes` — path → :class:`~cgwatch.model.Container` (pure; path patterns);
- :mod:`.metadata` — Container → the same with name, image, labels from runtime state.

:class:`Resolver` joins them, caches per cgroup id, and tells which
containers started and stopped between two refreshes.

Examples
--------
>>> import os, tempfile
>>> from pathlib import Path
>>> top = tempfile.mkdtemp()
>>> os.makedirs(os.path.join(top, "system.slice", "cron.service"))
>>> r = Resolver(CgroupTree(Path(top)), Metadata(Path(top, "no-state")))
>>> started, stopped = r.refresh(now=0.0)
>>> [c.id for c in started], stopped
(['cron.service'], [])
>>> r.container(os.stat(os.path.join(top, "system.slice", "cron.service")).st_ino, 0.0).runtime
'systemd'
"""

from __future__ import annotations

from ..model import HOST, Container
from .cgroups import CgroupTree, find_cgroup2_root
from .metadata import Metadata
from .runtimes import identify

#: refreshes an ended cgroup is remembered: its last counts come one or two intervals late
#: (the tree remembers removed cgroups for two refreshes), and must not revive it
ENDED_KEPT = 3

__all__ = ["CgroupTree", "Metadata", "Resolver", "find_cgroup2_root", "identify"]


class Resolver:
    """Cgroup ids to Containers, and which containers come and go.

    A container is alive while any cgroup under its ``cgroup`` prefix exists.
    Systemd units count as containers; the host is always alive and never
    starts or stops. Ids that are not (or no longer) in the tree, and the
    root cgroup, are the host.

    The first :meth:`refresh` reports every container then alive as started;
    a container whose cgroups all went and came back between two refreshes
    (``docker restart``) is in both lists, stopped and started. A container
    that samples or events were charged to but whose cgroups came and went
    between two walks (a container that lived less than an interval, or one
    removed before cgwatch's first walk) is in :attr:`flashed` after the next
    refresh: it started and stopped, so that whatever was charged to it ends.

    Examples
    --------
    >>> import os, tempfile
    >>> from pathlib import Path
    >>> top = tempfile.mkdtemp()
    >>> r = Resolver(CgroupTree(Path(top)), Metadata(Path(top, "no-state")))
    >>> _ = r.refresh(now=0.0)
    >>> scope = os.path.join(top, "system.slice", "docker-" + "ab" * 32 + ".scope")
    >>> os.makedirs(os.path.join(scope, "init"))
    >>> [c.name for c in r.refresh(now=1.0)[0]]
    ['abababababab']
    >>> [c.id for c in r.containers()]
    ['host', 'abababababababababababababababababababababababababababababababab']
    >>> os.rmdir(os.path.join(scope, "init")); os.rmdir(scope)
    >>> [c.runtime for c in r.refresh(now=2.0)[1]]
    ['docker']
    """

    def __init__(self, tree: CgroupTree, metadata: Metadata) -> None:
        self.tree = tree
        self.metadata = metadata
        self._ids: dict[int, str] = {}  # cgroup id → container id, any cgroup looked up
        self._counted: dict[int, str] = {}  # cgroup id → container id, cgroups refresh() counted
        self._alive: dict[str, int] = {}  # container id → how many of its cgroups exist (> 0)
        self._byid: dict[str, Container] = {HOST.id: HOST}
        # cgroups removed at the latest refresh: their last counts, read right
        # after it, still belong to their container (and need no re-walk)
        self._gone: dict[int, Container] = {}
        # cgroups something was charged to that refresh() never counted
        self._orphans: dict[int, str] = {}
        # cgroups whose container's end was reported, at which refresh (kept a few refreshes:
        # their last counts may still come, and must not make them orphans again)
        self._ended: dict[int, int] = {}
        self._refreshes = 0
        self._version = 0
        self._pruned_at: tuple[int, int] | None = None
        #: containers that came and went between the last two refreshes (see above)
        self.flashed: list[Container] = []

    @property
    def generation(self) -> tuple[int, int]:
        """Changes whenever :meth:`container` or :meth:`alive` may answer differently
        for some id: while it stays, a caller may keep what they answered.

        Examples
        --------
        >>> import os, tempfile
        >>> from pathlib import Path
        >>> top = tempfile.mkdtemp()
        >>> r = Resolver(CgroupTree(Path(top)), Metadata())
        >>> _ = r.refresh(now=0.0); g = r.generation
        >>> _ = r.refresh(now=1.0); r.generation == g          # nothing changed
        True
        >>> os.mkdir(os.path.join(top, "docker"))
        >>> _ = r.refresh(now=2.0); r.generation == g
        False
        """
        return self._version, self.tree.version

    def container(self, cgid: int, now: float) -> Container:
        """The Container that cgroup ``cgid`` belongs to (HOST when unknown).

        Cached per cgroup id; a container whose metadata was missing is
        looked up again (paced by :class:`Metadata`), so a later call may
        return it with its name.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> r = Resolver(CgroupTree(Path(tempfile.mkdtemp())), Metadata())
        >>> r.container(987654321, now=0.0) is HOST
        True
        """
        cid = self._ids.get(cgid)
        c = self._byid.get(cid) if cid is not None else None
        if c is None:
            gone = self._gone.get(cgid)
            if gone is not None:
                return gone
            path = self.tree.path(cgid, now)
            if path is None:
                return HOST
            cid = self._learn(cgid, path, now)
            c = self._byid[cid]
            if cid != HOST.id and cgid not in self._counted and cgid not in self._ended:
                self._orphans[cgid] = cid
        if self.metadata.may_change(c, now):
            c = self._enrich(c, now)
        return c

    def alive(self, cgid: int) -> bool:
        """Whether cgroup ``cgid`` existed at the tree's latest walk.

        For BPF sources deciding which map entries to delete: a False for an
        id created after that walk only restarts its counters, never loses them.

        Examples
        --------
        >>> import os, tempfile
        >>> from pathlib import Path
        >>> top = tempfile.mkdtemp()
        >>> r = Resolver(CgroupTree(Path(top)), Metadata())
        >>> _ = r.refresh(now=0.0)
        >>> r.alive(os.stat(top).st_ino), r.alive(987654321)
        (True, False)
        """
        return cgid in self.tree

    def refresh(self, now: float) -> tuple[list[Container], list[Container]]:
        """Walk the cgroup tree; return ``(started, stopped)`` since the previous refresh.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> Resolver(CgroupTree(Path(tempfile.mkdtemp())), Metadata()).refresh(now=0.0)
        ([], [])
        """
        added, removed = self.tree.refresh(now)
        self._refreshes += 1
        if added or removed or self._gone:
            self._version += 1
        self._gone = {}
        stopped = [c for c in (self._forget(cgid) for cgid in removed) if c is not None]
        started = [c for c in (self._count(cgid, path, now) for cgid, path in added.items()) if c is not None]
        self.flashed = self._flashes()
        self._prune()
        self._enrich_alive(now)
        return [self._byid.get(c.id, c) for c in started], stopped

    def containers(self) -> list[Container]:
        """Every container alive at the last refresh, the host first, one per id.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> Resolver(CgroupTree(Path(tempfile.mkdtemp())), Metadata()).containers() == [HOST]
        True
        """
        return [HOST] + [self._byid[cid] for cid in self._alive]

    def _learn(self, cgid: int, path: str, now: float) -> str:
        """Identify ``path``, remember it for ``cgid``; return the container id."""
        base = identify(path)
        if base.id not in self._byid:
            self._byid[base.id] = self.metadata.enrich(base, now)
        self._ids[cgid] = base.id
        self._version += 1
        return base.id

    def _enrich(self, c: Container, now: float) -> Container:
        """``c`` as metadata has it now, kept for its id (the generation moves if it changed)."""
        new = self.metadata.enrich(c, now)
        if new is not c and new != c:
            self._version += 1
        self._byid[c.id] = new
        return new

    def _flashes(self) -> list[Container]:
        """The orphans that are not alive now: they came and went (see the class)."""
        out: dict[str, Container] = {}
        n = self._refreshes
        for cgid, cid in self._orphans.items():
            if cgid in self._counted or cid in self._alive or cgid in self._ended:
                continue
            self._ended[cgid] = n
            c = self._byid.get(cid)
            if c is not None:
                out[cid] = c
        self._orphans = {}
        if self._ended:
            for cgid in [k for k, at in self._ended.items() if n - at > ENDED_KEPT]:
                del self._ended[cgid]
        return list(out.values())

    def _count(self, cgid: int, path: str, now: float) -> Container | None:
        """A cgroup appeared; return its container if that just started."""
        cid = self._learn(cgid, path, now)
        if cid == HOST.id:
            return None
        self._counted[cgid] = cid
        n = self._alive.get(cid, 0)
        self._alive[cid] = n + 1
        return self._byid[cid] if n == 0 else None

    def _forget(self, cgid: int) -> Container | None:
        """A cgroup went away; return its container if that just stopped."""
        known = self._ids.pop(cgid, None)
        if known is not None and known in self._byid:
            self._gone[cgid] = self._byid[known]
        cid = self._counted.pop(cgid, None)
        if cid is None:
            return None
        self._ended[cgid] = self._refreshes
        n = self._alive[cid] - 1
        if n > 0:
            self._alive[cid] = n
            return None
        del self._alive[cid]
        self.metadata.forget(cid)
        return self._byid.pop(cid)

    def _prune(self) -> None:
        """Drop lookups of cgroups that came and went between two refreshes (when
        anything changed since the last time: it walks every id looked up)."""
        if self._pruned_at == self.generation:
            return
        for cgid in [k for k in self._ids if k not in self.tree]:
            del self._ids[cgid]
            self._version += 1
        used = {*self._ids.values(), *self._alive, HOST.id}
        for cid in [k for k in self._byid if k not in used]:
            del self._byid[cid]
            self._version += 1
        self._pruned_at = self.generation

    def _enrich_alive(self, now: float) -> None:
        """Give metadata another chance on alive containers still unnamed."""
        may_change = self.metadata.may_change
        for cid in self._alive:
            c = self._byid[cid]
            if may_change(c, now):
                self._enrich(c, now)
