"""An in-memory View and a real server on 127.0.0.1 for the web tests.

:class:`MemoryView` is a plain class holding lists a test edits between
requests; ``served(view)`` runs the real app (``build_app`` + ``serve``) on an
ephemeral port in the test's own loop (each test body runs under
``asyncio.run``) and yields an aiohttp client session pointed at it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from cgwatch.profile.store import ProfileStore
from cgwatch.web import AlertInfo, ContainerInfo, Stats, build_app, serve
from cgwatch.web.history import History
from cgwatch.web.live import Hub
from cgwatch.web.view import AlertRecord, RuleInfo, SilenceInfo


def container(name: str, *, id: str | None = None, runtime: str = "docker",
              metrics: Mapping[str, float] | None = None, **kw: Any) -> ContainerInfo:
    """A ContainerInfo with plausible defaults."""
    cid = id or (name.encode().hex() * 8)[:64]
    base: dict[str, Any] = dict(image="nginx:1.27", labels={"env": "prod"}, pod="", qos="",
                                cgroup=f"/system.slice/docker-{cid}.scope", first_seen=1732492800.0,
                                last_seen=1732492830.0)
    base.update(kw)
    return ContainerInfo(id=cid, name=name, runtime=runtime, metrics=dict(metrics or {}), **base)


def alert(rule: str, container: str, *, state: str = "firing", **kw: Any) -> AlertInfo:
    """An AlertInfo with plausible defaults."""
    base: dict[str, Any] = dict(container_id=container * 4, runtime="docker", severity="warning",
                                since=1732492830.0, value=0.97, summary=f"{container} broke {rule}")
    base.update(kw)
    return AlertInfo(rule=rule, container=container, state=state, **base)


def stats(**kw: Any) -> Stats:
    """A healthy daemon's Stats (ready, last tick just now), with overrides."""
    base: dict[str, Any] = dict(
        started_at=time.time() - 600, ready=True, interval_s=1.0, ticks=600, last_tick_at=time.time(),
        last_tick_s=0.012, rules_loaded=7, reload_ok=True, reload_error="", reloads=2,
        samples_total=123456, events_total=789, queue_drops={}, event_drops={}, bpf_maps={},
        models=40, models_evicted=3, delivery={}, outbox_pending=0)
    base.update(kw)
    return Stats(**base)


@dataclass
class MemoryView:
    """A View over plain lists; set ``fail`` to make every call raise it."""

    containers_: list[ContainerInfo] = field(default_factory=list)
    alerts_: list[AlertInfo] = field(default_factory=list)
    stats_: Stats = field(default_factory=stats)
    fail: Exception | None = None
    calls: int = 0
    history: History = field(default_factory=History)
    hub: Hub = field(init=False)
    rules_: dict[str, list[RuleInfo]] = field(default_factory=dict)
    records_: list[AlertRecord] = field(default_factory=list)
    silences_: list[SilenceInfo] = field(default_factory=list)
    store: ProfileStore | None = None

    def __post_init__(self) -> None:
        self.hub = Hub(self.history)

    def _check(self) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail

    def containers(self) -> list[ContainerInfo]:
        self._check()
        return self.containers_

    def alerts(self) -> list[AlertInfo]:
        self._check()
        return self.alerts_

    def stats(self) -> Stats:
        self._check()
        return self.stats_

    def container_rules(self, container_id: str) -> list[RuleInfo]:
        return self.rules_.get(container_id, [])

    def recent_alerts(self, limit: int) -> list[AlertRecord]:
        return self.records_[-limit:]

    def silences(self) -> list[SilenceInfo]:
        return self.silences_

    def profiles(self) -> ProfileStore | None:
        return self.store


Served = Callable[..., AbstractAsyncContextManager[aiohttp.ClientSession]]


@asynccontextmanager
async def _served(view: MemoryView, token: str | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    runner = await serve(build_app(view, token), "127.0.0.1:0")
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession(base_url=f"http://{host}:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


@pytest.fixture
def view() -> MemoryView:
    """A fresh, healthy, empty view."""
    return MemoryView()


@pytest.fixture
def served() -> Served:
    """``async with served(view) as http:`` runs the real app on 127.0.0.1 and gives a session to it."""
    return _served
