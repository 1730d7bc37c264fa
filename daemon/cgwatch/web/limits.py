"""What keeps the web server from eating the daemon's file descriptors and its
log (issue 15): a cap on open HTTP connections, a deadline for a request's
head, idle keep-alive closed, the descriptor limit raised, and repeated log
lines rate-limited.

A connection costs one descriptor until it is closed, and collection (BPF
maps, cgroupfs, the runtimes' state) and alert delivery (webhooks, SQLite)
need descriptors too. So:

- at most :data:`MAX_CONNECTIONS` HTTP connections are open at once; the next
  one is closed as soon as it is accepted (one warning line, rate-limited),
  which takes a few turns of the event loop (see :data:`BACKLOG`);
- a connection must send a complete request head (request line and headers)
  within :data:`HEADER_TIMEOUT` seconds of opening, or of the first byte of its
  next request; else it is closed (aiohttp has no such timeout);
- a keep-alive connection idle for :data:`KEEPALIVE_TIMEOUT` seconds after a
  response is closed (aiohttp's ``keepalive_timeout``);
- :func:`raise_nofile` lifts the soft ``RLIMIT_NOFILE`` to the hard one;
- :class:`RepeatFilter` lets the same log line through at most once per
  window and counts the rest; while a server runs it sits on the loggers an
  accept loop out of descriptors floods (``asyncio``'s "socket.accept() out of
  system resource", aiohttp's server errors) and on this module's.

A malformed request is answered with a one-line JSON 400 and logged as one
WARNING line (no traceback), rate-limited like the rest.

Examples
--------
>>> f = RepeatFilter(window=60.0, clock=iter([0.0, 1.0, 2.0, 61.0]).__next__)
>>> records = [logging.makeLogRecord({"msg": "accept failed", "levelno": 40}) for _ in range(4)]
>>> [f.filter(r) for r in records]
[True, False, False, True]
>>> records[3].getMessage()
'accept failed (repeated 2 times)'
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .security import HEADERS, SERVER

__all__ = ["BACKLOG", "HEADER_TIMEOUT", "KEEPALIVE_TIMEOUT", "MAX_CONNECTIONS", "REPEAT_WINDOW", "Limits", "LimitedRunner",
           "RepeatFilter", "quiet_loggers", "raise_nofile"]

log = logging.getLogger(__name__)

#: open HTTP connections at most; the next one is closed at once
MAX_CONNECTIONS = 256
#: seconds a connection has to send a complete request head
HEADER_TIMEOUT = 5.0
#: seconds an idle keep-alive connection stays open after a response
KEEPALIVE_TIMEOUT = 15.0
#: the listening socket's backlog, and so how many connections one turn of asyncio's accept loop takes:
#: a connection over the cap holds its descriptor for about three turns, so a flood can briefly push
#: the count to about ``MAX_CONNECTIONS + 3 * BACKLOG`` (a smaller backlog makes honest clients retry)
BACKLOG = 128
#: seconds during which a repeated log line is counted instead of written
REPEAT_WINDOW = 60.0
#: the soft RLIMIT_NOFILE aimed for when the hard limit is unlimited
NOFILE_TARGET = 65536
#: loggers :func:`quiet_loggers` rate-limits: asyncio's accept loop, aiohttp's server, this module
NOISY_LOGGERS = ("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.internal", __name__)

_MAX_DETAIL = 200  # characters of a malformed request's reason kept in its log line


class RepeatFilter(logging.Filter):
    """Let a line through at most once per ``window`` seconds; the first one after the window
    says ``(repeated K times)`` for the K held back in between (and carries no traceback).

    Lines are "the same" when logger, level and message template (``record.msg``, before its
    arguments) are: "Error handling request from %s" is one line whichever peer it names. At most
    ``max_keys`` distinct lines are tracked; the oldest is forgotten first.
    """

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 1024) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [last written, held back]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window:
                entry[1] += 1
                return False
            held = int(entry[1]) if entry is not None else 0
            self._seen.pop(key, None)
            if len(self._seen) >= self._max_keys:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = [now, 0]
        if held:
            record.msg = f"{record.getMessage()} (repeated {held} times)"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


def quiet_loggers(names: Iterable[str] = NOISY_LOGGERS, window: float = REPEAT_WINDOW) -> Callable[[], None]:
    """Put one :class:`RepeatFilter` on each named logger that has none yet; returns the function
    that takes them off again."""
    shared = RepeatFilter(window)
    added = []
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(shared)
            added.append(logger)

    def remove() -> None:
        for logger in added:
            logger.removeFilter(shared)
        added.clear()

    return remove


def raise_nofile(target: int = NOFILE_TARGET) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (or to ``target`` when the hard limit is
    unlimited); returns the (soft, hard) now in force. Never lowers anything, never raises."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            log.debug("raised the open-file limit from %d to %d", soft, want)
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
    return soft, hard


class Limits:
    """One server's limits and what they did (shared by its connections)."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open = 0          # connections open now
        self.refused = 0       # closed at once: over max_connections
        self.timed_out = 0     # closed: no complete request head within header_timeout
        self.bad_requests = 0  # malformed requests answered 400


