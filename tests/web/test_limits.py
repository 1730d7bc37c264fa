"""The pieces of :mod:`cgwatch.web.limits` on their own (issue 15, part 3): the repeated-line
filter, where the server puts it, and raising the open-file limit."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import subprocess
import sys

import pytest

from cgwatch.web import build_app, serve
from cgwatch.web.limits import NOISY_LOGGERS, RepeatFilter, quiet_loggers
from tests.web.conftest import MemoryView


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, name: str = "asyncio", level: int = logging.ERROR,
           exc: BaseException | None = None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args or None,
                             (type(exc), exc, None) if exc is not None else None)


def test_the_same_line_passes_once_per_window_and_then_says_how_often_it_came() -> None:
    clock = Clock()
    f = RepeatFilter(window=10.0, clock=clock)
    passed = []
    for i in range(1000):
        r = record("accept failed from %s", f"10.0.0.{i % 7}", exc=OSError(errno.EMFILE, "Too many open files"))
        if f.filter(r):
            passed.append(r)
        clock.now += 0.001
    assert len(passed) == 1 and passed[0].exc_info is not None
    clock.now += 10.0
    late = record("accept failed from %s", "10.0.0.9", exc=OSError(errno.EMFILE, "Too many open files"))
    assert f.filter(late)
    assert late.getMessage() == "accept failed from 10.0.0.9 (repeated 999 times)"
    assert late.exc_info is None and late.exc_text is None, "the count comes without a second traceback"
    # after that, the count starts again
    assert not f.filter(record("accept failed from %s", "x"))
    clock.now += 10.0
    again = record("accept failed from %s", "y")
    assert f.filter(again) and again.getMessage() == "accept failed from y (repeated 1 times)"


def test_other_lines_levels_and_loggers_are_counted_apart() -> None:
    f = RepeatFilter(window=60.0, clock=Clock())
    assert f.filter(record("a"))
    assert f.filter(record("b"))
    assert f.filter(record("a", level=logging.WARNING))
    assert f.filter(record("a", name="aiohttp.server"))
    assert not f.filter(record("a"))
    assert not f.filter(record("b"))


def test_the_filter_forgets_the_oldest_line_first() -> None:
    f = RepeatFilter(window=60.0, clock=Clock(), max_keys=3)
    for msg in ("a", "b", "c", "d"):
        assert f.filter(record(msg))
    assert f.filter(record("a")), "'a' was forgotten to make room for 'd'"
    assert not f.filter(record("d"))


def test_quiet_loggers_is_idempotent_and_undone() -> None:
    name = "cgwatch.test.quiet"
    undo = quiet_loggers([name])
    undo_again = quiet_loggers([name])
    assert sum(isinstance(x, RepeatFilter) for x in logging.getLogger(name).filters) == 1
    undo_again()
    assert sum(isinstance(x, RepeatFilter) for x in logging.getLogger(name).filters) == 1
    undo()
    assert not logging.getLogger(name).filters


def test_a_running_server_quiets_asyncio_accept_errors(view: MemoryView, caplog: pytest.LogCaptureFixture) -> None:
    """asyncio's accept loop out of descriptors logs one error (and traceback) per failed accept()
    and retries every second; while the server runs, that is one line per window."""

    async def body() -> None:
        runner = await serve(build_app(view), "127.0.0.1:0")
        try:
            assert all(any(isinstance(x, RepeatFilter) for x in logging.getLogger(n).filters) for n in NOISY_LOGGERS)
            loop = asyncio.get_running_loop()
            for _ in range(5000):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(errno.EMFILE, "Too many open files")})
        finally:
            await runner.cleanup()
        assert not [n for n in NOISY_LOGGERS if logging.getLogger(n).filters], "the filters go with the server"

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(body())
    lines = [r for r in caplog.records if r.name == "asyncio" and "out of system resource" in r.getMessage()]
    assert len(lines) == 1


def test_raise_nofile_lifts_the_soft_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"hard open-file limit {hard}")

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    code = ("import resource; from cgwatch.web.limits import raise_nofile; "
            "print(raise_nofile(), resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=low, env={**os.environ}).stdout
    assert out.strip() == "(1024, 1024) (1024, 1024)"
