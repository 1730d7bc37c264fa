"""``cgwatch run``: one asyncio loop from the kernel to Slack.

Stages and what joins them::

    collector thread ──(bounded queue, drops counted)──► pipeline (rules, models, alert state)
        BPF maps, ring buffers, cgroupfs                        │ SQLite outbox (durable)
                                                                ▼
                                                   delivery tasks, one per sink ──► receivers
    web (healthz, metrics, API) reads the view, which the pipeline's output feeds;
    systemd hears READY, STATUS, WATCHDOG

The collector's ``tick`` (map reads, ring-buffer polls, cgroupfs) runs in a
worker thread, so the loop never blocks on the kernel. A tick whose batch
finds the queue full is dropped and counted (``queue_drops``), never
buffered without end. Alerts are never dropped: they go to SQLite before any
sink sees them.

Lifecycle: start-up loads config and rules (a mistake: one line, exit 2),
opens alerts.db, loads the anomaly baselines, starts delivery and the web
server (``/healthz`` says "starting" until the first interval), attaches the
probes (in a thread), then says ``READY=1``. ``SIGHUP`` reloads config and
rules atomically: a broken file keeps the old ones running, logs the error
and says so in ``STATUS``. ``SIGTERM``/``SIGINT`` undo the start in reverse
(one exit stack): detach the probes, stop the web server, give delivery a
few seconds to flush, save the models and exit 0 well within systemd's 10 s.
What a reload cannot change without a restart (interval, collectors, listen,
state_dir) is logged as such.

This module is that lifecycle (:class:`Daemon`: start, run, reload, shutdown);
the loops it runs are in :mod:`.loops`, what it does with the host (the
collector, the heap, watched files, shutdown budgets) in :mod:`.host`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

from ..alerts.state import AlertManager
from ..alerts.store import Store, StoreError
from ..anomaly import store as model_store
from ..anomaly.baselines import Baselines
from ..anomaly.stage import AnomalyStage
from ..config import Config, ConfigError, load_config
from ..identity.kubelet import PodIndex
from ..profile.profiler import Profiler, default_cgroup_root
from ..profile.store import ProfileStore
from ..rules.engine import Engine
from ..rules.load import load_rules
from ..sinks.base import build_sinks
from ..sources.bpf import SetupError
from ..web.app import build_app, serve
from . import loops
from .host import drop_orphans, on_close, open_collector, shutdown_step
from .pipeline import Pipeline
from .sdnotify import Notifier, watchdog_interval
from .view import DaemonView

log = logging.getLogger("cgwatch")

#: collected intervals waiting for the pipeline; more and the newest is dropped
QUEUE_TICKS = 8
#: how long SIGTERM lets delivery flush before saving and exiting
STOP_FLUSH_S = 4.0
#: models are saved this often
SAVE_EVERY_S = 300.0
#: config keys a reload cannot change (the next start takes them)
RESTART_KEYS = ("interval", "collectors", "listen", "state_dir", "host_root", "kubernetes", "profiles")
#: a firing notice waits this much longer than its profile for it (then goes without)
PROFILE_GRACE_S = 5.0


class StartError(Exception):
    """The daemon cannot start; the message is one line for the operator."""


def load_rules_or_fail(paths: list[str]) -> list[Any]:
    rules, errors = load_rules(paths)
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more; run 'cgwatch rules check')" if len(errors) > 1 else ""
        raise StartError(f"{first.file}:{first.line}:{first.col}: {first.message}{more}")
    return rules


class Daemon:
    """The whole service; :meth:`run` returns the process's exit code."""

    def __init__(self, config_path: str | None, notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.notifier = notifier or Notifier.from_env()
        self.cfg: Config | None = None
        self.pipeline: Pipeline | None = None
        #: what the web side reads; fed after the pipeline each interval
        self.view: DaemonView | None = None
        self.collector: Any = None
        self.store: Store | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._queue: asyncio.Queue[loops.Batch] = asyncio.Queue(QUEUE_TICKS)
        self._saver: model_store.Saver | None = None
        self._failed = False
        self.profiler: Profiler | None = None
        self.pods: PodIndex | None = None

    # -- start ---------------------------------------------------------------------------------

    def _load(self) -> tuple[Config, list[Any]]:
        try:
            cfg = load_config(self.config_path)
        except ConfigError as e:
            raise StartError(str(e)) from None
        return cfg, load_rules_or_fail(cfg.rules)

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """Open everything the daemon runs on, each onto ``stack`` with the step that
        closes it, in the order that makes unwinding the stack the shutdown: the probes
        (opened last) are detached first, then the profiler, the web server and delivery
        stop, the models are saved, and alerts.db (opened first) closes last."""
        cfg, rules = self._load()
        self.cfg = cfg
        state = Path(cfg.state_dir)
        try:
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.store = stack.enter_context(Store.open(state))
        except (OSError, StoreError) as e:
            raise StartError(f"state_dir {state}: {e}") from None
        baselines = Baselines()
        saver = self._saver = model_store.Saver(state / "baselines.json.gz", every_s=SAVE_EVERY_S)
        loaded = model_store.load(saver.path, baselines, now=time.time())
        if loaded.loaded:
            log.info("loaded %d anomaly baselines from %s", loaded.loaded, saver.path)
        manager = AlertManager(self.store, build_sinks(cfg.notify), {r.name: r for r in rules}, host=cfg.host)
        drop_orphans(manager)
        engine = Engine(rules)
        pipeline = self.pipeline = Pipeline(engine, manager, cfg.interval, AnomalyStage.for_rules(engine.rules, baselines, bands=True))
        on_close(stack, "saving the baselines", 3.0,
                 lambda: saver.save_async(pipeline.anomaly.baselines, time.time()))
        self.view = DaemonView(pipeline)
        manager.start()
        stack.push_async_callback(self._stop_delivery)
        runner = await serve(build_app(self.view, cfg.auth.token, cfg.auth.public), cfg.listen)
        on_close(stack, "stopping the web server", 2.0, runner.cleanup)
        self.profiler = profiler = self._make_profiler(cfg, state, rules)
        if profiler is not None:
            on_close(stack, "stopping the profiler", 2.0, lambda: asyncio.to_thread(profiler.close))
        if cfg.kubernetes is not None:
            k = cfg.kubernetes
            self.pods = PodIndex(k.kubelet_url, k.token_file, k.tls_verify, k.ca_file)
            self.view.kubelet_stats = self.pods.stats
            await asyncio.to_thread(self.pods.fetch)     # names and labels from the first interval on
        self.collector = collector = await asyncio.to_thread(open_collector, cfg, profiler, self.pods)
        on_close(stack, "detaching the probes", 3.0, lambda: asyncio.to_thread(collector.close))
        log.info("cgwatch running: %d rules, %d sinks, every %gs, http://%s/", len(rules), len(cfg.notify),
                 cfg.interval, cfg.listen)

    def _make_profiler(self, cfg: Config, state: Path, rules: list[Any]) -> Profiler | None:
        """The profiler, when ``profiles.enabled`` (loaded at start if a rule asks for profiles,
        else on the first request); alerts of rules with ``profile:`` then wait for theirs."""
        assert self.pipeline is not None and self.view is not None
        if not cfg.profiles.enabled:
            return None
        root = default_cgroup_root()
        if root is None:
            return None
        p = cfg.profiles
        store = ProfileStore(state / "profiles", p.max_bytes)
        self.view.profile_store = store
        self.pipeline.manager.profile_grace_s = PROFILE_GRACE_S
        profiler = Profiler(store, root, hz=p.hz, max_concurrent=p.max_concurrent, stack_entries=p.stack_map,
                            preload=any(r.profile_s for r in rules))
        self.view.profile_stats = profiler.stats
        return profiler

    # -- reload --------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """SIGHUP: read config and rules again; keep the old ones if either is broken.

        A mistake in a file is its one ``FILE:LINE:COL`` line; anything unexpected while
        reading or applying them (a bug: it must not end the daemon) is one line with the
        exception's type, the traceback only at debug level. Either way the old config and
        rules stay, the daemon goes on, and ``STATUS`` says ``reload FAILED``.
        """
        assert self.pipeline is not None and self.cfg is not None and self.store is not None
        c = self.pipeline.counters
        c.reloads += 1
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=int(time.monotonic() * 1e6))
        try:
            cfg, rules = self._load()
            sinks = build_sinks(cfg.notify) if cfg.notify != self.cfg.notify else None
            manager = None
            if sinks is not None or cfg.host != self.cfg.host:     # made before anything changes
                manager = AlertManager(self.store, sinks if sinks is not None else self.pipeline.manager.sinks,
                                       {r.name: r for r in rules}, host=cfg.host)
        except (StartError, ConfigError, ValueError, KeyError) as e:   # rule errors come as StartError
            return self._reload_failed(str(e))
        except Exception as e:     # the last line of defence: one line, the old config runs on
            log.debug("reload failed", exc_info=True)
            return self._reload_failed(f"unexpected {type(e).__name__}: {e}")
        for key in RESTART_KEYS:
            if getattr(cfg, key) != getattr(self.cfg, key):
                log.warning("reload: '%s' changed; that takes effect at the next restart", key)
        try:
            self.pipeline.replace_rules(rules, time.time())
            if manager is not None:
                await self.pipeline.replace_sinks(manager)
                drop_orphans(manager)
        except Exception as e:
            log.debug("reload failed", exc_info=True)
            return self._reload_failed(f"unexpected {type(e).__name__} while applying it: {e}")
        self.cfg = cfg.model_copy(update={k: getattr(self.cfg, k)
                                          for k in RESTART_KEYS})
        c.reload_ok, c.reload_error = True, ""
        log.info("reloaded: %d rules, %d sinks", len(rules), len(cfg.notify))
        self.notifier.send(READY=1, STATUS=self._status())
        return True

    def _reload_failed(self, why: str) -> bool:
        """Log and report a failed reload in one line; the old config and rules stay."""
        assert self.pipeline is not None
        why = " ".join(why.split())
        c = self.pipeline.counters
        c.reload_ok, c.reload_error = False, why
        log.error("reload failed, the old config and rules stay: %s", why)
        self.notifier.send(READY=1, STATUS=self._status())
        return False

    def _status(self) -> str:
        """systemd's STATUS= line. A daemon not serving the web (tests make one) has no view
        and counts no containers; the rest of the line is the pipeline's."""
        assert self.pipeline is not None
        return self.pipeline.status_line(self.view.watching() if self.view is not None else 0)

    # -- run -----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start, run the loops until SIGTERM or SIGINT (SIGHUP reloads), stop; the exit code.

        What is opened goes on one exit stack (the notifier and the signal handlers first,
        the loops last), so leaving it, whichever way, closes what did open, newest first:
        a start that fails half-way closes the half that opened.
        """
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.notifier.close)
            loop = asyncio.get_running_loop()
            for sig, ev in ((signal.SIGTERM, self._stop), (signal.SIGINT, self._stop), (signal.SIGHUP, self._reload)):
                loop.add_signal_handler(sig, ev.set)
                stack.callback(loop.remove_signal_handler, sig)
            try:
                await self._start(stack)
            except (StartError, SetupError, OSError) as e:
                log.error("%s", e)
                return 2
            tasks = self._spawn()
            stack.push_async_callback(loops.cancel, tasks)
            self.notifier.send(READY=1, STATUS=self._status())
            await self._supervise(tasks)
            return await self._shutdown(stack)

    async def _supervise(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Wait for SIGTERM or SIGINT, reloading on SIGHUP; a loop that fails is logged
        and stops the daemon (which then exits 1)."""
        while not self._stop.is_set():
            waiters = [asyncio.create_task(self._stop.wait()), asyncio.create_task(self._reload.wait()),
                       *[t for t in tasks if not t.done()]]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters[:2]:
                w.cancel()
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    exc = t.exception()
                    log.error("%s stopped: %s", t.get_name(), exc, exc_info=exc)
                    self._failed = True
                    self._stop.set()
            if self._reload.is_set() and not self._stop.is_set():
                self._reload.clear()
                await self.reload()

    def _spawn(self) -> list[asyncio.Task[Any]]:
        """Start the loops (see :mod:`.loops`), each a task named for its job."""
        cfg, p, view, saver = self.cfg, self.pipeline, self.view, self._saver
        assert cfg is not None and p is not None and view is not None and saver is not None
        jobs = {"collect": loops.collect(self.collector, p.counters, self._queue, self._stop, cfg.interval),
                "pipeline": loops.process(self._queue, p, view, saver, self.notifier, self._status)}
        if self.profiler is not None:
            jobs["profiles"] = loops.profiles(p, self.profiler, self._config)
        p.cards, p.manager.card_hold_s = True, loops.CARD_HOLD_S
        jobs["cards"] = loops.cards(p, view)
        if self.pods is not None and cfg.kubernetes is not None:
            jobs["kubelet"] = loops.kubelet(self.pods, cfg.kubernetes.refresh)
        if cfg.reload_on_change:
            jobs["watch-files"] = loops.watch_files(self.config_path, self._config, self._reload)
        every = watchdog_interval()
        if every:
            jobs["watchdog"] = loops.watchdog(self.notifier, p.counters, cfg.interval, every)
        return [asyncio.create_task(job, name=name) for name, job in jobs.items()]

    def _config(self) -> Config:
        """The config in force, for loops that must see what a reload changed."""
        assert self.cfg is not None
        return self.cfg

    async def _shutdown(self, stack: contextlib.AsyncExitStack) -> int:
        """Stop the loops, detach the probes, flush delivery briefly, save the models: the
        stack unwinding (see :meth:`_start`). Each step has a budget, so the whole stays
        within systemd's 10 s whatever hangs. Exit 0, or 1 after a loop failed."""
        self.notifier.send(STOPPING=1, STATUS="stopping")
        t0 = time.monotonic()
        await stack.aclose()
        log.info("stopped in %.1fs", time.monotonic() - t0)
        return 1 if self._failed else 0

    async def _stop_delivery(self) -> None:
        """Give delivery a few seconds to flush, then stop it; what is left stays in the outbox."""
        assert self.pipeline is not None
        manager = self.pipeline.manager      # a reload may have replaced the one start made
        left = await shutdown_step("flushing delivery", manager.drain(STOP_FLUSH_S), STOP_FLUSH_S + 0.5)
        await shutdown_step("stopping delivery", manager.close(), 1.0)
        if left is not None and left.pending:
            log.info("%d notifications stay in the outbox for the next start", left.pending)


def run(config_path: str | None) -> int:
    """Run the daemon until SIGTERM; the process's exit code."""
    return asyncio.run(Daemon(config_path).run())
