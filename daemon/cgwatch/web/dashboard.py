"""The dashboard: its pages, the JSON it reads and the live event stream.

Pages are static shells under ``static/`` (their script fills them in). The
JSON behind them:

======================================  ==================================================
``GET /api/v1/containers/{id}``         detail: info, metrics with history, rules, events, alert changes
``GET /api/v1/containers/{id}/series``  ``?metric=M&since=UNIX`` → ``{"container", "metric", "points"}``
``GET /api/v1/sparklines``              15 minutes of 20 s means of the overview metrics, every container
``GET /api/v1/alerts/history``          ``?limit=N`` (1-1000) recent alert state changes
``GET /api/v1/silences``                silences in force
``GET /api/v1/events``                  ``text/event-stream``: a ``tick`` snapshot, then live messages
======================================  ==================================================

Examples
--------
>>> from cgwatch.web.metrics import _DemoView
>>> rows = overview(_DemoView(), 2.0)
>>> rows["containers"][0]["name"], rows["containers"][0]["alerts"]
('web-1', [{'rule': 'cpu-hog', 'state': 'firing', 'severity': 'warning'}])
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from . import profiles
from .handlers import VIEW_KEY, alert_json, container_json, error, json_response
from .history import COARSE_S, SPARK_S, History
from .live import Hub
from .view import AlertRecord, ContainerInfo, RuleInfo, SilenceInfo, View

__all__ = ["HUB_KEY", "OVERVIEW_METRICS", "SPARK_METRICS", "STATIC", "hub_for", "overview", "parse_since"]

STATIC = Path(__file__).with_name("static")
HUB_KEY = web.AppKey("cgwatch_hub", Hub)
#: what an overview row shows (short key -> metric)
OVERVIEW_METRICS = {"cpu": "cpu.usage_cores", "cpu_limit": "cpu.limit_cores", "mem": "mem.usage_bytes",
                    "mem_limit": "mem.limit_bytes", "execs": "proc.execs", "runq": "cpu.runq_latency_p99_ms"}
#: the metrics with a sparkline in the overview
SPARK_METRICS = ("cpu.usage_cores", "mem.usage_bytes", "proc.execs", "cpu.runq_latency_p99_ms")
#: seconds between heartbeat comments on an idle event stream
HEARTBEAT_S = 15.0
#: how far back ``since`` may reach
MAX_AGE_S = 86400.0
_MAX_ID = 256


def hub_for(view: View) -> Hub:
    """The View's Hub; a private one (with its own History) for a View that has none yet."""
    hub = getattr(view, "hub", None)
    return hub if isinstance(hub, Hub) else Hub(History())


def _view_list(view: View, name: str, *args: Any) -> Sequence[Any]:
    """``view.name(*args)``, or nothing for a View without that (optional) method."""
    method = getattr(view, name, None)
    return [] if method is None else method(*args)


