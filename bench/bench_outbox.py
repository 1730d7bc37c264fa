#!/usr/bin/env python3
"""Notifications per second through the SQLite outbox to a loopback HTTP receiver.

Three runs against the same aiohttp receiver on 127.0.0.1, in one process:

* baseline: one plain ``POST`` per notification, no outbox (the least any sink pays);
* outbox, max_group=1: AlertManager.handle → SQLite → Delivery → one POST per notification;
* outbox, max_group=100: the same, grouped (what a storm looks like).

Prints notifications/s for each and the ratio to the baseline.

    .venv/bin/python bench/bench_outbox.py [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from cgwatch.alerts import AlertManager, Notification, SendResult, SinkPolicy, Store
from cgwatch.model import Alert, Container


class PostSink:
    def __init__(self, url: str, session: aiohttp.ClientSession, policy: SinkPolicy) -> None:
        self.name, self.url, self.session, self.policy = "http", url, session, policy

    async def send(self, group: Sequence[Notification]) -> SendResult:
        async with self.session.post(self.url, json=[n.to_json() for n in group]) as resp:
            await resp.read()
            return SendResult.delivered() if resp.status < 300 else SendResult.retry_later(f"HTTP {resp.status}")

    async def close(self) -> None:
        pass


def alerts(n: int) -> list[Alert]:
    boxes = [Container(id=f"{i:064x}", name=f"web-{i}", runtime="docker") for i in range(n)]
    return [Alert(1000.0, "cpu-hog", c, "firing", "warning", 0.97, f"{c.name} used 0.97 cores") for c in boxes]


async def baseline(url: str, session: aiohttp.ClientSession, items: list[Alert]) -> float:
    t0 = time.perf_counter()
    for a in items:
        body = [{"ts": a.ts, "rule": a.rule, "container": a.container.name, "state": a.state,
                 "severity": a.severity, "value": a.value, "summary": a.summary, "id": a.container.id}]
        async with session.post(url, json=body) as resp:
            await resp.read()
    return len(items) / (time.perf_counter() - t0)


async def through_outbox(url: str, session: aiohttp.ClientSession, items: list[Alert], max_group: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        store = Store.open(d)
        pol = SinkPolicy(group_wait_s=0.0, max_group=max_group, rate_limit_per_min=1e9)
        m = AlertManager(store, {"http": PostSink(url, session, pol)}, {}, host="bench")
        m.delivery.start()
        t0 = time.perf_counter()
        for a in items:
            m.handle(a)
            await asyncio.sleep(0)  # live: alerts arrive one by one while delivery runs
        res = await m.delivery.drain(120)
        rate = len(items) / (time.perf_counter() - t0)
        await m.delivery.close()
        store.close()
        assert res.sent == len(items) and res.pending == 0, res
        return rate


async def main(n: int) -> None:
    got = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal got
        got += len(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    items = alerts(n)
    async with aiohttp.ClientSession() as session:
        await baseline(url, session, items[:100])  # warm up the connection pool
        base = await baseline(url, session, items)
        one = await through_outbox(url, session, items, 1)
        grouped = await through_outbox(url, session, items, 100)
    await runner.cleanup()
    print(f"{n} notifications, loopback HTTP receiver ({got} received in all)")
    print(f"baseline plain POST per notification : {base:10.0f} notifications/s")
    print(f"outbox, max_group=1 (POST per notice): {one:10.0f} notifications/s  ratio {one / base:.2f}")
    print(f"outbox, max_group=100                : {grouped:10.0f} notifications/s  ratio {grouped / base:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    asyncio.run(main(ap.parse_args().n))
