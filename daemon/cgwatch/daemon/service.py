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
attaches the probes (in a thread), loads the anomaly baselines, starts
delivery and the web server, then says ``READY=1``. ``SIGHUP`` reloads config
and rules atomically: a broken file keeps the old ones running, logs the
error and says so in ``STATUS``. ``SIGTERM``/``SIGINT`` detach the probes,
give delivery a few seconds to flush, save the models and exit 0 well within
systemd's 10 s. What a reload cannot change without a restart (interval,
collectors, listen, state_dir) is logged as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from ..alerts.state import AlertManager
from ..alerts.store import Store, StoreError
from ..anomaly import store as model_store
from ..anomaly.baselines import Baselines
from ..config import Config, ConfigError, load_config
from ..identity.kubelet import PodIndex
from ..profile.formats import top_functions, top_json
from ..profile.profiler import Profiler, default_cgroup_root
from ..profile.store import ProfileStore
from ..rules.engine import Engine
from ..rules.load import load_rules
from ..sinks.base import build_sinks
from ..sources.bpf import SetupError
from ..web.app import build_app, serve
from .pipeline import Pipeline
from .sdnotify import Notifier, watchdog_interval
from .view import DaemonView

log = logging.getLogger("cgwatch")

#: collected intervals waiting for the pipeline; more and the newest is dropped
QUEUE_TICKS = 8
#: how long SIGTERM lets delivery flush before saving and exiting
STOP_FLUSH_S = 4.0
#: BPF map sizes are counted this often (in ticks): it walks the maps
MAP_SIZES_EVERY = 15
#: models are saved this often
SAVE_EVERY_S = 300.0
#: alert history and finished outbox rows are pruned this often, keeping 7 days
PRUNE_EVERY_S = 3600.0
#: config keys a reload cannot change (the next start takes them)
RESTART_KEYS = ("interval", "collectors", "listen", "state_dir", "host_root", "kubernetes", "profiles")
#: with reload_on_change, the config and rule files are looked at this often
WATCH_EVERY_S = 5.0
#: a firing notice waits this much longer than its profile for it (then goes without)
PROFILE_GRACE_S = 5.0
#: running profiles fold what the kernel counted this often
PROFILE_POLL_S = 1.0


