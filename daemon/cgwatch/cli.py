"""cgwatch's command line (DESIGN.md, "Command line").

User mistakes and unready hosts end with one line on stderr and exit 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from .cli_notify import UsageError, add_parsers, check_with_config, replay_deliver, state_args
from .cli_profile import add_parser as add_profile_parser
from .units import parse_duration

log = logging.getLogger("cgwatch")

EXAMPLES = """\
examples:
  sudo cgwatch run --config /etc/cgwatch/config.yaml   the daemon, in the foreground
  sudo cgwatch top                                  live table of every container
  sudo cgwatch record --output rec.jsonl --duration 60s
  sudo cgwatch record --output - --sources cpu,proc | head
  cgwatch rules check rules/
  cgwatch replay --rules rules/default.yaml --input rec.jsonl
  cgwatch replay -r rules/ -i rec.jsonl --config /etc/cgwatch/config.yaml   deliver through its sinks
  cgwatch report --input rec.jsonl --output report.html   one offline HTML page (--format md for a ticket)
  cgwatch notify test --config /etc/cgwatch/config.yaml
  sudo cgwatch silence add --rule 'cpu-*' --container 'web-*' --duration 2h -m "load test"
  sudo cgwatch profile web-1 --duration 10s --output web-1.html   a CPU flame graph of one container
