"""The dashboard in a real headless Chromium against a real aiohttp server whose data moves.

Screenshots land in ``tests/web/artefacts/`` (gitignored). The 500-container
test prints the overview's render time; it is a benchmark figure, not asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cgwatch.web import build_app, serve
from tests.web.conftest import MemoryView
from tests.web.fake import FakeDaemon

playwright_api = pytest.importorskip("playwright.async_api")
PlaywrightError = playwright_api.Error
CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = Path(__file__).with_name("artefacts")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium")

WEB_1 = ("web-1".encode().hex() * 8)[:64]


@asynccontextmanager
async def daemon(n: int, backfill: float, port: int = 0) -> AsyncIterator[tuple[str, FakeDaemon, Any]]:
    """A fake daemon stepping every 0.5 s behind the real app; yields (base URL, fake, runner)."""
    view = MemoryView()
    fake = FakeDaemon(view, n)
    fake.backfill(backfill, time.time())
    runner = await serve(build_app(view), f"127.0.0.1:{port}")
    task = asyncio.create_task(fake.run(0.5))
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", fake, runner
    finally:
        task.cancel()
        await runner.cleanup()


@asynccontextmanager
async def browser() -> AsyncIterator[tuple[Any, list[str]]]:
    """A page in headless Chromium, and the list its console errors and page errors go to."""
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = await b.new_page(viewport={"width": 1500, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        try:
            yield page, errors
        finally:
            await b.close()


async def until(page: Any, js: str, timeout: float = 8.0) -> Any:
    """Poll ``js`` (an expression) in the page until it is truthy; its value.
    (``wait_for_function`` would need eval, which the page's CSP forbids, rightly.)"""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = await page.evaluate(js)
        except PlaywrightError as e:    # a navigation under way: no document.body yet
            value, last_error = None, e
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {js}" + (f" (last: {last_error})" if last_error else ""))
        await asyncio.sleep(0.1)


def painted(selector: str) -> str:
    """JS: how many canvases under ``selector`` have at least one non-transparent pixel."""
    return f"""(() => Array.from(document.querySelectorAll({selector!r})).filter(c => {{
        if (!c.width || !c.height) return false;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < d.length; i += 4) if (d[i]) return true;
        return false; }}).length)()"""


def test_overview_container_and_alerts_pages() -> None:
    ARTEFACTS.mkdir(exist_ok=True)

    async def body() -> None:
        async with daemon(3, 1200) as (base, fake, _), browser() as (page, errors):
            await page.goto(base + "/")
            row = f'#overview tr[data-id="{WEB_1}"]'
            cpu = await until(page, f"(() => {{ const r = document.querySelector('{row}');"
                                    " return r && parseFloat(r.children[3].textContent); })()")
            assert cpu > 0
            assert "cpu-hog" in await page.text_content(f"{row} td.alerts")
            assert await page.get_attribute(f"{row} td.alerts .badge", "class") == "badge sev-warning"
            assert await until(page, painted(f"{row} canvas.spark")) == 4
            ticks = int(await page.get_attribute("body", "data-ticks") or 0)
            await until(page, f"+document.body.dataset.ticks > {ticks}")        # live updates arrive
            await page.screenshot(path=str(ARTEFACTS / "overview.png"))

            await page.fill("#filter", "env=prod")
            assert await page.locator("#overview tbody tr").count() == 1       # db-0 only
            await page.fill("#filter", "")
            await page.click('th[data-sort="cpu"]')
            assert await page.text_content("#overview tbody tr:first-child a.cname") == "web-1"

            await page.click(f"{row} a.cname")
            await until(page, "document.body.dataset.charts >= 5")
            assert await until(page, painted(".chart canvas")) >= 5
            assert "threshold 0.70" in await page.text_content('.chart[data-metric="anomaly.score"] h3')
            # the anomaly model's normal band is drawn on the CPU chart, web-1's points above it marked
            cpu = '.chart[data-metric="cpu.usage_cores"]'
            assert await page.get_attribute(cpu, "data-band") == "1"
            assert int(await page.get_attribute(cpu, "data-anomalous") or 0) > 0
            assert await page.locator('.chart[data-metric*="~"]').count() == 0     # no chart of its own
            assert "cpu-hog" in await page.text_content("#rules")
            assert "waited behind: 80% behind batch-7" in await page.text_content("#active .card-lines")
            assert "firing" in await page.text_content("#changes")
            await until(page, "window.cgwatchStats.refreshes >= 1")
            await page.screenshot(path=str(ARTEFACTS / "container.png"), full_page=True)

            await page.goto(base + f"/containers/{('db-0'.encode().hex() * 8)[:64]}")
            await until(page, "document.body.dataset.charts >= 5")
            assert "oom_kill" in await page.text_content("#events")
            assert "exec_storm" in await page.text_content("#events")

            await page.click("nav a[href='/alerts']")
            await until(page, "document.body.dataset.loads >= 1")
            assert "cpu-hog" in await page.text_content("#active")
            card = await page.text_content("#active .card-lines")       # the firing alert's root-cause card
            assert "Around the onset" in card and "mem.usage_bytes 100 MiB \u2192 300 MiB (z 20)" in card, card
            assert "exit (code=3 comm=app)" in card and "waited behind: 80% behind batch-7" in card, card
            assert "load test" in await page.text_content("#silences")
            await page.screenshot(path=str(ARTEFACTS / "alerts.png"))
            assert errors == []

    asyncio.run(body())


def test_reconnects_after_a_restart() -> None:
    async def body() -> None:
        async with browser() as (page, errors):
            async with daemon(3, 30) as (base, _, _):
                port = int(base.rsplit(":", 1)[1])
                await page.goto(base + "/")
                await until(page, "+document.body.dataset.ticks >= 1")
            await until(page, "!document.getElementById('conn').classList.contains('hidden')")
            await page.screenshot(path=str(ARTEFACTS / "reconnecting.png"))
            async with daemon(4, 30, port):
                await until(page, "document.getElementById('conn').classList.contains('hidden')", timeout=15)
                await until(page, "document.querySelectorAll('#overview tbody tr').length === 4")
        # only the refused connections while the server was down may complain
        assert [e for e in errors if "ERR_CONNECTION_REFUSED" not in e and "EventSource" not in e] == []

    asyncio.run(body())


def test_overview_at_500_containers() -> None:
    async def body() -> dict[str, Any]:
        async with daemon(500, 60) as (base, _, _), browser() as (page, errors):
            await page.goto(base + "/")
            await until(page, "window.cgwatchStats && window.cgwatchStats.firstFrameMs !== null", timeout=15)
            ticks = await page.evaluate("window.cgwatchStats.ticks")
            await until(page, f"window.cgwatchStats.ticks >= {ticks + 3}", timeout=15)
            stats: dict[str, Any] = await page.evaluate("window.cgwatchStats")
            await page.screenshot(path=str(ARTEFACTS / "overview-500.png"))
            assert await page.locator("#overview tbody tr").count() == 500
            assert errors == []
            return stats

    stats = asyncio.run(body())
    print(f"\nbenchmark: overview at 500 containers: first tick rendered in {stats['firstRenderMs']:.0f} ms of "
          f"script, first frame painted {stats['firstFrameMs']:.0f} ms after the tick arrived; a later tick "
          f"took {stats['lastRenderMs']:.0f} ms")
