"""The delivery loop: outbox rows → groups → ``sink.send`` → sent, retried, failed or dropped.

One task per sink, so a slow or hanging receiver never holds up another.
Each task sleeps until its sink's next due time (group wait, backoff, rate
limit) or until :meth:`Delivery.wake` says new rows arrived; it never polls.
At most ``max_group`` notifications of a sink are in memory at once; the rest
wait in SQLite. Delivery is at least once: a row stays ``pending`` until its
sink says delivered, so a crash mid-send resends it after a restart, with the
same notification id.

A ``retry`` answer backs the sink off (full jitter, or the receiver's
``retry_after``, believed up to :data:`RETRY_AFTER_CAP_S`: one ``429`` must not park a
sink for a day); ``failed`` marks the rows failed; rows older than the sink's
``max_age_s`` are marked dropped. Each outcome is counted per sink
(:attr:`Delivery.counters`). A sink's error is logged once per change of its
text, and once more when the sink recovers (Alertmanager's retry stage).

Examples
--------
>>> import asyncio, tempfile
>>> from cgwatch.alerts.store import Store
>>> async def main():
...     d = Delivery(Store.open(tempfile.mkdtemp()), {})
...     result = await d.drain(1.0)
...     await d.close()
...     return result.pending, result.timed_out
>>> asyncio.run(main())
(0, False)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from .group import TokenBucket, full_jitter
from .notification import SendResult, Sink
from .store import Store, StoreError

log = logging.getLogger(__name__)

#: the longest a receiver's ``Retry-After`` holds a sink back (docs/alerts.md)
RETRY_AFTER_CAP_S = 60.0
#: how soon a sink's loop tries alerts.db again after it could not be written
STORE_RETRY_S = 1.0


@dataclass(slots=True)
class Counters:
    """What one sink did since start (notifications, except ``messages``)."""

    sent: int = 0
    messages: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass(slots=True, frozen=True)
class DrainResult:
    """What :meth:`Delivery.drain` left: rows still pending (in the outbox) and the counters."""

    pending: int
    timed_out: bool
    counters: Mapping[str, Counters]

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.counters.values())


@dataclass(slots=True)
class _SinkState:
    bucket: TokenBucket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    phase: str = "starting"
    """starting, idle (nothing pending), backoff, waiting (group wait / rate limit), sending."""
    failures: int = 0
    blocked_until: float = 0.0
    last_error: str = ""
    peak_batch: int = 0
    until: float = 0.0
    """Wall-clock time the current wait ends."""
    drop_check_at: float = 0.0
    """When to look for rows older than max_age_s next (at most a few times a second)."""
    delivered: list[int] = field(default_factory=list)
    """Rows the receiver took whose note of it in the outbox failed (disk full): noted first
    next time, so that they are not sent again while the outbox cannot be written."""


class Delivery:
    """Sends what the outbox holds to ``sinks``; see the module docstring.

    ``clock`` is wall-clock Unix seconds (the store's by default); ``rng`` draws
    the backoff jitter (seed it in tests); ``send_timeout_s`` bounds one
    ``send`` call in case a sink's own timeout fails to.
    """

    def __init__(self, store: Store, sinks: Mapping[str, Sink], *, clock: Callable[[], float] | None = None,
                 rng: random.Random | None = None, backoff_base_s: float = 1.0, backoff_cap_s: float = 300.0,
                 send_timeout_s: float = 120.0) -> None:
        self.store = store
        self.sinks = dict(sinks)
        self.clock = clock or store.clock
        self.rng = rng or random.Random()
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.send_timeout_s = send_timeout_s
        now = self.clock()
        self._state = {name: _SinkState(TokenBucket(s.policy.rate_limit_per_min, now=now))
                       for name, s in self.sinks.items()}
        self.counters: dict[str, Counters] = {name: Counters() for name in self.sinks}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress = asyncio.Event()
        self._closed = False

    # -- public ----------------------------------------------------------------------------------

    def wake(self, sinks: Iterable[str] | None = None) -> None:
        """New rows for ``sinks`` (None: all): look at the outbox again now."""
        for name in self.sinks if sinks is None else sinks:
            st = self._state.get(name)
            if st is not None:
                st.wake.set()

    def start(self) -> None:
        """Start the per-sink tasks (idempotent); needs a running event loop."""
        if self._closed:
            raise RuntimeError("Delivery is closed")
        for name in self.sinks:
            if name not in self._tasks:
                self._tasks[name] = asyncio.create_task(self._sink_loop(name), name=f"cgwatch-deliver-{name}")

    async def run(self) -> None:
        """Deliver until :meth:`close` (or cancellation)."""
        self.start()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks.values())

    async def drain(self, timeout: float) -> DrainResult:
        """Deliver until nothing pending is due, except rows whose backoff ends after ``timeout``
        seconds, or until ``timeout`` seconds pass (then ``timed_out``).

        Rows still pending afterwards are safe in the outbox and go out after a restart.
        """
        self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wall_deadline = self.clock() + timeout
        timed_out = False
        while not self._settled(wall_deadline):
            remaining = deadline - loop.time()
            if remaining <= 0:
                timed_out = True
                break
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.5))
        return DrainResult(self.store.counts().get("pending", 0), timed_out, self.stats())

    async def close(self, close_sinks: bool = True, keep: Iterable[Sink] = ()) -> None:
        """Stop the tasks (a send in flight stays pending in the outbox) and close the sinks,
        except those in ``keep`` (a reload's new delivery goes on using them)."""
        self._closed = True
        for task in self._tasks.values():
            task.cancel()
        self.wake()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if close_sinks:
            kept = {id(s) for s in keep}
            for sink in self.sinks.values():
                if id(sink) in kept:
                    continue
                try:
                    await sink.close()
                except Exception as e:  # a sink that fails to close must not stop the others
                    log.warning("sink %s: close failed: %s", sink.name, e)

    def stats(self) -> dict[str, Counters]:
        """A copy of the counters, by sink."""
        return {name: Counters(**asdict(c)) for name, c in self.counters.items()}

    def peak_batch(self) -> int:
        """The most notifications held in memory for one send so far."""
        return max((st.peak_batch for st in self._state.values()), default=0)

    # -- the loop --------------------------------------------------------------------------------

    def _settled(self, deadline: float) -> bool:
        return all(not st.wake.is_set() and (st.phase == "idle" or (st.phase == "backoff" and st.until > deadline))
                   for st in self._state.values())

    def _set_phase(self, st: _SinkState, phase: str) -> None:
        st.phase = phase
        self._progress.set()

    async def _sleep(self, st: _SinkState, timeout: float | None) -> None:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation, and a
        # task that ignores cancel() hangs asyncio.run's cleanup after any error
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await st.wake.wait()
        st.wake.clear()

    async def _sink_loop(self, name: str) -> None:
        st = self._state[name]
        store_error = ""
        while not self._closed:
            try:
                await self._sink_step(name)
            except StoreError as e:   # alerts.db cannot be written (full): the rows wait, nothing is lost
                if str(e) != store_error:
                    log.error("sink %s: %s; delivery waits until it can be written", name, e)
                    store_error = str(e)
                st.until = self.clock() + STORE_RETRY_S
                self._set_phase(st, "backoff")
                await self._sleep(st, STORE_RETRY_S)
                continue
            if store_error:
                log.info("sink %s: alerts.db is written again, delivering", name)
                store_error = ""

    async def _sink_step(self, name: str) -> None:
        """One turn of a sink's loop: drop what expired, wait for the next due row, send a group."""
        sink, st, policy, count = self.sinks[name], self._state[name], self.sinks[name].policy, self.counters[name]
        st.wake.clear()
        if st.delivered:
            self.store.mark_sent(st.delivered)
            st.delivered = []
        now = self.clock()
        if now >= st.drop_check_at:
            st.drop_check_at = now + min(1.0, policy.max_age_s / 10)
            dropped = self.store.drop_expired(name, policy.max_age_s)
            if dropped:
                count.dropped += dropped
                log.warning("sink %s: dropped %d notification(s) older than %gs", name, dropped,
                            policy.max_age_s)
        head = self.store.next_due(name)
        if head is None:
            self._set_phase(st, "idle")
            await self._sleep(st, None)
            return
        due, attempts = head
        at = max(due, st.blocked_until, st.bucket.ready_at(now))
        if at > now:
            backoff = st.blocked_until >= at or (attempts > 0 and due >= at)
            st.until = at
            self._set_phase(st, "backoff" if backoff else "waiting")
            await self._sleep(st, min(at, st.drop_check_at) - now)
            return
        rows = self.store.take(name, now + policy.group_wait_s, policy.max_group)
        if not rows:
            return
        st.bucket.take(now)
        st.peak_batch = max(st.peak_batch, len(rows))
        self._set_phase(st, "sending")
        result = await self._send(sink, rows)
        seqs = [r.seq for r in rows]
        if result.ok:
            count.sent += len(rows)
            count.messages += 1
            st.delivered = seqs
            self.store.mark_sent(seqs)
            st.delivered = []
            if st.failures or st.last_error:
                log.info("sink %s: delivering again", name)
                self.store.expedite(name)
            st.failures, st.blocked_until, st.last_error = 0, 0.0, ""
            return
        if result.error != st.last_error:
            log.warning("sink %s: %s%s", name, result.error or "send failed",
                        " (will retry)" if result.retry else " (not retried)")
            st.last_error = result.error
        if not result.retry:
            self.store.mark_failed(seqs, result.error)
            count.failed += len(rows)
            return
        st.failures += 1
        delay = min(result.retry_after, RETRY_AFTER_CAP_S) if result.retry_after is not None else full_jitter(
            st.failures, base=self.backoff_base_s, cap=self.backoff_cap_s, rng=self.rng)
        st.blocked_until = self.clock() + max(0.0, delay)
        self.store.mark_retry(seqs, st.blocked_until, result.error)
        count.retried += len(rows)

    async def _send(self, sink: Sink, rows: list) -> SendResult:
        group = [r.notification for r in rows]
        try:
            async with asyncio.timeout(self.send_timeout_s):
                return await sink.send(group)
        except TimeoutError:
            return SendResult.retry_later(f"no answer within {self.send_timeout_s:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a sink bug must not kill the loop; its rows stay queued
            return SendResult.retry_later(f"{type(e).__name__}: {e}")
