"""The alert-delivery half of the command line: ``replay --config``,
``notify test``, ``silence add|list|expire`` and ``rules check --config``.

Kept apart from :mod:`cgwatch.cli` so that each file stays readable; the
parser there calls :func:`add_parsers`. Every user mistake is a
:class:`~cgwatch.cli.UsageError`-style one-liner (raised as ``UsageError`` by
the caller's type), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO, Any

log = logging.getLogger("cgwatch")

DEFAULT_STATE_DIR = "/var/lib/cgwatch"


class UsageError(Exception):
    """A mistake on the command line or in a file it names; the message says which."""


def add_parsers(sub: Any, duration: Any) -> None:
    """Add ``notify`` and ``silence`` to the ``cgwatch`` sub-command parser."""
    nt = sub.add_parser("notify", help="check the alert sinks of a config file")
    nsub = nt.add_subparsers(dest="notify_cmd", required=True, metavar="COMMAND")
    t = nsub.add_parser("test", help="send one test alert to each sink and print each result")
    t.add_argument("--config", "-c", required=True, metavar="FILE", help="the config file whose notify: to test")
    t.set_defaults(func=cmd_notify_test)

    sl = sub.add_parser("silence", help="silence alerts by rule and/or container for a while")
    ssub = sl.add_subparsers(dest="silence_cmd", required=True, metavar="COMMAND")
    add = ssub.add_parser("add", help="add a silence; prints its id")
    add.add_argument("--rule", metavar="GLOB", help="rule name or glob (e.g. cpu-*)")
    add.add_argument("--container", metavar="GLOB", help="container name, id or glob")
    add.add_argument("--duration", "-d", type=duration, required=True, metavar="D", help="how long, e.g. 2h")
    add.add_argument("--comment", "-m", default="", help="why (shown in 'silence list')")
    add.add_argument("--by", default=os.environ.get("SUDO_USER") or os.environ.get("USER", ""), metavar="WHO",
                     help="who silences (default: $SUDO_USER or $USER)")
    add.set_defaults(func=cmd_silence_add)
    ls = ssub.add_parser("list", help="list silences in force (--all: expired ones too)")
    ls.add_argument("--all", action="store_true", help="include expired silences")
    ls.set_defaults(func=cmd_silence_list)
    ex = ssub.add_parser("expire", help="end a silence now")
    ex.add_argument("id", help="the silence id ('silence list' shows it)")
    ex.set_defaults(func=cmd_silence_expire)
    for p in (add, ls, ex):
        state_args(p)


def state_args(p: argparse.ArgumentParser) -> None:
    """``--state-dir`` and ``--config`` (whose ``state_dir`` is used when ``--state-dir`` is not given)."""
    p.add_argument("--state-dir", metavar="DIR", help=f"where alerts.db lives (default: the config's, else "
                                                        f"{DEFAULT_STATE_DIR})")
    p.add_argument("--config", "-c", metavar="FILE", help="config file (for state_dir and notify)")


def load_config_or_fail(path: str | None) -> Any:
    """The config in ``path`` (None: defaults); a mistake is a one-line UsageError."""
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _state_dir(args: argparse.Namespace) -> str:
    if args.state_dir:
        return str(args.state_dir)
    if getattr(args, "config", None):
        return str(load_config_or_fail(args.config).state_dir)
    return DEFAULT_STATE_DIR


def open_store(state_dir: str) -> Any:
    """``<state_dir>/alerts.db``, creating the directory; a problem is a one-line UsageError."""
    from .alerts.store import Store, StoreError

    try:
        os.makedirs(state_dir, exist_ok=True)
        return Store.open(state_dir)
    except (OSError, StoreError) as e:
        raise UsageError(f"state directory {state_dir}: {e}") from None


def build_sinks_or_fail(cfg: Any) -> dict[str, Any]:
    from .sinks.base import build_sinks

    try:
        return build_sinks(cfg.notify)
    except (ValueError, KeyError) as e:   # validated at load; this is a belt over the braces
        raise UsageError(f"notify: {e}") from None


# -- notify test -------------------------------------------------------------------------------


def cmd_notify_test(args: argparse.Namespace) -> int:
    """Send one test notification to each sink; print ``NAME: ok`` or ``NAME: FAILED (why)``; 1 if any failed."""
    from .sinks.base import notify_test

    cfg = load_config_or_fail(args.config)
    sinks = build_sinks_or_fail(cfg)
    if not sinks:
        raise UsageError(f"{args.config}: notify: defines no sinks")

    async def go() -> list[tuple[str, Any]]:
        try:
            return await notify_test(sinks, cfg.host)
        finally:
            for s in sinks.values():
                await s.close()

    results = asyncio.run(go())
    width = max(len(n) for n in sinks)
    bad = 0
    for name, r in results:
        kind = cfg.notify[name].type
        if r.ok:
            print(f"{name:<{width}}  {kind:<12} ok")
        else:
            bad += 1
            again = " (would be retried)" if r.retry else ""
            print(f"{name:<{width}}  {kind:<12} FAILED: {r.error}{again}")
    return 1 if bad else 0


# -- silences ----------------------------------------------------------------------------------


def cmd_silence_add(args: argparse.Namespace) -> int:
    from .alerts.silence import Silences

    if not args.rule and not args.container:
        raise UsageError("silence add needs --rule and/or --container (a silence of everything is not one)")
    store = open_store(_state_dir(args))
    try:
        sid = Silences(store).add(rule=args.rule, container=args.container, duration_s=args.duration,
                                  comment=args.comment, created_by=args.by)
    except ValueError as e:
        raise UsageError(str(e)) from None
    finally:
        store.close()
    print(sid)
    return 0


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_silence_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .alerts.silence import Silences

    store = open_store(_state_dir(args))
    try:
        found = Silences(store).list(include_expired=args.all)
    finally:
        store.close()
    if not found:
        print("no silences" + ("" if args.all else " in force"))
        return 0
    table = Table(box=None, pad_edge=False)
    for col in ("ID", "RULE", "CONTAINER", "ENDS", "BY", "COMMENT"):
        table.add_column(col, overflow="fold")
    now = time.time()
    for s in found:
        ends = _when(s.ends_at) + (" (expired)" if s.ends_at <= now else "")
        table.add_row(s.id, s.rule or "*", s.container or "*", ends, s.created_by, s.comment)
    Console(width=max(100, Console().width)).print(table)
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    from .alerts.silence import Silences

    store = open_store(_state_dir(args))
    try:
        ok = Silences(store).expire(args.id)
    finally:
        store.close()
    if not ok:
        raise UsageError(f"no silence in force has id {args.id!r} ('cgwatch silence list' shows them)")
    print(f"expired {args.id}")
    return 0


# -- replay through the sinks ------------------------------------------------------------------


def replay_deliver(args: argparse.Namespace, rules: Sequence[Any], items: Iterable[Any], out: IO[str]) -> int:
    """``replay --config C``: evaluate, write alert lines to ``out``, and deliver
    the notices through C's sinks; return once every notice is delivered or
    safely in the outbox (``--deliver-timeout`` bounds the wait)."""
    from .alerts.state import AlertManager
    from .daemon.pipeline import Pipeline
    from .record import record_line
    from .rules.engine import Engine, intervals

    cfg = load_config_or_fail(args.config)
    state_dir = args.state_dir or cfg.state_dir
    store = open_store(state_dir)
    sinks = build_sinks_or_fail(cfg)
    manager = AlertManager(store, sinks, {r.name: r for r in rules}, host=cfg.host)
    pipeline = Pipeline(Engine(rules), manager, cfg.interval)    # the daemon's, interval by interval

    async def go() -> tuple[int, Any]:
        n = 0
        manager.delivery.start()
        try:
            with manager.batch():
                for now, samples, events in intervals(items):
                    for alert in pipeline.process(now, samples, events).alerts:
                        out.write(record_line(alert))
                        out.write("\n")
                        n += 1
            manager.delivery.wake()
            result = await manager.delivery.drain(args.deliver_timeout)
        finally:
            await manager.delivery.close()
        return n, result

    try:
        n, result = asyncio.run(go())
    finally:
        store.close()
    log.info("%d alert state changes", n)
    _report(result, state_dir, sys.stderr)
    return 0


def _report(result: Any, state_dir: str, err: IO[str]) -> None:
    c = result.counters
    sent = sum(x.sent for x in c.values())
    messages = sum(x.messages for x in c.values())
    failed = sum(x.failed for x in c.values())
    dropped = sum(x.dropped for x in c.values())
    line = f"cgwatch: delivered {sent} notification(s) in {messages} message(s) to {len(c)} sink(s)"
    if failed or dropped:
        line += f"; {failed} refused by a receiver, {dropped} dropped as too old"
    if result.pending:
        line += (f"; {result.pending} still in the outbox ({os.path.join(state_dir, 'alerts.db')}), "
                 "sent by the next replay or by 'cgwatch run'")
    print(line, file=err)


# -- rules check --config ----------------------------------------------------------------------


def check_with_config(config: str, paths: Sequence[str]) -> int:
    """``rules check --config C [PATH...]``: the config, its rules (or PATHs) and every
    rule's ``notify:`` names against the config's sinks. 0 if all is well."""
    from .rules.check import check
    from .rules.load import load

    try:
        cfg = load_config_or_fail(config)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 1
    targets = list(paths) or list(cfg.rules)
    status = check(targets)
    unknown = []
    for r in load(targets).rules:
        for name in r.notify:
            if name not in cfg.notify:
                known = ", ".join(sorted(cfg.notify)) or "none"
                unknown.append(f"{r.file}:{r.line}: rule '{r.name}' notifies '{name}', which {config} does not "
                               f"define under notify: (defined: {known})")
    for line in unknown:
        print(line, file=sys.stderr)
    if status == 0 and not unknown:
        print(f"{config}: ok ({len(cfg.notify)} sink(s))")
    return 1 if status or unknown else 0
