"""The BPF loader process: programs compile there, the daemon keeps descriptors only.

Real programs in this kernel: what the daemon relies on is that its probes keep
counting after the loader has exited, that the ring buffer read from its shared
pages hands over every record in order (across the wrap of its data area), that
a compile error is one line, and that the compiler never runs in the daemon.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgwatch.identity import find_cgroup2_root
from cgwatch.sources import bpf, loader
from cgwatch.sources.bpfsys import MAP_RINGBUF, Program
from cgwatch.sources.cgroups import CgroupFeed
from tests.conftest import hexid
from tests.receiver import free_port

pytestmark = pytest.mark.bpf


def test_a_compile_error_is_one_line_and_the_loader_keeps_serving(tmp_path):
    bad = tmp_path / "bad.bpf.c"
    bad.write_text("int broken(void *ctx) { return undeclared_thing; }\n")
    with loader.session() as ld:
        with pytest.raises(loader.LoadError) as e:
            ld.load(str(bad), [])
        assert "\n" not in str(e.value) and "bad.bpf.c" in str(e.value)
        good = ld.load(str(bpf.bpf_dir() / "cgroup.bpf.c"), [f"-I{bpf.bpf_dir()}"])
        good.close()


def test_the_loader_exits_with_its_session_and_the_probes_keep_counting():
    root = find_cgroup2_root()
    assert root is not None
    with loader.session() as ld:
        prog = ld.load(str(bpf.bpf_dir() / "cgroup.bpf.c"), [f"-I{bpf.bpf_dir()}"])
        child = ld._proc
    assert child.poll() is not None, "the loader process outlived its session"
    try:
        assert isinstance(prog, Program) and prog["cgroup_events"].type == MAP_RINGBUF
        seen: list[str] = []
        prog.open_ring_buffer("cgroup_events", lambda d: seen.append(
            bytes(prog["cgroup_events"].event(d).path).split(b"\0", 1)[0].decode()))
        name = f"cgw-loader-test-{os.getpid()}"
        (root / name).mkdir()
        (root / name).rmdir()
        prog.ring_buffer_consume()
        assert seen.count(f"/{name}") == 2       # made and removed, seen by the attached probe
    finally:
        prog.close()


def test_the_ring_buffer_hands_over_every_record_in_order_across_its_wrap():
    """The cgroup feed's ring is 64 pages: 2,000 mkdir/rmdir pairs read in rounds of 100
    go round it several times; every change arrives, in the order it was made."""
    assert_every_change_in_order(CgroupFeed(), f"cgw-wrap-{os.getpid()}")


def assert_every_change_in_order(feed: CgroupFeed, base: str) -> None:
    """2,000 cgroups made and removed under the root in rounds of 100 (long names, so the
    records go round the ring): ``feed`` hands over every change, in order. Closes it."""
    root = find_cgroup2_root()
    assert root is not None
    try:
        got: list[tuple[str, bool]] = []
        made: list[tuple[str, bool]] = []
        for rnd in range(20):
            for i in range(100):
                d = root / f"{base}-{rnd}-{i}-{'x' * 80}"
                d.mkdir()
                d.rmdir()
                made += [(f"/{d.name}", False), (f"/{d.name}", True)]
            changes, complete = feed.poll()
            assert complete, "the ring lost records it had room for"
            got += [(path, removed) for _, path, removed in changes if path.startswith(f"/{base}-")]
        assert got == made
    finally:
        feed.close()


def test_the_compiler_never_runs_in_the_daemon(tmp_path):
    """`cgwatch run` loads every default program, yet maps neither BCC nor LLVM."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\nlisten: 127.0.0.1:{free_port()}\n")
    sock = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(sock))
    s.settimeout(120)       # only stops a broken run
    proc = subprocess.Popen([sys.executable, "-m", "cgwatch", "run", "--config", str(cfg)],
                            env={**os.environ, "NOTIFY_SOCKET": str(sock)},
                            stderr=subprocess.PIPE, text=True)
    try:
        while b"READY=1" not in s.recv(4096):
            assert proc.poll() is None, "the daemon stopped before it was ready"
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libbcc" not in maps and "libLLVM" not in maps and "libclang" not in maps
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert kids == [], "the loader process is still running"
        fds = os.listdir(f"/proc/{proc.pid}/fd")
        links = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in fds]
        assert sum("bpf-prog" in x for x in links) >= 5      # the programs, held by descriptor
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        s.close()
    assert proc.returncode == 0, err


def test_the_key_by_key_walk_reads_what_the_batch_read_does(cgroups):
    """Kernels before 5.6 have no batch lookups; the walk that stands in must agree."""
    from cgwatch.sources.bpf import PerCpuTable

    with loader.session() as ld:
        prog = ld.load(str(bpf.bpf_dir() / "cpu.bpf.c"), [f"-I{bpf.bpf_dir()}", "-DCGW_HAVE_SWITCH"])
    try:
        ids = []
        for _ in range(6):
            c = cgroups(f"docker/{hexid()}")
            c.run(["/bin/sh", "-c", "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done"])
            ids.append(c.cgid)
        table = PerCpuTable(prog["cpu_stats"], chunk=4)     # a small chunk: several batches
        batch: dict = {}
        for _ in range(6000):                               # until each has been switched out
            batch = table.read()
            if set(ids) <= set(batch):
                break
            time.sleep(0.01)
        assert set(ids) <= set(batch), "the busy cgroups never showed in the map"
        table._batch = False
        walk = table.read()
        assert set(batch) <= set(walk)                        # cgroups are only added meanwhile
        for cgid in ids:
            assert (walk[cgid] >= batch[cgid]).all()          # counters only grow
            assert batch[cgid][0] > 0 and batch[cgid][1] > 0  # on-CPU time and switches
    finally:
        prog.close()


