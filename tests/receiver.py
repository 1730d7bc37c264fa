"""A webhook receiver on loopback in a thread of its own, for tests where
cgwatch runs as another process (the CLI, the daemon).

It can misbehave on demand, as real receivers do (:attr:`Receiver.mode`):
``up`` answers 200 and keeps the body; ``error`` answers 503; ``hang`` reads
the request and never answers; ``down`` stops listening and drops any request
that arrives on a connection kept alive from before. Only bodies answered 200
are kept (:attr:`Receiver.bodies`): what a real receiver would have accepted.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from aiohttp import web

MODES = ("up", "error", "hang", "down")


def hook_sink(port: int, timeout: str = "1s") -> str:
    """A config's ``hook`` webhook sink posting to a :class:`Receiver` on ``port``, indented
    as it stands under ``notify:``."""
    return f"""  hook:
    type: webhook
    url: http://127.0.0.1:{port}/hook
    group_wait: 0.1s
    timeout: {timeout}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook receiver on host:port (loopback by default) in a thread of its own (the CLI is
    another process)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.bodies: list[dict] = []
        self.requests = 0
        self._mode = "up"
        self._site: web.TCPSite | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        mode = self._mode
        if mode == "down":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if mode == "hang":
            while self._mode == "hang":
                await asyncio.sleep(0.05)
            raise asyncio.CancelledError  # the client gave up long ago; answer nothing
        if mode == "error":
            return web.Response(status=503, text="unavailable")
        self.bodies.append(body)
        return web.Response(text="ok")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        if self._site is None:
            self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await self._site.start()

    async def _unlisten(self) -> None:
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        """Switch how the receiver behaves (one of :data:`MODES`); returns once it does."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._mode = mode
        change = self._unlisten() if mode == "down" else self._listen()
        asyncio.run_coroutine_threadsafe(change, self._loop).result(5)

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode = "up"    # a hanging handler returns
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def alerts(self) -> list[dict]:
        return [a for b in list(self.bodies) for a in b["alerts"]]

    def wait_for(self, pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
        """Poll until ``pred(self.alerts)`` is true; False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self.alerts):
                return True
            time.sleep(0.05)
        return bool(pred(self.alerts))
