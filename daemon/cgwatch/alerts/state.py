"""The alert lifecycle: rules-engine transitions in, notices into the outbox.

An alert is one fingerprint, ``rule/workload`` (the container id, or for a
Kubernetes container its pod and name, which outlive a restart). The rules engine hands
over ``firing`` and ``resolved`` transitions (it already did pending → firing
with ``for:``); :class:`AlertManager` turns them into notices:

* ``firing`` for a fingerprint not firing yet → a notice (repeat 0) to each
  routed sink; a second ``firing`` while it fires is a duplicate and ignored.
* while it fires, :meth:`AlertManager.tick` re-notifies each sink every
  ``repeat_s`` (the rule's ``repeat:``, else the sink's policy); time is the
  caller's (sample time in replay, the clock live).
* ``resolved`` → a notice to every sink that was told it fired, even if a
  silence began meanwhile; a ``resolved`` for an alert never notified (or not
  firing) sends nothing.
* routing: the rule's ``notify:`` list (empty: every sink), then each sink's
  ``min_severity``.
* a silenced ``firing`` goes to the history as ``silenced``, not to sinks; if
  the silence ends while the alert still fires, the next tick notifies it.
* an event rule's alert (an OOM kill, an exit) is one notice per event: it is
  not held as firing, never repeats and never resolves.
* after a restart, :meth:`AlertManager.reconcile` resolves what the store
  says fires but the engine no longer holds.

Notification ids hash host, fingerprint, state, ``starts_at`` and the repeat
number, so replaying one recording twice gives the same ids, and the outbox
(unique per id x sink) queues each notice once.

Active alerts live in SQLite, not in memory, so a restart neither re-sends a
``firing`` already notified nor forgets the ``resolved`` it owes.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from ..model import Alert, Container
from .delivery import Counters, Delivery, DrainResult
from .notification import Notification, Sink
from .silence import Silences
from .store import Store, StoreError

log = logging.getLogger(__name__)

NEVER = float("inf")


def fingerprint(rule: str, container_id: str) -> str:
    """>>> fingerprint("cpu-hog", "4f1c")
    'cpu-hog/4f1c'
    """
    return f"{rule}/{container_id}"


def notification_id(host: str, fp: str, state: str, starts_at: float, repeat: int = 0) -> str:
    """Stable id of one notice.

    >>> notification_id("node-1", "cpu-hog/4f1c", "firing", 1732492800.0)
    'b6b46d2473cf32af7b29'
    """
    key = f"{host}\0{fp}\0{state}\0{starts_at!r}\0{repeat}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


class AlertManager:
    """Lifecycle, routing, silences and repeats over one :class:`Store`; feeds ``delivery``.

    ``rules`` maps rule names to :class:`cgwatch.rules.load.Rule` (anything with
    ``notify``, ``repeat_s``, ``description`` and ``labels``); a rule missing
    from it goes to every sink. ``delivery`` defaults to a :class:`Delivery`
    over the same store and sinks; call ``await manager.delivery.run()`` (live)
    or ``await manager.delivery.drain(timeout)`` (at the end of a replay).

    >>> import tempfile
    >>> from cgwatch.model import Alert, Container
    >>> m = AlertManager(Store.open(tempfile.mkdtemp()), {}, {}, host="node-1")
    >>> web = Container(id="4f1c", name="web-1", runtime="docker")
    >>> m.handle(Alert(10.0, "cpu-hog", web, "firing", "warning", 0.97, "hot"))  # no sinks: nothing queued
    []
    >>> m.handle(Alert(11.0, "cpu-hog", web, "firing", "warning", 0.98, "hot"))  # a duplicate
    []
    >>> [h["state"] for h in m.store.history()], m.store.active_count()
    (['firing'], 1)
    """

    def __init__(self, store: Store, sinks: Mapping[str, Sink], rules: Mapping[str, Any], host: str, *,
                 delivery: Delivery | None = None) -> None:
        self.store = store
        self.sinks = dict(sinks)
        self.rules = rules
        self.host = host
        self.silences = Silences(store)
        self.delivery = delivery if delivery is not None else Delivery(store, self.sinks)
        #: set by the daemon when it can profile: the first notice of an alert whose rule asks
        #: for a profile waits up to the profile's length plus this grace for it (:meth:`attach_profile`)
        self.profile_grace_s: float | None = None
        #: set by the daemon when it builds root-cause cards: a first firing notice waits up to
        #: this long for its card (:meth:`attach_card` sends it as soon as the card is on it)
        self.card_hold_s = 0.0

    def batch(self) -> AbstractContextManager[object]:
        """One SQLite transaction for many :meth:`handle` calls (a tick's worth); much faster.

        >>> import tempfile
        >>> m = AlertManager(Store.open(tempfile.mkdtemp()), {}, {}, host="h")
        >>> with m.batch():
        ...     pass
        """
        return self.store.tx()

    # -- routing ---------------------------------------------------------------------------------

    def route(self, rule: str, severity: str) -> list[str]:
        """The sinks a notice of ``rule`` at ``severity`` goes to."""
        r = self.rules.get(rule)
        names = r.notify if r is not None and r.notify else self.sinks
        return [s for s in names if s in self.sinks and self.sinks[s].policy.admits(severity)]

    def profile_hold_s(self, rule: str) -> float:
        """How long the first firing notice of ``rule`` waits for its profile (0: not at all)."""
        r = self.rules.get(rule)
        if self.profile_grace_s is None or r is None or not getattr(r, "profile_s", 0.0):
            return 0.0
        return float(r.profile_s) + self.profile_grace_s

    def hold_s(self, rule: str) -> float:
        """How long the first firing notice of ``rule`` waits for its profile and its card."""
        return max(self.profile_hold_s(rule), self.card_hold_s)

    def attach_profile(self, fingerprint: str, notice_id: str, profile: Mapping[str, Any]) -> bool:
        """Add a profile to the firing notice ``notice_id`` (its top 3 functions to the summary too,
        so every sink's one line says where the time went) and send it now (it was held for this).
        False when that notice is no longer the alert's (it resolved, or fired again since)."""
        current = self.store.get_alert(fingerprint)
        if current is None or current[0].id != notice_id:
            return False
        n = current[0]
        top = ", ".join(f"{t['function']} {round(float(t['share']) * 100)}%" for t in list(profile.get("top", ()))[:3])
        n = replace(n, profile=dict(profile), summary=f"{n.summary}; hottest: {top}" if top else n.summary)
        self.store.rewrite(n, self.store.clock())
        self.delivery.wake()
        return True

    def attach_card(self, notice: Notification, card: Mapping[str, Any]) -> str:
        """Add the root-cause card to the first firing notice ``notice`` (or an event rule's
        notice) where it waits (held up to :attr:`card_hold_s` for it) and send it, unless it
        waits for a profile too. ``attached``; ``late`` when every sink had it already (the
        record gets the card all the same); ``gone`` when that notice is no longer the alert's."""
        if getattr(self.rules.get(notice.rule), "event", None) is not None:
            n = replace(notice, card=dict(card))        # an event's notice: in its rows and the history only
        else:
            current = self.store.get_alert(notice.fingerprint)
            if current is None or current[0].id != notice.id:
                return "gone"
            n = replace(current[0], card=dict(card))
        # it goes now, unless it also waits for a profile (which sends it, or its hold's end)
        waiting = self.store.rewrite(n, math.inf if self.profile_hold_s(n.rule) else self.store.clock())
        self.delivery.wake()
        return "attached" if waiting else "late"

    def release_held(self, notice_id: str) -> None:
        """Send the firing notice ``notice_id`` now, without the profile it was held for.
        (When alerts.db cannot be written, it goes at the end of its hold, as if no profile came.)"""
        try:
            self.store.release(notice_id, self.store.clock())
        except StoreError as e:
            log.warning("%s; notice %s goes when its hold for a profile ends", e, notice_id)
            return
        self.delivery.wake()

    # -- delivery and the record, for the daemon ------------------------------------------------

    def start(self) -> None:
        """Start delivering (one task per sink); needs the running event loop."""
        self.delivery.start()

    def wake(self) -> None:
        """Rows were committed to the outbox (after a :meth:`batch`): every sink looks now."""
        self.delivery.wake()

    async def drain(self, timeout: float) -> DrainResult:
        """Deliver what is due for at most ``timeout`` seconds (at shutdown); what is left
        stays in the outbox for the next start."""
        return await self.delivery.drain(timeout)

    async def close(self, successor: AlertManager | None = None) -> None:
        """Stop delivering and close the sinks; a notice not yet sent stays in the outbox.
        With a ``successor`` (a reload's manager), the sinks it goes on using stay open."""
        await self.delivery.close(keep=successor.sinks.values() if successor is not None else ())

    def delivery_stats(self) -> dict[str, Counters]:
        """What each sink sent, retried and dropped since start, by sink."""
        return self.delivery.stats()

    def outbox_pending(self) -> int:
        """Notices in the outbox not yet delivered."""
        return self.store.pending_count()

    def active_alerts(self) -> list[Notification]:
        """The alerts on record as firing (silenced ones too): their first notices."""
        return self.store.active_alerts()

    def history(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` recorded alert changes, oldest first."""
        return self.store.history(limit=limit)

    def prune(self) -> int:
        """Forget the history and delivered notices of more than a week ago; returns rows deleted."""
        return self.store.prune()

    def drop_orphans(self) -> dict[str, int]:
        """Drop the undelivered notices of sinks this manager does not have (removed from
        the config: they could never go); returns sink -> notices dropped."""
        return self.store.drop_orphans(self.sinks)

    def repeat_s(self, rule: str, sink: str) -> float:
        """How often a still-firing alert of ``rule`` is re-sent to ``sink`` (inf: never)."""
        r = self.rules.get(rule)
        every = r.repeat_s if r is not None and r.repeat_s is not None else self.sinks[sink].policy.repeat_s
        return every if every and every > 0 else NEVER

    # -- transitions -----------------------------------------------------------------------------

    def handle(self, alert: Alert) -> list[Notification]:
        """Take one transition from the rules engine; returns the notices it queued (once each)."""
        fp = fingerprint(alert.rule, alert.container.workload)
        r = self.rules.get(alert.rule)
        with self.store.tx():
            if alert.state == "firing" and getattr(r, "event", None) is not None:
                out = self._event(alert, fp)
            elif alert.state == "firing":
                out = self._firing(alert, fp)
            elif alert.state == "resolved":
                out = self._resolved(alert, fp)
            else:
                raise ValueError(f"alert state must be firing or resolved, not {alert.state!r}")
        return self._queued(out)

    def _queued(self, out: list[tuple[str, Notification]]) -> list[Notification]:
        if out:
            self.delivery.wake({s for s, _ in out})
        return list({n.id: n for _, n in out}.values())

    def _notice(self, alert: Alert, fp: str, state: str, starts_at: float) -> Notification:
        c = alert.container
        r = self.rules.get(alert.rule)
        labels = dict(r.labels) if r is not None and r.labels else {}
        labels.update(alert.labels)
        return Notification(
            id=notification_id(self.host, fp, state, starts_at), fingerprint=fp, ts=alert.ts, rule=alert.rule,
            state=state, severity=alert.severity, value=alert.value, summary=alert.summary, container=c.name,
            container_id=c.id, runtime=c.runtime, starts_at=starts_at, host=self.host,
            ends_at=alert.ts if state == "resolved" else None, description=r.description if r is not None else "",
            image=c.image, labels=labels, container_labels=dict(c.labels))

    def _firing(self, alert: Alert, fp: str) -> list[tuple[str, Notification]]:
        if self.store.get_alert(fp) is not None:
            return []
        n = self._notice(alert, fp, "firing", alert.ts)
        silence = self.silences.match(n.rule, n.container, n.container_id)
        self.store.put_alert(n, silenced=silence is not None)
        if silence is not None:
            self.store.add_history(n, state="silenced", silenced_by=silence.id)
            return []
        return self._send_first(n, alert.ts, self.hold_s(n.rule))

    def _event(self, alert: Alert, fp: str) -> list[tuple[str, Notification]]:
        """An event rule's alert (an OOM kill, an exit): one notice per event, never
        repeated, never resolved, and not held as firing."""
        n = self._notice(alert, fp, "firing", alert.ts)
        silence = self.silences.match(n.rule, n.container, n.container_id)
        if silence is not None:
            self.store.add_history(n, state="silenced", silenced_by=silence.id)
            return []
        sinks = self.route(n.rule, n.severity)
        self.store.add_history(n, sinks)
        due = self.store.clock() + self.card_hold_s      # it waits for its card too
        for s in sinks:
            self.store.enqueue(n, s, due + self.sinks[s].policy.group_wait_s)
        return [(s, n) for s in sinks]

    def reconcile(self, live: set[str], now: float) -> list[Notification]:
        """After a restart: resolve what the store says fires but the engine no longer
        holds (``live``: fingerprints pending or firing now); the container went
        away, or the condition passed, while cgwatch was down."""
        out: list[tuple[str, Notification]] = []
        with self.store.tx():
            for n in self.store.active_alerts():
                if n.fingerprint in live:
                    continue
                c = Container(id=n.container_id, name=n.container, runtime=n.runtime, image=n.image,
                              labels=dict(n.container_labels))
                gone = Alert(now, n.rule, c, "resolved", n.severity, n.value,
                             f"{n.summary} (no longer seen after a restart)", dict(n.labels))
                out += self._resolved(gone, n.fingerprint)
        return self._queued(out)

    def _send_first(self, n: Notification, now: float, hold: float = 0.0) -> list[tuple[str, Notification]]:
        sinks = self.route(n.rule, n.severity)
        self.store.add_history(n, sinks)
        due = self.store.clock() + hold
        for s in sinks:
            self.store.set_notified(n.fingerprint, s, 0, now + self.repeat_s(n.rule, s))
            self.store.enqueue(n, s, due + self.sinks[s].policy.group_wait_s)
        return [(s, n) for s in sinks]

    def _resolved(self, alert: Alert, fp: str) -> list[tuple[str, Notification]]:
        current = self.store.get_alert(fp)
        if current is None:
            return []
        firing, _ = current
        sinks = [s for s in self.store.delete_alert(fp) if s in self.sinks]
        n = self._notice(alert, fp, "resolved", firing.starts_at)
        self.store.add_history(n, sinks)
        due = self.store.clock()
        self.store.release(firing.id, due)    # a firing notice held for its profile goes first, without it
        for s in sinks:
            self.store.enqueue(n, s, due + self.sinks[s].policy.group_wait_s)
        return [(s, n) for s in sinks]

    # -- time ------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Notification]:
        """Queue the repeats due by ``now`` and the alerts whose silence ended; returns them."""
        out: list[tuple[str, Notification]] = []
        with self.store.tx():
            for n in self.store.silenced_alerts():
                if self.silences.match(n.rule, n.container, n.container_id) is None:
                    self.store.put_alert(n, silenced=False)
                    out += self._send_first(replace(n, ts=now), now)
            while True:
                due = self.store.due_repeats(now, limit=500)
                for sink, repeat, at, n, _ in due:
                    out += self._repeat(sink, repeat, at, n, now)
                if len(due) < 500:
                    break
        return self._queued(out)

    def _repeat(self, sink: str, repeat: int, at: float, n: Notification, now: float) -> list[tuple[str, Notification]]:
        every = self.repeat_s(n.rule, sink) if sink in self.sinks else NEVER
        nxt = at + every
        if nxt <= now:
            nxt = now + every
        self.store.set_notified(n.fingerprint, sink, repeat + 1, nxt)
        if sink not in self.sinks:
            return []
        rep = replace(n, id=notification_id(self.host, n.fingerprint, "firing", n.starts_at, repeat + 1), ts=at,
                      repeat=repeat + 1)
        silence = self.silences.match(n.rule, n.container, n.container_id)
        if silence is not None:
            self.store.add_history(rep, state="silenced", silenced_by=silence.id)
            return []
        self.store.add_history(rep, [sink])
        self.store.enqueue(rep, sink, self.store.clock() + self.sinks[sink].policy.group_wait_s)
        return [(sink, rep)]
