"""Real HTTP receivers on 127.0.0.1 for the sink tests, and the one status table they share.

:class:`Receiver` runs an aiohttp server in its own thread and event loop, so
a test drives a sink with plain ``asyncio.run``. It records every request
(path, headers, body bytes) and answers as told: a status (with headers and a
body), a hang past the client's timeout, a connection closed without an
answer, or bytes that are not HTTP at all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from cgwatch.alerts.notification import Notification, SendResult
from cgwatch.sinks.base import BaseSink

#: (status, Retry-After header or None, expected: "ok" | "retry" | "failed", expected retry_after)
#: as Alertmanager's notify/test.RetryTests: every HTTP sink must agree with it.
STATUS_TABLE = [
    (200, None, "ok", None),
    (202, None, "ok", None),
    (400, None, "failed", None),
    (401, None, "failed", None),
    (403, None, "failed", None),
    (404, None, "failed", None),
    (408, None, "retry", None),
    (413, None, "failed", None),
    (429, "7", "retry", 7.0),
    (429, None, "retry", None),
    (500, None, "retry", None),
    (501, None, "failed", None),
    (502, None, "retry", None),
    (503, "Wed, 21 Oct 2015 07:28:00 GMT", "retry", 0.0),
    (504, None, "retry", None),
]


def outcome(r: SendResult) -> str:
    """ok / retry / failed."""
    return "ok" if r.ok else "retry" if r.retry else "failed"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A live HTTP server; set ``mode`` / ``status`` / ``headers`` / ``body`` to change its answer."""

    mode: str = "answer"            # answer | hang | drop | garbage
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    raw_port: int = 0
    loop: asyncio.AbstractEventLoop | None = None

    def url(self, path: str = "/hook/T000/SECRETPATH") -> str:
        """The server's URL; drop/garbage modes use a raw TCP listener instead."""
        port = self.raw_port if self.mode in ("drop", "garbage") else self.port
        return f"http://127.0.0.1:{port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Request(request.path, dict(request.headers), await request.read()))
        if self.mode == "hang":
            await asyncio.sleep(30)
        return web.Response(status=self.status, headers=self.headers, body=self.body)

    async def _raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                           if h.lower().startswith(b"content-length:")), 0)
            body = await reader.readexactly(length)
            self.requests.append(Request("raw", {}, body))
            if self.mode == "garbage":
                writer.write(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


def _serve(rx: Receiver, ready: threading.Event, stop: asyncio.Event | None = None) -> None:
    loop = asyncio.new_event_loop()
    rx.loop = loop
    asyncio.set_event_loop(loop)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rx._handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    rx.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    raw = loop.run_until_complete(asyncio.start_server(rx._raw, "127.0.0.1", 0))
    rx.raw_port = raw.sockets[0].getsockname()[1]
    ready.set()
    loop.run_forever()
    raw.close()
    loop.run_until_complete(raw.wait_closed())
    loop.run_until_complete(runner.cleanup())
    loop.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A Receiver listening on random ports of 127.0.0.1, stopped after the test."""
    rx = Receiver()
    ready = threading.Event()
    t = threading.Thread(target=_serve, args=(rx, ready), daemon=True)
    t.start()
    assert ready.wait(10), "test HTTP server did not start"
    try:
        yield rx
    finally:
        assert rx.loop is not None
        rx.loop.call_soon_threadsafe(rx.loop.stop)
        t.join(10)


def send(sink: BaseSink, group: Sequence[Notification]) -> SendResult:
    """One send in a fresh event loop, the sink closed afterwards."""

    async def go() -> SendResult:
        try:
            return await sink.send(group)
        finally:
            await sink.close()

    return asyncio.run(go())


def note(i: int = 0, **kw: Any) -> Notification:
    """A firing warning about container web-<i>; keyword arguments override fields."""
    base: dict[str, Any] = dict(
        id=f"n{i}-{id(kw)}", fingerprint=f"cpu-hog/c{i}", ts=1732492830.0, rule="cpu-hog", state="firing",
        severity="warning", value=0.97, summary=f"web-{i} used 0.97 cores for 30s", container=f"web-{i}",
        container_id=f"{i:064x}", runtime="docker", starts_at=1732492800.0, host="node-1",
        labels={"team": "web"})
    base.update(kw)
    return Notification(**base)