def _one_line(exc: HttpProcessingError) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc.message}".split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL - 1] + "…"


class _Handler(RequestHandler):
    """aiohttp's connection protocol, plus the connection cap, the request-head deadline and
    one-line handling of malformed requests."""

    def __init__(self, manager: web.Server, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._counted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self._limits
        if limits.open >= limits.max_connections:
            limits.refused += 1
            self._manager = None  # connection_lost has nothing to undo
            self._force_close = True
            transport.abort()
            log.warning("%d HTTP connections are open, the most allowed: closing new ones until some close "
                        "(%d refused so far)", limits.max_connections, limits.refused)
            return
        limits.open += 1
        self._counted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._limits.open -= 1
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm()  # a complete request head arrived
        elif data and self._head_timer is None and not self._request_in_progress \
                and not getattr(self, "_upgraded", False):
            self._arm()  # the first bytes of the next request: its head has HEADER_TIMEOUT to complete

    def _arm(self) -> None:
        self._disarm()
        self._head_count = self._request_count
        self._head_timer = self._loop.call_later(self._limits.header_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport is None or self._request_count != self._head_count or self._request_in_progress:
            return
        self._limits.timed_out += 1
        log.debug("closed an HTTP connection from %s: no complete request head within %gs",
                  self.peername, self._limits.header_timeout)
        self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            self._limits.bad_requests += 1
            detail = _one_line(exc)
            log.warning("bad HTTP request from %s: %s", request.remote, detail)
            if request.writer.output_size > 0:
                raise ConnectionError("a response was already under way; cannot answer the error")
            body = json.dumps({"error": f"bad HTTP request: {detail}"}) + "\n"
            resp: web.StreamResponse = web.Response(status=status, text=body, content_type="application/json")
            resp.force_close()
        else:
            resp = super().handle_error(request, status, exc, message)
        resp.headers["Server"] = SERVER
        for key, value in HEADERS.items():
            resp.headers.setdefault(key, value)
        return resp


class _Server(web.Server):
    """aiohttp's protocol factory, making :class:`_Handler` connections."""

    _limits: Limits

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, limits=self._limits, **self._kwargs)


class LimitedRunner(web.AppRunner):
    """An AppRunner whose connections obey ``limits`` (:class:`Limits`), and which rate-limits the
    noisy loggers (:func:`quiet_loggers`) from ``setup()`` to ``cleanup()``."""

    def __init__(self, app: web.Application, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits
        self._unquiet: Callable[[], None] | None = None

    async def setup(self) -> None:
        self._unquiet = quiet_loggers()
        try:
            await super().setup()
        except BaseException:
            self._unquiet()
            self._unquiet = None
            raise

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            if self._unquiet is not None:
                self._unquiet()
                self._unquiet = None

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # the Application builds a plain Server; only the factory method differs, so swap its class
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server._limits = self.limits
        return server
