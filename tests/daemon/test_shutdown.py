"""Shutdown steps have budgets: one that hangs is logged and left, the rest still run."""

from __future__ import annotations

import asyncio
import logging
import time

from cgwatch.daemon.service import _step


def test_a_hanging_step_is_left_after_its_budget_and_a_failing_one_is_logged(caplog):
    async def hang() -> None:
        await asyncio.sleep(60)

    async def boom() -> None:
        raise RuntimeError("disk on fire")

    async def fine() -> int:
        return 7

    async def body() -> list[object]:
        return [await _step("hanging", hang(), 0.2), await _step("failing", boom(), 1.0),
                await _step("fine", fine(), 1.0)]

    caplog.set_level(logging.WARNING, "cgwatch")
    t0 = time.monotonic()
    assert asyncio.run(body()) == [None, None, 7]
    assert time.monotonic() - t0 < 2.0
    assert [r.getMessage() for r in caplog.records] == [
        "shutdown: hanging took more than 0.2s; going on without it", "shutdown: failing failed: disk on fire"]
