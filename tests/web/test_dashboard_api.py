"""The dashboard's backend: History bounds, the Hub, the JSON endpoints (with bad input), the SSE
stream over real HTTP, the token and the security headers."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import aiohttp
import pytest

from cgwatch.model import Alert, Container, Event, Sample
from cgwatch.web import build_app, serve
from cgwatch.web.history import COARSE_S, EVENTS_KEPT, FINE_S, History
from cgwatch.web.live import Hub
from cgwatch.web.security import HEADERS
from cgwatch.web.view import AlertRecord, RuleInfo, SilenceInfo
from tests.web.conftest import MemoryView, Served, alert, container

WEB = Container(id="4f1c" * 16, name="web-1", runtime="docker", image="nginx:1.27", labels={"env": "prod"})
TOKEN = "correct-horse-battery-staple"


def fed(view: MemoryView, seconds: int = 30, now: float | None = None) -> float:
    """Feed ``seconds`` of one sample a second for web-1 through the hub, ending at ``now``; returns now."""
    now = time.time() if now is None else now
    for i in range(seconds):
        t = now - seconds + 1 + i
        view.hub.update(t, [Sample(t, WEB, "cpu.usage_cores", 0.5 + i / 100),
                            Sample(t, WEB, "mem.usage_bytes", 1e8)], [], [])
    view.containers_ = [container("web-1", id=WEB.id, metrics={"cpu.usage_cores": 0.79}, last_seen=now)]
    return now


def fetch(view: MemoryView, served: Served, *paths: str, token: str | None = None,
          headers: dict[str, str] | None = None) -> list[tuple[int, Any, Any]]:
    """(status, headers, JSON or text) for each path from one server."""
    async def body() -> list[tuple[int, Any, Any]]:
        out = []
        async with served(view, token) as http:
            for path in paths:
                async with http.get(path, headers=headers, allow_redirects=False) as r:
                    text = await r.text()
                    doc = json.loads(text) if r.content_type == "application/json" else text
                    out.append((r.status, r.headers, doc))
        return out

    return asyncio.run(body())


# -- History ------------------------------------------------------------------------------------------


def test_history_rings_are_bounded_and_coarse_covers_the_hour() -> None:
    h = History(interval_s=1.0)
    for t in range(7200):                       # two hours at 1 s
        h.add(float(t), "a", "m", float(t))
    fine_then_coarse = h.series("a", "m", 0.0)
    assert fine_then_coarse is not None
    ts = [t for t, _ in fine_then_coarse]
    assert ts == sorted(ts)
    assert ts[0] >= 7200 - 3600 - 2 * COARSE_S  # coarse reaches back an hour, no further
    assert len([t for t in ts if t >= 7199 - FINE_S]) <= h.fine_n
    assert all(t % COARSE_S == 0 for t in ts if t < ts[-1] - FINE_S)   # older points are bucket starts
    bucket = dict(fine_then_coarse)[6000.0]
    assert bucket == pytest.approx(6000 + (COARSE_S - 1) / 2)      # the mean of the bucket's samples
    before = h.nbytes()
    for t in range(7200, 9000):
        h.add(float(t), "a", "m", 1.0)
    assert h.nbytes() == before                 # rings do not grow


def test_history_caps_containers_and_events_and_forgets_idle() -> None:
    h = History(max_containers=3)
    for i in range(5):
        h.add(float(i), f"c{i}", "m", 1.0)
    assert h.containers() == ["c2", "c3", "c4"] and h.dropped == 2
    h.add(10.0, "c2", "m", 1.0)                 # updated: now the most recent
    h.add(10.0, "c5", "m", 1.0)
    assert h.containers() == ["c4", "c2", "c5"]
    for i in range(EVENTS_KEPT + 50):
        h.event(Event(float(i), WEB, "oom_kill", {"pid": i, "blob": "x" * 1000, "nested": {"no": 1}}))
    kept = h.recent_events(WEB.id)
    assert len(kept) == EVENTS_KEPT and kept[-1]["fields"]["pid"] == EVENTS_KEPT + 49
    assert len(kept[-1]["fields"]["blob"]) == 200 and "nested" not in kept[-1]["fields"]
    h.expire(10.0 + 3601)
    assert "c5" not in h.containers()


def test_history_keeps_notable_events_only() -> None:
    h = History()
    batch = [Event(1.0, WEB, "exec", {"comm": "sh"})] * 30 + [
        Event(1.0, WEB, "exit", {"code": 0}), Event(1.0, WEB, "exit", {"code": 137, "signal": "SIGKILL"}),
        Event(1.0, WEB, "oom_kill", {"comm": "java"})]
    kinds = [e["kind"] for e in h.events(batch)]
    assert kinds == ["exit", "oom_kill", "exec_storm"]
    assert h.recent_events(WEB.id)[-1]["fields"] == {"execs": 30, "comm": "sh"}
    h.alert_change(Alert(2.0, "cpu-hog", WEB, "firing", "warning", math.nan, "hot"))
    assert h.alert_changes(WEB.id)[0]["value"] is None


def test_hub_builds_nothing_without_clients_and_drops_for_slow_ones() -> None:
    built = []
    hub = Hub(History(), queue_size=4, min_tick_s=0.0)
    hub.attach(lambda now: built.append(now) or {"ts": now})
    for i in range(100):
        hub.update(float(i), [Sample(float(i), WEB, "m", 1.0)], [Event(float(i), WEB, "oom_kill")], [])
    assert built == [] and hub.published == 0
    slow = hub.subscribe()
    for i in range(10):
        hub.publish_tick(100.0 + i)
    assert len(built) == 10 and hub.dropped == 6 and slow.dropped == 6
    assert [json.loads(f.split(b"data: ")[1])["ts"] for f in slow.queue] == [106.0, 107.0, 108.0, 109.0]


# -- endpoints ----------------------------------------------------------------------------------------


def test_series_and_detail(view: MemoryView, served: Served) -> None:
    now = fed(view)
    view.hub.update(now, [], [Event(now, WEB, "oom_kill", {"comm": "java"})],
                    [Alert(now, "cpu-hog", WEB, "firing", "warning", 0.9, "hot")])
    view.rules_[WEB.id] = [RuleInfo("cpu-hog", "expr", "cpu.usage_cores > 0.5", "warning", 30.0)]
    view.alerts_ = [alert("cpu-hog", "web-1", container_id=WEB.id)]
    (s1, _, series), (s2, _, detail), (s3, _, recent) = fetch(
        view, served, f"/api/v1/containers/{WEB.id}/series?metric=cpu.usage_cores",
        f"/api/v1/containers/{WEB.id}", f"/api/v1/containers/{WEB.id}/series?metric=cpu.usage_cores&since={now - 2}")
    assert (s1, s2, s3) == (200, 200, 200)
    assert series["container"] == WEB.id and series["metric"] == "cpu.usage_cores"
    assert len(series["points"]) == 30 and series["points"][-1] == [now, pytest.approx(0.79, abs=1e-6)]
    assert [p[0] for p in recent["points"]] == [now - 2, now - 1, now]
    assert detail["container"]["name"] == "web-1" and detail["live"] is True
    assert detail["metrics"] == ["cpu.usage_cores", "mem.usage_bytes"]
    assert detail["rules"] == [{"name": "cpu-hog", "kind": "expr", "text": "cpu.usage_cores > 0.5",
                                "severity": "warning", "for_s": 30.0, "threshold": None}]
    assert [e["kind"] for e in detail["events"]] == ["oom_kill"]
    assert [a["state"] for a in detail["alert_changes"]] == ["firing"]
    assert [a["rule"] for a in detail["alerts"]] == ["cpu-hog"]


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/api/v1/containers/nope/series?metric=cpu.usage_cores", 404, "no such container: 'nope'"),
    ("/api/v1/containers/nope", 404, "no such container: 'nope'"),
    (f"/api/v1/containers/{WEB.id}/series?metric=gpu.hours", 404, "no history of metric 'gpu.hours'"),
    (f"/api/v1/containers/{WEB.id}/series", 400, "query parameter 'metric' is required"),
    (f"/api/v1/containers/{WEB.id}/series?metric=cpu.usage_cores&since=nan", 400, "since must be a finite number"),
    (f"/api/v1/containers/{WEB.id}/series?metric=cpu.usage_cores&since=1e308", 400, "since must be within"),
    (f"/api/v1/containers/{WEB.id}/series?metric=cpu.usage_cores&since=0", 400, "since must be within"),
    (f"/api/v1/containers/{WEB.id}/series?metric=cpu.usage_cores&since=yesterday", 400, "since must be a finite"),
    (f"/api/v1/containers/{WEB.id}/series?metric=x&step=5", 400, "unknown query parameter 'step'"),
    (f"/api/v1/containers/{WEB.id}/series?metric=" + "a" * 5000, 414, "query string too long (5007 bytes"),
    ("/api/v1/containers/" + "z" * 3000, 404, "no such container: 'zzzz"),
    ("/api/v1/alerts/history?limit=0", 400, "limit must be a whole number from 1 to 1000"),
    ("/api/v1/alerts/history?limit=-5", 400, "limit must be a whole number"),
    ("/api/v1/events?x=1", 400, "unknown query parameter 'x'"),
])
def test_bad_input_is_a_json_4xx(view: MemoryView, served: Served, path: str, status: int, message: str) -> None:
    fed(view)
    [(got, headers, doc)] = fetch(view, served, path)
    assert (got, headers["Content-Type"]) == (status, "application/json; charset=utf-8")
    assert doc["error"].startswith(message)


def test_sparklines_alerts_history_and_silences(view: MemoryView, served: Served) -> None:
    fed(view, 60)
    view.records_ = [AlertRecord(float(i), "cpu-hog", "web-1", "firing" if i % 2 else "resolved", "warning", "")
                     for i in range(5)]
    view.silences_ = [SilenceInfo("s1", None, "web-*", 99.0, "deploy", "ops")]
    (s1, _, spark), (s2, _, hist), (s3, _, sil) = fetch(
        view, served, "/api/v1/sparklines", "/api/v1/alerts/history?limit=3", "/api/v1/silences")
    assert (s1, s2, s3) == (200, 200, 200)
    assert spark["step"] == COARSE_S and spark["metrics"][0] == "cpu.usage_cores"
    cpu = spark["containers"][WEB.id]["cpu.usage_cores"]
    assert 900 / COARSE_S - 1 <= len(cpu) <= 900 / COARSE_S + 2 and cpu[-1] is not None and cpu[0] is None
    assert [h["ts"] for h in hist["history"]] == [4.0, 3.0, 2.0]        # newest first
    assert sil == {"silences": [{"id": "s1", "rule": None, "container": "web-*", "ends_at": 99.0,
                                 "comment": "deploy", "created_by": "ops"}]}


def test_pages_and_assets_are_served_with_security_headers(view: MemoryView, served: Served) -> None:
    results = fetch(view, served, "/", f"/containers/{WEB.id}", "/alerts", "/static/overview.js",
                    "/static/vendor/uplot/uPlot.iife.min.js", "/api/v1/containers", "/nope", "/healthz")
    assert [r[0] for r in results] == [200, 200, 200, 200, 200, 200, 404, 200]
    for status, headers, _ in results:
        for key, value in HEADERS.items():
            assert headers[key] == value, (status, key)
    assert "script-src 'self'" in results[0][1]["Content-Security-Policy"]
    assert '<script src="/static/overview.js"' in results[0][2] and "<script>" not in results[0][2]
    assert "style=" not in results[0][2]


# -- the event stream ---------------------------------------------------------------------------------


async def _read_event(resp: aiohttp.ClientResponse) -> tuple[str, Any]:
    """The next SSE message (skipping comments and retry lines) as (kind, data)."""
    kind, data = "", ""
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and kind:
            return kind, json.loads(data)


def test_event_stream_sends_a_snapshot_then_live_messages(view: MemoryView) -> None:
    now = fed(view)
    view.alerts_ = [alert("cpu-hog", "web-1", container_id=WEB.id)]

    async def body() -> None:
        runner = await serve(build_app(view), "127.0.0.1:0")
        host, port = runner.addresses[0][:2]
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/api/v1/events") as r:
                assert r.status == 200 and r.content_type == "text/event-stream"
                assert r.headers["X-Frame-Options"] == "DENY"
                assert await r.content.readline() == b"retry: 2000\n"
                kind, tick = await _read_event(r)
                assert kind == "tick" and tick["containers"][0]["name"] == "web-1"
                assert tick["containers"][0]["m"]["cpu"] == 0.79
                assert tick["containers"][0]["alerts"] == [{"rule": "cpu-hog", "state": "firing",
                                                            "severity": "warning"}]
                assert view.hub.clients == 1
                view.hub.update(now + 1, [], [Event(now + 1, WEB, "oom_kill", {"comm": "java"})],
                                [Alert(now + 1, "oom-kill", WEB, "firing", "critical", None, "OOM")])
                assert (await _read_event(r))[0] == "event"
                kind, change = await _read_event(r)
                assert (kind, change["rule"], change["state"]) == ("alert", "oom-kill", "firing")
                assert (await _read_event(r))[0] == "tick"
        finally:
            await runner.cleanup()
        assert view.hub.clients == 0

    asyncio.run(body())


def test_open_streams_do_not_hold_up_shutdown(view: MemoryView) -> None:
    async def body() -> float:
        runner = await serve(build_app(view), "127.0.0.1:0")
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/api/v1/events") as r:
            await r.content.readline()
            started = time.monotonic()
            await runner.cleanup()
            return time.monotonic() - started

    assert asyncio.run(body()) < 5


# -- the token ----------------------------------------------------------------------------------------


def test_without_the_token_a_public_listener_answers_401_to_everything(view: MemoryView) -> None:
    fed(view)
    paths = ["/", "/alerts", f"/containers/{WEB.id}", "/static/style.css", "/api/v1/containers",
             "/api/v1/events", "/healthz", "/metrics", "/nope", "/?token=wrong"]

    async def body() -> None:
        runner = await serve(build_app(view, TOKEN), "0.0.0.0:0")
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                for path in paths:
                    for headers in ({}, {"Authorization": "Bearer nope"}, {"Cookie": "cgwatch_token=nope"}):
                        async with http.get(base + path, headers=headers, allow_redirects=False) as r:
                            assert r.status == 401, (path, headers)
                            assert (await r.json())["error"]
                            assert r.headers["X-Content-Type-Options"] == "nosniff"
                async with http.get(base + "/api/v1/containers", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert r.status == 200
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as browser:
                async with browser.get(f"{base}/?token={TOKEN}", allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/"
                    cookie = r.headers["Set-Cookie"]
                    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "cgwatch_token=" in cookie
                for path in ("/", "/static/style.css", "/api/v1/containers", "/healthz"):
                    async with browser.get(base + path) as r:
                        assert r.status == 200, path
        finally:
            await runner.cleanup()

    asyncio.run(body())


def test_public_paths_answer_without_the_token_and_nothing_else_does(view: MemoryView) -> None:
    """auth.public: [/healthz, /metrics] lets kubelet probes and Prometheus in; the rest still
    needs the token, even a path that only looks like a public one, and writes never pass."""
    fed(view)

    async def body() -> None:
        runner = await serve(build_app(view, TOKEN, ["/healthz", "/metrics"]), "0.0.0.0:0")
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession() as http:
                for path in ("/healthz", "/metrics"):
                    async with http.get(base + path) as r:
                        assert r.status == 200, path
                for path in ("/", "/api/v1/containers", "/metrics/", "/healthz/../api/v1/alerts", "/api/v1/events"):
                    async with http.get(base + path, allow_redirects=False) as r:
                        assert r.status == 401, path
                async with http.post(base + "/metrics") as r:
                    assert r.status == 401
        finally:
            await runner.cleanup()

    asyncio.run(body())
