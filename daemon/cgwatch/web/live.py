"""Live updates for the dashboard: one :class:`Hub` broadcasting Server-Sent Events.

The daemon calls :meth:`Hub.update` once per interval with that interval's
Samples, Events and alert changes. The Hub records them in its
:class:`~cgwatch.web.history.History`, and, only when a browser is connected,
encodes each message once and appends it to every client's bounded queue: a
slow client loses its oldest messages (counted in :attr:`Hub.dropped`), the
daemon never waits for it. Message kinds: ``tick`` (the overview rows, built by
the function the web app attaches), ``event`` (a notable container event) and
``alert`` (an alert state change).

Examples
--------
>>> hub = Hub(History())
>>> hub.attach(lambda now: {"ts": now, "containers": []})
>>> hub.update(10.0, [], [], [])            # nobody listening: nothing is built
>>> client = hub.subscribe()
>>> hub.publish_tick(11.0)
>>> client.pop()
b'event: tick\\ndata: {"ts":11.0,"containers":[]}\\n\\n'
>>> hub.unsubscribe(client); hub.clients
0
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..model import Alert, Event, Sample
from .history import History

__all__ = ["Client", "Hub", "sse_frame"]

TickBuilder = Callable[[float], dict[str, Any]]


def sse_frame(kind: str, data: Any) -> bytes:
    """One SSE message: ``event:`` then ``data:`` as one line of JSON (no NaN).

    >>> sse_frame("alert", {"rule": "cpu-hog", "value": float("nan")})
    b'event: alert\\ndata: {"rule":"cpu-hog","value":null}\\n\\n'
    """
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    if "NaN" in text or "Infinity" in text:
        text = json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False, default=str)
    return f"event: {kind}\ndata: {text}\n\n".encode()


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class Client:
    """One connected browser: a bounded queue of encoded messages and a wake-up flag."""

    def __init__(self, size: int) -> None:
        self.queue: deque[bytes] = deque(maxlen=size)
        self.wake = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; False when the oldest queued message had to go to make room."""
        full = len(self.queue) == self.queue.maxlen
        if full:
            self.dropped += 1
        self.queue.append(frame)
        self.wake.set()
        return not full

    def pop(self) -> bytes | None:
        """The oldest queued message, or None."""
        return self.queue.popleft() if self.queue else None

    async def next(self, timeout: float) -> bytes | None:
        """The next message, waiting up to ``timeout`` seconds; None on timeout or when closed."""
        if not self.queue and not self.closed:
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                return None
        return None if self.closed else self.pop()


class Hub:
    """SSE broadcast with one bounded queue per client; publishing to no one costs nothing.

    >>> hub = Hub(History(), queue_size=2)
    >>> c = hub.subscribe()
    >>> for i in range(3):
    ...     hub.publish("event", {"n": i})
    >>> hub.dropped, c.pop()
    (1, b'event: event\\ndata: {"n":1}\\n\\n')
    """

    def __init__(self, history: History, *, queue_size: int = 64, min_tick_s: float = 0.9) -> None:
        self.history = history
        self.queue_size = queue_size
        self.min_tick_s = min_tick_s
        self.dropped = 0
        self.published = 0
        self._clients: set[Client] = set()
        self._builder: TickBuilder | None = None
        self._last_tick = float("-inf")

    @property
    def clients(self) -> int:
        """Browsers connected now."""
        return len(self._clients)

    def attach(self, builder: TickBuilder) -> None:
        """Build ``tick`` messages with ``builder(now)`` (the web app attaches its overview rows)."""
        self._builder = builder

    def snapshot(self, now: float) -> bytes | None:
        """A ``tick`` frame built now (a new client's first message), or None with no builder."""
        return None if self._builder is None else sse_frame("tick", self._builder(now))

    def subscribe(self) -> Client:
        """A new client queue; :meth:`unsubscribe` it when the connection ends."""
        client = Client(self.queue_size)
        self._clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        """Forget a client (idempotent)."""
        self._clients.discard(client)

    def close(self) -> None:
        """End every client's stream (on shutdown)."""
        for client in self._clients:
            client.closed = True
            client.wake.set()
        self._clients.clear()

    def publish(self, kind: str, data: Any) -> None:
        """Send one message to every client (encoded once); nothing when no one listens."""
        if not self._clients:
            return
        frame = sse_frame(kind, data)
        self.published += 1
        for client in self._clients:
            if not client.put(frame):
                self.dropped += 1

    def publish_tick(self, now: float) -> None:
        """Send the overview rows, at most once per ``min_tick_s``; nothing when no one listens."""
        if not self._clients or self._builder is None or now - self._last_tick < self.min_tick_s:
            return
        self._last_tick = now
        self.publish("tick", self._builder(now))

    def update(self, now: float, samples: Sequence[Sample], events: Sequence[Event],
               alerts: Sequence[Alert], derived: Sequence[Sample] = ()) -> None:
        """The daemon's one call per interval: record the interval in the History (its samples, and
        ``derived`` ones: what the view makes of its verdicts), then push its notable events, its
        alert changes and a ``tick`` to connected browsers.

        >>> from cgwatch.model import Container
        >>> web = Container(id="4f1c", name="web-1", runtime="docker")
        >>> hub = Hub(History())
        >>> hub.update(1.0, [Sample(1.0, web, "cpu.usage_cores", 0.5)], [Event(1.0, web, "oom_kill")], [])
        >>> hub.history.metrics("4f1c"), len(hub.history.recent_events("4f1c"))
        (['cpu.usage_cores'], 1)
        """
        h = self.history
        if samples:
            h.add_many(samples)
        if derived:
            h.add_many(derived)
        kept = h.events(events) if events else []
        changes = [h.alert_change(a) for a in alerts]
        h.expire(now)
        if not self._clients:
            return
        for entry in kept:
            self.publish("event", entry)
        for entry in changes:
            self.publish("alert", entry)
        self.publish_tick(now)
