"""The daemon's middle: one interval's Samples and Events through the forecast, the
anomaly stage and the rules engine into the alert manager.

:class:`Pipeline` is fed one batch per interval (:meth:`~Pipeline.process`,
which returns the alert changes, the anomaly verdicts and the samples with the
forecasts added); it owns the forecast, the anomaly stage, the engine and the
alert manager and counts what the ``/metrics`` page reports. ``replay`` and
``report`` run the same stages in the same order; the daemon's ``cards`` task
takes the first firing notices it queues (:attr:`~Pipeline.card_requests`). It knows nothing of the web side:
the daemon hands each batch and its alert changes on to
:class:`~cgwatch.daemon.view.DaemonView`, which is what the dashboard reads.

A reload swaps the engine (:meth:`~Pipeline.replace_rules`) and, when
``notify:`` changed, the sinks (:meth:`~Pipeline.replace_sinks`), keeping what
the old ones knew.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..alerts.notification import Notification
from ..alerts.state import AlertManager, fingerprint
from ..alerts.store import StoreError
from ..anomaly.stage import AnomalyStage
from ..forecast import Forecast
from ..model import Alert, Container, Event, Sample, Verdict
from ..rules.engine import Engine

log = logging.getLogger("cgwatch")

#: alert changes kept in memory while alerts.db cannot be written (then the oldest go)
UNRECORDED_MAX = 10_000


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
    #: root-cause cards by outcome (attached, late, gone, failed)
    cards: dict[str, int] = field(default_factory=dict)


class Outcome(NamedTuple):
    """What one interval changed: the alert state changes, the anomaly verdicts, and the
    interval's samples as the rules saw them (the forecasts added)."""

    alerts: list[Alert]
    verdicts: list[Verdict]
    samples: Sequence[Sample]


class Pipeline:
    """Rules, models and alert state for the live daemon."""

    def __init__(self, engine: Engine, manager: AlertManager | None, interval_s: float = 1.0,
                 anomaly: AnomalyStage | None = None, forecast: Forecast | None = None) -> None:
        self.engine = engine
        #: time to the memory limit, worked out first: rules and models read it like any metric
        self.forecast = Forecast() if forecast is None else forecast
        #: the anomaly rules' models, scored before the engine
        self.anomaly = AnomalyStage.for_rules(engine.rules) if anomaly is None else anomaly
        self.manager = manager
        self.interval_s = interval_s
        self.counters = Counters()
        #: firing notices waiting for a CPU profile, and their containers (the daemon takes them)
        self.profile_requests: list[tuple[Notification, Container]] = []
        #: with ``cards`` on (the daemon's), first firing notices waiting for their root-cause
        #: card, and their containers
        self.cards = False
        self.card_requests: list[tuple[Notification, Container]] = []
        #: alert changes not yet in alerts.db because writing it failed (tried again each interval)
        self._unrecorded: list[Alert] = []
        self._reconciled = False
        longest = max((r.for_s for r in engine.rules), default=0.0)
        #: after this many intervals the engine knows what fires; then the store is reconciled
        self.reconcile_after = int(longest / interval_s) + 3

    # -- the work ------------------------------------------------------------------------------

    def process(self, now: float, samples: Sequence[Sample], events: Sequence[Event]) -> Outcome:
        """One interval: the models judge, the rules evaluate, the notices are queued; returns the
        alert changes, the verdicts and the samples with the forecasts (what the dashboard shows)."""
        samples = self.forecast.step(now, samples, events)
        verdicts = self.anomaly.step(now, samples) if self.anomaly else []
        alerts = self.engine.step(now, samples, events, verdicts)
        c = self.counters
        if self.manager is None:      # replay without --config: the alert changes are the output
            c.samples += len(samples)
            c.events += len(events)
            return Outcome(alerts, verdicts, samples)
        self.handle(alerts, now)
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
        return Outcome(alerts, verdicts, samples)

    def handle(self, alerts: Sequence[Alert], now: float) -> None:
        """Queue the notices for these alert changes (one transaction), then repeats due at ``now``.
        A first firing notice held for a profile joins ``profile_requests``.

        When alerts.db cannot be written (its file system is full), the transaction is rolled
        back, one ERROR says so, and these changes are tried again, first, at the next interval:
        an alert change is recorded late rather than lost (at most :data:`UNRECORDED_MAX` wait).
        """
        m = self.manager
        pending = self._unrecorded + list(alerts) if self._unrecorded else alerts
        requests, cards = len(self.profile_requests), len(self.card_requests)
        try:
            with m.batch():
                for a in pending:
                    for n in m.handle(a):
                        if n.state != "firing" or n.repeat != 0:
                            continue
                        if m.profile_hold_s(n.rule) > 0:
                            self.profile_requests.append((n, a.container))
                        if self.cards:
                            self.card_requests.append((n, a.container))
                m.tick(now)
        except StoreError as e:
            del self.profile_requests[requests:]
            del self.card_requests[cards:]
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
                for r, c, state, *_ in self.engine.alerts()}
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

    # -- reload --------------------------------------------------------------------------------

    def replace_rules(self, rules: Sequence[Any], now: float) -> None:
        """Evaluate ``rules`` from now on, keeping values, models and alert states
        of rules that stay; firing alerts of removed rules resolve."""
        engine = Engine(rules)
        resolved = engine.adopt(self.engine, now)
        self.engine = engine
        self.anomaly = AnomalyStage.for_rules(engine.rules, self.anomaly.baselines, self.anomaly.bands)
        self.manager.rules = {r.name: r for r in rules}
        self.handle(resolved, now)

    async def replace_sinks(self, manager: AlertManager) -> None:
        """Deliver through a new set of sinks; the old delivery loop stops, its
        undelivered notices stay in the outbox for sinks that still exist."""
        old = self.manager
        manager.profile_grace_s = old.profile_grace_s      # firing alerts still wait for their profile
        manager.card_hold_s = old.card_hold_s              # and for their card
        self.manager = manager
        manager.start()
        await old.close(successor=manager)                 # sinks both use (only host: changed) stay open

    # -- systemd -------------------------------------------------------------------------------

    def status_line(self, watching: int) -> str:
        """systemd's STATUS=: what an operator wants from ``systemctl status``; ``watching``
        is how many containers the daemon lists now (:meth:`DaemonView.watching`)."""
        firing = self.engine.firing_count()       # every interval: no summaries written to count them
        line = f"watching {watching} containers, {firing} alerts firing, {len(self.engine.rules)} rules"
        if not self.counters.reload_ok:
            line += f"; last reload FAILED, old config kept: {self.counters.reload_error}"
        if self.counters.store_error:
            line += f"; alerts NOT RECORDED: {self.counters.store_error}"
        return line
