"""What the HTTP side may read from the daemon: one small read-only protocol.

The daemon implements :class:`View`; the web package only calls its methods
(and reads its ``history`` and ``hub``) from the event loop thread. Every value is a plain
snapshot (frozen dataclasses, mappings), so a handler never reaches into the
pipeline's live state.

Examples
--------
>>> web = ContainerInfo(id="4f1c" * 16, name="web-1", runtime="docker", image="nginx:1.27",
...                     labels={"env": "prod"}, pod="", qos="", cgroup="/system.slice/docker-4f1c.scope",
...                     first_seen=1732492800.0, last_seen=1732492830.0,
...                     metrics={"cpu.usage_cores": 0.93})
>>> web.metrics["cpu.usage_cores"]
0.93
>>> AlertInfo(rule="cpu-hog", container="web-1", container_id=web.id, runtime="docker", state="firing",
...           severity="warning", since=1732492830.0, value=0.97, summary="web-1 is hot").state
'firing'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..profile.store import ProfileStore
    from .history import History
    from .live import Hub


@dataclass(slots=True, frozen=True)
class ContainerInfo:
    """One container (or systemd unit) the daemon watches, as it is now.

    >>> ContainerInfo(id="ab12", name="db", runtime="podman", image="", labels={}, pod="", qos="",
    ...               cgroup="/machine.slice/libpod-ab12.scope", first_seen=1.0, last_seen=2.0, metrics={}).name
    'db'
    """

    # identity: what identity/ found for this cgroup
    id: str
    """Full container id (or the unit name for systemd, ``host`` for the rest)."""
    name: str
    """Display name; the id where there is none."""
    runtime: str
    """``docker``, ``containerd``, ``cri-o``, ``podman``, ``systemd``, ``host`` …"""
    image: str
    """Image reference; empty where unknown."""
    labels: Mapping[str, str]
    """Runtime labels (Kubernetes labels for pods)."""
    pod: str
    """Kubernetes ``namespace/pod``; empty outside Kubernetes."""
    qos: str
    """Kubernetes QoS class (``guaranteed``, ``burstable``, ``besteffort``); empty outside Kubernetes."""
    cgroup: str
    """cgroup v2 path, relative to the cgroup root."""

    # lifetime
    first_seen: float
    """Unix seconds when the daemon first saw this container."""
    last_seen: float
    """Unix seconds of its latest sample."""

    # readings
    metrics: Mapping[str, float]
    """Latest value of each metric, e.g. ``{"cpu.usage_cores": 0.93}``; an unavailable metric is absent."""


@dataclass(slots=True, frozen=True)
class AlertInfo:
    """One active (pending or firing) alert.

    >>> AlertInfo(rule="oom-kill", container="db", container_id="ab12", runtime="podman", state="firing",
    ...           severity="critical", since=5.0, value=None, summary="db: java was OOM-killed").value is None
    True
    """

    # what and where
    rule: str
    """The rule's name."""
    container: str
    """Display name of the container the alert is about."""
    container_id: str
    """Its full id."""
    runtime: str
    """Its runtime."""

    # where it stands
    state: str
    """``pending`` (condition true, ``for:`` not yet elapsed) or ``firing``."""
    severity: str
    """The rule's severity (``info``, ``warning``, ``critical``)."""
    since: float
    """Unix seconds when the alert entered its current state."""
    value: float | None
    """The expression's latest value; None for event rules."""
    summary: str
    """The rendered summary template."""
    card: Mapping[str, Any] | None = None
    """Its root-cause card, once it fired (``cgwatch.web.card``; docs/alerts.md)."""