def watched(config_path: str | None, rules: list[str]) -> list[tuple[str, tuple[int, int, int] | None]]:
    """(path, (inode, size, mtime_ns)) of the config file, each rules entry (a directory's
    own entry too: files come and go) and every file in a rules directory or glob."""
    paths = [config_path] if config_path else []
    for entry in rules:
        if os.path.isdir(entry):
            paths.append(entry)
            paths += sorted(glob.glob(os.path.join(entry, "*.y*ml")))
        elif glob.has_magic(entry):
            paths += sorted(glob.glob(entry))
        else:
            paths.append(entry)
    out: list[tuple[str, tuple[int, int, int] | None]] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, (st.st_ino, st.st_size, st.st_mtime_ns)))
        except OSError:
            out.append((p, None))
    return out


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
        self._queue: asyncio.Queue[tuple[float, list[Any], list[Any]]] = asyncio.Queue(QUEUE_TICKS)
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

    async def _start(self) -> Any:
        cfg, rules = self._load()
        self.cfg = cfg
        state = Path(cfg.state_dir)
        try:
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.store = Store.open(state)
        except (OSError, StoreError) as e:
            raise StartError(f"state_dir {state}: {e}") from None
        baselines = Baselines()
        self._saver = model_store.Saver(state / "baselines.json.gz", every_s=SAVE_EVERY_S)
        loaded = model_store.load(self._saver.path, baselines, now=time.time())
        if loaded.loaded:
            log.info("loaded %d anomaly baselines from %s", loaded.loaded, self._saver.path)
        manager = AlertManager(self.store, build_sinks(cfg.notify), {r.name: r for r in rules}, host=cfg.host)
        _drop_orphans(manager)
        self.pipeline = Pipeline(Engine(rules, baselines=baselines), manager, cfg.interval)
        self.view = DaemonView(self.pipeline)
        self.profiler = self._make_profiler(cfg, state, rules)
        if cfg.kubernetes is not None:
            k = cfg.kubernetes
            self.pods = PodIndex(k.kubelet_url, k.token_file, k.tls_verify, k.ca_file)
            self.view.kubelet_stats = self.pods.stats
            await asyncio.to_thread(self.pods.fetch)     # names and labels from the first interval on
        self.collector = await asyncio.to_thread(self._open_collector, cfg, self.profiler, self.pods)
        manager.start()
        runner = await serve(build_app(self.view, cfg.auth.token, cfg.auth.public), cfg.listen)
        log.info("cgwatch running: %d rules, %d sinks, every %gs, http://%s/", len(rules), len(cfg.notify),
                 cfg.interval, cfg.listen)
        return runner

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

    @staticmethod
    def _open_collector(cfg: Config, profiler: Profiler | None = None, pods: PodIndex | None = None) -> Any:
        from ..collect import open_collector

        col = open_collector(cfg.sources(), cfg.host_root, exit_codes=cfg.exit_codes, pods=pods)
        if profiler is not None and profiler.preload:
            profiler.load()
        _trim_heap(pageout=True)   # compiling left ~45 MB of freed LLVM heap and ~75 MB of its libraries
        return col

    async def _kubelet(self, every: float) -> None:
        """Read the kubelet's pods now and then (off the loop); a failure keeps the last list."""
        assert self.pods is not None
        while True:
            await asyncio.sleep(every)
            await asyncio.to_thread(self.pods.fetch)

    async def _watch_files(self) -> None:
        """reload_on_change: a changed config or rule file reloads, as SIGHUP does. Kubernetes
        swaps a ConfigMap's files through a symlink; stat follows it, so the swap is seen."""
        assert self.cfg is not None
        seen = watched(self.config_path, self.cfg.rules)
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            now = await asyncio.to_thread(watched, self.config_path, self.cfg.rules)
            if now != seen:
                seen = now
                log.info("config or rule files changed: reloading")
                self._reload.set()

    async def _profiles(self) -> None:
        """Start the profiles alerts ask for; attach each to its alert when it ends (which sends it)."""
        assert self.pipeline is not None and self.profiler is not None
        prof = self.profiler
        while True:
            p = self.pipeline
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
                    self._attach(done)
            await asyncio.sleep(PROFILE_POLL_S)

    def _attach(self, done: Any) -> None:
        assert self.pipeline is not None and self.cfg is not None
        fp, notice = done.tag
        pr = done.profile
        top = done.info.top if done.info is not None else top_functions(pr)   # the store computed them
        doc: dict[str, Any] = {"id": pr.id, "samples": pr.samples, "duration_s": pr.duration_s,
                               "partial": pr.partial, "top": top_json(top)}
        if done.info is not None:
            doc["url"] = f"{self.cfg.dashboard_url()}/containers/{pr.container.id}#profile={pr.id}"
        try:
            attached = self.pipeline.manager.attach_profile(fp, notice, doc)
        except StoreError as e:     # the notice goes at the end of its hold, without the profile
            log.warning("profile %s: not attached to its alert: %s", pr.id, e)
            return
        if not attached:
            log.info("profile %s: its alert resolved before it ended; it is kept on the dashboard", pr.id)

    # -- the loops -----------------------------------------------------------------------------

    async def _collect(self) -> None:
        """Tick the collector every interval, in a thread; hand batches to the pipeline."""
        assert self.cfg is not None and self.pipeline is not None
        interval, c = self.cfg.interval, self.pipeline.counters
        next_at = time.monotonic() + interval
        n = 0
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    return
            next_at = max(next_at + interval, time.monotonic())
            n += 1
            t0 = time.monotonic()
            now = time.time()
            samples, events = await asyncio.to_thread(self._tick, now, n % MAP_SIZES_EVERY == 1)
            c.last_tick_s, c.last_tick_at = time.monotonic() - t0, time.time()
            try:
                self._queue.put_nowait((now, samples, events))
            except asyncio.QueueFull:
                c.queue_drops["collect"] = c.queue_drops.get("collect", 0) + len(samples) + len(events)
                log.warning("the rules stage is behind: dropped an interval (%d samples)", len(samples))

    def _tick(self, now: float, count_maps: bool) -> tuple[list[Any], list[Any]]:
        assert self.pipeline is not None
        samples, events = self.collector.tick(now)
        c = self.pipeline.counters
        c.event_drops = self.collector.lost_events()
        if count_maps:
            c.bpf_maps = self.collector.map_sizes()
        return samples, events

    async def _process(self) -> None:
        """Take batches off the queue: rules, models, alert state; save models now and then."""
        assert self.pipeline is not None and self.view is not None and self._saver is not None
        pruned = time.time()
        while True:
            now, samples, events = await self._queue.get()
            p = self.pipeline
            alerts = p.process(now, samples, events)
            self.view.update(now, samples, events, alerts)
            p.counters.ticks += 1
            if p.counters.ticks == 1:
                p.counters.ready = True
            self.notifier.send(STATUS=self._status())
            if self._saver.due(now):
                p.engine.baselines.evict_idle(now)
                await self._saver.save_async(p.engine.baselines, now)
                _trim_heap()      # every few minutes: what Python freed goes back to the kernel
            if now - pruned > PRUNE_EVERY_S:
                pruned = now
                try:
                    p.manager.prune()
                except StoreError as e:
                    log.warning("old alert history not pruned: %s", e)

    async def _watchdog(self, every: float) -> None:
        """WATCHDOG=1 while collection keeps up; silence (and a restart by systemd) when it hangs."""
        assert self.cfg is not None and self.pipeline is not None
        stalled = max(3 * self.cfg.interval + 5, 2 * every)
        while True:
            last = self.pipeline.counters.last_tick_at
            if last is None or time.time() - last < stalled:
                self.notifier.send(WATCHDOG=1)
            await asyncio.sleep(every)

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
                _drop_orphans(manager)
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
        loop = asyncio.get_running_loop()
        for sig, ev in ((signal.SIGTERM, self._stop), (signal.SIGINT, self._stop), (signal.SIGHUP, self._reload)):
            loop.add_signal_handler(sig, ev.set)
        runner = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            try:
                runner = await self._start()
            except (StartError, SetupError, OSError) as e:
                log.error("%s", e)
                return 2
            assert self.pipeline is not None
            tasks = [asyncio.create_task(self._collect(), name="collect"),
                     asyncio.create_task(self._process(), name="pipeline")]
            if self.profiler is not None:
                tasks.append(asyncio.create_task(self._profiles(), name="profiles"))
            if self.pods is not None and self.cfg is not None and self.cfg.kubernetes is not None:
                tasks.append(asyncio.create_task(self._kubelet(self.cfg.kubernetes.refresh), name="kubelet"))
            if self.cfg is not None and self.cfg.reload_on_change:
                tasks.append(asyncio.create_task(self._watch_files(), name="watch-files"))
            every = watchdog_interval()
            if every:
                tasks.append(asyncio.create_task(self._watchdog(every), name="watchdog"))
            self.notifier.send(READY=1, STATUS=self._status())
            while not self._stop.is_set():
                waiters = [asyncio.create_task(self._stop.wait()), asyncio.create_task(self._reload.wait()),
                           *[t for t in tasks if not t.done()]]
                done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
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
            return await self._shutdown(tasks, runner)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.notifier.close()

    async def _shutdown(self, tasks: list[asyncio.Task[Any]], runner: Any) -> int:
        """Detach probes, flush delivery briefly, save models; exit 0. Each step has
        a budget, so the whole stays within systemd's 10 s whatever hangs."""
        self.notifier.send(STOPPING=1, STATUS="stopping")
        t0 = time.monotonic()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.collector is not None:
            await _step("detaching the probes", asyncio.to_thread(self.collector.close), 3.0)
        if self.profiler is not None:
            await _step("stopping the profiler", asyncio.to_thread(self.profiler.close), 2.0)
        if runner is not None:
            await _step("stopping the web server", runner.cleanup(), 2.0)
        p = self.pipeline
        if p is not None:
            left = await _step("flushing delivery", p.manager.drain(STOP_FLUSH_S), STOP_FLUSH_S + 0.5)
            await _step("stopping delivery", p.manager.close(), 1.0)
            if left is not None and left.pending:
                log.info("%d notifications stay in the outbox for the next start", left.pending)
            if self._saver is not None:
                await _step("saving the baselines", self._saver.save_async(p.engine.baselines, time.time()), 3.0)
        if self.store is not None:
            self.store.close()
        log.info("stopped in %.1fs", time.monotonic() - t0)
        return 1 if self._failed else 0


