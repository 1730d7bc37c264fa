"""One collection pass per interval: identity, then every source.

:class:`Collector` is what ``record``, ``top`` and (later) the daemon drive:
``tick(now)`` returns the interval's Samples (a Frame) and Events in time order,
``container_start`` / ``container_stop`` included.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .identity import Resolver
from .identity.cgroups import CgroupTree, find_cgroup2_root
from .identity.kubelet import PodIndex
from .identity.metadata import Metadata
from .identity.workloads import Workloads
from .model import Event, Frame
from .sources import DEFAULT_SOURCES, SOURCES, loader
from .sources.base import Source
from .sources.bpf import SetupError, check_host
from .sources.cgroups import CgroupFeed

log = logging.getLogger("cgwatch")

SOURCE_NAMES = tuple(SOURCES)
#: with cgroup events feeding identity, the whole tree is re-walked this often (s)
FULL_WALK_EVERY = 60.0


def _source_class(name: str) -> type:
    """The class of a source by name, imported on first use (BCC is slow to import)."""
    try:
        spec = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r} (known: {', '.join(SOURCE_NAMES)})") from None
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


@dataclass
class Collector:
    """The sources and the identity they share, polled together."""

    resolver: Resolver
    sources: list[Source] = field(default_factory=list)
    feed: CgroupFeed | None = None
    workloads: Workloads = field(default_factory=Workloads)
    _first: bool = True

    def tick(self, now: float) -> tuple[Frame, list[Event]]:
        """Everything that happened in the interval ending at ``now``: the events in
        time order (a container that stopped and started again in the interval
        stops first), and the samples, ``proc.restarts`` included (one Frame: each
        container's values of every source in one row)."""
        self.pull_cgroup_events()
        started, stopped = self.resolver.refresh(now)
        flashed = self.resolver.flashed
        if self._first:    # what already ran when we started did not start now
            started, stopped, flashed, self._first = [], [], [], False
        events = self.workloads.events(now, started, stopped, flashed)
        for s in self.sources:
            events += s.events()
        containers = self.resolver.containers()
        samples = self.workloads.samples(now, containers)
        for s in self.sources:
            try:
                samples.extend(s.collect(now, containers))
            except OSError as e:   # one source's trouble never costs the interval
                log.warning("%s: collection failed this interval: %s", s.name, e)
        events.sort(key=lambda e: e.ts)
        return samples, events

    def lost_events(self) -> dict[str, int]:
        """Kernel events each ring buffer has lost since start, by source name."""
        out = {s.name: int(s.lost_events) for s in self.sources if hasattr(s, "lost_events")}
        if self.feed is not None:
            out["cgroups"] = self.feed.lost_events
        return out

    def map_sizes(self) -> dict[str, int]:
        """Entries in each BPF map the sources read every interval (``source.map``).
        Walks the maps' keys, so call it now and then, from the collecting thread."""
        out: dict[str, int] = {}
        for s in self.sources:
            bpf, tables = getattr(s, "bpf", None), getattr(s, "tables", ())
            for t in tables if bpf is not None else ():
                try:
                    out[f"{s.name}.{t}"] = sum(1 for _ in bpf[t].keys())
                except (KeyError, OSError):
                    continue
        return out

    def pull_cgroup_events(self) -> None:
        """Fold the cgroup mkdir/rmdir events queued so far into identity."""
        if self.feed is None:
            return
        changes, complete = self.feed.poll()
        self.resolver.tree.apply(changes)
        if not complete:
            self.resolver.tree.mark_stale()

    def close(self) -> None:
        for s in reversed(self.sources):
            s.close()
        self.sources.clear()
        if self.feed is not None:
            self.feed.close()
            self.feed = None


def open_collector(names: Sequence[str] = DEFAULT_SOURCES, metadata_root: str = "/",
                   exit_codes: bool = True, pods: PodIndex | None = None) -> Collector:
    """Check the host, build identity and load every named source.

    A BPF source that fails to load is skipped with a warning (its metrics
    are absent); a host that cannot load BPF at all raises SetupError.
    """
    root = find_cgroup2_root()
    if root is None:
        raise SetupError("no cgroup2 mount found: cgwatch needs cgroup v2 (unified or hybrid)")
    bpf_wanted = [n for n in names if n != "cgroupfs"]
    if bpf_wanted:
        check_host()
    with loader.session(), ThreadPoolExecutor(max_workers=len(names) + 1) as pool:
        # the programs compile side by side in the loader; each source waits for its own
        feed_job = pool.submit(_open_feed) if bpf_wanted else None
        tree = CgroupTree(root)
        col = Collector(Resolver(tree, Metadata(Path(metadata_root), pods=pods)))
        jobs = [pool.submit(_open_source, name, col, exit_codes) for name in names]
        col.feed = feed_job.result() if feed_job is not None else None
        col.sources = [src for src in (j.result() for j in jobs) if src is not None]
    if col.feed is not None:
        tree.walk_every = FULL_WALK_EVERY
        tree.pull = col.pull_cgroup_events
    if bpf_wanted and not any(s.name in bpf_wanted for s in col.sources):
        col.close()
        raise SetupError("no BPF program could be loaded; see the warnings above")
    return col


def _open_feed() -> CgroupFeed | None:
    try:
        return CgroupFeed()
    except (RuntimeError, SetupError) as e:
        log.warning("%s", e)
        return None


def _open_source(name: str, col: Collector, exit_codes: bool) -> Source | None:
    """One source, loaded; None (with a warning) when its program does not load."""
    cls = _source_class(name)
    try:
        if name == "cgroupfs":
            return cls()  # type: ignore[no-any-return]
        if name == "proc":
            return cls(col.resolver, exit_codes=exit_codes)  # type: ignore[no-any-return]
        return cls(col.resolver)  # type: ignore[no-any-return]
    except SetupError as e:
        log.warning("%s", e)
        return None


def parse_sources(text: str) -> list[str]:
    """A comma-separated --sources value, checked.

    >>> parse_sources("cpu,proc")
    ['cpu', 'proc']
    >>> parse_sources("cpu,gpu")
    Traceback (most recent call last):
    ...
    ValueError: unknown source 'gpu' (known: cpu, proc, mem, net, io, cgroupfs)
    """
    out = [n.strip() for n in text.split(",") if n.strip()]
    for n in out:
        if n not in SOURCE_NAMES:
            raise ValueError(f"unknown source {n!r} (known: {', '.join(SOURCE_NAMES)})")
    return out


def all_metrics(names: Iterable[str] = SOURCE_NAMES) -> dict[str, str]:
    """metric name -> source name, for every metric a source may produce (the
    collector's own ``proc.restarts`` is given as ``identity``)."""
    from .identity.workloads import METRIC as RESTARTS

    out = {RESTARTS: "identity"}
    for n in names:
        for m in _source_class(n).metrics:
            out[m] = n
    return out
