"""The cache of compiled BPF programs: a program compiles once, and loads again with bpf(2) alone.

Real programs in this kernel: a cached program must load without BCC or the loader
process and count as the compiled one does (tracepoints, raw tracepoints, a ring
buffer); a change to what it was built from must miss; a bad entry or an unsafe
directory must cost one warning and a compile, never the program.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from cgwatch.sources import bpf, loader, progcache
from cgwatch.sources.bpf import PerCpuTable
from cgwatch.sources.cgroups import CgroupFeed
from tests.conftest import hexid
from tests.sources.test_loader import assert_every_change_in_order

BUSY = ["/bin/sh", "-c", "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done"]


@pytest.fixture
def cache(tmp_path):
    """A fresh cache directory, in use for the test's loads."""
    d = tmp_path / "bpf-cache"
    assert bpf.set_cache_dir(d) is None and progcache.current() == d
    yield d
    bpf.set_cache_dir(None)


@pytest.fixture
def starts(monkeypatch):
    """How many loader processes started (each is BCC compiling)."""
    n = [0]
    real = loader.Loader._start

    def counted(self):  # type: ignore[no-untyped-def]
        n[0] += 1
        real(self)

    monkeypatch.setattr(loader.Loader, "_start", counted)
    return n


def no_loader(monkeypatch):
    def refuse(self):  # type: ignore[no-untyped-def]
        raise AssertionError("a loader process was started: the program did not come from the cache")

    monkeypatch.setattr(loader.Loader, "_start", refuse)


def children() -> list[str]:
    out = []
    for task in Path("/proc/self/task").iterdir():
        out += (task / "children").read_text().split()
    return out


def entries(d: Path, prog: str) -> list[Path]:
    return sorted(d.glob(f"{prog}.*.json"))


def wait_counted(prog, cgroups) -> None:  # type: ignore[no-untyped-def]
    """Busy cgroups show in the cpu program's map, with on-CPU time and switches."""
    ids = []
    for _ in range(3):
        c = cgroups(f"docker/{hexid()}")
        c.run(BUSY)
        ids.append(c.cgid)
    table = PerCpuTable(prog["cpu_stats"])
    seen: dict = {}
    for _ in range(1000):
        seen = table.read()
        if set(ids) <= set(seen):
            break
        time.sleep(0.01)
    assert set(ids) <= set(seen), "the busy cgroups never showed in the map"
    for cgid in ids:
        assert seen[cgid][0] > 0 and seen[cgid][1] > 0


@pytest.mark.bpf
@pytest.mark.parametrize("flags", [["-DCGW_HAVE_SWITCH"], ["-DCGW_HAVE_SWITCH", "-DCGW_RAW_SWITCH"]],
                         ids=["tracepoint", "raw-tracepoint"])
def test_the_second_load_comes_from_the_cache_without_bcc_and_counts(cache, cgroups, monkeypatch, flags):
    first = bpf.load("cpu", flags)
    first.close()
    [entry] = entries(cache, "cpu")
    assert entry.stat().st_mode & 0o777 == 0o600
    no_loader(monkeypatch)
    before = set(children())        # what earlier tests left running is not ours
    prog = bpf.load("cpu", flags)
    try:
        assert set(children()) <= before, "a process was started for a cached program"
        assert sorted(prog.funcs) == sorted(first_names(entry))
        assert len(prog.links) == 1
        wait_counted(prog, cgroups)
    finally:
        prog.close()


def first_names(entry: Path) -> list[str]:
    return [f["name"] for f in json.loads(entry.read_text())["funcs"]]


@pytest.mark.bpf
def test_a_cached_ring_buffer_hands_over_every_record_in_order(cache, monkeypatch):
    """The cgroup feed's program from the cache: 2,000 mkdir/rmdir pairs round its ring
    several times, and every change arrives in order (as test_loader checks compiled)."""
    CgroupFeed().close()
    assert entries(cache, "cgroup")
    no_loader(monkeypatch)
    assert_every_change_in_order(CgroupFeed(), f"cgw-cached-{os.getpid()}")


