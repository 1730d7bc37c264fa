"""What the web side reads about the live daemon: the web
:class:`~cgwatch.web.view.View`, implemented over the pipeline.

:class:`DaemonView` is fed once per interval, after the pipeline, with the same
batch and the alert changes it returned (:meth:`~DaemonView.update`). It owns
what only the dashboard and the API need: each container's latest values (one
dict store per sample), the last hour per container (``history``) and the live
stream (``hub``). The rest (alerts, rules, counters, the alert record) it reads
from the pipeline when asked, never changing it, so the pipeline knows nothing
of the web and the web nothing of the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..alerts.state import fingerprint
from ..model import Alert, Container, Event, Sample, Verdict, rows_of
from ..profile.store import ProfileStore
from ..web.history import History
from ..web.live import Hub
from ..web.view import AlertInfo, AlertRecord, ContainerInfo, RuleInfo, SilenceInfo, Stats
from .pipeline import Pipeline

#: a container that sent nothing for this long leaves the API's list
FORGET_AFTER = 300.0
#: stale containers are looked for this often (in intervals)
FORGET_EVERY = 60


@dataclass(slots=True)
class _Seen:
    container: Container
    first_seen: float
    last_seen: float
    metrics: dict[str, float] = field(default_factory=dict)


#: how the charts' history names a metric's normal band and its anomalous points
BAND_LOW, BAND_HIGH, ANOMALOUS = "~low", "~high", "~anomalous"


def verdict_samples(verdicts: Sequence[Verdict]) -> tuple[list[Sample], list[Sample]]:
    """What a dashboard draws of an interval's verdicts: each container's ``anomaly.score`` (the
    highest of its models'), and per judged metric ``M~low``/``M~high`` (the normal band) and
    ``M~anomalous`` (the value, while the model says anomalous).

    >>> from cgwatch.model import Container
    >>> web = Container(id="4f1c", name="web-1", runtime="docker")
    >>> scores, bands = verdict_samples([Verdict(1.0, web, "b", "cpu.usage_cores", 5.0, 1.0, True, 1.0, 0.4, 0.6, 60.0)])
    >>> [(s.metric, s.value) for s in scores + bands]
    [('anomaly.score', 1.0), ('cpu.usage_cores~low', 0.4), ('cpu.usage_cores~high', 0.6), ('cpu.usage_cores~anomalous', 5.0)]
    """
    best: dict[str, Sample] = {}
    bands: list[Sample] = []
    for v in verdicts:
        c = v.container
        if v.score is not None:
            old = best.get(c.id)
            if old is None or v.score > old.value:
                best[c.id] = Sample(v.ts, c, "anomaly.score", v.score)
        if v.low is not None and v.high is not None:
            bands.append(Sample(v.ts, c, v.metric + BAND_LOW, v.low))
            bands.append(Sample(v.ts, c, v.metric + BAND_HIGH, v.high))
        if v.active and v.value is not None and "+" not in v.metric:
            bands.append(Sample(v.ts, c, v.metric + ANOMALOUS, v.value))
    return list(best.values()), bands


class DaemonView:
    """The web View of a :class:`~cgwatch.daemon.pipeline.Pipeline` (read, never changed)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._seen: dict[str, _Seen] = {}
        self._updates = 0
        #: what the dashboard draws: the last hour per container, and the live stream
        self.history = History(pipeline.interval_s)
        self.hub = Hub(self.history)
        #: where profiles are kept, when the daemon profiles
        self.profile_store: ProfileStore | None = None
        #: the profiler's counters, for /metrics (None when the daemon does not profile)
        self.profile_stats: Any = None
        #: the kubelet pod list's counters (None without ``kubernetes:``)
        self.kubelet_stats: Any = None

    def update(self, now: float, samples: Sequence[Sample], events: Sequence[Event],
               alerts: Sequence[Alert], verdicts: Sequence[Verdict] = ()) -> None:
        """One interval, after the pipeline: ``alerts`` and ``verdicts`` are what its ``process`` returned.
        The verdicts become the container's ``anomaly.score`` and, in the charts' history, each
        judged metric's normal band and its anomalous points (see :func:`verdict_samples`)."""
        scores, bands = verdict_samples(verdicts) if verdicts else ((), ())
        seen = self._seen
        for rows in (rows_of(samples), rows_of(scores)) if scores else (rows_of(samples),):
            for c, ts, values in rows:
                entry = seen.get(c.id)
                if entry is None or entry.container is not c:
                    old = entry
                    entry = seen[c.id] = _Seen(c, old.first_seen if old else ts, ts, old.metrics if old else {})
                entry.last_seen = ts
                entry.metrics.update(values)
        for e in events:
            if e.kind == "container_stop":
                seen.pop(e.container.id, None)
        self.hub.update(now, samples, events, alerts, [*scores, *bands] if scores or bands else ())
        if self._updates % FORGET_EVERY == 0:
            self._forget(now)
        self._updates += 1

    def _forget(self, now: float) -> None:
        gone = [cid for cid, e in self._seen.items() if now - e.last_seen > FORGET_AFTER]
        for cid in gone:
            del self._seen[cid]

    def watching(self) -> int:
        """How many containers :meth:`containers` lists (without building the list): systemd's
        STATUS= says it every interval."""
        return len(self._seen)

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
        """The engine's pending and firing alerts, a firing one with the card its first notice
        got (from alerts.db: one query)."""
        p = self.pipeline
        cards = {n.fingerprint: n.card for n in p.manager.active_alerts() if n.card} if p.manager else {}
        out = []
        for r, c, state, since, value, summary in p.engine.alerts():
            out.append(AlertInfo(rule=r.name, container=c.name, container_id=c.id, runtime=c.runtime, state=state,
                                 severity=r.severity, since=since, value=value, summary=summary,
                                 card=cards.get(fingerprint(r.name, c.workload))))
        return out

    def stats(self) -> Stats:
        p = self.pipeline
        c, engine, manager = p.counters, p.engine, p.manager
        return Stats(
            started_at=c.started_at, ready=c.ready, interval_s=p.interval_s, ticks=c.ticks,
            last_tick_at=c.last_tick_at, last_tick_s=c.last_tick_s, rules_loaded=len(engine.rules),
            reload_ok=c.reload_ok, reload_error=c.reload_error, reloads=c.reloads, samples_total=c.samples,
            events_total=c.events, queue_drops=dict(c.queue_drops), event_drops=dict(c.event_drops),
            bpf_maps=dict(c.bpf_maps), models=len(self.pipeline.anomaly.baselines),
            models_evicted=self.pipeline.anomaly.baselines.evicted,
            delivery={name: {"sent": x.sent, "messages": x.messages, "retried": x.retried, "failed": x.failed,
                             "dropped": x.dropped} for name, x in manager.delivery_stats().items()},
            outbox_pending=manager.outbox_pending(), cards=dict(c.cards),
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
        for r in self.pipeline.engine.rules:
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
        return self.pipeline.anomaly.threshold(r.name, c.workload)

    def recent_alerts(self, limit: int = 100) -> list[AlertRecord]:
        """The latest notices from the alert history (newest last)."""
        return [AlertRecord(ts=h["ts"], rule=h["rule"], container=h["container"], state=h["state"],
                            severity=h["severity"], summary=h["summary"])
                for h in self.pipeline.manager.history(limit)]

    def profiles(self) -> ProfileStore | None:
        return self.profile_store

    def silences(self) -> list[SilenceInfo]:
        """Silences in force."""
        return [SilenceInfo(id=x.id, rule=x.rule, container=x.container, ends_at=x.ends_at, comment=x.comment,
                            created_by=x.created_by) for x in self.pipeline.manager.silences.list()]
