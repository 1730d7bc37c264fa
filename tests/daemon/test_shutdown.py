"""Shutdown steps have budgets: one that hangs is logged and left, the rest still run."""

from __future__ import annotations

import asyncio
import logging

from cgwatch.daemon.host import shutdown_step


def test_a_hanging_step_is_left_after_its_budget_and_a_failing_one_is_logged(caplog):
    finished = []

    async def hang() -> None:
        await asyncio.sleep(60)
        finished.append("hang")

    async def boom() -> None:
        raise RuntimeError("disk on fire")

    async def fine() -> int:
        return 7

    async def body() -> list[object]:
        return [await shutdown_step("hanging", hang(), 0.2), await shutdown_step("failing", boom(), 1.0),
                await shutdown_step("fine", fine(), 1.0)]

    caplog.set_level(logging.WARNING, "cgwatch")
    assert asyncio.run(body()) == [None, None, 7]
    assert finished == []           # left after its budget, not waited for
    assert [r.getMessage() for r in caplog.records] == [
        "shutdown: hanging took more than 0.2s; going on without it", "shutdown: failing failed: disk on fire"]


def test_a_notify_reader_that_stops_reading_never_blocks_the_daemon(tmp_path):
    """systemd always reads; another supervisor may not. The socket's queue fills
    (net.unix.max_dgram_qlen) and further messages are dropped, not waited on."""
    import socket

    from cgwatch.daemon.sdnotify import Notifier

    path = tmp_path / "notify.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))
    n = Notifier(str(path))
    sent = sum(n.send(STATUS=f"tick {i}") for i in range(500))   # a blocking send would hang here
    assert 0 < sent < 500 and n.dropped == 500 - sent
    assert reader.recv(100) == b"STATUS=tick 0"
    n.close()
    reader.close()
