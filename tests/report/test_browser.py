"""The HTML report in headless Chromium with every network request refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = Path(__file__).parent / "artefacts"

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium")


def test_opens_offline_and_draws_charts(html_report: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    url = html_report.resolve().as_uri()
    errors: list[str] = []
    refused: list[str] = []

    def route(r: object) -> None:
        req = r.request  # type: ignore[attr-defined]
        if req.url == url:
            r.continue_()  # type: ignore[attr-defined]
        else:
            refused.append(req.url)
            r.abort()  # type: ignore[attr-defined]

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", route)
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('details.container canvas').length >= 5")
            sizes = page.evaluate("[...document.querySelectorAll('canvas')].map(c => [c.width, c.height])")
            offenders = page.evaluate("document.querySelectorAll('[data-offender] canvas').length")
            ARTEFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "report-top.png"))
            page.locator("details.container").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTEFACTS / "report-container.png"))
        finally:
            browser.close()
    assert errors == [] and refused == []
    # 4 offender charts (CPU, memory, execs, network) + a: 3 metrics + b: 4 metrics
    assert offenders == 4
    assert len(sizes) == 4 + 7 and all(w > 100 and h > 100 for w, h in sizes), sizes