def _comparable(entry: Path) -> dict:
    """A cache entry with the map descriptors its bytecode loads blanked (they differ
    from load to load)."""
    import base64
    import json
    import struct

    e = json.loads(entry.read_text())
    for f in e["funcs"]:
        code = bytearray(base64.b64decode(f["insns"]))
        for i, _ in f["relocs"]:
            struct.pack_into("<i", code, i * 8 + 4, 0)
        f["insns"] = bytes(code)
    return e


def _load_together(ld: loader.Loader, asks: list[tuple[str, list[str]]], cache: Path) -> list:
    """``asks`` (program, flags) sent one after the other, then waited for, each recorded
    in ``cache``."""
    from cgwatch.sources import progcache

    sent = [ld.ask(str(bpf.bpf_dir() / f"{name}.bpf.c"), [f"-I{bpf.bpf_dir()}", *flags],
                   cache={"path": str(cache / f"{name}.json"), "bcc": progcache.bcc_version()})
            for name, flags in asks]
    return [s.result() for s in sent]


#: programs with flags of their own, some the same macro with other values (proc's and mem's
#: ring sizes), and cpu's run-queue build, whose value struct grows with -DCGW_RUNQ
TOGETHER = [("cgroup", []), ("proc", ["-DCGW_HAVE_FORK", "-DCGW_HAVE_EXEC", "-DCGW_RINGBUF_PAGES=8"]),
            ("mem", ["-DCGW_HAVE_OOM"]), ("cpu", ["-DCGW_HAVE_SWITCH", "-DCGW_RUNQ"]), ("net", ["-DCGW_HAVE_RETRANS"])]


def test_programs_asked_together_compile_as_one_unit_into_what_each_compiles_alone(tmp_path, caplog):
    """The daemon's sources ask for their programs at once; the loader compiles them in one
    unit (one of BCC's fixed costs instead of one each). Each program still gets only its own
    maps and probes, and the same bytecode and map layouts as when it compiles alone: no
    program sees another's flags or macros."""
    import logging

    caplog.set_level(logging.DEBUG, logger="cgwatch.bpf")
    alone, together = tmp_path / "alone", tmp_path / "together"
    alone.mkdir()
    together.mkdir()
    for ask in TOGETHER:                  # one session each: nothing to share a unit with
        with loader.session() as ld:
            _load_together(ld, [ask], alone)[0].close()
    assert not any("one unit" in r.getMessage() for r in caplog.records)
    # a loader that starts with the first request: the others are sent before it could
    # even have imported BCC
    ld = loader.Loader(start=False)
    try:
        progs = _load_together(ld, TOGETHER, together)
    finally:
        ld.close()
    try:
        units = [r.getMessage() for r in caplog.records if "compiled in one unit with" in r.getMessage()]
        assert len(units) == len(TOGETHER)
        assert all(f"{n}.bpf.c" in m for m in units for n, _ in TOGETHER)
        for (name, _), prog in zip(TOGETHER, progs):
            assert _comparable(together / f"{name}.json") == _comparable(alone / f"{name}.json"), name
            own = {m["name"] for m in _comparable(alone / f"{name}.json")["maps"]}
            assert set(prog.maps) == own, name
        by = dict(zip((n for n, _ in TOGETHER), progs))
        assert by["proc"]["proc_events"].max_entries == 8 * 4096        # its -DCGW_RINGBUF_PAGES=8
        assert by["mem"]["mem_events"].max_entries == 16 * 4096         # its own default, not proc's
        assert by["cpu"]["cpu_stats"].stride == 8 * (5 + 26)            # with the run-queue fields
    finally:
        for p in progs:
            p.close()


@pytest.mark.parametrize("trouble", ["a compile error", "a name declared twice"])
def test_a_unit_that_cannot_compile_falls_back_to_one_by_one(tmp_path, trouble):
    """Asked together with a program that breaks the unit, the others still load, and the
    broken one gets its own one-line error, as when it compiles alone."""
    other = tmp_path / "other.bpf.c"
    if trouble == "a compile error":
        other.write_text("int broken(void *ctx) { return undeclared_thing; }\n")
    else:      # the same ring buffer's name as cgroup.bpf.c: cannot share a unit with it
        other.write_text((bpf.bpf_dir() / "cgroup.bpf.c").read_text())
    flags = [f"-I{bpf.bpf_dir()}", f"-I{tmp_path}"]
    srcs = [str(bpf.bpf_dir() / "cgroup.bpf.c"), str(other), str(bpf.bpf_dir() / "net.bpf.c")]

    def result(asked: loader.Asked):  # type: ignore[no-untyped-def]
        try:
            return asked.result()
        except loader.LoadError as e:
            return e

    ld = loader.Loader(start=False)
    try:
        got = [result(a) for a in [ld.ask(src, flags) for src in srcs]]
    finally:
        ld.close()
    try:
        assert isinstance(got[0], Program) and "cgroup_events" in got[0].maps
        assert isinstance(got[2], Program) and "net_stats" in got[2].maps
        if trouble == "a compile error":
            assert isinstance(got[1], loader.LoadError)
            assert "\n" not in str(got[1]) and "other.bpf.c" in str(got[1])
        else:
            assert isinstance(got[1], Program) and "cgroup_events" in got[1].maps
    finally:
        for p in got:
            if isinstance(p, Program):
                p.close()
