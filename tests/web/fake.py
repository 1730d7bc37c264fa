"""A fake daemon for the dashboard tests: containers whose numbers move, events and alerts.

:class:`FakeDaemon` fills a :class:`~tests.web.conftest.MemoryView` the way the
real pipeline does (``hub.update`` once per step). ``python -m tests.web.fake
[N] [PORT]`` serves it for a look in a browser.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time

from cgwatch.daemon.view import verdict_samples
from cgwatch.model import Alert, Container, Event, Sample, Verdict
from cgwatch.web import build_app, serve
from cgwatch.web.view import AlertRecord, RuleInfo, SilenceInfo
from tests.web.conftest import MemoryView, alert, container

GIB = 1024 ** 3

#: the root-cause card web-1's alert got (docs/alerts.md)
CARD = {"changed": [{"metric": "mem.usage_bytes", "before": 104857600.0, "now": 314572800.0, "z": 20.0}],
        "events": [{"ts": 1732492800.0, "kind": "exit", "fields": {"code": 3, "comm": "app"}}],
        "neighbours": "80% behind batch-7", "missing": []}


class FakeDaemon:
    """``n`` containers; ``web-1`` is hot (a firing cpu-hog alert), ``db-0`` gets an OOM kill."""

    def __init__(self, view: MemoryView, n: int = 3, seed: int = 7) -> None:
        self.view, self.rng = view, random.Random(seed)
        names = ["web-1", "db-0", "cache-2"] + [f"svc-{i:03d}" for i in range(max(0, n - 3))]
        self.boxes = [Container(id=(name.encode().hex() * 8)[:64], name=name, runtime="docker",
                                image=f"registry.local/{name.split('-')[0]}:1.{i % 7}",
                                labels={"env": "prod" if i % 2 else "staging", "app": name.split("-")[0]})
                      for i, name in enumerate(names[:n])]
        self.steps = 0
        self.first: dict[str, float] = {}
        for b in self.boxes:
            view.rules_[b.id] = [
                RuleInfo("cpu-hog", "expr", "cpu.usage_cores > 0.9 * cpu.limit_cores", "warning", 30.0),
                RuleInfo("oom-kill", "event", "oom_kill", "critical", 0.0),
                RuleInfo("cpu-baseline", "anomaly", "cpu.usage_cores", "info", 0.0, threshold=0.7)]
        view.silences_ = [SilenceInfo("s-1", "cpu-baseline", "svc-*", time.time() + 7200, "load test", "ops")]

    def values(self, i: int, b: Container, t: float) -> dict[str, float]:
        hot = b.name == "web-1"
        cpu = (1.85 if hot else 0.2 + 0.15 * (i % 5)) + 0.1 * math.sin(t / 20 + i) + self.rng.random() * 0.05
        return {"cpu.usage_cores": cpu, "cpu.limit_cores": 2.0, "mem.usage_bytes": (0.3 + 0.05 * (i % 9)) * GIB
                + 30e6 * math.sin(t / 60 + i), "mem.limit_bytes": 2 * GIB, "proc.execs": self.rng.random() * 3,
                "cpu.runq_latency_p99_ms": 0.2 + self.rng.random(), "proc.count": 12 + i % 4,
                "anomaly.score": min(1.0, 0.2 + 0.1 * math.sin(t / 15) + (0.5 if hot else 0.0))}

    def step(self, now: float) -> None:
        """One interval: samples for every container, now and then an event, the alert on web-1."""
        view, samples = self.view, []
        infos = []
        verdicts = []
        for i, b in enumerate(self.boxes):
            vals = self.values(i, b, now)
            samples += [Sample(now, b, m, v) for m, v in vals.items()]
            # what the anomaly stage says of cpu: its usual range, and web-1 far above it
            usual = 0.2 + 0.15 * (i % 5)
            verdicts.append(Verdict(now, b, "cpu-baseline", "cpu.usage_cores", vals["cpu.usage_cores"],
                                    vals["anomaly.score"], b.name == "web-1", 0.7, usual - 0.12, usual + 0.17, 256.0))
            self.first.setdefault(b.id, now)
            infos.append(container(b.name, id=b.id, image=b.image, labels=dict(b.labels), metrics=vals,
                                   first_seen=self.first[b.id], last_seen=now))
        events: list[Event] = []
        changes: list[Alert] = []
        if self.steps == 2 and len(self.boxes) > 1:
            events.append(Event(now, self.boxes[1], "oom_kill", {"pid": 4242, "comm": "java"}))
            events += [Event(now, self.boxes[1], "exec", {"comm": "sh"})] * 25
        if self.steps == 1:
            web = self.boxes[0]
            changes.append(Alert(now, "cpu-hog", web, "firing", "warning", 1.9, "web-1 used 1.9 cores for 30s"))
            view.records_.append(AlertRecord(now, "cpu-hog", "web-1", "firing", "warning",
                                             "web-1 used 1.9 cores for 30s"))
            view.alerts_ = [alert("cpu-hog", "web-1", container_id=web.id, since=now, value=1.9,
                                  summary="web-1 used 1.9 cores for 30s", card=CARD)]
        view.containers_ = infos
        view.stats_.last_tick_at = now
        view.hub.update(now, samples + verdict_samples(verdicts)[1], events, changes)
        self.steps += 1

    def backfill(self, seconds: float, now: float) -> None:
        """Pretend the daemon has been running ``seconds`` already (history for the charts)."""
        t = now - seconds
        while t < now:
            self.step(t)
            t += 1.0

    async def run(self, every: float = 0.5) -> None:
        """Step forever, every ``every`` seconds."""
        while True:
            self.step(time.time())
            await asyncio.sleep(every)


async def _main(n: int, port: int) -> None:
    view = MemoryView()
    fake = FakeDaemon(view, n)
    fake.backfill(1200, time.time())
    runner = await serve(build_app(view), f"127.0.0.1:{port}")
    print(f"http://127.0.0.1:{port}/", flush=True)
    try:
        await fake.run()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 20, int(sys.argv[2]) if len(sys.argv) > 2 else 9478))
