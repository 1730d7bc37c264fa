"""Exit codes that are true: multi-threaded programs end normally, crash, are
killed and exec, and the proc source reports exactly the abnormal ends, each
once, with the code or signal the kernel gave them.

The kernel SIGKILLs the other threads of a process that exits, execs or
crashes, and turns a handler-less SIGTERM into SIGKILL for every thread; none
of that may show as a SIGKILL death (bpf/proc.bpf.c tells how).
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cgwatch.model import Event
from cgwatch.sources import bpf
from cgwatch.sources import proc as proc_module
from cgwatch.sources.proc import ProcSource
from tests.conftest import hexid
from tests.sources.test_bpf_lifecycle import resolver
from tests.sources.test_bpf_live import one

pytestmark = pytest.mark.bpf

SOURCE = Path(__file__).parent / "testdata" / "threads.c"
THREADS = "4"
#: the last process of every case, so that its event says all before it are in
MARKER = (0, "SIGUSR2")


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/sources/testdata/threads.c, compiled."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    out = tmp_path_factory.mktemp("exit-codes") / "threads"
    subprocess.run(["gcc", "-O1", "-pthread", "-o", str(out), str(SOURCE)], check=True)
    return str(out)


@pytest.fixture(scope="module", params=[True, False], ids=["exit-codes", "no-exit-codes"])
def proc(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The proc source as the daemon runs it, and with --no-exit-codes."""
    src = ProcSource(resolver(), exit_codes=request.param)
    yield src
    src.close()


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until ``cond()`` holds; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@dataclass
class Ended:
    pids: list[int]                             # of the processes run, marker last
    exit_events: list[tuple[int, tuple[int, str | None]]]  # (pid, (code, signal)), in order
    exits_nonzero: int
    exits: int
    exec_events: list[Event]