@pytest.mark.bpf
def test_a_changed_source_or_flag_misses_and_replaces_the_entry(cache, tmp_path, monkeypatch, starts):
    src = tmp_path / "bpf"
    shutil.copytree(bpf.bpf_dir(), src, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(bpf, "bpf_dir", lambda: src)
    bpf.load("cgroup").close()
    assert starts[0] == 1
    [old] = entries(cache, "cgroup")
    bpf.load("cgroup").close()
    assert starts[0] == 1, "the unchanged program compiled again"

    (src / "cgroup.bpf.c").write_text((src / "cgroup.bpf.c").read_text() + "\n// changed\n")
    bpf.load("cgroup").close()
    assert starts[0] == 2, "a changed source came from the cache"
    [new] = entries(cache, "cgroup")
    assert new != old                       # one entry per program: the old build is gone

    (src / "cgwatch.h").write_text((src / "cgwatch.h").read_text() + "\n// changed\n")
    bpf.load("cgroup").close()
    assert starts[0] == 3, "a changed header came from the cache"

    bpf.load("cgroup", ["-DCGW_SOMETHING_ELSE"]).close()
    assert starts[0] == 4, "other flags came from the cache"
    assert len(entries(cache, "cgroup")) == 1


def _warnings(caplog) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.bpf
def test_a_truncated_entry_is_one_warning_and_a_compile(cache, caplog, starts):
    bpf.load("cgroup").close()
    [entry] = entries(cache, "cgroup")
    text = entry.read_text()
    entry.write_text(text[: len(text) // 2])
    caplog.clear()
    with caplog.at_level(logging.WARNING, "cgwatch"):
        prog = bpf.load("cgroup")
    prog.close()
    [msg] = _warnings(caplog)
    assert "cgroup.bpf.c" in msg and "not valid JSON" in msg and "\n" not in msg
    assert starts[0] == 2
    assert json.loads(entry.read_text()) == json.loads(text)     # written again, whole


@pytest.mark.bpf
def test_bytecode_the_verifier_rejects_is_one_warning_and_a_compile(cache, caplog, starts):
    bpf.load("cgroup").close()
    [entry] = entries(cache, "cgroup")
    e = json.loads(entry.read_text())
    exit_only = struct.pack("<BBhi", 0x95, 0, 0, 0)        # returns r0, which was never set
    e["funcs"][-1].update(insns=base64.b64encode(exit_only).decode(), relocs=[])
    entry.write_text(json.dumps(e))
    caplog.clear()
    with caplog.at_level(logging.WARNING, "cgwatch"):
        prog = bpf.load("cgroup")
    try:
        [msg] = _warnings(caplog)
        assert "cgroup.bpf.c" in msg and "loading program" in msg and "R0" in msg, msg
        assert starts[0] == 2
        assert len(prog.links) == 2 and len(prog.funcs) == 2
    finally:
        prog.close()
    fds = os.listdir("/proc/self/fd")
    assert not any("bpf-map" in os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(
        f"/proc/self/fd/{fd}")), "the maps made for the failed entry were not closed"


@pytest.mark.bpf
def test_a_directory_others_may_write_is_refused(tmp_path, caplog, starts):
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with caplog.at_level(logging.WARNING, "cgwatch"):
        assert bpf.set_cache_dir(d) is None
    [msg] = _warnings(caplog)
    assert str(d) in msg and "writable by group or others" in msg
    try:
        assert progcache.current() is None
        bpf.load("cgroup").close()
        assert starts[0] == 1 and list(d.iterdir()) == []
    finally:
        bpf.set_cache_dir(None)


@pytest.mark.bpf
def test_an_entry_others_may_write_is_refused_and_replaced(cache, caplog, starts):
    bpf.load("cgroup").close()
    [entry] = entries(cache, "cgroup")
    entry.chmod(0o666)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "cgwatch"):
        bpf.load("cgroup").close()
    [msg] = _warnings(caplog)
    assert "writable by group or others" in msg
    assert starts[0] == 2 and entry.stat().st_mode & 0o777 == 0o600


@pytest.mark.bpf
def test_the_complete_marker_follows_what_the_cache_holds(cache, monkeypatch):
    """After a start, the marker says whether the next start finds every program in the
    cache (then it starts no compiler early): a compile that recorded its program counts,
    one that left no entry does not."""
    bpf.load("cgroup").close()                  # compiled, and recorded by its worker
    progcache.mark_start()
    assert progcache.looks_complete(str(cache.parent))
    progcache.set_dir(cache)
    bpf.load("cgroup").close()                  # from the cache
    progcache.mark_start()
    assert progcache.looks_complete(str(cache.parent))
    progcache.set_dir(cache)
    progcache.missed(cache / "proc.0000.json")  # a compile whose entry never came (the disk full, say)
    progcache.mark_start()
    assert not progcache.looks_complete(str(cache.parent))
    progcache.set_dir(cache)
    progcache.missed()                          # a program compiled with no entry to look for
    progcache.mark_start()
    assert not progcache.looks_complete(str(cache.parent))
    progcache.set_dir(cache)
    progcache.mark_start()
    monkeypatch.setattr(progcache, "_bcc", "0.0.0-other")     # BCC upgraded since
    assert not progcache.looks_complete(str(cache.parent))


def test_cgwatch_run_knows_the_config_defaults_without_importing_them(tmp_path):
    from cgwatch import cli
    from cgwatch.config import DEFAULT_PATH, Config

    assert (cli._CONFIG_PATH, cli._STATE_DIR) == (DEFAULT_PATH, Config().state_dir)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("state_dir: /srv/x\ninterval: 2s\n")
    assert cli._state_dir_hint(str(cfg)) == "/srv/x"
    cfg.write_text("interval: [\n")
    assert cli._state_dir_hint(str(cfg)) == "/var/lib/cgwatch"
    assert cli._state_dir_hint(str(tmp_path / "missing.yaml")) == "/var/lib/cgwatch"


def test_bcc_version_asked_from_many_threads_at_once_is_never_blank(monkeypatch):
    """The sources load in threads side by side, and each asks for BCC's version: a
    blank answer meant "no BCC", so that program was compiled and never recorded, and
    the cache was still marked complete (the next start then compiled it alone)."""
    import threading

    want = progcache.bcc_version()
    assert want
    for _ in range(20):
        monkeypatch.setattr(progcache, "_bcc", None)
        start = threading.Barrier(8)
        got: list[str] = []

        def ask(start: threading.Barrier = start, got: list[str] = got) -> None:
            start.wait()
            got.append(progcache.bcc_version())

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == [want] * 8
