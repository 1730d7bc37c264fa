"""The aiohttp Application and how it is served.

:func:`build_app` wires the routes to a :class:`~cgwatch.web.view.View`;
:func:`serve` binds it to ``listen`` (``HOST:PORT``, ``[IPv6]:PORT``) inside the
caller's event loop and returns the runner, which the daemon cleans up on
shutdown. Every error a client can cause, or a failing View can, answers as a
one-line JSON ``{"error": ...}``; the server itself never goes down with it.

Routes (all read-only; a write endpoint, once there is one, must require a token):

========================  =====================================================
``GET /healthz``          200 ``ok`` / 503 and why (``starting``, ``collection stalled for 42s``)
``GET /metrics``          Prometheus text exposition
``GET /api/v1/containers`` ``{"containers": [...]}``, ``?name=GLOB``, ``?runtime=NAME``
``GET /api/v1/alerts``    ``{"alerts": [...]}``, ``?state=firing|pending``
the dashboard             ``/``, ``/containers/{id}``, ``/alerts`` and their API
                          (:mod:`cgwatch.web.dashboard`)
CPU profiles              ``/api/v1/containers/{id}/profiles``, ``/api/v1/profiles/{pid}[/folded|/speedscope.json|
                          /flamegraph.html]`` (:mod:`cgwatch.web.profiles`)
========================  =====================================================

Every response carries the security headers of :mod:`cgwatch.web.security`;
with a ``token`` every request must show it. :func:`serve` caps open
connections, closes slow and idle ones and rate-limits repeated log lines
(:mod:`cgwatch.web.limits`), so that a flood of connections cannot take the
descriptors collection and alert delivery need.

Examples
--------
>>> from cgwatch.web.metrics import _DemoView
>>> app = build_app(_DemoView())
>>> sorted(r.resource.canonical for r in app.router.routes() if r.method == "GET")[:6]
['/', '/alerts', '/api/v1/alerts', '/api/v1/alerts/history', '/api/v1/containers', '/api/v1/containers/{id}']
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from . import dashboard, handlers, limits
from .handlers import REGISTRY_KEY, VIEW_KEY, error, json_response
from .metrics import make_registry
from .security import add_headers, auth_middleware, limits_middleware
from .view import View

__all__ = ["DEFAULT_LISTEN", "REGISTRY_KEY", "VIEW_KEY", "build_app", "parse_listen", "serve"]

log = logging.getLogger(__name__)

#: Where the daemon listens unless configured otherwise: loopback only.
DEFAULT_LISTEN = "127.0.0.1:9477"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_LISTEN = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^\[\]:\s]+)):(?P<port>\d{1,5})$")
_SEEN_MAX = 256  # distinct View failures logged with a traceback; repeats go to debug


def _error_middleware() -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    """Turn HTTP errors into JSON and any other exception into a logged 500."""
    seen: set[tuple[str, str, str]] = set()

    @web.middleware
    async def json_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 404:
                message = f"no such path: {request.path}"
            elif exc.status == 405:
                message = f"method {request.method} not allowed on {request.path}"
            else:
                message = exc.text or exc.reason
            allow = exc.headers.get("Allow")
            return json_response({"error": message}, exc.status, {"Allow": allow} if allow else None)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            key = (request.path, type(exc).__name__, str(exc))
            if key in seen:
                log.debug("%s %s failed again: %r", request.method, request.path, exc)
            else:
                if len(seen) < _SEEN_MAX:
                    seen.add(key)
                log.exception("%s %s failed (repeats of this error are logged at debug level)",
                              request.method, request.path)
            return error(500, f"internal error serving {request.path}: {type(exc).__name__} (see the daemon's log)")

    return json_errors


def build_app(view: View, token: str | None = None, public: Iterable[str] = ()) -> web.Application:
    """The Application serving ``view``: health, metrics, the JSON API and the dashboard, with its own
    metrics registry; with ``token``, every request must carry it (:mod:`cgwatch.web.security`).

    >>> from cgwatch.web.metrics import _DemoView
    >>> app = build_app(_DemoView())
    >>> app[REGISTRY_KEY].get_sample_value("cgwatch_ready")
    1
    """
    middlewares = [_error_middleware(), limits_middleware()]
    if token:
        middlewares.append(auth_middleware(token, public))
    app = web.Application(middlewares=middlewares)
    app.on_response_prepare.append(add_headers)
    app[VIEW_KEY] = view
    app[REGISTRY_KEY] = make_registry(view)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/api/v1/containers", handlers.containers)
    app.router.add_get("/api/v1/alerts", handlers.alerts)
    dashboard.add_routes(app, view)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as ``(host, port)``; ValueError with a one-line reason otherwise.

    >>> parse_listen("127.0.0.1:9477"), parse_listen("[::1]:9477"), parse_listen("localhost:0")
    (('127.0.0.1', 9477), ('::1', 9477), ('localhost', 0))
    >>> parse_listen("::1:9477")
    Traceback (most recent call last):
    ...
    ValueError: listen: '::1:9477' is not HOST:PORT or [IPv6]:PORT (put IPv6 addresses in brackets)
    """
    m = _LISTEN.match(listen.strip())
    if m is None:
        hint = " (put IPv6 addresses in brackets)" if listen.count(":") > 1 and "[" not in listen else ""
        raise ValueError(f"listen: {listen!r} is not HOST:PORT or [IPv6]:PORT{hint}")
    port = int(m["port"])
    if port > 65535:
        raise ValueError(f"listen: port {port} in {listen!r} is not between 0 and 65535")
    return m["v6"] or m["host"], port


async def serve(app: web.Application, listen: str = DEFAULT_LISTEN, *,
                max_connections: int = limits.MAX_CONNECTIONS, header_timeout: float = limits.HEADER_TIMEOUT,
                keepalive_timeout: float = limits.KEEPALIVE_TIMEOUT) -> web.AppRunner:
    """Serve ``app`` on ``listen`` in the running loop; the caller awaits ``runner.cleanup()`` to stop.

    Raises OSError saying which address could not be bound and why (a busy port
    says so), and ValueError for a malformed ``listen``. ``runner.addresses``
    holds the bound socket addresses (useful with port 0), ``runner.limits`` the
    :class:`~cgwatch.web.limits.Limits` and their counters.

    At most ``max_connections`` connections are open at once (the next is closed
    at once); a request head must be complete within ``header_timeout`` seconds;
    a keep-alive connection idle for ``keepalive_timeout`` seconds is closed.
    The soft open-file limit is raised to the hard one first.
    """
    host, port = parse_listen(listen)
    limits.raise_nofile()
    # a scrape every few seconds does not belong in the journal; request lines up to 16 KiB reach the
    # app, which answers a query string over 2 KiB with a JSON 414
    # at shutdown, a request still running (a live stream) gets a second, not aiohttp's default minute
    runner = limits.LimitedRunner(app, limits=limits.Limits(max_connections, header_timeout), access_log=None,
                                  max_line_size=16384, shutdown_timeout=1.0, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=limits.BACKLOG).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            why = "address already in use (is another cgwatch, or something else, listening there?)"
        else:
            why = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on {listen}: {why}") from exc
    except BaseException:
        await runner.cleanup()
        raise
    return runner
