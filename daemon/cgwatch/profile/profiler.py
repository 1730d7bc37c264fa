"""Profiles on request: which container, for how long, how many at once, and where they go.

:class:`Profiler` owns the :class:`~cgwatch.profile.sampler.Sampler` (loaded on
first use), one symboliser shared by every profile (its ELF caches by build id
outlive each profile), and the store. The daemon calls :meth:`Profiler.start`
when an alert asks for a profile and :meth:`Profiler.poll` about once a second,
both from one worker thread at a time; the CLI drives one profile to its end.

Examples
--------
>>> import tempfile
>>> from ..model import Container
>>> c = Container(id="ab" * 32, name="web-1", runtime="docker", cgroup="docker/" + "ab" * 32)
>>> find_container([c], "web-1") is c, find_container([c], "abab") is c
(True, True)
>>> find_container([c], "db")
Traceback (most recent call last):
...
LookupError: no container is named 'db' or has an id starting with it (cgwatch top lists them)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..identity.cgroups import walk
from ..model import Container
from .model import Profile
from .sampler import DEFAULT_HZ, DEFAULT_STACKS, Names, Sampler, Session
from .store import ProfileInfo, ProfileStore

log = logging.getLogger("cgwatch.profile")


def find_container(containers: Sequence[Container], query: str) -> Container:
    """The container named ``query``, with that full id, or the one whose id starts with it.

    Raises LookupError with a one-line message when none or several match.
    """
    if not query:
        raise LookupError("name a container (its name, full id or a unique id prefix)")
    live = [c for c in containers if c.id != "host"]
    for pick in (lambda c: c.name == query, lambda c: c.id == query):
        hits = [c for c in live if pick(c)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            ids = ", ".join(c.id[:12] for c in hits)
            raise LookupError(f"{len(hits)} containers are named {query!r} ({ids}): give an id")
    hits = [c for c in live if c.id.startswith(query)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        names = ", ".join(f"{c.name} ({c.id[:12]})" for c in hits[:5])
        raise LookupError(f"id prefix {query!r} matches {len(hits)} containers ({names}): give more of it")
    raise LookupError(f"no container is named {query!r} or has an id starting with it (cgwatch top lists them)")


def cgroup_ids(root: Path, container: Container) -> set[int]:
    """The cgroup2 ids (inodes) of the container's cgroup and every cgroup below it, now."""
    if not container.cgroup:
        return set()
    return set(walk(root / container.cgroup))


@dataclass(slots=True)
class Done:
    """A profile that ended, and what asked for it."""

    profile: Profile
    info: ProfileInfo | None
    tag: Any


@dataclass(slots=True)
class ProfilerStats:
    started: int = 0
    finished: int = 0
    partial: int = 0
    skipped_busy: int = 0
    skipped_cap: int = 0
    lost_samples: int = 0


class Profiler:
    """Up to ``max_concurrent`` profiles at a time, one per container."""

    def __init__(self, store: ProfileStore | None, cgroup_root: Path, *, hz: int = DEFAULT_HZ,
                 max_concurrent: int = 2, stack_entries: int = DEFAULT_STACKS,
                 names: Callable[[], Names] | None = None, preload: bool = False) -> None:
        self.store = store
        #: whether the owner should :meth:`load` at start rather than at the first request
        self.preload = preload
        self.cgroup_root = cgroup_root
        self.hz = hz
        self.max_concurrent = max_concurrent
        self.stack_entries = stack_entries
        self._names_factory = names
        self._names: Names | None = None
        self.sampler: Sampler | None = None
        self.unavailable = ""
        self.sessions: dict[str, tuple[Session, Any]] = {}
        self.stats = ProfilerStats()

    def load(self) -> bool:
        """Compile and load the BPF side (seconds: call it off the event loop); False, with
        the reason in ``unavailable`` (logged once), when this host cannot profile."""
        if self.sampler is not None:
            return True
        if self.unavailable:
            return False
        try:
            self.sampler = Sampler(self.hz, self.stack_entries)
            if self._names_factory is None:
                from .symbols import Symbolizer

                self._names = Symbolizer()
            else:
                self._names = self._names_factory()
        except Exception as e:   # noqa: BLE001 - a profiler that cannot load must not stop the daemon
            self.unavailable = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning("CPU profiles are off: %s", self.unavailable)
            return False
        return True

    def start(self, container: Container, duration_s: float, rule: str = "", tag: Any = None) -> bool:
        """Begin profiling ``container``; False (counted) if it is already being profiled,
        the cap is reached, the profiler cannot load, or the container has no cgroup left."""
        if container.id in self.sessions:
            self.stats.skipped_busy += 1
            return False
        if len(self.sessions) >= self.max_concurrent:
            self.stats.skipped_cap += 1
            log.info("no profile of %s: %d profiles already run (profiles.max_concurrent)",
                     container.name, len(self.sessions))
            return False
        if not self.load():
            return False
        assert self.sampler is not None and self._names is not None
        root = self.cgroup_root
        session = Session(self.sampler, self._names, container, lambda: cgroup_ids(root, container),
                          duration_s, rule)
        if not session.cgids:
            session.finish()
            log.info("no profile of %s: it has no cgroup left", container.name)
            return False
        self.sessions[container.id] = (session, tag)
        self.stats.started += 1
        log.info("profiling %s for %gs%s", container.name, duration_s, f" (rule {rule})" if rule else "")
        return True

    def poll(self) -> list[Done]:
        """Fold what was sampled; finish, store and return the profiles that ended."""
        out = []
        for cid, (session, tag) in list(self.sessions.items()):
            try:
                going = session.poll()
            except Exception:   # noqa: BLE001 - one profile's trouble must not end the others
                log.exception("profile of %s failed", session.container.name)
                session.partial = session.partial or "profiling failed (see the daemon's log)"
                going = False
            if going:
                continue
            del self.sessions[cid]
            out.append(self._finish(session, tag))
        return out

    def _finish(self, session: Session, tag: Any) -> Done:
        p = session.finish()
        self.stats.finished += 1
        self.stats.lost_samples += p.lost
        if p.partial:
            self.stats.partial += 1
        info = None
        if self.store is not None:
            try:
                info = self.store.save(p)
            except OSError as e:
                log.warning("cannot store the profile of %s: %s", p.container.name, e)
        log.info("profile of %s: %d samples%s", p.container.name, p.samples,
                 f" (partial: {p.partial})" if p.partial else "")
        return Done(p, info, tag)

    def close(self) -> list[Done]:
        """End every running profile now (marked partial) and unload."""
        out = []
        for _cid, (session, tag) in list(self.sessions.items()):
            session.partial = session.partial or "cgwatch stopped during the profile"
            out.append(self._finish(session, tag))
        self.sessions.clear()
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None
        return out


def default_cgroup_root() -> Path | None:
    """The cgroup2 mount, where the profiler finds each container's cgroups."""
    from ..identity.cgroups import find_cgroup2_root

    root = find_cgroup2_root()
    return root if root is not None and os.path.isdir(root) else None
