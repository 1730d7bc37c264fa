"""``/api/v1/containers`` and ``/api/v1/alerts`` over real HTTP, and the JSON errors every path shares."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import pytest

from tests.web.conftest import MemoryView, Served, alert, container


def get(view: MemoryView, served: Served, *paths: str) -> list[tuple[int, str, Any]]:
    """(status, content type, parsed JSON) for each path, in order, from one server."""
    async def body() -> list[tuple[int, str, Any]]:
        out = []
        async with served(view) as http:
            for path in paths:
                async with http.get(path) as r:
                    out.append((r.status, r.content_type, json.loads(await r.text())))
        return out

    return asyncio.run(body())


def test_containers_shape_order_and_nan_as_null(view: MemoryView, served: Served) -> None:
    web = container("web-1", id="4f1c" * 16, labels={"env": "prod", "app": "web"}, pod="shop/web-1",
                    qos="burstable", metrics={"cpu.usage_cores": 0.93, "psi.cpu_some": math.nan,
                                              "cpu.limit_cores": math.inf, "proc.count": 12})
    view.containers_ = [web, container("db", runtime="podman"), container("api")]
    [(status, ctype, doc)] = get(view, served, "/api/v1/containers")
    assert (status, ctype) == (200, "application/json")
    assert [c["name"] for c in doc["containers"]] == ["api", "db", "web-1"]
    assert doc["containers"][2] == {
        "id": "4f1c" * 16, "name": "web-1", "runtime": "docker", "image": "nginx:1.27",
        "labels": {"env": "prod", "app": "web"}, "pod": "shop/web-1", "qos": "burstable",
        "cgroup": f"/system.slice/docker-{'4f1c' * 16}.scope", "first_seen": 1732492800.0,
        "last_seen": 1732492830.0,
        "metrics": {"cpu.usage_cores": 0.93, "psi.cpu_some": None, "cpu.limit_cores": None, "proc.count": 12}}


def test_container_filters(view: MemoryView, served: Served) -> None:
    view.containers_ = [container("web-1"), container("web-2", runtime="podman"), container("db"),
                        container("[odd]")]
    results = get(view, served, "/api/v1/containers?name=web-*", "/api/v1/containers?runtime=podman",
                  "/api/v1/containers?name=web-*&runtime=docker", "/api/v1/containers?name=db&name=web-2",
                  "/api/v1/containers?name=nothing*", "/api/v1/containers?name=%5B%5B%5Dodd%5D")
    names = [[c["name"] for c in doc["containers"]] for _, _, doc in results]
    assert names == [["web-1", "web-2"], ["web-2"], ["web-1"], ["db", "web-2"], [], ["[odd]"]]


@pytest.mark.parametrize(("path", "message"), [
    ("/api/v1/containers?image=nginx", "unknown query parameter 'image'; known: name, runtime"),
    ("/api/v1/containers?name=", "query parameter 'name' is empty"),
    ("/api/v1/alerts?state=resolved", "state must be one of pending, firing, not 'resolved'"),
    ("/api/v1/alerts?sev=critical", "unknown query parameter 'sev'; known: state"),
])
def test_bad_queries_are_400_with_one_line(view: MemoryView, served: Served, path: str, message: str) -> None:
    [(status, ctype, doc)] = get(view, served, path)
    assert (status, ctype, doc) == (400, "application/json", {"error": message})


def test_alerts_shape_and_state_filter(view: MemoryView, served: Served) -> None:
    view.alerts_ = [alert("oom-kill", "db", severity="critical", value=None, container_id="ab12"),
                    alert("cpu-hog", "web-1", state="pending", value=math.nan),
                    alert("cpu-hog", "api", since=5.0, value=1.5)]
    everything, firing, pending = get(view, served, "/api/v1/alerts", "/api/v1/alerts?state=firing",
                                      "/api/v1/alerts?state=pending")
    assert everything[:2] == (200, "application/json")
    assert [(a["rule"], a["container"]) for a in everything[2]["alerts"]] == [
        ("cpu-hog", "api"), ("cpu-hog", "web-1"), ("oom-kill", "db")]
    assert everything[2]["alerts"][0] == {
        "rule": "cpu-hog", "container": "api", "container_id": "apiapiapiapi", "runtime": "docker",
        "state": "firing", "severity": "warning", "since": 5.0, "value": 1.5, "summary": "api broke cpu-hog"}
    assert everything[2]["alerts"][1]["value"] is None     # NaN
    assert [a["container"] for a in firing[2]["alerts"]] == ["api", "db"]
    assert [a["container"] for a in pending[2]["alerts"]] == ["web-1"]


def test_unknown_path_is_a_json_404(view: MemoryView, served: Served) -> None:
    assert get(view, served, "/api/v2/containers") == [(404, "application/json",
                                                        {"error": "no such path: /api/v2/containers"})]


def test_a_failing_view_is_a_500_logged_once_and_the_server_lives_on(
        view: MemoryView, served: Served, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> list[tuple[int, str]]:
        out = []
        async with served(view) as http:
            view.fail = RuntimeError("pipeline gone")
            for path in ["/api/v1/containers", "/api/v1/containers", "/metrics", "/healthz"]:
                async with http.get(path) as r:
                    out.append((r.status, await r.text()))
            view.fail = None
            async with http.get("/api/v1/containers") as r:
                out.append((r.status, await r.text()))
        return out

    with caplog.at_level(logging.DEBUG, logger="cgwatch.web"):
        out = asyncio.run(body())
    assert [s for s, _ in out] == [500, 500, 500, 500, 200]
    assert json.loads(out[0][1]) == {
        "error": "internal error serving /api/v1/containers: RuntimeError (see the daemon's log)"}
    assert "pipeline gone" not in out[0][1]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # one traceback per path; the repeat on /api/v1/containers went to debug
    assert [r.getMessage().split(" failed")[0] for r in errors] == [
        "GET /api/v1/containers", "GET /metrics", "GET /healthz"]
    assert all(r.exc_info and "pipeline gone" in str(r.exc_info[1]) for r in errors)
    assert out[-1][1] == '{"containers":[]}'