"""


def _duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero")
    return value


def _sources(text: str) -> list[str]:
    from .collect import parse_sources

    try:
        return parse_sources(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cgwatch",
        description="Watch every container on this host with eBPF.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--interval", type=_duration, default=1.0, metavar="D",
                        help="collection interval (default 1s)")
        sp.add_argument("--sources", type=_sources, default=None, metavar="LIST",
                        help="comma-separated sources (default: cpu,proc,mem,net,cgroupfs; io on request)")
        sp.add_argument("--metadata-root", default="/", metavar="DIR",
                        help="where runtimes keep their state (default /)")
        sp.add_argument("--no-exit-codes", dest="exit_codes", action="store_false",
                        help="do not hook exit_group (saves ~40 ns on every syscall of the host; "
                             "exits by fatal signals are still reported)")

    run = sub.add_parser("run", help="the daemon, in the foreground (systemd runs this)")
    run.add_argument("--config", "-c", default=None, metavar="FILE",
                     help="config file (default /etc/cgwatch/config.yaml if it exists, else built-in defaults)")
    run.set_defaults(func=cmd_run)

    rec = sub.add_parser("record", help="capture live Samples and Events as JSON Lines (root)")
    rec.add_argument("--output", "-o", required=True, metavar="FILE", help="file to write, - for stdout")
    rec.add_argument("--duration", type=_duration, default=None, metavar="D",
                     help="stop after this long (default: until interrupted)")
    common(rec)
    rec.set_defaults(func=cmd_record)

    top = sub.add_parser("top", help="live per-container table in the terminal (root)")
    top.add_argument("--iterations", "-n", type=int, default=0, metavar="N",
                     help="stop after N refreshes (default: until interrupted)")
    common(top)
    top.set_defaults(func=cmd_top)

    rules = sub.add_parser("rules", help="check rule files, run rule unit tests")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    chk = rsub.add_parser("check", help="validate rule files; errors as FILE:LINE:COL: message")
    chk.add_argument("paths", nargs="*", metavar="FILE|DIR", help="rule files or directories "
                     "(default with --config: the config's rules)")
    chk.add_argument("--config", "-c", metavar="FILE", help="also check this config file, and the sinks rules notify")
    chk.set_defaults(func=cmd_rules_check)
    tst = rsub.add_parser("test", help="run rule unit tests (input series, expected alerts)")
    tst.add_argument("paths", nargs="+", metavar="FILE")
    tst.set_defaults(func=cmd_rules_test)

    rep = sub.add_parser("replay", help="evaluate rules over a recording; alerts as JSON Lines")
    rep.add_argument("--rules", "-r", action="append", required=True, metavar="PATH",
                     help="rule file or directory (repeatable)")
    rep.add_argument("--input", "-i", required=True, metavar="FILE", help="a recording (JSON Lines)")
    rep.add_argument("--output", "-o", default="-", metavar="FILE", help="alerts file, - for stdout (default)")
    state_args(rep)
    rep.add_argument("--deliver-timeout", type=_duration, default=30.0, metavar="D",
                     help="with --config: how long to wait for the sinks before leaving the rest in the "
                          "outbox (default 30s)")
    rep.set_defaults(func=cmd_replay)

    rpt = sub.add_parser("report", help="summarise a recording: one self-contained HTML page, or Markdown")
    rpt.add_argument("--input", "-i", required=True, metavar="FILE", help="a recording (JSON Lines)")
    rpt.add_argument("--output", "-o", required=True, metavar="FILE", help="file to write, - for stdout")
    rpt.add_argument("--rules", "-r", action="append", default=None, metavar="PATH",
                     help="rule file or directory (repeatable; default: the shipped rule pack)")
    rpt.add_argument("--format", "-f", default=None, metavar="FMT",
                     help="html or md (default: md for an output ending .md, else html)")
    rpt.add_argument("--host", default=None, metavar="NAME",
                     help="the host the recording was made on (recordings do not carry it)")
    rpt.set_defaults(func=cmd_report)
    add_parsers(sub, _duration)
    add_profile_parser(sub, _duration)
    return p


def _load_rules_or_fail(paths: list[str]) -> list[object]:
    from .rules.load import load_rules

    rules, errors = load_rules(paths)
    if errors:
        for e in errors:
            print(e.format(), file=sys.stderr)
        raise UsageError(f"{len(errors)} error(s) in the rules; nothing was evaluated")
    return rules


def cmd_rules_check(args: argparse.Namespace) -> int:
    from .rules.check import check

    if args.config:
        return check_with_config(args.config, args.paths)
    if not args.paths:
        raise UsageError("rules check needs FILE|DIR or --config FILE")
    return check(args.paths)


def cmd_rules_test(args: argparse.Namespace) -> int:
    from .anomaly.stage import AnomalyStage
    from .rules.testing import run_test_files

    return run_test_files(args.paths, anomaly=AnomalyStage.for_rules)


def cmd_replay(args: argparse.Namespace) -> int:
    from .daemon.pipeline import Pipeline
    from .record import RecordingError, read_recording, record_line
    from .rules.engine import Engine, intervals

    rules = _load_rules_or_fail(args.rules)
    n = 0
    try:
        with _output(args.output) as out:
            if args.config:
                return replay_deliver(args, rules, read_recording(args.input), out)
            pipeline = Pipeline(Engine(rules), None)     # the daemon's stages, without alerts.db
            for now, samples, events in intervals(read_recording(args.input)):
                for alert in pipeline.process(now, samples, events).alerts:
                    out.write(record_line(alert))
                    out.write("\n")
                    n += 1
    except RecordingError as e:
        raise UsageError(str(e)) from None
    log.info("%d alert state changes", n)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import os

    from .config import default_rules
    from .record import RecordingError
    from .report import FORMATS, format_for, render, summarize

    fmt = format_for(args.output, args.format)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use {' or '.join(FORMATS)}")
    if not os.path.isfile(args.input):
        raise UsageError(f"{args.input}: no such file" if not os.path.exists(args.input)
                         else f"{args.input}: not a file")
    rules = _load_rules_or_fail(args.rules or default_rules())
    try:
        report = summarize(args.input, rules, host=args.host)
    except RecordingError as e:
        raise UsageError(str(e)) from None
    text = render(report, fmt)
    with _output(args.output) as out:
        out.write(text)
    if report.skipped.count:
        n, why = report.skipped.first[0]
        log.warning("%d lines of %s skipped (first: line %d: %s)", report.skipped.count, args.input, n, why)
    log.info("%d containers, %d samples, %d events; wrote %s", len(report.containers), report.samples,
             report.events, args.output)
    return 0


@contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """SIGTERM and SIGINT end the loop cleanly (the file is flushed, programs detached)."""
    stopped = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: stopped
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _ticks(interval: float, stopped: Callable[[], bool], until: float | None = None) -> Iterator[float]:
    """Wall-clock times one interval apart, without drift, until stopped."""
    nxt = time.monotonic() + interval
    while not stopped():
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 0.1))
            continue
        nxt += interval
        now = time.time()
        if until is not None and now > until + 1e-3:
            return
        yield now
        if until is not None and now >= until - 1e-3:
            return


def _open_output(path: str) -> IO[str]:
    if path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None


@contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    """The file to write (``-``: stdout), closed or flushed at the end; a reader that
    went away (``| head``) ends the writing quietly."""
    out = _open_output(path)
    try:
        yield out
    except BrokenPipeError:
        pass
    finally:
        if out is not sys.stdout:
            out.close()
        else:
            try:
                out.flush()
            except BrokenPipeError:
                pass


#: config.DEFAULT_PATH and Config.state_dir's default, known before config.py (and
#: pydantic) is imported (tests/cli checks they agree)
_CONFIG_PATH, _STATE_DIR = "/etc/cgwatch/config.yaml", "/var/lib/cgwatch"


def _state_dir_hint(path: str | None) -> str:
    """The config's ``state_dir`` read with nothing but YAML (the config is checked later);
    the default when it cannot be read."""
    import yaml

    path = path or _CONFIG_PATH
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        sd = raw.get("state_dir") if isinstance(raw, dict) else None
    except (OSError, ValueError, yaml.YAMLError):
        return _STATE_DIR
    return sd if isinstance(sd, str) and sd else _STATE_DIR


def cmd_run(args: argparse.Namespace) -> int:
    import os

    if os.geteuid() == 0:
        from .sources import loader, progcache

        # BCC imports in its own process while we start (cgwatch.sources.loader), unless the
        # last start loaded every program from the cache and nothing changed since: then
        # the loader would only cost memory (~50 MB PSS at the start-up's peak, measured)
        if not progcache.looks_complete(_state_dir_hint(args.config)):
            loader.prestart()
    from .config import DEFAULT_PATH
    from .daemon import logs, run

    logs.setup(args.verbose)
    path = args.config
    if path is None and os.path.exists(DEFAULT_PATH):
        path = DEFAULT_PATH
    return run(path)


def cmd_record(args: argparse.Namespace) -> int:
    from .collect import DEFAULT_SOURCES, open_collector
    from .record import write_interval

    out = _open_output(args.output)
    col = open_collector(args.sources or DEFAULT_SOURCES, args.metadata_root, args.exit_codes)
    lines = 0
    try:
        with _stop_on_signals() as stopped:
            until = time.time() + args.duration if args.duration else None
            for now in _ticks(args.interval, stopped, until):
                samples, events = col.tick(now)
                lines += write_interval(out, samples, events)
    except BrokenPipeError:
        pass   # `record -o - | head` is fine
    finally:
        col.close()
        if out is not sys.stdout:
            out.close()
    log.info("wrote %d lines to %s", lines, args.output)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from .collect import DEFAULT_SOURCES, open_collector
    from .top import render, snapshot

    col = open_collector(args.sources or DEFAULT_SOURCES, args.metadata_root, args.exit_codes)
    console = Console()
    if not console.is_terminal:     # a pipe or file: no wrapping at 80 columns
        console = Console(width=200)
    try:
        with _stop_on_signals() as stopped:
            n = 0
            if console.is_terminal:
                with Live(render({}), console=console, screen=False, auto_refresh=False) as live:
                    for now in _ticks(args.interval, stopped):
                        samples, _ = col.tick(now)
                        live.update(render(snapshot(samples)), refresh=True)
                        n += 1
                        if args.iterations and n >= args.iterations:
                            break
            else:   # a pipe or a file: one plain table per interval
                for now in _ticks(args.interval, stopped):
                    samples, _ = col.tick(now)
                    console.print(time.strftime("%H:%M:%S", time.localtime(now)))
                    console.print(render(snapshot(samples)))
                    n += 1
                    if args.iterations and n >= args.iterations:
                        break
    finally:
        col.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="cgwatch: %(levelname)s: %(message)s")
    from .sources.bpf import SetupError

    try:
        return int(args.func(args))
    except (SetupError, UsageError) as e:
        print(f"cgwatch: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