def _drop_orphans(manager: AlertManager) -> None:
    """Notices queued for sinks the config no longer has are dropped, and said so."""
    for sink, n in manager.drop_orphans().items():
        log.warning("dropped %d undelivered notifications for sink %r: it is no longer in the config", n, sink)


#: the compiler's libraries: needed to compile the BPF programs at start, not after
_COMPILER_LIBS = ("libLLVM", "libclang")
_MADV_PAGEOUT = 21


def _trim_heap(pageout: bool = False) -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim); with
    ``pageout``, once the programs are compiled, also ask it to page out the
    compiler's libraries (madvise MADV_PAGEOUT, Linux 5.4+; file pages, read back
    if ever needed). Best effort: a failure changes nothing but the resident size."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.malloc_trim(0)
        if not pageout:
            return
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6 or not any(lib in parts[5] for lib in _COMPILER_LIBS):
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                libc.madvise(lo, hi - lo, _MADV_PAGEOUT)
    except (OSError, AttributeError, ValueError):
        pass


async def _step(what: str, aw: Any, budget: float) -> Any:
    """Await one shutdown step for at most ``budget`` seconds; a step that overruns is logged and left."""
    t0 = time.monotonic()
    try:
        result = await asyncio.wait_for(aw, budget)
    except asyncio.TimeoutError:
        log.warning("shutdown: %s took more than %gs; going on without it", what, budget)
        return None
    except Exception as e:   # a failing step must not stop the others (the models still get saved)
        log.warning("shutdown: %s failed: %s", what, e)
        return None
    log.debug("shutdown: %s in %.2fs", what, time.monotonic() - t0)
    return result


def run(config_path: str | None) -> int:
    """Run the daemon until SIGTERM; the process's exit code."""
    return asyncio.run(Daemon(config_path).run())
