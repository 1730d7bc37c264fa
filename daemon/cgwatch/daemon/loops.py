"""The daemon's loops, one asyncio task each; :class:`~cgwatch.daemon.service.Daemon`
starts them once everything is open and cancels them first at shutdown.

* :func:`collect` ticks the collector every interval (in a thread) and puts the
  batch on a bounded queue; a full queue drops the batch and counts it.
* :func:`process` takes batches off it: the pipeline, then the web view, then
  systemd's STATUS=; now and then the models are saved and alerts.db pruned.
* :func:`profiles` starts the CPU profiles alerts ask for and attaches each to
  its alert when it ends; :func:`cards` builds the root-cause card of each first
  firing notice and attaches it.
* :func:`kubelet` re-reads the kubelet's pod list; :func:`watch_files` turns a
  changed config or rule file into a reload; :func:`watchdog` keeps systemd's
  watchdog fed while collection keeps up.

Each gets exactly what it uses, so what a loop can touch is in its signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from ..alerts.state import AlertManager
from ..alerts.store import StoreError
from ..anomaly.store import Saver
from ..config import Config
from ..identity.kubelet import PodIndex
from ..profile.formats import profile_diff, top_functions, top_json
from ..profile.profiler import Profiler
from ..web.card import card_of
from .host import trim_heap, watched
from .pipeline import Counters, Pipeline
from .sdnotify import Notifier
from .view import DaemonView

log = logging.getLogger("cgwatch")

#: one collected interval: (unix time, samples, events)
Batch = tuple[float, list[Any], list[Any]]

#: BPF map sizes are counted this often (in ticks): it walks the maps
MAP_SIZES_EVERY = 15
#: alert history and finished outbox rows are pruned this often, keeping 7 days
PRUNE_EVERY_S = 3600.0
#: with reload_on_change, the config and rule files are looked at this often
WATCH_EVERY_S = 5.0
#: running profiles fold what the kernel counted this often
PROFILE_POLL_S = 1.0
#: firing notices are looked at for cards this often
CARD_POLL_S = 0.25
#: a first firing notice waits at most this long for its card (it goes as soon as it has it)
CARD_HOLD_S = 5.0
#: objects the youngest GC generation may hold before it is collected (CPython's default: 700)
GC_YOUNG = 20_000


async def collect(collector: Any, counters: Counters, queue: asyncio.Queue[Batch], stop: asyncio.Event,
                  interval: float) -> None:
    """Tick the collector every interval, in a thread; hand batches to the pipeline until ``stop``.

    Everything open by now (modules, the programs' maps and types, the rules) lives as
    long as the daemon: it is moved out of the garbage collector's reach (``gc.freeze``), so
    the full collections a long run makes now and then do not walk ~80,000 objects that can
    never be garbage (46 ms each at 100 containers, ~1 ms an interval on average).

    An interval's batch (a few thousand samples, alive together until the view has them)
    also set off ~3 young collections an interval, each walking the batch to find no cycle:
    the young generation may grow to :data:`GC_YOUNG` objects first (the daemon's garbage is
    freed by reference counts; cycles wait a little longer)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    c = counters
    next_at = time.monotonic() + interval
    n = 0
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
        next_at = max(next_at + interval, time.monotonic())
        n += 1
        t0 = time.monotonic()
        now = time.time()
        samples, events = await asyncio.to_thread(_tick, collector, c, now, n % MAP_SIZES_EVERY == 1)
        c.last_tick_s, c.last_tick_at = time.monotonic() - t0, time.time()
        try:
            queue.put_nowait((now, samples, events))
        except asyncio.QueueFull:
            c.queue_drops["collect"] = c.queue_drops.get("collect", 0) + len(samples) + len(events)
            log.warning("the rules stage is behind: dropped an interval (%d samples)", len(samples))


def _tick(collector: Any, c: Counters, now: float, count_maps: bool) -> tuple[list[Any], list[Any]]:
    samples, events = collector.tick(now)
    c.event_drops = collector.lost_events()
    if count_maps:
        c.bpf_maps = collector.map_sizes()
    return samples, events


async def process(queue: asyncio.Queue[Batch], pipeline: Pipeline, view: DaemonView, saver: Saver,
                  notifier: Notifier, status: Callable[[], str]) -> None:
    """Take batches off the queue: rules, models, alert state, then the view; save models now and then."""
    pruned = time.time()
    p = pipeline
    told = ""       # the STATUS= systemd has: sent again only when it changes (systemd handles each)
    while True:
        now, samples, events = await queue.get()
        out = p.process(now, samples, events)
        view.update(now, out.samples, events, out.alerts, out.verdicts)
        p.counters.ticks += 1
        if p.counters.ticks == 1:
            p.counters.ready = True
        if notifier.enabled and (line := status()) != told and notifier.send(STATUS=line):
            told = line
        if saver.due(now):
            p.anomaly.baselines.evict_idle(now)
            await saver.save_async(p.anomaly.baselines, now)
            trim_heap()      # every few minutes: what Python freed goes back to the kernel
        if now - pruned > PRUNE_EVERY_S:
            pruned = now
            try:
                p.manager.prune()
            except StoreError as e:
                log.warning("old alert history not pruned: %s", e)


async def profiles(pipeline: Pipeline, profiler: Profiler, config: Callable[[], Config]) -> None:
    """Start the profiles alerts ask for; attach each to its alert when it ends (which sends it);
    ``config`` gives the config in force, whose dashboard URL the alert links to."""
    p, prof = pipeline, profiler
    while True:
        requests, p.profile_requests = p.profile_requests, []
        for n, container in requests:
            rule = p.manager.rules.get(n.rule)
            seconds = float(getattr(rule, "profile_s", 0.0) or 0.0)
            started = seconds > 0 and await asyncio.to_thread(
                prof.start, container, seconds, n.rule, (n.fingerprint, n.id))
            if not started:      # busy, capped or unable: the alert goes now, without a profile
                p.manager.release_held(n.id)
        if prof.sessions:
            for done in await asyncio.to_thread(prof.poll):
                diff = await asyncio.to_thread(_diff, prof.store, done) if prof.store is not None else None
                _attach(p.manager, done, config().dashboard_url(), diff)
        await asyncio.sleep(PROFILE_POLL_S)


def _diff(store: Any, done: Any) -> dict[str, Any] | None:
    """What grew and shrank in a stored profile against the container's previous one (None
    without one): :func:`~cgwatch.profile.formats.profile_diff`, with that one's id and time."""
    pr = done.profile
    if done.info is None or not pr.samples:
        return None
    for info in store.list(pr.container.id):
        if info.id != pr.id and info.started < pr.started:
            earlier = store.load(info.id)
            if earlier is None or not earlier.samples:
                return None
            return {"against": info.id, "started": info.started, **profile_diff(earlier, pr)}
    return None


def _attach(manager: AlertManager, done: Any, dashboard_url: str, diff: dict[str, Any] | None = None) -> None:
    fp, notice = done.tag
    pr = done.profile
    top = done.info.top if done.info is not None else top_functions(pr)   # the store computed them
    doc: dict[str, Any] = {"id": pr.id, "samples": pr.samples, "duration_s": pr.duration_s,
                           "partial": pr.partial, "top": top_json(top)}
    if done.info is not None:
        doc["url"] = f"{dashboard_url}/containers/{pr.container.id}#profile={pr.id}"
    if diff:
        doc["diff"] = diff
    try:
        attached = manager.attach_profile(fp, notice, doc)
    except StoreError as e:     # the notice goes at the end of its hold, without the profile
        log.warning("profile %s: not attached to its alert: %s", pr.id, e)
        return
    if not attached:
        log.info("profile %s: its alert resolved before it ended; it is kept on the dashboard", pr.id)


async def cards(pipeline: Pipeline, view: DaemonView) -> None:
    """Build the root-cause card of each first firing notice (from what the dashboard keeps of
    its container: :func:`~cgwatch.web.card.card_of`) and attach it while the notice is
    held for it (:data:`CARD_HOLD_S` at most; then it goes without). Off the sample path; one
    card per firing; each outcome is counted (``cgwatch_cards_total``)."""
    p = pipeline
    while True:
        requests, p.card_requests = p.card_requests, []
        for n, container in requests:
            try:
                card = card_of(view.hub.history, p.manager.rules.get(n.rule), container.id, n.ts)
                outcome = p.manager.attach_card(n, card)
            except StoreError as e:
                log.warning("card of %s on %s: not attached: %s", n.rule, n.container, e)
                outcome = "failed"
            except Exception:       # a card is a help, never a reason to stop carding
                log.exception("card of %s on %s could not be built", n.rule, n.container)
                outcome = "failed"
            p.counters.cards[outcome] = p.counters.cards.get(outcome, 0) + 1
        await asyncio.sleep(CARD_POLL_S)


async def kubelet(pods: PodIndex, every: float) -> None:
    """Read the kubelet's pods now and then (off the loop); a failure keeps the last list."""
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(pods.fetch)


async def watch_files(config_path: str | None, config: Callable[[], Config], reload: asyncio.Event) -> None:
    """reload_on_change: a changed config or rule file sets ``reload``, as SIGHUP does (``config``
    gives the config in force: a reload may change the rule paths). Kubernetes swaps a ConfigMap's
    files through a symlink; stat follows it, so the swap is seen."""
    seen = watched(config_path, config().rules)
    while True:
        await asyncio.sleep(WATCH_EVERY_S)
        now = await asyncio.to_thread(watched, config_path, config().rules)
        if now != seen:
            seen = now
            log.info("config or rule files changed: reloading")
            reload.set()


async def watchdog(notifier: Notifier, counters: Counters, interval: float, every: float) -> None:
    """WATCHDOG=1 while collection keeps up; silence (and a restart by systemd) when it hangs."""
    stalled = max(3 * interval + 5, 2 * every)
    while True:
        last = counters.last_tick_at
        if last is None or time.time() - last < stalled:
            notifier.send(WATCHDOG=1)
        await asyncio.sleep(every)


async def cancel(tasks: list[asyncio.Task[Any]]) -> None:
    """Stop the loops: cancel each and wait until it has ended (a failure was logged when it happened)."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
