"""``/healthz`` over real HTTP: starting → ok → stalled → ok, and a failed reload warns but stays 200."""

from __future__ import annotations

import asyncio
import time

from tests.web.conftest import MemoryView, Served, stats


def test_healthz_follows_the_daemon_through_its_life(view: MemoryView, served: Served) -> None:
    async def body() -> list[tuple[int, str, str]]:
        seen = []
        async with served(view) as http:
            async def probe() -> None:
                async with http.get("/healthz") as r:
                    seen.append((r.status, await r.text(), r.content_type))

            view.stats_ = stats(ready=False, last_tick_at=None, ticks=0)
            await probe()
            view.stats_ = stats(ready=True, last_tick_at=None, ticks=0)       # up, nothing collected yet
            await probe()
            view.stats_ = stats(ready=True, interval_s=10.0, last_tick_at=time.time() - 2)
            await probe()
            view.stats_ = stats(ready=True, interval_s=10.0, last_tick_at=time.time() - 42)  # limit: 35s
            await probe()
            view.stats_ = stats(ready=True, interval_s=10.0, last_tick_at=time.time() - 34)  # just inside
            await probe()
        return seen

    seen = asyncio.run(body())
    assert [(status, text) for status, text, _ in seen] == [
        (503, "starting\n"),
        (503, "starting: no collection has finished yet\n"),
        (200, "ok\n"),
        (503, "collection stalled for 42s\n"),
        (200, "ok\n"),
    ]
    assert {ctype for _, _, ctype in seen} == {"text/plain"}


def test_failed_reload_is_a_warning_not_an_outage(view: MemoryView, served: Served) -> None:
    view.stats_ = stats(reload_ok=False, reload_error="rules/web.yaml:3:7: unknown metric 'cpu.usge'\n(more)")

    async def body() -> tuple[int, str]:
        async with served(view) as http, http.get("/healthz") as r:
            return r.status, await r.text()

    status, text = asyncio.run(body())
    assert status == 200
    assert text.splitlines() == [
        "ok",
        "warning: config reload failed, previous rules still running: "
        "rules/web.yaml:3:7: unknown metric 'cpu.usge' (more)",
    ]


def test_head_works_and_post_is_405(view: MemoryView, served: Served) -> None:
    async def body() -> tuple[int, int, dict[str, str], str]:
        async with served(view) as http:
            async with http.head("/healthz") as head:
                pass
            async with http.post("/healthz", data=b"x") as post:
                return head.status, post.status, dict(post.headers), await post.text()

    head, post, headers, text = asyncio.run(body())
    assert (head, post) == (200, 405)
    assert "GET" in headers["Allow"]
    assert headers["Content-Type"].startswith("application/json")
    assert text == '{"error":"method POST not allowed on /healthz"}'