def _f(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def overview(view: View, now: float) -> dict[str, Any]:
    """The ``tick`` message: one row per container with what the overview table needs."""
    firing: dict[str, list[dict[str, str]]] = {}
    for a in view.alerts():
        firing.setdefault(a.container_id, []).append({"rule": a.rule, "state": a.state, "severity": a.severity})
    stale_after = 3 * view.stats().interval_s + 5
    rows = []
    for c in view.containers():
        m = c.metrics
        rows.append({
            "id": c.id, "name": c.name, "runtime": c.runtime, "image": c.image, "labels": dict(c.labels),
            "last_seen": c.last_seen, "stale": now - c.last_seen > stale_after,
            "m": {k: _f(m.get(metric)) for k, metric in OVERVIEW_METRICS.items()},
            "alerts": firing.get(c.id, []),
        })
    return {"ts": now, "containers": rows}


def parse_since(raw: str | None, now: float) -> float | str:
    """``since`` as Unix seconds (default: an hour ago), or why it is refused.

    >>> parse_since(None, 10000.0), parse_since("9000.5", 10000.0)
    (6400.0, 9000.5)
    >>> parse_since("nan", 1e9), parse_since("1", 1e9), parse_since("x", 1e9)
    ('since must be a finite number (Unix seconds)', 'since must be within the last 24 hours', 'since must be a finite number (Unix seconds)')
    """
    if raw is None:
        return now - 3600.0
    try:
        since = float(raw)
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        return "since must be a finite number (Unix seconds)"
    if since < now - MAX_AGE_S or since > now + 3600:
        return "since must be within the last 24 hours"
    return since


def _known(request: web.Request, allowed: tuple[str, ...]) -> web.Response | None:
    for key in request.query:
        if key not in allowed:
            return error(400, f"unknown query parameter {key!r}; known: {', '.join(allowed) or 'none'}")
    return None


def _find(view: View, cid: str) -> ContainerInfo | None:
    for c in view.containers():
        if c.id == cid:
            return c
    return None


def _rule_json(r: RuleInfo) -> dict[str, Any]:
    return {"name": r.name, "kind": r.kind, "text": r.text, "severity": r.severity, "for_s": r.for_s,
            "threshold": _f(r.threshold)}


async def container_detail(request: web.Request) -> web.Response:
    """``GET /api/v1/containers/{id}``: what the container page shows besides the charts."""
    if (bad := _known(request, ())) is not None:
        return bad
    view, cid = request.app[VIEW_KEY], request.match_info["id"]
    history = request.app[HUB_KEY].history
    live = _find(view, cid) if len(cid) <= _MAX_ID else None
    if live is not None:
        info = container_json(live)
    elif (known := history.container(cid)) is not None:
        info = {"id": known.id, "name": known.name, "runtime": known.runtime, "image": known.image,
                "labels": dict(known.labels), "pod": known.pod, "qos": known.qos, "cgroup": known.cgroup,
                "first_seen": None, "last_seen": None, "metrics": {}}
    else:
        return error(404, f"no such container: {cid[:80]!r}")
    return json_response({
        "container": info, "live": live is not None, "now": time.time(),
        "metrics": history.metrics(cid),
        "rules": [_rule_json(r) for r in _view_list(view, "container_rules", cid)],
        "alerts": [alert_json(a) for a in view.alerts() if a.container_id == cid],
        "events": history.recent_events(cid), "alert_changes": history.alert_changes(cid),
        "profiling": profiles.enabled(view),
    })


async def series(request: web.Request) -> web.Response:
    """``GET /api/v1/containers/{id}/series?metric=M[&since=UNIX]``: one metric's recent points."""
    if (bad := _known(request, ("metric", "since"))) is not None:
        return bad
    cid = request.match_info["id"]
    metric = request.query.get("metric", "")
    if not metric:
        return error(400, "query parameter 'metric' is required, e.g. ?metric=cpu.usage_cores")
    now = time.time()
    since = parse_since(request.query.get("since"), now)
    if isinstance(since, str):
        return error(400, since)
    history = request.app[HUB_KEY].history
    if history.container(cid) is None and not history.metrics(cid):
        return error(404, f"no such container: {cid[:80]!r}")
    points = history.series(cid, metric, since)
    if points is None:
        return error(404, f"no history of metric {metric[:80]!r} for this container")
    return json_response({"container": cid, "metric": metric,
                         "points": [[t, v if math.isfinite(v) else None] for t, v in points]})


async def sparklines(request: web.Request) -> web.Response:
    """``GET /api/v1/sparklines``: per container, per overview metric, 20 s means of the last 15 minutes
    (``null`` for an empty bucket), aligned to ``start``, ``start + step``, ..."""
    if (bad := _known(request, ())) is not None:
        return bad
    history = request.app[HUB_KEY].history
    now = time.time()
    start = (now - SPARK_S) // COARSE_S * COARSE_S
    out: dict[str, dict[str, list[float | None]]] = {}
    for c in request.app[VIEW_KEY].containers():
        out[c.id] = {m: history.spark(c.id, m, start) for m in SPARK_METRICS}
    return json_response({"start": start, "step": COARSE_S, "metrics": list(SPARK_METRICS), "containers": out})


def _record_json(r: AlertRecord) -> dict[str, Any]:
    return {"ts": _f(r.ts), "rule": r.rule, "container": r.container, "state": r.state, "severity": r.severity,
            "summary": r.summary}


def _silence_json(s: SilenceInfo) -> dict[str, Any]:
    return {"id": s.id, "rule": s.rule, "container": s.container, "ends_at": _f(s.ends_at), "comment": s.comment,
            "created_by": s.created_by}


async def alert_history(request: web.Request) -> web.Response:
    """``GET /api/v1/alerts/history[?limit=N]``: the newest alert state changes, newest first."""
    if (bad := _known(request, ("limit",))) is not None:
        return bad
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return error(400, f"limit must be a whole number from 1 to 1000, not {raw[:40]!r}")
    found = list(_view_list(request.app[VIEW_KEY], "recent_alerts", int(raw)))
    return json_response({"history": [_record_json(r) for r in reversed(found)]})


async def silences(request: web.Request) -> web.Response:
    """``GET /api/v1/silences``: silences in force (read-only)."""
    if (bad := _known(request, ())) is not None:
        return bad
    found = sorted(_view_list(request.app[VIEW_KEY], "silences"), key=lambda s: s.ends_at)
    return json_response({"silences": [_silence_json(s) for s in found]})


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/events``: Server-Sent Events; a ``tick`` snapshot first, heartbeats when idle."""
    if (bad := _known(request, ())) is not None:
        return bad
    hub = request.app[HUB_KEY]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    client = hub.subscribe()
    try:
        first = b"retry: 2000\n\n" + (hub.snapshot(time.time()) or b"")
        await resp.write(first)
        while not client.closed:
            frame = await client.next(HEARTBEAT_S)
            if client.closed:
                break
            if frame is None:
                await resp.write(b": ping\n\n")
                continue
            chunk = [frame]
            while (more := client.pop()) is not None:
                chunk.append(more)
            await resp.write(b"".join(chunk))
    except (ConnectionError, RuntimeError):
        pass  # the browser went away (or the server is closing the transport)
    finally:
        hub.unsubscribe(client)
    return resp


def _page(name: str) -> Any:
    path = STATIC / name

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    page.__doc__ = f"The {name} shell."
    return page


def add_routes(app: web.Application, view: View) -> None:
    """Add the dashboard's pages, assets and API to ``app`` (the Hub is ``app[HUB_KEY]``)."""
    hub = app[HUB_KEY] = hub_for(view)
    hub.attach(lambda now: overview(view, now))

    async def close_streams(app: web.Application) -> None:
        hub.close()

    app.on_shutdown.append(close_streams)
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/containers/{id}", _page("container.html"))
    app.router.add_get("/alerts", _page("alerts.html"))
    profiles.add_routes(app)                      # its /static/vendor/flamegraph/ before /static/
    app.router.add_static("/static/", STATIC, append_version=False)
    app.router.add_get("/api/v1/containers/{id}", container_detail)
    app.router.add_get("/api/v1/containers/{id}/series", series)
    app.router.add_get("/api/v1/sparklines", sparklines)
    app.router.add_get("/api/v1/alerts/history", alert_history)
    app.router.add_get("/api/v1/silences", silences)
    app.router.add_get("/api/v1/events", events)
