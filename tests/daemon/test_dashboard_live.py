"""The dashboard of the real daemon in headless Chromium: a container made by
the test appears with non-zero CPU, its charts draw, its alert shows, and the
page logs no error. Screenshots: tests/web/artefacts/live-*.png."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import burner
from tests.daemon.running import Daemon, healthy
from tests.daemon.test_daemon_e2e import container_id, write_config
from tests.receiver import Receiver, free_port
from tests.web.test_browser import ARTEFACTS, CHROMIUM, browser, painted, until

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")]


def test_the_live_dashboard_shows_a_new_container_its_charts_and_its_alert(tmp_path, cgroups):
    ARTEFACTS.mkdir(exist_ok=True)
    port, listen = free_port(), free_port()
    cfg = write_config(tmp_path, port, listen)
    with Receiver(port):
        d = Daemon(tmp_path, cfg)
        try:
            d.ready()
            assert healthy(listen, within=5.0)
            cid = container_id()
            cgroups(f"docker/{cid}").run(burner())
            base = f"http://127.0.0.1:{listen}"

            async def body() -> None:
                async with browser() as (page, errors):
                    await page.goto(base + "/")
                    row = f'#overview tr[data-id="{cid}"]'
                    # the burner keeps a core busy: the row shows it (the first interval may be partial)
                    await until(page, f"(() => {{ const r = document.querySelector('{row}');"
                                      " return r && parseFloat(r.children[3].textContent) > 0.3; })()", 10.0)
                    await until(page, f"(() => {{ const a = document.querySelector('{row} td.alerts');"
                                      " return a && a.textContent.includes('e2e-cpu-hot'); })()", 10.0)
                    await until(page, painted(f"{row} canvas.spark"), 10.0)
                    await page.screenshot(path=str(ARTEFACTS / "live-overview.png"))
                    await page.click(f"{row} a.cname")
                    await until(page, "document.body.dataset.charts >= 3", 10.0)
                    assert await until(page, painted(".chart canvas"), 10.0) >= 3
                    assert "e2e-cpu-hot" in await page.text_content("#rules")
                    await page.screenshot(path=str(ARTEFACTS / "live-container.png"), full_page=True)
                    assert errors == []

            asyncio.run(body())
        finally:
            assert d.stop() == 0
