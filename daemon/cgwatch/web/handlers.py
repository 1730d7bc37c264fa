"""The request handlers and the pure functions behind them.

Each handler reads the :class:`~cgwatch.web.view.View` once and formats what it
got; the formatting lives in plain functions (:func:`health`,
:func:`container_json`, :func:`alert_json`) so it is tested without a server.
JSON has no NaN or infinity: such values go out as ``null``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from .metrics import CONTENT_TYPE, scrape
from .view import AlertInfo, ContainerInfo, Stats, View

#: The app's :class:`View`.
VIEW_KEY = web.AppKey("cgwatch_view", View)
#: The app's own metrics registry (a :class:`ViewCollector` over the View, and ``process_*``).
REGISTRY_KEY = web.AppKey("cgwatch_registry", CollectorRegistry)

#: Alert states ``/api/v1/alerts?state=`` accepts.
ALERT_STATES = ("pending", "firing")


def stall_limit(interval_s: float) -> float:
    """Seconds after the last finished collection before ``/healthz`` calls the daemon stalled.

    >>> stall_limit(10.0)
    35.0
    """
    return 3 * interval_s + 5


def health(stats: Stats, now: float) -> tuple[int, str]:
    """The ``/healthz`` status and body for ``stats`` at Unix time ``now``.

    >>> st = Stats(started_at=0.0, ready=False, interval_s=10.0, ticks=0, last_tick_at=None, last_tick_s=0.0,
    ...            rules_loaded=3, reload_ok=True, reload_error="", reloads=0, samples_total=0, events_total=0,
    ...            queue_drops={}, event_drops={}, bpf_maps={}, models=0, models_evicted=0, delivery={},
    ...            outbox_pending=0)
    >>> health(st, 100.0)
    (503, 'starting\\n')
    >>> st.ready, st.last_tick_at = True, 95.0
    >>> health(st, 100.0)
    (200, 'ok\\n')
    >>> health(st, 137.4)
    (503, 'collection stalled for 42s\\n')
    >>> st.reload_ok, st.reload_error = False, "rules/x.yaml:3:7: unknown metric"
    >>> print(health(st, 100.0)[1], end="")
    ok
    warning: config reload failed, previous rules still running: rules/x.yaml:3:7: unknown metric
    """
    if not stats.ready:
        status, line = 503, "starting"
    elif stats.last_tick_at is None:
        status, line = 503, "starting: no collection has finished yet"
    elif (age := now - stats.last_tick_at) > stall_limit(stats.interval_s):
        status, line = 503, f"collection stalled for {age:.0f}s"
    else:
        status, line = 200, "ok"
    body = line + "\n"
    if not stats.reload_ok:
        why = " ".join((stats.reload_error or "unknown error").split())
        body += f"warning: config reload failed, previous rules still running: {why}\n"
    return status, body


def _num(value: float | None) -> float | None:
    """``value``, or None where JSON cannot say it (NaN, infinities)."""
    return value if value is None or math.isfinite(value) else None


def container_json(c: ContainerInfo) -> dict[str, Any]:
    """One container as the API shows it.

    >>> c = ContainerInfo(id="4f1c", name="web-1", runtime="docker", image="nginx", labels={"env": "prod"},
    ...                   pod="", qos="", cgroup="/docker/4f1c", first_seen=1.0, last_seen=2.0,
    ...                   metrics={"cpu.usage_cores": 0.93, "psi.cpu_some": float("nan")})
    >>> container_json(c)["metrics"]
    {'cpu.usage_cores': 0.93, 'psi.cpu_some': None}
    """
    return {
        "id": c.id, "name": c.name, "runtime": c.runtime, "image": c.image, "labels": dict(c.labels),
        "pod": c.pod, "qos": c.qos, "cgroup": c.cgroup,
        "first_seen": _num(c.first_seen), "last_seen": _num(c.last_seen),
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in c.metrics.items()},
    }


def alert_json(a: AlertInfo) -> dict[str, Any]:
    """One alert as the API shows it.

    >>> alert_json(AlertInfo(rule="oom-kill", container="db", container_id="ab12", runtime="podman",
    ...                      state="firing", severity="critical", since=5.0, value=None, summary="OOM"))
    {'rule': 'oom-kill', 'container': 'db', 'container_id': 'ab12', 'runtime': 'podman', 'state': 'firing', 'severity': 'critical', 'since': 5.0, 'value': None, 'summary': 'OOM'}
    """
    out = {
        "rule": a.rule, "container": a.container, "container_id": a.container_id, "runtime": a.runtime,
        "state": a.state, "severity": a.severity, "since": _num(a.since), "value": _num(a.value),
        "summary": a.summary,
    }
    if a.card:
        out["card"] = a.card
    return out


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response, refusing NaN rather than writing invalid JSON.

    >>> json_response({"error": "nope"}, status=400).text
    '{"error":"nope"}'
    """
    text = json.dumps(body, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def error(status: int, message: str) -> web.Response:
    """A one-line JSON error, ``{"error": message}``.

    >>> error(400, "bad state").status
    400
    """
    return json_response({"error": message}, status=status)


def _query(request: web.Request, known: tuple[str, ...]) -> dict[str, list[str]] | web.Response:
    """The query parameters by name (a repeated one matches any of its values), or a 400 naming the bad one."""
    out: dict[str, list[str]] = {}
    for key, value in request.query.items():
        if key not in known:
            return error(400, f"unknown query parameter {key!r}; known: {', '.join(known)}")
        if not value:
            return error(400, f"query parameter {key!r} is empty")
        out.setdefault(key, []).append(value)
    return out


def _matches(values: list[str] | None, test: Callable[[str], bool]) -> bool:
    return values is None or any(test(v) for v in values)


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 ``ok`` while collections keep finishing, else 503 and why."""
    status, body = health(request.app[VIEW_KEY].stats(), time.time())
    return web.Response(text=body, status=status, headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text exposition of the View and the process, gzipped
    when the client accepts it (Prometheus does: a tenth to a third of the bytes)."""
    gz = "gzip" in request.headers.get("Accept-Encoding", "")
    body = await scrape(request.app[REGISTRY_KEY], compress=gz)
    headers = {"Content-Type": CONTENT_TYPE, "Vary": "Accept-Encoding"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def containers(request: web.Request) -> web.Response:
    """``GET /api/v1/containers[?name=GLOB][&runtime=NAME]``: watched containers, sorted by name."""
    query = _query(request, ("name", "runtime"))
    if isinstance(query, web.Response):
        return query
    names, runtimes = query.get("name"), query.get("runtime")
    found: Iterable[ContainerInfo] = request.app[VIEW_KEY].containers()
    if names or runtimes:
        found = [c for c in found
                 if _matches(names, lambda g, c=c: fnmatchcase(c.name, g)) and _matches(runtimes, c.runtime.__eq__)]
    ordered = sorted(found, key=lambda c: (c.name, c.id))
    return json_response({"containers": [container_json(c) for c in ordered]})


async def alerts(request: web.Request) -> web.Response:
    """``GET /api/v1/alerts[?state=firing|pending]``: active alerts, sorted by rule then container."""
    query = _query(request, ("state",))
    if isinstance(query, web.Response):
        return query
    states = query.get("state")
    for state in states or ():
        if state not in ALERT_STATES:
            return error(400, f"state must be one of {', '.join(ALERT_STATES)}, not {state!r}")
    found = [a for a in request.app[VIEW_KEY].alerts() if states is None or a.state in states]
    found.sort(key=lambda a: (a.rule, a.container, a.container_id))
    return json_response({"alerts": [alert_json(a) for a in found]})
