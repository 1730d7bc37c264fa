"""Alert delivery: lifecycle, grouping, silences, the SQLite outbox and retries.

The rules engine emits :class:`cgwatch.model.Alert` transitions (``firing`` /
``resolved``); this package turns them into :class:`Notification` groups that
reach every configured :class:`Sink` at least once, across outages and restarts.

Public API::

    store = Store.open(state_dir)                 # <state_dir>/alerts.db (SQLite, WAL)
    manager = AlertManager(store, sinks, rules, host="node-1")
    manager.handle(alert)          # one engine transition -> notices queued in the outbox
    manager.tick(now)              # repeats due by `now` (sample time in replay, clock live)
    await manager.delivery.run()   # live: deliver until close()
    await manager.delivery.drain(timeout)   # replay/exit: deliver what is due, return counts
    await manager.delivery.close()          # stop; undelivered rows stay in the outbox
    manager.delivery.stats()       # {sink: Counters(sent, messages, retried, failed, dropped)}

    Silences(state_dir).add(rule="cpu-*", container=None, duration_s=3600, comment=..., created_by=...)
    Silences(state_dir).list(include_expired=False); Silences(state_dir).expire(silence_id)

Modules: ``state`` (lifecycle, routing, repeats), ``group`` (token bucket,
backoff), ``silence``, ``store`` (SQLite), ``delivery`` (the async loop),
``notification`` (what sinks see).

>>> sorted(__all__)[:3]
['AlertManager', 'Counters', 'Delivery']
"""

from __future__ import annotations

from .delivery import Counters, Delivery, DrainResult
from .notification import Notification, SendResult, Sink, SinkPolicy
from .silence import Silence, Silences
from .state import AlertManager, fingerprint, notification_id
from .store import Store, StoreError

__all__ = ["AlertManager", "Counters", "Delivery", "DrainResult", "Notification", "SendResult", "Silence",
           "Silences", "Sink", "SinkPolicy", "Store", "StoreError", "fingerprint", "notification_id"]
