"""The delivery loop against real sinks: grouping, rate limit, retries, backoff, drops, logging."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from cgwatch.alerts.delivery import Delivery
from cgwatch.alerts.notification import SendResult
from cgwatch.alerts.state import AlertManager
from cgwatch.alerts.store import Store
from tests.alerts.conftest import HttpSink, ListSink, Receiver, box, fire, policy, resolve


def setup(tmp_path, sinks, **kw):
    store = Store.open(tmp_path)
    d = Delivery(store, sinks, rng=random.Random(7), backoff_base_s=kw.pop("base", 0.01), **kw)
    return AlertManager(store, sinks, {}, host="h", delivery=d)


def test_notices_within_group_wait_go_as_one_message(tmp_path):
    async def main():
        sink = ListSink(pol=policy(group_wait_s=0.2, max_group=12))
        m = setup(tmp_path, {"list": sink})
        for i in range(30):
            m.handle(fire("r", box(i)))
        res = await m.delivery.drain(5)
        await m.delivery.close()
        return sink, res

    sink, res = asyncio.run(main())
    assert [len(g) for g in sink.groups] == [12, 12, 6]
    assert res.pending == 0 and not res.timed_out and res.sent == 30
    assert res.counters["list"].messages == 3 and sink.closed


def test_rate_limit_holds_messages_in_the_outbox(tmp_path):
    async def main():
        sink = ListSink(pol=policy(max_group=5, rate_limit_per_min=6))  # burst 1, then one per 10 s
        m = setup(tmp_path, {"list": sink})
        for i in range(20):
            m.handle(fire("r", box(i)))
        res = await m.delivery.drain(0.5)
        await m.delivery.close()
        return sink, res, m.store.counts()

    sink, res, counts = asyncio.run(main())
    assert [len(g) for g in sink.groups] == [5]
    assert res.timed_out and res.pending == 15 and counts == {"sent": 5, "pending": 15}


def test_http_receiver_fails_then_recovers_and_errors_are_logged_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cgwatch.alerts.delivery")

    async def main():
        rx = await Receiver(answers=[503, 503, 503]).start()
        sink = HttpSink(rx.url)
        m = setup(tmp_path, {"http": sink})
        sent = [n.id for i in range(4) for n in m.handle(fire("r", box(i)))]
        res = await m.delivery.drain(5)
        await m.delivery.close()
        await rx.stop()
        return rx, res, sent

    rx, res, sent = asyncio.run(main())
    assert rx.ids == sent and rx.requests == 4
    c = res.counters["http"]
    assert (c.sent, c.retried, c.failed, c.messages) == (4, 12, 0, 1)
    msgs = [r.getMessage() for r in caplog.records if r.name == "cgwatch.alerts.delivery"]
    assert msgs == ["sink http: HTTP 503 (will retry)", "sink http: delivering again"]


def test_error_logged_once_per_change_of_text(tmp_path, caplog):
    async def main():
        sink = ListSink(script=[SendResult.retry_later("a"), SendResult.retry_later("a"),
                                SendResult.retry_later("b"), SendResult.retry_later("b")])
        m = setup(tmp_path, {"list": sink})
        m.handle(fire("r", box(1)))
        await m.delivery.drain(5)
        await m.delivery.close()
        return sink

    sink = asyncio.run(main())
    assert len(sink.ids) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["sink list: a (will retry)", "sink list: b (will retry)"]


def test_retry_after_is_honoured(tmp_path):
    async def main():
        rx = await Receiver(answers=[(429, 0.4)]).start()
        m = setup(tmp_path, {"http": HttpSink(rx.url)})
        m.handle(fire("r", box(1)))
        t0 = time.monotonic()
        first = await m.delivery.drain(0.2)  # returns at once: the retry is due after the deadline
        waited_at_first = (first.pending, first.timed_out)
        while not rx.received and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - t0
        await m.delivery.close()
        await rx.stop()
        return rx, waited_at_first, elapsed

    rx, pending, elapsed = asyncio.run(main())
    assert pending == (1, False)   # safely in the outbox, in backoff: drain did not wait for it
    assert len(rx.ids) == 1 and rx.requests == 2
    assert elapsed >= 0.4          # not before the receiver said (how much later is the machine's business)


def test_hanging_receiver_times_out_and_is_retried(tmp_path):
    async def main():
        rx = await Receiver(answers=["hang"]).start()
        m = setup(tmp_path, {"http": HttpSink(rx.url, timeout_s=0.2)})
        [n] = m.handle(fire("r", box(1)))
        res = await m.delivery.drain(5)
        await m.delivery.close()
        await rx.stop()
        return rx, res, n

    rx, res, n = asyncio.run(main())
    assert rx.ids == [n.id] and res.counters["http"].retried == 1 and res.pending == 0


def test_failed_is_recorded_and_not_retried(tmp_path):
    async def main():
        rx = await Receiver(answers=[400]).start()
        m = setup(tmp_path, {"http": HttpSink(rx.url)})
        m.handle(fire("r", box(1)))
        m.handle(fire("r", box(2)))
        res = await m.delivery.drain(2)
        await asyncio.sleep(0.1)
        await m.delivery.close()
        await rx.stop()
        return rx, res, m.store.counts()

    rx, res, counts = asyncio.run(main())
    assert rx.requests == 1 and rx.received == []
    assert res.counters["http"].failed == 2 and counts == {"failed": 2}


def test_undeliverable_notices_are_dropped_after_max_age(tmp_path):
    async def main():
        sink = ListSink(pol=policy(max_age_s=0.3), script=[SendResult.retry_later("down")] * 1000)
        m = setup(tmp_path, {"list": sink}, base=0.02, backoff_cap_s=0.05)
        m.handle(fire("r", box(1)))
        m.handle(fire("r", box(2)))
        m.delivery.start()
        t0 = time.monotonic()
        while m.store.counts().get("dropped", 0) < 2 and time.monotonic() - t0 < 3:
            await asyncio.sleep(0.02)
        await m.delivery.close()
        return sink, m

    sink, m = asyncio.run(main())
    assert m.store.counts() == {"dropped": 2}
    c = m.delivery.stats()["list"]
    assert c.dropped == 2 and c.sent == 0 and c.retried >= 2


def test_sink_answers_again_after_resolve_in_order_and_run_wakes_without_polling(tmp_path):
    """``run`` sleeps until work arrives: idle, it does not look at the outbox over and over."""
    async def main():
        sink = ListSink()
        m = setup(tmp_path, {"list": sink})
        calls = 0
        real = m.store.next_due

        def counting(name):
            nonlocal calls
            calls += 1
            return real(name)

        m.store.next_due = counting
        task = asyncio.create_task(m.delivery.run())
        await asyncio.sleep(0.3)
        idle_calls = calls
        m.handle(fire("r", box(1), ts=1.0))
        await asyncio.sleep(0.2)
        m.handle(resolve("r", box(1), ts=2.0))
        await asyncio.sleep(0.2)
        await m.delivery.close()
        await task
        return sink, idle_calls

    sink, idle_calls = asyncio.run(main())
    assert idle_calls <= 2
    assert [[n.state for n in g] for g in sink.groups] == [["firing"], ["resolved"]]


def test_a_hanging_sink_does_not_hold_up_another(tmp_path):
    async def main():
        rx = await Receiver(answers=["hang"]).start()
        fast = ListSink("fast")
        m = setup(tmp_path, {"slow": HttpSink(rx.url, "slow", timeout_s=600), "fast": fast})
        m.handle(fire("r", box(1)))
        m.delivery.start()
        t0 = time.monotonic()
        # wait for the fast sink, however slow the machine; the bound only stops a broken run,
        # and stays under the 600 s the slow sink's send hangs for
        while not fast.groups and time.monotonic() - t0 < 300:
            await asyncio.sleep(0.01)
        await m.delivery.close()   # the hanging send is cancelled; its row stays pending
        await rx.stop()
        return fast.groups, m.store.counts("slow")

    groups, slow = asyncio.run(main())
    assert len(groups) == 1 and slow == {"pending": 1}   # the fast one got it while the slow one hung


def test_a_days_retry_after_is_capped_and_the_row_stays_due_soon(tmp_path):
    """One 429 with Retry-After: 86400 must not park the notice for a day (on disk too)."""
    from cgwatch.alerts.delivery import RETRY_AFTER_CAP_S

    async def main():
        sink = ListSink(script=[SendResult.retry_later("HTTP 429", 86400.0)])
        m = setup(tmp_path, {"list": sink})
        m.handle(fire("r", box(1)))
        result = await m.delivery.drain(0.5)
        due = m.store.next_due("list")
        await m.delivery.close()
        return result, due, m.store.clock()

    result, (due, attempts), now = asyncio.run(main())
    assert result.pending == 1 and attempts == 1
    assert due <= now + RETRY_AFTER_CAP_S


def test_a_resolution_never_overtakes_its_backed_off_firing_notice(tmp_path):
    """The firing notice fails and backs off; the resolution queued meanwhile is due first,
    but the receiver must see firing, then resolved, also after a restart forgets the backoff."""
    async def main():
        sink = ListSink(script=[SendResult.retry_later("HTTP 503", 1.0)])
        m = setup(tmp_path, {"list": sink})
        m.handle(fire("r", box(1), ts=1.0))
        m.handle(fire("r", box(2), ts=1.0))
        await m.delivery.drain(0.2)                   # both sent once, both backed off 1 s
        m.handle(resolve("r", box(1), ts=2.0))        # due now, behind its firing notice
        [(firing_due,)] = m.store.conn.execute("SELECT due FROM outbox WHERE seq = 1").fetchall()
        early = m.store.take("list", firing_due - 1e-3, 10)
        await m.delivery.close(close_sinks=False)
        restarted = Delivery(m.store, {"list": sink})  # a new process: no backoff in memory
        result = await restarted.drain(5.0)
        await restarted.close()
        return sink, early, result

    sink, early, result = asyncio.run(main())
    assert early == []
    assert result.pending == 0
    sent = [(n.fingerprint[-4:], n.state) for g in sink.groups for n in g]
    assert sent == [("0001", "firing"), ("0002", "firing"), ("0001", "resolved")]


def test_an_outbox_of_schema_1_is_migrated_and_keeps_its_order(tmp_path):
    import sqlite3

    from cgwatch.alerts.store import SCHEMA_VERSION

    with Store.open(tmp_path) as s:
        m = AlertManager(s, {}, {}, host="h")
        n1 = m._notice(fire("r", box(1)), "r/0001", "firing", 100.0)
        n2 = m._notice(resolve("r", box(1)), "r/0001", "resolved", 100.0)
        s.enqueue(n1, "hook", 50.0)
        s.enqueue(n2, "hook", 10.0)
    conn = sqlite3.connect(tmp_path / "alerts.db")   # as cgwatch with schema 1 left it
    conn.executescript("DROP INDEX outbox_chain; ALTER TABLE outbox DROP COLUMN fingerprint; PRAGMA user_version=1;")
    conn.close()
    with Store.open(tmp_path) as s:
        assert s.schema_version() == SCHEMA_VERSION == 2
        assert s.next_due("hook") == (50.0, 0)
        assert s.take("hook", 20.0, 10) == []
        assert [r.notification.state for r in s.take("hook", 50.0, 10)] == ["firing", "resolved"]
