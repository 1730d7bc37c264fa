"""CPU profiles in a real headless Chromium: the container page opens ``#profile=<pid>`` as a flame
graph (d3-flame-graph, within the page's CSP), zooms, searches and notices new profiles; the
self-contained HTML export draws the same from a file:// URL with the network cut off."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cgwatch.model import Container
from cgwatch.profile import render
from cgwatch.profile.model import Profile, profile_id
from cgwatch.profile.store import ProfileStore
from cgwatch.web import build_app, serve
from tests.web.conftest import MemoryView, container
from tests.web.test_browser import ARTEFACTS, CHROMIUM, browser, until

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium")

WEB = Container(id=("web-1".encode().hex() * 8)[:64], name="web-1", runtime="docker")
STACKS = {("app", "main", "hot_alpha"): 70, ("app", "main", "hot_beta"): 30}


def make(started: float, **kw: Any) -> Profile:
    return Profile(id=profile_id(WEB.id, started), container=WEB, started=started, duration_s=10.0,
                   requested_s=10.0, hz=49, stacks=dict(STACKS), **kw)


FRAMES = "Array.from(document.querySelectorAll('#flame svg g.frame'))"
TITLES = FRAMES + ".map(g => g.querySelector('title').textContent)"


def test_container_page_opens_a_profile_from_the_fragment(tmp_path: Path) -> None:
    ARTEFACTS.mkdir(exist_ok=True)
    store = ProfileStore(tmp_path / "profiles")
    p = make(time.time() - 600, rule="cpu-hog", partial="container exited")
    store.save(p)
    view = MemoryView(store=store)
    view.containers_ = [container("web-1", id=WEB.id, last_seen=time.time())]

    async def body() -> None:
        runner = await serve(build_app(view), "127.0.0.1:0")
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with browser() as (page, errors):
                await page.add_init_script("window.cgwatchProfilePollMs = 300;")
                await page.goto(f"{base}/containers/{WEB.id}#profile={p.id}")
                await until(page, f"document.getElementById('flame').dataset.profile === {p.id!r}")
                titles = await until(page, f"(() => {{ const t = {TITLES}; return t.length >= 5 && t; }})()")
                alpha = next(t for t in titles if t.startswith("hot_alpha"))
                beta = next(t for t in titles if t.startswith("hot_beta"))
                assert "70.000%" in alpha and "70 samples" in alpha
                assert "30.000%" in beta and "30 samples" in beta
                labels = await until(page, f"(() => {{ const t = {FRAMES}.map(g => g.textContent)"
                                           f".join(' '); return t.includes('hot_alpha') && t; }})()")
                assert "hot_beta" in labels
                # the section was scrolled into view
                assert await page.evaluate("document.getElementById('profiles').getBoundingClientRect().top"
                                           " < window.innerHeight")
                assert "hot_alpha" in await page.text_content("#profile-top")
                assert "partial" in await page.text_content("#profile-list")
                assert await page.get_attribute("#profile-list .badge.partial", "title") == "container exited"
                assert "rule cpu-hog" in await page.text_content("#profile-list")
                assert await page.get_attribute("#dl-folded", "href") == f"/api/v1/profiles/{p.id}/folded"
                assert await page.get_attribute("#dl-html", "href") == f"/api/v1/profiles/{p.id}/flamegraph.html"
                width = await page.evaluate("document.querySelector('#flame svg').getAttribute('width')")
                box = await page.evaluate("document.getElementById('flame').getBoundingClientRect().width")
                assert abs(float(width) - box) <= 2                                 # follows the container
                await page.screenshot(path=str(ARTEFACTS / "profile.png"), full_page=True)

                # search: the details line counts the matches
                await page.fill("#flame-search", "hot_beta")
                assert "search: 30 of 100" in await until(page, "document.getElementById('flame-details').textContent")
                await page.fill("#flame-search", "")

                # click to zoom on hot_alpha: it takes the whole width; reset zooms back out
                rect = "document.querySelector('#flame svg g.frame[name=\"hot_alpha\"] rect')"
                await page.click('#flame svg g.frame[name="hot_alpha"]')
                await until(page, f"Math.abs({rect}.getAttribute('width') - {width}) < 2")
                await page.click("#flame-reset")
                await until(page, f"Math.abs({rect}.getAttribute('width') - 0.7 * {width}) < 2")

                # a new profile shows up in the list by itself; opening it by a click redraws
                newer = make(time.time() - 60)
                store.save(newer)
                await until(page, "document.getElementById('profiles').dataset.profiles === '2'")
                await page.click(f'#profile-list tr[data-id="{newer.id}"] td:nth-child(3)')
                await until(page, f"document.getElementById('flame').dataset.profile === {newer.id!r}")
                assert "on demand" in await page.text_content("#profile-title")
                assert await page.evaluate("window.location.hash") == f"#profile={newer.id}"
                await until(page, f"{FRAMES}.length >= 5")
                assert errors == []                                   # CSP refusals would be console errors
        finally:
            await runner.cleanup()

    asyncio.run(body())


def test_unknown_profile_in_the_fragment_says_so(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "profiles")
    view = MemoryView(store=store)
    view.containers_ = [container("web-1", id=WEB.id, last_seen=time.time())]

    async def body() -> None:
        runner = await serve(build_app(view), "127.0.0.1:0")
        try:
            async with browser() as (page, errors):
                await page.goto(f"http://127.0.0.1:{runner.addresses[0][1]}/containers/{WEB.id}#profile=nope")
                text = await until(page, "document.getElementById('profiles-error').textContent")
                assert "no such profile" in text
                assert "no CPU profile of this container yet" in await page.text_content("#profile-list")
                assert [e for e in errors if "404" not in e] == []          # the failed fetch is logged
        finally:
            await runner.cleanup()

    asyncio.run(body())


def test_html_export_draws_offline(tmp_path: Path) -> None:
    p = make(1732492800.0, rule="cpu-hog")
    out = tmp_path / "profile.html"
    assert render.write(p, out) == "html"
    svg = tmp_path / "profile.svg"
    render.write(p, svg)

    async def body() -> None:
        async with browser() as (page, errors):
            asked: list[str] = []

            async def cut(route: Any) -> None:
                if route.request.url.startswith("file://"):
                    await route.continue_()
                else:
                    asked.append(route.request.url)
                    await route.abort()

            await page.route("**/*", cut)
            await page.goto(out.as_uri())
            titles = await until(page, f"(() => {{ const t = {TITLES}; return t.length >= 5 && t; }})()")
            assert any(t.startswith("hot_alpha") and "70.000%" in t for t in titles)
            assert any(t.startswith("hot_beta") and "30.000%" in t for t in titles)
            assert "hot_alpha" in await page.text_content("#top")
            await page.fill("#search", "alpha")
            assert "search: 70 of 100" in await until(page, "document.getElementById('details').textContent")
            await page.screenshot(path=str(ARTEFACTS / "profile-export.png"), full_page=True)
            await page.goto(svg.as_uri())
            assert await page.evaluate("document.querySelectorAll('svg rect').length") >= 5
            await page.screenshot(path=str(ARTEFACTS / "profile-svg.png"))
            assert asked == [] and errors == []

    ARTEFACTS.mkdir(exist_ok=True)
    asyncio.run(body())
