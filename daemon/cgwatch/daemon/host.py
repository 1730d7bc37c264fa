"""What the daemon does with its host outside the loops: opening the collector
(BPF programs compiled and attached), giving memory back to the kernel, noticing
changed config files, dropping notices nobody can receive, and bounding each
shutdown step so that stopping stays within systemd's 10 s.

Each is a plain function, so :mod:`.service` reads as the lifecycle and
:mod:`.loops` as the work, with the host's details here.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..alerts.state import AlertManager
from ..config import Config
from ..identity.kubelet import PodIndex
from ..profile.profiler import Profiler

log = logging.getLogger("cgwatch")

#: the compiler's libraries: needed to compile the BPF programs at start, not after


def open_collector(cfg: Config, profiler: Profiler | None = None, pods: PodIndex | None = None) -> Any:
    """Compile and attach the configured sources (seconds: call it in a thread), and load
    the profiler now when a rule will ask for profiles. Programs come from the cache of
    compiled programs in ``<state_dir>/bpf-cache`` (:mod:`cgwatch.sources.progcache`) when
    it holds them; the rest compile in one BCC loader process
    (:mod:`cgwatch.sources.loader`), side by side, which exits after."""
    from concurrent.futures import ThreadPoolExecutor

    from ..collect import open_collector as open_sources
    from ..sources import bpf, loader, progcache

    bpf.set_cache_dir(cache_dir(cfg))
    try:
        with loader.session(), ThreadPoolExecutor(1) as pool:
            preload = pool.submit(profiler.load) if profiler is not None and profiler.preload else None
            col = open_sources(cfg.sources(), cfg.host_root, exit_codes=cfg.exit_codes, pods=pods)
            if preload is not None:
                preload.result()
    finally:
        loader.release()     # a loader started early that nothing used (no BPF source)
    progcache.mark_start()
    trim_heap()
    return col


def cache_dir(cfg: Config) -> str:
    """Where the daemon keeps its compiled BPF programs."""
    return os.path.join(cfg.state_dir, "bpf-cache")


def trim_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim). Best
    effort: a failure changes nothing but the resident size."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


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


def drop_orphans(manager: AlertManager) -> None:
    """Notices queued for sinks the config no longer has are dropped, and said so."""
    for sink, n in manager.drop_orphans().items():
        log.warning("dropped %d undelivered notifications for sink %r: it is no longer in the config", n, sink)


async def shutdown_step(what: str, aw: Any, budget: float) -> Any:
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


def on_close(stack: contextlib.AsyncExitStack, what: str, budget: float, step: Callable[[], Awaitable[Any]]) -> None:
    """When ``stack`` unwinds, await ``step()`` as one :func:`shutdown_step` of at most ``budget`` seconds."""
    stack.push_async_callback(lambda: shutdown_step(what, step(), budget))