@dataclass(slots=True)
class Stats:
    """The daemon's own health and counters; every count is since start.

    >>> Stats(started_at=0.0, ready=False, interval_s=1.0, ticks=0, last_tick_at=None, last_tick_s=0.0,
    ...       rules_loaded=0, reload_ok=True, reload_error="", reloads=0, samples_total=0, events_total=0,
    ...       queue_drops={}, event_drops={}, bpf_maps={}, models=0, models_evicted=0, delivery={},
    ...       outbox_pending=0).ready
    False
    """

    # lifecycle and the collection loop
    started_at: float
    """Unix seconds when the daemon started."""
    ready: bool
    """True once sources, rules and sinks are up."""
    interval_s: float
    """Collection interval in seconds."""
    ticks: int
    """Collections finished."""
    last_tick_at: float | None
    """Unix seconds when the last collection finished; None before the first."""
    last_tick_s: float
    """How long the last collection took, in seconds."""

    # rules and config reloads
    rules_loaded: int
    """Rules now running."""
    reload_ok: bool
    """False when the last reload failed (the previous rules keep running)."""
    reload_error: str
    """Why the last reload failed; empty when it did not."""
    reloads: int
    """Successful reloads."""

    # data volume and what was lost
    samples_total: int
    """Samples produced."""
    events_total: int
    """Events produced."""
    queue_drops: Mapping[str, int]
    """Stage name -> items dropped because a bounded queue was full."""
    event_drops: Mapping[str, int]
    """Ring buffer / source name -> kernel events lost."""
    bpf_maps: Mapping[str, int]
    """BPF map name -> entries now."""

    # anomaly models
    models: int
    """Anomaly models in memory."""
    models_evicted: int
    """Models evicted to stay within the memory bound."""

    # alert delivery
    delivery: Mapping[str, Mapping[str, int]]
    """Sink name -> ``{"sent", "messages", "retried", "failed", "dropped"}`` counts."""
    outbox_pending: int
    """Notifications waiting in the outbox."""

    # CPU profiles
    profiles: Mapping[str, int] = field(default_factory=dict)
    """``started``, ``finished``, ``partial``, ``skipped_busy``, ``skipped_cap``,
    ``lost_samples`` (samples whose stack the kernel could not store) since start."""

    # root-cause cards
    cards: Mapping[str, int] = field(default_factory=dict)
    """Cards of first firing notices by outcome: ``attached``, ``late`` (every sink had the
    notice already), ``gone`` (the alert resolved first), ``failed`` (could not be built)."""

    # Kubernetes
    kubelet: Mapping[str, int] = field(default_factory=dict)
    """``fetches``, ``errors`` (reads of the kubelet's pods that failed: the last good list
    stayed) and ``pods`` (pods known now); empty when ``kubernetes:`` is not configured."""


@dataclass(slots=True, frozen=True)
class RuleInfo:
    """One rule that applies to a container, as the container page lists it.

    >>> RuleInfo(name="cpu-hog", kind="expr", text="cpu.usage_cores > 0.9", severity="warning", for_s=30.0).kind
    'expr'
    """

    name: str
    kind: str
    """``expr``, ``event`` or ``anomaly``."""
    text: str
    """The expression, the event kind, or the anomaly rule's metrics (comma separated)."""
    severity: str
    for_s: float
    threshold: float | None = None
    """For anomaly rules: the score above which the container counts as anomalous (the
    chart's threshold band), where the model knows it; None draws the default floor."""


@dataclass(slots=True, frozen=True)
class AlertRecord:
    """One entry of the alert history (a state change that was recorded).

    >>> AlertRecord(ts=5.0, rule="oom-kill", container="db", state="firing", severity="critical", summary="").state
    'firing'
    """

    ts: float
    rule: str
    container: str
    state: str
    """``firing``, ``resolved``, ``silenced`` ..."""
    severity: str
    summary: str


@dataclass(slots=True, frozen=True)
class SilenceInfo:
    """One active silence (``rule`` and ``container`` are globs; None matches all).

    >>> SilenceInfo(id="s1", rule=None, container="web-*", ends_at=9.0, comment="deploy", created_by="ops").rule
    """

    id: str
    rule: str | None
    container: str | None
    ends_at: float
    comment: str
    created_by: str


class View(Protocol):
    """What the daemon shows the HTTP side. Each call returns a fresh snapshot and must be cheap."""

    def containers(self) -> Sequence[ContainerInfo]:
        """Every container watched now."""
        ...

    def alerts(self) -> Sequence[AlertInfo]:
        """Every pending or firing alert."""
        ...

    def stats(self) -> Stats:
        """The daemon's own health and counters."""
        ...

    # -- the dashboard -------------------------------------------------------------------------

    @property
    def history(self) -> History:
        """Recent samples, events and alert changes per container (fed by the daemon)."""
        ...

    @property
    def hub(self) -> Hub:
        """The live-update broadcaster the daemon publishes to once per interval."""
        ...

    def container_rules(self, container_id: str) -> Sequence[RuleInfo]:
        """The rules whose ``select`` matches this container (empty for an unknown id)."""
        ...

    def recent_alerts(self, limit: int) -> Sequence[AlertRecord]:
        """The newest ``limit`` alert history entries, oldest first."""
        ...

    def silences(self) -> Sequence[SilenceInfo]:
        """The silences in force now."""
        ...

    def profiles(self) -> ProfileStore | None:
        """The stored CPU profiles (read-only use), or None when profiling is off."""
        ...
