"""A webhook receiver on loopback in a thread of its own, for tests where
cgwatch runs as another process (the CLI, the daemon)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from aiohttp import web


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
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _hook(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(text="ok")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, self.host, self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def alerts(self) -> list[dict]:
        return [a for b in self.bodies for a in b["alerts"]]

    def wait_for(self, pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
        """Poll until ``pred(self.alerts)`` is true; False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self.alerts):
                return True
            time.sleep(0.05)
        return bool(pred(self.alerts))