def run_case(proc: ProcSource, cgroups, program: str, runs: list[tuple[list[str], int | None]],  # type: ignore[no-untyped-def]
             returncodes: list[int]) -> Ended:
    """Run each ``(args, signal to send once it is ready)`` in turn, in a fresh
    container, then the marker; return what the source saw there and the pids."""
    cid = hexid()
    c = cgroups(f"system.slice/docker-{cid}.scope")
    res = proc.resolver

    def known() -> bool:
        res.refresh(time.time())
        return cid in {x.id for x in res.containers()}

    wait_for("the container is known to identity", known)
    t0 = time.time()
    proc.collect(t0, res.containers())          # the interval starts here
    proc.events()                               # and so do the events
    pids = []
    for args, sig in runs:
        p = c.run([program, *args], stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        if sig is not None:
            p.send_signal(sig)
        returncodes.append(p.wait(timeout=30))
        pids.append(p.pid)
    marker = c.run([program, "raise", "0", str(int(signal.SIGUSR2))], stdout=subprocess.DEVNULL)
    assert marker.wait(timeout=30) == -signal.SIGUSR2
    pids.append(marker.pid)

    seen: list[Event] = []

    def marker_in() -> bool:
        seen.extend(e for e in proc.events() if e.container.id == cid)
        return any(e.kind == "exit" and e.fields["pid"] == marker.pid for e in seen)

    wait_for("the marker's exit event", marker_in)
    t1 = time.time()
    samples = proc.collect(t1, res.containers())
    exits = [e for e in seen if e.kind == "exit"]
    counts = proc.readers["proc_stats"].read()[c.cgid]
    return Ended(
        pids=pids,
        exit_events=[(e.fields["pid"], (e.fields["code"], e.fields.get("signal"))) for e in exits],
        exits_nonzero=round(one(samples, cid, "proc.exits_nonzero") * (t1 - t0)),
        exits=int(counts[2]),
        exec_events=[e for e in seen if e.kind == "exec"],
    )


def check(proc: ProcSource, cgroups, program: str, runs: list[tuple[list[str], int | None]],  # type: ignore[no-untyped-def]
          returncodes: list[int], abnormal: list[tuple[int, str | None]]) -> Ended:
    """The processes end as ``returncodes`` say, and exactly ``abnormal`` (one
    per process, None for a normal end) are reported, each once, in order."""
    got: list[int] = []
    ended = run_case(proc, cgroups, program, runs, got)
    assert got == returncodes
    want = [(pid, a) for pid, a in zip(ended.pids, [*abnormal, MARKER]) if a is not None]
    assert ended.exit_events == want
    assert ended.exits_nonzero == len(want)
    assert ended.exits == len(ended.pids)       # every process ends once, marker included
    return ended


def codes(proc: ProcSource, code: int) -> tuple[int, str | None] | None:
    """What an exit(code) is reported as: the code, or nothing with --no-exit-codes."""
    return (code, None) if code and "-DCGW_HAVE_EXIT_GROUP" in proc.cflags else None


def test_multithreaded_exit_0_is_a_normal_end(proc, cgroups, program):
    """exit(0) from main while 4 threads run: no event, although the kernel SIGKILLs the threads."""
    check(proc, cgroups, program, [(["exit", THREADS, "0"], None)], [0], [None])


def test_multithreaded_exit_3_is_code_3(proc, cgroups, program):
    """exit(3) from main while 4 threads run: code 3, no signal (nothing with --no-exit-codes)."""
    check(proc, cgroups, program, [(["exit", THREADS, "3"], None)], [3], [codes(proc, 3)])


def test_segv_in_a_thread_is_sigsegv(proc, cgroups, program):
    """A non-main thread's NULL write: SIGSEGV, not the SIGKILLs its siblings get."""
    check(proc, cgroups, program, [(["segv", THREADS], None)], [-signal.SIGSEGV], [(0, "SIGSEGV")])


def test_sigkill_from_outside_is_sigkill(proc, cgroups, program):
    """kill -9 of a 4-thread process: SIGKILL, once."""
    check(proc, cgroups, program, [(["wait", THREADS], signal.SIGKILL)], [-signal.SIGKILL], [(0, "SIGKILL")])


def test_sigterm_without_handler_is_sigterm(proc, cgroups, program):
    """kill -TERM of a handler-less 4-thread process: SIGTERM, though every thread gets SIGKILL."""
    check(proc, cgroups, program, [(["wait", THREADS], signal.SIGTERM)], [-signal.SIGTERM], [(0, "SIGTERM")])


def test_single_threaded_for_comparison(proc, cgroups, program):
    """One thread: exit 0 is nothing, exit 1 is code 1, kill -TERM is SIGTERM."""
    check(proc, cgroups, program, [
        (["exit", "0", "0"], None),
        (["exit", "0", "1"], None),
        (["wait", "0"], signal.SIGTERM),
    ], [0, 1, -signal.SIGTERM], [None, codes(proc, 1), (0, "SIGTERM")])


def test_exec_from_a_thread_is_no_death(proc, cgroups, program):
    """A non-main thread execs /bin/true (its siblings, the leader too, are SIGKILLed),
    which exits 0: one exec, one normal end, no exit event."""
    ended = check(proc, cgroups, program, [(["exec", THREADS], None)], [0], [None])
    pid = ended.pids[0]
    assert [e.fields["filename"] for e in ended.exec_events if e.fields["pid"] == pid] == [program, "/bin/true"]


def test_without_signal_generate_it_still_loads(cgroups, program, monkeypatch, caplog):
    """A kernel without signal:signal_generate (nor group_dead): a warning names the
    tracepoint; exit codes stay true, and a handler-less SIGTERM shows as the SIGKILL
    the kernel made of it."""
    real = bpf.tracepoint_exists
    monkeypatch.setattr(bpf, "tracepoint_exists", lambda g, n: n != "signal_generate" and real(g, n))
    monkeypatch.setattr(proc_module, "tracepoint_fields", lambda g, n: set())
    with caplog.at_level(logging.WARNING, logger="cgwatch.bpf"):
        src = ProcSource(resolver())
    try:
        assert "signal:signal_generate is missing" in caplog.text
        assert not {"-DCGW_HAVE_SIGNAL_GENERATE", "-DCGW_HAVE_GROUP_DEAD"} & set(src.cflags)
        got: list[int] = []
        ended = run_case(src, cgroups, program, [
            (["exit", THREADS, "0"], None),
            (["exit", THREADS, "3"], None),
            (["wait", THREADS], signal.SIGTERM),
        ], got)
        assert got == [0, 3, -signal.SIGTERM]
        pids = ended.pids
        # the marker's SIGUSR2 is a SIGKILL here too
        assert ended.exit_events == [(pids[1], (3, None)), (pids[2], (0, "SIGKILL")), (pids[3], (0, "SIGKILL"))]
    finally:
        src.close()
