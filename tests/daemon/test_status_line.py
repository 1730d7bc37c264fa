"""systemd hears ``STATUS=`` when the line changes, not every interval: PID 1 handles every
datagram a service sends, and a host's STATUS was the same line once a second."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cgwatch.anomaly.store import Saver
from cgwatch.daemon import loops
from cgwatch.daemon.view import DaemonView
from cgwatch.model import Frame
from tests.daemon.test_reload_badconfig import Notes, started


class Listening(Notes):
    """A notifier with systemd listening (the recording one of the reload tests has none)."""

    @property
    def enabled(self) -> bool:
        return True


def test_status_is_sent_when_it_changes_and_not_every_interval(tmp_path: Path) -> None:
    d = started(tmp_path)
    assert d.pipeline is not None
    notes = Listening()
    lines = ["watching 3 containers"] * 4 + ["watching 4 containers"] * 3 + ["watching 3 containers"]

    async def run() -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for i in range(len(lines)):
            queue.put_nowait((1000.0 + i, Frame(), []))
        asked = iter(lines)
        task = asyncio.create_task(loops.process(queue, d.pipeline, DaemonView(d.pipeline),
                                                 Saver(tmp_path / "b.json.gz", every_s=3600.0), notes,
                                                 lambda: next(asked)))
        while d.pipeline.counters.ticks < len(lines):
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run())
    assert [m["STATUS"] for m in notes.sent] == ["watching 3 containers", "watching 4 containers",
                                                 "watching 3 containers"]
