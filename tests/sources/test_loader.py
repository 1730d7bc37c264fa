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

