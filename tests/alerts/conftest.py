"""Small real sinks and a real loopback HTTP receiver for the alert tests.

``ListSink`` keeps what it is sent (and can answer from a script first);
``HttpSink`` POSTs each group as JSON to a URL with its own timeout and maps
the answer the way the real sinks do (2xx ok; 408/429/5xx and connection
errors retry, with ``Retry-After``; other 4xx fail); ``Receiver`` is an
aiohttp server on 127.0.0.1 whose answers a test scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from cgwatch.alerts.notification import Notification, SendResult, SinkPolicy
from cgwatch.model import Alert, Container

FAST = dict(group_wait_s=0.05, rate_limit_per_min=6000.0, max_age_s=3600.0)


def policy(**kw: object) -> SinkPolicy:
    return SinkPolicy(**{**FAST, **kw})  # type: ignore[arg-type]


class ListSink:
    """Appends each group it is sent; answers ``script`` first, then delivered."""

    def __init__(self, name: str = "list", pol: SinkPolicy | None = None,
                 script: Iterable[SendResult] = ()) -> None:
        self.name = name
        self.policy = pol or policy()
        self.script = list(script)
        self.groups: list[list[Notification]] = []
        self.attempts = 0
        self.closed = False

    async def send(self, group: Sequence[Notification]) -> SendResult:
        self.attempts += 1
        if self.script:
            return self.script.pop(0)
        self.groups.append(list(group))
        return SendResult.delivered()

    async def close(self) -> None:
        self.closed = True

    @property
    def ids(self) -> list[str]:
        return [n.id for g in self.groups for n in g]


class HttpSink:
    """POSTs ``[notification.to_json(), ...]`` to ``url``."""

    def __init__(self, url: str, name: str = "http", pol: SinkPolicy | None = None, timeout_s: float = 2.0) -> None:
        self.name = name
        self.url = url
        self.policy = pol or policy()
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, group: Sequence[Notification]) -> SendResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.post(self.url, json=[n.to_json() for n in group]) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return SendResult.delivered()
                after = resp.headers.get("Retry-After")
                if resp.status in (408, 429) or resp.status >= 500:
                    return SendResult.retry_later(f"HTTP {resp.status}", float(after) if after else None)
                return SendResult.failed(f"HTTP {resp.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return SendResult.retry_later(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass
class Receiver:
    """A loopback HTTP server. ``answers`` is consumed one per request: an int status,
    ``(status, retry_after)``, or ``"hang"``; when empty it answers 200."""

    answers: list[object] = field(default_factory=list)
    received: list[list[dict]] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def ids(self) -> list[str]:
        return [n["id"] for g in self.received for n in g]

    async def _hook(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            await asyncio.sleep(3600)
        if isinstance(answer, tuple):
            return web.Response(status=answer[0], headers={"Retry-After": str(answer[1])})
        assert isinstance(answer, int)
        if answer == 200:  # keep only what tests check, so the storm test measures cgwatch, not us
            self.received.append([{k: n[k] for k in ("id", "fingerprint", "state")} for n in body])
        return web.Response(status=answer)

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def box(i: int, name: str | None = None) -> Container:
    return Container(id=f"{i:04x}" * 4, name=name or f"web-{i}", runtime="docker")


def fire(rule: str, c: Container, ts: float = 100.0, severity: str = "warning", state: str = "firing") -> Alert:
    return Alert(ts, rule, c, state, severity, 1.0, f"{c.name} {rule}")


def resolve(rule: str, c: Container, ts: float = 200.0, severity: str = "warning") -> Alert:
    return fire(rule, c, ts, severity, "resolved")
