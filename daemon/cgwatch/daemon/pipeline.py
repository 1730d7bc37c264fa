"""The daemon's middle: one interval's Samples and Events through the rules
engine and the anomaly models into the alert manager, and what the web side
reads about it.

:class:`Pipeline` is fed one batch per interval (``process``); it owns the
engine and the alert manager, keeps each container's latest values for the
API (one dict store per sample), and counts everything the ``/metrics`` page
reports. It also implements the web :class:`~cgwatch.web.view.View`.

A reload swaps the engine (:meth:`replace_rules`) and, when ``notify:``
changed, the sinks (:meth:`replace_sinks`), keeping what the old ones knew.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..alerts.notification import Notification
from ..alerts.state import AlertManager, fingerprint
from ..alerts.store import StoreError
from ..model import Alert, Container, Event, Sample
from ..profile.store import ProfileStore
from ..rules.engine import Engine, summarize
from ..web.history import History
from ..web.live import Hub
from ..web.view import AlertInfo, AlertRecord, ContainerInfo, RuleInfo, SilenceInfo, Stats

log = logging.getLogger("cgwatch")

#: a container that sent nothing for this long leaves the API's list
FORGET_AFTER = 300.0
#: alert changes kept in memory while alerts.db cannot be written (then the oldest go)
UNRECORDED_MAX = 10_000


@dataclass(slots=True)
class _Seen:
    container: Container
    first_seen: float
    last_seen: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Counters:
    """What the daemon counts for ``/metrics``; the daemon fills the collection side."""

    started_at: float = field(default_factory=time.time)
    ready: bool = False
    ticks: int = 0
    last_tick_at: float | None = None
    last_tick_s: float = 0.0
    samples: int = 0
    events: int = 0
    alerts: int = 0
    reloads: int = 0
    reload_ok: bool = True
    reload_error: str = ""
    #: alert state writes that failed (alerts.db full, read-only), and the last such error ("" when fine)
    store_errors: int = 0
    store_error: str = ""
    queue_drops: dict[str, int] = field(default_factory=dict)
    event_drops: dict[str, int] = field(default_factory=dict)
    bpf_maps: dict[str, int] = field(default_factory=dict)


class Pipeline:
    """Rules, models and alert state for the live daemon; also the web View."""

    def __init__(self, engine: Engine, manager: AlertManager, interval_s: float) -> None:
        self.engine = engine
        self.manager = manager
        self.interval_s = interval_s
        self.counters = Counters()
        self._seen: dict[str, _Seen] = {}
        #: what the dashboard draws: the last hour per container, and the live stream
        self.history = History(interval_s)
        self.hub = Hub(self.history)
        #: firing notices waiting for a CPU profile, and their containers (the daemon takes them)
        self.profile_requests: list[tuple[Notification, Container]] = []
        #: alert changes not yet in alerts.db because writing it failed (tried again each interval)
        self._unrecorded: list[Alert] = []
        self._reconciled = False
        #: where profiles are kept, when the daemon profiles (the web View reads it)
        self.profile_store: ProfileStore | None = None
        #: the profiler's counters, for /metrics (None when the daemon does not profile)
        self.profile_stats: Any = None
        #: the kubelet pod list's counters (None without ``kubernetes:``)
        self.kubelet_stats: Any = None
        longest = max((r.for_s for r in engine.rules), default=0.0)
        #: after this many intervals the engine knows what fires; then the store is reconciled
        self.reconcile_after = int(longest / interval_s) + 3

    # -- the work ------------------------------------------------------------------------------

    def process(self, now: float, samples: Sequence[Sample], events: Sequence[Event]) -> list[Alert]:
        """One interval: learn and evaluate, queue the notices; returns the alert changes."""
        seen = self._seen
        for s in samples:
            cid = s.container.id
            entry = seen.get(cid)
            if entry is None or entry.container is not s.container:
                old = entry
                entry = seen[cid] = _Seen(s.container, old.first_seen if old else s.ts, s.ts,
                                          old.metrics if old else {})
            entry.last_seen = s.ts
            entry.metrics[s.metric] = s.value
        alerts = self.engine.step(now, samples, events)
        for e in events:
            if e.kind == "container_stop":
                seen.pop(e.container.id, None)
        self.handle(alerts, now)
        self.hub.update(now, samples, events, alerts)
        c = self.counters
        if not self._reconciled and c.ticks + 1 >= self.reconcile_after:
            try:
                self.reconcile(now)
                self._reconciled = True
            except StoreError as e:     # tried again next interval
                if str(e) != c.store_error:
                    log.error("%s; alerts of the run before are reconciled once it can be written", e)
                    c.store_error = str(e)
        c.samples += len(samples)
        c.events += len(events)
        if c.ticks % 60 == 0:
            self._forget(now)
        return alerts

    def handle(self, alerts: Sequence[Alert], now: float) -> None:
        """Queue the notices for these alert changes (one transaction), then repeats due at ``now``.
        A first firing notice held for a profile joins ``profile_requests``.

        When alerts.db cannot be written (its file system is full), the transaction is rolled
        back, one ERROR says so, and these changes are tried again, first, at the next interval:
        an alert change is recorded late rather than lost (at most :data:`UNRECORDED_MAX` wait).
        """
        m = self.manager
        pending = self._unrecorded + list(alerts) if self._unrecorded else alerts
        requests = len(self.profile_requests)
        try:
            with m.batch():
                for a in pending:
                    for n in m.handle(a):
                        if n.state == "firing" and n.repeat == 0 and m.hold_s(n.rule) > 0:
                            self.profile_requests.append((n, a.container))
                m.tick(now)
        except StoreError as e:
            del self.profile_requests[requests:]
            self._unrecorded = list(pending[-UNRECORDED_MAX:])
            lost = len(pending) - len(self._unrecorded)
            self.counters.store_errors += 1
            if str(e) != self.counters.store_error:
                log.error("%s; %d alert change(s) wait and are tried again each interval%s", e,
                          len(self._unrecorded), f" ({lost} oldest dropped)" if lost else "")
                self.counters.store_error = str(e)
            return
        if self._unrecorded:
            log.info("alerts.db is written again: %d alert change(s) that waited are recorded",
                     len(self._unrecorded))
            self._unrecorded = []
        self.counters.store_error = ""
        if alerts:
            self.counters.alerts += len(alerts)
        if pending:
            m.wake()

    def reconcile(self, now: float) -> None:
        """Resolve alerts left firing by the run before this one that no longer hold."""
        live = {fingerprint(r.name, c.workload): (r.name, c.workload, state)
                for r, c, state, _, _ in self.engine.alerts()}
        gone = self.manager.reconcile(set(live), now)
        # what was firing then and is pending again now goes on firing (no new notice), so that
        # it resolves when it stops holding; left pending, it would stay firing on record forever
        for n in self.manager.active_alerts():
            rule, workload, state = live.get(n.fingerprint, ("", "", ""))
            if state == "pending":
                self.engine.promote(rule, workload)
        if gone:
            log.info("%d alerts firing before the restart no longer hold: resolved", len(gone))
            self.manager.wake()

    def _forget(self, now: float) -> None:
        gone = [cid for cid, e in self._seen.items() if now - e.last_seen > FORGET_AFTER]
        for cid in gone:
            del self._seen[cid]

    # -- reload --------------------------------------------------------------------------------

    def replace_rules(self, rules: Sequence[Any], now: float) -> None:
        """Evaluate ``rules`` from now on, keeping values, models and alert states
        of rules that stay; firing alerts of removed rules resolve."""
        engine = Engine(rules, baselines=self.engine.baselines)
        resolved = engine.adopt(self.engine, now)
        self.engine = engine
        self.manager.rules = {r.name: r for r in rules}
        self.handle(resolved, now)

    async def replace_sinks(self, manager: AlertManager) -> None:
        """Deliver through a new set of sinks; the old delivery loop stops, its
        undelivered notices stay in the outbox for sinks that still exist."""
        old = self.manager
        self.manager = manager
        manager.start()
        await old.close()

    # -- the web View --------------------------------------------------------------------------

    def containers(self) -> list[ContainerInfo]:
        out = []
        for e in self._seen.values():
            c = e.container
            out.append(ContainerInfo(
                id=c.id, name=c.name, runtime=c.runtime, image=c.image, labels=dict(c.labels), pod=c.pod,
                qos=c.qos, cgroup=c.cgroup, first_seen=e.first_seen, last_seen=e.last_seen,
                metrics=dict(e.metrics)))
        return out

    def alerts(self) -> list[AlertInfo]:
        out = []
        for r, c, state, since, value in self.engine.alerts():
            out.append(AlertInfo(rule=r.name, container=c.name, container_id=c.id, runtime=c.runtime, state=state,
                                 severity=r.severity, since=since, value=value,
                                 summary=summarize(r, c, value, None)))
        return out

    def stats(self) -> Stats:
        c = self.counters
        delivery: Mapping[str, Any] = self.manager.delivery_stats()
        return Stats(
            started_at=c.started_at, ready=c.ready, interval_s=self.interval_s, ticks=c.ticks,
            last_tick_at=c.last_tick_at, last_tick_s=c.last_tick_s, rules_loaded=len(self.engine.rules),
            reload_ok=c.reload_ok, reload_error=c.reload_error, reloads=c.reloads, samples_total=c.samples,
            events_total=c.events, queue_drops=dict(c.queue_drops), event_drops=dict(c.event_drops),
            bpf_maps=dict(c.bpf_maps), models=len(self.engine.baselines),
            models_evicted=self.engine.baselines.evicted,
            delivery={name: {"sent": x.sent, "messages": x.messages, "retried": x.retried, "failed": x.failed,
                             "dropped": x.dropped} for name, x in delivery.items()},
            outbox_pending=self.manager.outbox_pending(),
            profiles={} if self.profile_stats is None else {
                k: int(v) for k, v in asdict(self.profile_stats).items()},
            kubelet={} if self.kubelet_stats is None else {
                "fetches": self.kubelet_stats.fetches, "errors": self.kubelet_stats.errors,
                "pods": self.kubelet_stats.pods})

    def container_rules(self, container_id: str) -> list[RuleInfo]:
        """The rules that watch this container, as the container page lists them."""
        seen = self._seen.get(container_id)
        c = seen.container if seen is not None else self.history.container(container_id)
        if c is None:
            return []
        out = []
        for r in self.engine.rules:
            if not r.select.matches(c):
                continue
            if r.expr is not None:
                kind, text = "expr", r.expr.text
            elif r.event is not None:
                kind, text = "event", r.event
            else:
                kind, text = "anomaly", ", ".join(r.anomaly.metrics)
            out.append(RuleInfo(name=r.name, kind=kind, text=text, severity=r.severity, for_s=r.for_s,
                                threshold=self._threshold(r, c) if kind == "anomaly" else None))
        return out

    def _threshold(self, r: Any, c: Container) -> float | None:
        """The score the rule's model must pass to fire now (its running quantile or floor)."""
        key = "+".join(r.anomaly.metrics) if len(r.anomaly.metrics) > 1 else r.anomaly.metrics[0]
        model = self.engine.baselines.peek((r.name, c.workload, key))
        return None if model is None else model.threshold()

    def recent_alerts(self, limit: int = 100) -> list[AlertRecord]:
        """The latest notices from the alert history (newest last)."""
        return [AlertRecord(ts=h["ts"], rule=h["rule"], container=h["container"], state=h["state"],
                            severity=h["severity"], summary=h["summary"])
                for h in self.manager.history(limit)]

    def profiles(self) -> ProfileStore | None:
        return self.profile_store

    def silences(self) -> list[SilenceInfo]:
        """Silences in force."""
        return [SilenceInfo(id=x.id, rule=x.rule, container=x.container, ends_at=x.ends_at, comment=x.comment,
                            created_by=x.created_by) for x in self.manager.silences.list()]

    def status_line(self) -> str:
        """systemd's STATUS=: what an operator wants from ``systemctl status``."""
        firing = sum(1 for a in self.engine.alerts() if a[2] == "firing")
        line = f"watching {len(self._seen)} containers, {firing} alerts firing, {len(self.engine.rules)} rules"
        if not self.counters.reload_ok:
            line += f"; last reload FAILED, old config kept: {self.counters.reload_error}"
        if self.counters.store_error:
            line += f"; alerts NOT RECORDED: {self.counters.store_error}"
        return line
