"""cgroupfs source against real (and a few hand-made) cgroupfs files.

Every test builds a small cgroup tree under tmp_path from
``testdata/cgroupfs/`` (see its README for where each file comes from), so
nothing here needs root or touches the host's cgroups.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest

from cgwatch.model import HOST, Container
from cgwatch.sources import cgroupfs
from cgwatch.sources.cgroupfs import CgroupfsSource, Layout, read_cgroup, resolve_v1
from cgwatch.sources.cpu import CpuSource

TD = Path(__file__).parent / "testdata" / "cgroupfs"
CID = "4f1c9a7e" * 8
REL = f"docker/{CID}"
HASH = "process_api/9294e7ec21a0210f0f4af3135c7e1bbf"  # this host's v1 memory cgroup
PID = 5926  # the first pid of testdata's hybrid/v2/cgroup.procs


@pytest.fixture(autouse=True)
def _fresh_warnings():
    cgroupfs._warned.clear()
    yield
    cgroupfs._warned.clear()


def plant(src: Path, dst: Path) -> Path:
    """Copy the files of a testdata directory into a new cgroup directory."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def bump(path: Path, pattern: str, delta: int) -> None:
    """Add ``delta`` to the number captured by ``pattern`` (one group) in a file."""
    text = path.read_text()
    m = re.search(pattern, text, re.M)
    assert m, (path, pattern)
    path.write_text(text[: m.start(1)] + str(int(m.group(1)) + delta) + text[m.end(1):])


def by_metric(samples) -> dict[str, float]:
    out = {s.metric: s.value for s in samples}
    assert len(out) == len(samples), "a metric came twice"
    return out


def container(rel: str = REL, cid: str = CID) -> Container:
    return Container(id=cid, name="web-1", runtime="docker", cgroup=rel)


def steady_file(name: str, s: float) -> str | None:
    """Some files of a container whose counters grow steadily, as the kernel would make them
    at time ``s``: 0.5 cores, 40 % of periods throttled, 2000 read bytes/s, 20 OOM kills/s,
    10 % cpu pressure (whole numbers at 0.05 s steps); None for the other files."""
    if name == "cpu.stat":
        return (f"usage_usec {round(0.5e6 * s)}\nuser_usec 0\nsystem_usec 0\n"
                f"nr_periods {round(100 * s)}\nnr_throttled {round(40 * s)}\n")
    if name == "io.stat":
        return f"8:0 rbytes={round(2000 * s)} wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n"
    if name == "memory.events":
        return f"low 0\nhigh 0\nmax 0\noom {round(20 * s)}\noom_kill {round(20 * s)}\n"
    if name == "cpu.pressure":
        return f"some avg10=0 avg60=0 avg300=0 total={round(1e5 * s)}\nfull avg10=0 avg60=0 avg300=0 total=0\n"
    return None


class AtNow(CgroupfsSource):
    """The source, its clock reading the tick's ``now``: files read in no time, on time."""

    def __init__(self, *args, **kw) -> None:
        self.t = 0.0
        super().__init__(*args, clock=lambda: self.t, **kw)

    def collect(self, now, containers):
        self.t = now
        return super().collect(now, containers)


# -- Layout -----------------------------------------------------------------


def test_layout_unified_host():
    lay = Layout.detect((TD / "mountinfo/unified.txt").read_text())
    assert lay.unified == Path("/sys/fs/cgroup")
    assert lay.v1 == {}


def test_layout_hybrid_host_real_mountinfo():
    lay = Layout.detect((TD / "mountinfo/hybrid.txt").read_text())
    assert lay.unified == Path("/sys/fs/cgroup/unified")
    assert lay.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert lay.v1["cpu"] == Path("/sys/fs/cgroup/cpu")
    assert lay.v1["cpuacct"] == Path("/sys/fs/cgroup/cpuacct")
    assert lay.v1["name=systemd"] == Path("/sys/fs/cgroup/systemd")
    assert {"blkio", "pids", "cpuset", "devices", "freezer"} <= set(lay.v1)


def test_layout_v1_comounts():
    lay = Layout.detect((TD / "mountinfo/v1-comount.txt").read_text())
    assert lay.unified is None
    assert lay.v1["cpu"] == lay.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert lay.v1["net_cls"] == lay.v1["net_prio"] == Path("/sys/fs/cgroup/net_cls,net_prio")
    assert lay.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert "seclabel" not in lay.v1 and "xattr" not in lay.v1 and "rw" not in lay.v1


def test_layout_skips_subtree_mounts_and_unescapes():
    lay = Layout.detect(
        "90 31 0:32 /docker/abc /mnt/memcg rw - cgroup cgroup rw,memory\n"
        "91 31 0:32 / /mnt/cg\\040v1/memory rw - cgroup cgroup rw,memory\n"
        "92 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
        "93 31 0:38 / /elsewhere/cgroup2 rw - cgroup2 cgroup2 rw\n"
        "this line is not mountinfo\n"
    )
    assert lay.v1 == {"memory": Path("/mnt/cg v1/memory")}
    assert lay.unified == Path("/sys/fs/cgroup")


def test_layout_of_this_host_parses():
    assert isinstance(Layout.detect(), Layout)


# -- unified host ------------------------------------------------------------


@pytest.fixture
def unified(tmp_path):
    plant(TD / "v2", tmp_path / REL)
    return tmp_path


def test_unified_first_collect_gives_gauges_only(unified):
    src = AtNow(Layout(unified=unified))
    got = by_metric(src.collect(100.0, [container()]))
    assert got == {
        "cpu.limit_cores": 1.5,
        "mem.usage_bytes": 412315648.0,
        "mem.limit_bytes": 1073741824.0,
        "mem.usage_ratio": pytest.approx(412315648 / 1073741824),
        "mem.working_set_bytes": 412315648.0 - 83886080.0,     # memory.stat's inactive_file left out
        "proc.count": 23.0,
        "proc.limit": 4096.0,
    }
    assert set(got) <= set(src.metrics)


def test_unified_second_collect_gives_rates(unified):
    src = AtNow(Layout(unified=unified))
    src.collect(100.0, [container()])
    d = unified / REL
    bump(d / "cpu.stat", r"^usage_usec (\d+)", 7_500_000)
    bump(d / "cpu.stat", r"^nr_periods (\d+)", 100)
    bump(d / "cpu.stat", r"^nr_throttled (\d+)", 10)
    bump(d / "io.stat", r"^259:0 rbytes=(\d+)", 30_000)
    bump(d / "io.stat", r"^8:0 rbytes=(\d+)", 10_000)
    bump(d / "io.stat", r"^259:0 .*wbytes=(\d+)", 50_000)
    bump(d / "memory.events", r"^oom_kill (\d+)", 1)
    bump(d / "memory.stat", r"^pgmajfault (\d+)", 50)
    bump(d / "cpu.pressure", r"^some .*total=(\d+)", 1_000_000)
    bump(d / "io.pressure", r"^some .*total=(\d+)", 250_000)
    bump(d / "io.pressure", r"^full .*total=(\d+)", 9_999_999)  # not what we report
    (d / "memory.current").write_text("536870912\n")
    samples = src.collect(110.0, [container()])
    assert {s.ts for s in samples} == {110.0}
    got = by_metric(samples)
    assert got["cpu.cgroup_usage_cores"] == pytest.approx(0.75)
    assert got["cpu.throttled_ratio"] == pytest.approx(0.1)
    assert got["io.read_bytes"] == pytest.approx(4000.0)
    assert got["io.write_bytes"] == pytest.approx(5000.0)
    assert got["mem.oom_kills"] == pytest.approx(0.1)
    assert got["mem.major_faults"] == pytest.approx(5.0)
    assert got["psi.cpu_some"] == pytest.approx(10.0)
    assert got["psi.memory_some"] == 0.0
    assert got["psi.io_some"] == pytest.approx(2.5)
    assert got["mem.usage_bytes"] == 536870912.0
    assert got["mem.usage_ratio"] == pytest.approx(0.5)
    assert got["mem.working_set_bytes"] == 536870912.0 - 83886080.0       # less inactive_file (memory.stat)
    assert set(got) == set(src.metrics)


def test_unlimited_means_absent(unified):
    d = unified / REL
    (d / "memory.max").write_text("max\n")
    (d / "cpu.max").write_text("max 100000\n")
    src = AtNow(Layout(unified=unified))
    first = by_metric(src.collect(100.0, [container()]))
    assert "mem.limit_bytes" not in first and "mem.usage_ratio" not in first
    assert "cpu.limit_cores" not in first
    assert first["mem.usage_bytes"] == 412315648.0
    bump(d / "cpu.stat", r"^nr_periods (\d+)", 100)
    bump(d / "cpu.stat", r"^nr_throttled (\d+)", 10)
    second = by_metric(src.collect(110.0, [container()]))
    assert "cpu.throttled_ratio" not in second  # no quota: nothing to throttle against
    assert "cpu.cgroup_usage_cores" in second


def test_no_new_periods_means_no_throttled_ratio(unified):
    src = AtNow(Layout(unified=unified))
    src.collect(100.0, [container()])
    assert "cpu.throttled_ratio" not in by_metric(src.collect(110.0, [container()]))


def test_missing_controllers_are_absent_not_zero(unified):
    d = unified / REL
    for name in ("memory.current", "memory.max", "memory.events", "memory.stat", "pids.current", "pids.max",
                 "io.stat", "cpu.max", "memory.pressure"):
        (d / name).unlink()
    (d / "cpu.stat").write_text("usage_usec 100\nuser_usec 60\nsystem_usec 40\n")
    raw = read_cgroup(Layout(unified=unified), REL)
    assert raw == {
        "cpu_usage_usec": 100.0,
        "psi_cpu_some_usec": 183736427.0,
        "psi_io_some_usec": 29031561.0,
    }


def test_task_count_falls_back_to_threads_over_the_subtree(unified):
    d = unified / REL
    (d / "pids.current").unlink()
    (d / "cgroup.threads").write_text("2417\n2418\n")
    (d / "cgroup.stat").write_text("nr_descendants 1\nnr_dying_descendants 0\n")
    (d / "init.scope").mkdir()
    (d / "init.scope/cgroup.threads").write_text("2481\n2482\n2483\n")
    assert read_cgroup(Layout(unified=unified), REL)["tasks"] == 5.0
    (d / "cgroup.stat").write_text("nr_descendants 0\nnr_dying_descendants 0\n")
    assert read_cgroup(Layout(unified=unified), REL)["tasks"] == 2.0  # no walk


def test_vanished_cgroup_gives_no_samples(unified):
    src = AtNow(Layout(unified=unified))
    assert src.collect(100.0, [container()])
    shutil.rmtree(unified / REL)
    assert src.collect(110.0, [container()]) == []
    assert read_cgroup(Layout(unified=unified), REL) is None
    never = container(rel="docker/never", cid="never")
    assert src.collect(120.0, [never]) == []


def test_cgroup_vanishing_mid_read_is_quiet(unified, monkeypatch, caplog):
    real = cgroupfs.read_file

    def read_then_remove(path: str) -> str:
        text = real(path)
        if path.endswith("cpu.stat"):
            shutil.rmtree(unified / REL)
        return text

    monkeypatch.setattr(cgroupfs, "read_file", read_then_remove)
    with caplog.at_level(logging.DEBUG, logger="cgwatch.sources.cgroupfs"):
        assert read_cgroup(Layout(unified=unified), REL) is None
        assert AtNow(Layout(unified=unified)).collect(1.0, [container()]) == []
    assert not caplog.records


def test_malformed_and_empty_files_leave_keys_out(unified, caplog):
    plant(TD / "broken", unified / REL)
    src = AtNow(Layout(unified=unified))
    with caplog.at_level(logging.WARNING, logger="cgwatch.sources.cgroupfs"):
        first = by_metric(src.collect(100.0, [container()]))
    assert "mem.usage_bytes" not in first and "mem.usage_ratio" not in first  # empty file
    assert "cpu.limit_cores" not in first  # "fifty 100000"
    assert first["mem.limit_bytes"] == 1073741824.0 and first["proc.count"] == 23.0
    warned = sorted(r.getMessage().split(": ")[1].rsplit("/", 1)[1] for r in caplog.records)
    assert warned == ["cpu.max", "cpu.pressure", "io.stat", "memory.current"]
    caplog.clear()
    bump(unified / REL / "io.pressure", r"^some .*total=(\d+)", 100_000)
    with caplog.at_level(logging.WARNING, logger="cgwatch.sources.cgroupfs"):
        second = by_metric(src.collect(110.0, [container()]))
    assert not caplog.records, "each kind of file warns once"
    assert "io.read_bytes" not in second and "psi.cpu_some" not in second
    assert second["psi.io_some"] == pytest.approx(1.0)
    assert second["cpu.cgroup_usage_cores"] == 0.0


def test_empty_io_stat_is_zero_io(unified):
    (unified / REL / "io.stat").write_text("")
    raw = read_cgroup(Layout(unified=unified), REL)
    assert raw["io_read_bytes"] == 0.0 and raw["io_write_bytes"] == 0.0


def test_host_is_skipped_and_gone_containers_forgotten(unified):
    plant(TD / "v2", unified)  # the root's own files: every container's figures
    src = AtNow(Layout(unified=unified))
    assert src.collect(100.0, [HOST]) == []
    src.collect(100.0, [container()])
    src.collect(110.0, [container()])
    assert src._prev and src._paths
    assert src.collect(120.0, []) == []
    assert not src._prev and not src._paths


def test_counter_going_backwards_gives_no_rate(unified):
    src = AtNow(Layout(unified=unified))
    src.collect(100.0, [container()])
    bump(unified / REL / "cpu.stat", r"^usage_usec (\d+)", -1_000_000)  # recreated cgroup
    assert "cpu.cgroup_usage_cores" not in by_metric(src.collect(110.0, [container()]))


# -- hybrid host ---------------------------------------------------------------


def proc_file(proc: Path, pid: int, v2_rel: str = REL, memory: str | None = None, **v1: str):
    """A real /proc/<pid>/cgroup of this host, moved to other cgroups."""
    text = (TD / "hybrid/proc_cgroup").read_text().replace("/cgwx-td", f"/{REL}")
    text = re.sub(r"^0::.*$", f"0::/{v2_rel}", text, flags=re.M)
    if memory is not None:
        v1["memory"] = memory
    for c, path in v1.items():
        text = re.sub(rf"^(\d+):{c}:.*$", rf"\g<1>:{c}:{path}", text, flags=re.M)
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "cgroup").write_text(text)


@pytest.fixture
def hybrid(tmp_path):
    """This host's shape: v2 dir + v1 dirs, memory nested under /process_api/<hash>."""
    h = TD / "hybrid"
    plant(h / "v2", tmp_path / "unified" / REL)
    plant(h / "memory", tmp_path / "memory" / HASH / REL)
    for c in ("cpu", "cpuacct", "blkio", "pids"):
        plant(h / c, tmp_path / c / REL)
    decoy = plant(h / "root", tmp_path / "memory" / REL)  # same relative path, wrong cgroup
    (decoy / "memory.usage_in_bytes").write_text("1\n")
    proc_file(tmp_path / "proc", PID)
    layout = Layout(unified=tmp_path / "unified",
                    v1={c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "blkio", "pids")})
    return tmp_path, layout


def test_hybrid_resolves_nested_v1_memory_from_proc(hybrid):
    root, layout = hybrid
    dirs, vouched = resolve_v1(layout, REL, root / "proc")
    assert vouched
    assert dirs["memory"] == root / "memory" / HASH / REL
    assert dirs["cpu"] == root / "cpu" / REL and dirs["blkio"] == root / "blkio" / REL


def test_hybrid_collects_v1_gauges_then_rates(hybrid):
    root, layout = hybrid
    src = AtNow(layout, proc_root=root / "proc")
    first = by_metric(src.collect(100.0, [container()]))
    assert first == {
        "cpu.limit_cores": 0.2,
        "mem.usage_bytes": 24702976.0,
        "mem.limit_bytes": 64 * 2**20,
        "mem.usage_ratio": pytest.approx(24702976 / 2**26),
        "mem.working_set_bytes": 24702976.0 - 8884224.0,       # v1: the hierarchical total_inactive_file
        "proc.count": 4.0,
    }
    bump(root / "unified" / REL / "cpu.stat", r"^usage_usec (\d+)", 2_000_000)
    bump(root / "cpuacct" / REL / "cpuacct.usage", r"^(\d+)", 9_000_000_000)  # v2 wins
    bump(root / "cpu" / REL / "cpu.stat", r"^nr_periods (\d+)", 100)
    bump(root / "cpu" / REL / "cpu.stat", r"^nr_throttled (\d+)", 40)
    for name in ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes"):
        bump(root / "blkio" / REL / name, r"^254:0 Read (\d+)", 1_000_000)
    bump(root / "unified" / REL / "io.pressure", r"^some .*total=(\d+)", 500_000)
    bump(root / "memory" / HASH / REL / "memory.oom_control", r"^oom_kill (\d+)", 1)
    bump(root / "memory" / HASH / REL / "memory.stat", r"^total_pgmajfault (\d+)", 20)
    bump(root / "memory" / HASH / REL / "memory.stat", r"^pgmajfault (\d+)", 999)  # local only
    second = by_metric(src.collect(110.0, [container()]))
    assert second["cpu.cgroup_usage_cores"] == pytest.approx(0.2)
    assert second["cpu.throttled_ratio"] == pytest.approx(0.4)
    assert second["io.read_bytes"] == pytest.approx(100_000.0)
    assert second["io.write_bytes"] == 0.0
    assert second["psi.io_some"] == pytest.approx(5.0)
    assert second["psi.memory_some"] == 0.0
    assert second["mem.oom_kills"] == pytest.approx(0.1)
    assert second["mem.major_faults"] == pytest.approx(2.0)
    assert set(second) == set(src.metrics) - {"proc.limit"}         # pids.max is "max": no limit


def test_hybrid_without_members_guesses_same_path_then_resolves(hybrid):
    root, layout = hybrid
    procs = root / "unified" / REL / "cgroup.procs"
    procs.write_text("")
    src = AtNow(layout, proc_root=root / "proc")
    assert by_metric(src.collect(100.0, [container()]))["mem.usage_bytes"] == 1.0  # the guess
    procs.write_text(f"{PID}\n")
    assert by_metric(src.collect(110.0, [container()]))["mem.usage_bytes"] == 24702976.0


def test_hybrid_skips_pids_that_moved(hybrid):
    root, layout = hybrid
    (root / "unified" / REL / "cgroup.procs").write_text(f"{PID}\n{PID + 1}\n")
    proc_file(root / "proc", PID, v2_rel="system.slice/other.service", memory="/elsewhere")
    proc_file(root / "proc", PID + 1)
    assert resolve_v1(layout, REL, root / "proc")[0]["memory"] == root / "memory" / HASH / REL


def test_hybrid_member_in_a_child_cgroup(hybrid):
    root, layout = hybrid
    (root / "unified" / REL / "cgroup.procs").write_text("")
    plant(TD / "hybrid/v2", root / "unified" / REL / "init.scope")
    proc_file(root / "proc", PID, v2_rel=f"{REL}/init.scope",
              memory=f"/{HASH}/{REL}/init.scope", cpu=f"/{REL}")
    dirs, vouched = resolve_v1(layout, REL, root / "proc")
    assert vouched
    assert dirs["memory"] == root / "memory" / HASH / REL  # climbed back to the top
    assert dirs["cpu"] == root / "cpu" / REL  # v1 had no child: used as is


def test_hybrid_member_in_v1_root_is_not_the_container(hybrid):
    root, layout = hybrid
    proc_file(root / "proc", PID, memory="/", pids="/")
    (root / "pids" / REL / "pids.current").write_text("99\n")  # same path, not its cgroup
    got = read_cgroup(layout, REL, proc_root=root / "proc")
    assert "mem_usage_bytes" not in got and "mem_limit_bytes" not in got
    assert got["tasks"] == 4.0  # cgroup.threads of the cgroup2 dir


def test_hybrid_bare_blkio_total_means_unknown_io(hybrid):
    root, layout = hybrid
    d = root / "blkio" / REL
    for name in ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes"):
        shutil.copy(TD / "hybrid/root/blkio.throttle.io_service_bytes", d / name)
    got = read_cgroup(layout, REL, proc_root=root / "proc")
    assert "io_read_bytes" not in got and "io_write_bytes" not in got


def test_hybrid_v1_dir_that_disappears_is_resolved_again(hybrid):
    root, layout = hybrid
    src = AtNow(layout, proc_root=root / "proc")
    assert "mem.usage_bytes" in by_metric(src.collect(100.0, [container()]))
    moved = root / "memory" / HASH / "moved" / CID
    moved.parent.mkdir(parents=True)
    (root / "memory" / HASH / REL).rename(moved)
    proc_file(root / "proc", PID, memory=f"/{HASH}/moved/{CID}")
    during = by_metric(src.collect(110.0, [container()]))
    assert "mem.usage_bytes" not in during and "proc.count" in during
    after = by_metric(src.collect(120.0, [container()]))
    assert after["mem.usage_bytes"] == 24702976.0


def test_v1_only_host(tmp_path):
    h = TD / "hybrid"
    for c in ("memory", "cpu", "cpuacct", "blkio", "pids"):
        plant(h / c, tmp_path / c / REL)
    (tmp_path / "memory" / REL / "cgroup.procs").write_text(f"{PID}\n")
    proc_file(tmp_path / "proc", PID, memory=f"/{REL}")
    layout = Layout(v1={c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "blkio", "pids")})
    src = AtNow(layout, proc_root=tmp_path / "proc")
    got = by_metric(src.collect(100.0, [container()]))
    assert got["mem.limit_bytes"] == 64 * 2**20 and got["cpu.limit_cores"] == 0.2
    bump(tmp_path / "cpuacct" / REL / "cpuacct.usage", r"^(\d+)", 5_000_000_000)
    assert by_metric(src.collect(110.0, [container()]))["cpu.cgroup_usage_cores"] == 0.5
    for c in ("memory", "cpu", "cpuacct", "blkio", "pids"):
        shutil.rmtree(tmp_path / c / REL)
    assert src.collect(120.0, [container()]) == []


# -- every rate over its own reads --------------------------------------------------


def test_rates_are_over_each_containers_own_reads(unified, monkeypatch):
    """Two containers whose counters grow steadily on the clock (0.5 cores, 2000
    read bytes/s, 20 OOM kills/s, 10 % cpu pressure, 40 % of periods throttled;
    all whole numbers at the 0.05 s steps the clock moves by).
    Ticks come every second; each tick's reads start late and the collecting thread
    stalls between the containers, by amounts that change from tick to tick. Every
    rate reads the same every interval (over the ticks' `now` they were off by up to 3 %)."""
    other = f"docker/{'b' * 64}"
    plant(TD / "v2", unified / other)
    t = [0.0]
    real = cgroupfs.read_file

    def steady(path: str) -> str:        # the files as the kernel would make them at t[0]
        return steady_file(path.rsplit("/", 1)[1], t[0]) or real(path)

    monkeypatch.setattr(cgroupfs, "read_file", steady)
    src = CgroupfsSource(Layout(unified=unified), clock=lambda: t[0])
    web, db = container(), container(rel=other, cid="b" * 64)

    def late(stall: float):
        yield web
        t[0] += stall                    # the thread waits for the GIL between them
        yield db

    for i, (lag, stall) in enumerate([(0.0, 0.2), (0.3, 0.0), (0.0, 0.4), (0.25, 0.05), (0.1, 0.3)]):
        now = 100.0 + 10 * i
        t[0] = now + lag
        got = {(s.container.id, s.metric): s.value for s in src.collect(now, late(stall))}
        if i == 0:
            continue
        for c in (web, db):
            assert got[(c.id, "cpu.cgroup_usage_cores")] == pytest.approx(0.5)
            assert got[(c.id, "io.read_bytes")] == pytest.approx(2000.0)
            assert got[(c.id, "mem.oom_kills")] == pytest.approx(20.0)
            assert got[(c.id, "psi.cpu_some")] == pytest.approx(10.0)
            assert got[(c.id, "cpu.throttled_ratio")] == pytest.approx(0.4)


def test_psi_is_read_every_two_seconds_in_turns_and_each_reading_is_exact(unified, monkeypatch):
    """At a 1 s interval a container's PSI files are read every other tick (the kernel's own
    PSI clock is 2 s), about half of the containers each tick; each reading is the stall share
    since that container's previous one. A file whose counter did not move at its last reading
    is read every 10 s instead, until a reading finds a stall. Everything else comes every
    tick; at a 2 s interval PSI does too (quiet files every fifth tick)."""
    others = [f"docker/{ch * 64}" for ch in "bcd"]
    for rel in others:
        plant(TD / "v2", unified / rel)
    t, reads = [0.0], []
    real = cgroupfs.read_file
    memory_stalls = [0.0]        # from this time on, web's memory.pressure moves: 5 % of the time

    def steady(path: str) -> str:        # the files as the kernel would make them at t[0]
        if path.endswith(".pressure"):
            reads.append((t[0], path))
        if path.endswith(f"{REL}/memory.pressure") and memory_stalls[0] and t[0] > memory_stalls[0]:
            base = int(re.search(r"^some .*total=(\d+)", real(path), re.M)[1])
            total = base + round(5e4 * (t[0] - memory_stalls[0]))
            return f"some avg10=0 avg60=0 avg300=0 total={total}\nfull avg10=0 avg60=0 avg300=0 total=0\n"
        return steady_file(path.rsplit("/", 1)[1], t[0]) or real(path)

    monkeypatch.setattr(cgroupfs, "read_file", steady)
    src = CgroupfsSource(Layout(unified=unified), clock=lambda: t[0])
    cs = [container(), *(container(rel=rel, cid=rel[-64:]) for rel in others)]
    web = cs[0]
    ticks = [100.0 + i for i in range(40)] + [140.0 + 2 * i for i in range(1, 11)]
    got_at: dict[float, dict] = {}
    for now in ticks:
        if now == 120.0:
            memory_stalls[0] = now
        t[0] = now
        got = got_at[now] = {(s.container.id, s.metric): s.value for s in src.collect(now, cs)}
        for c in cs if now > 100.0 else ():      # the first reading gives no rates
            assert got[(c.id, "cpu.cgroup_usage_cores")] == pytest.approx(0.5)
            if (c.id, "psi.cpu_some") in got:
                assert got[(c.id, "psi.cpu_some")] == pytest.approx(10.0)

    def times(c, res: str, lo: float, hi: float) -> list[float]:
        path = str(unified / c.cgroup / f"{res}.pressure")
        return [at for at, p in reads if p == path and lo <= at <= hi]

    def gaps(xs: list[float]) -> set[float]:
        return {b - a for a, b in zip(xs, xs[1:])}

    assert len(reads) >= 3 * len(cs)
    assert {p for at, p in reads if at == 100.0} == {str(unified / c.cgroup / f"{res}.pressure")
                                                   for c in cs for res in ("cpu", "memory", "io")}
    for c in cs:      # cpu.pressure moves: every 2 s, in turns (half of the containers a tick)
        assert gaps(times(c, "cpu", 101.0, 139.0)) == {2.0}, times(c, "cpu", 101.0, 139.0)
        assert gaps(times(c, "cpu", 140.0, 160.0)) == {2.0}      # a 2 s interval: every tick
    for now in range(104, 139):
        assert len([p for at, p in reads if at == now and p.endswith("cpu.pressure")]) == len(cs) // 2
    for c in cs[1:]:  # memory and io stall on nothing: after the reading that shows it, every 10 s
        for res in ("memory", "io"):
            assert gaps(times(c, res, 105.0, 139.0)) == {10.0}, (res, times(c, res, 100.0, 160.0))
            assert gaps(times(c, res, 141.0, 160.0)) == {10.0}, (res, times(c, res, 100.0, 160.0))
            quiet = [got[(c.id, f"psi.{res}_some")] for got in got_at.values() if (c.id, f"psi.{res}_some") in got]
            assert quiet and set(quiet) == {0.0}
    mem = times(web, "memory", 100.0, 160.0)          # web's memory starts to stall at 120
    first = next(at for at in mem if at > 120.0)
    assert first <= 130.0
    assert got_at[first][(web.id, "psi.memory_some")] == pytest.approx(5.0 * (first - 120.0) / (first - max(
        at for at in mem if at < first)))        # the exact share since its previous reading
    assert gaps([at for at in mem if first <= at < 140.0]) <= {2.0}    # loud: every 2 s again
    for at in mem:
        if first < at < 140.0:
            assert got_at[at][(web.id, "psi.memory_some")] == pytest.approx(5.0)


# -- read plans: after a full read, only the files that were there ----------------


def _bump_all(d: Path) -> None:
    bump(d / "cpu.stat", r"^usage_usec (\d+)", 7_500_000)
    bump(d / "cpu.pressure", r"^some .*total=(\d+)", 1_000_000)


@pytest.mark.parametrize("shape", ["unified", "hybrid", "threads", "threads-top", "no-psi"])
def test_a_planned_read_gives_what_a_full_read_does(shape, tmp_path, request):
    """The second read of a container reads only the files the first found; its
    figures must be those a full read (every alternative tried) gives."""
    proc = None
    if shape == "hybrid":
        root, layout = request.getfixturevalue("hybrid")
        proc, v2 = root / "proc", root / "unified" / REL
    else:
        layout = Layout(unified=request.getfixturevalue("unified"))
        v2 = layout.unified / REL
    if shape == "threads":
        (v2 / "pids.current").unlink()
        (v2 / "cgroup.threads").write_text("2417\n2418\n")
        (v2 / "cgroup.stat").write_text("nr_descendants 1\nnr_dying_descendants 0\n")
        (v2 / "init.scope").mkdir()
        (v2 / "init.scope/cgroup.threads").write_text("2481\n")
    if shape == "threads-top":
        (v2 / "pids.current").unlink()
        (v2 / "cgroup.threads").write_text("2417\n")
        (v2 / "cgroup.stat").write_text("nr_descendants 0\nnr_dying_descendants 0\n")
    if shape == "no-psi":
        for res in ("cpu", "memory", "io"):
            (v2 / f"{res}.pressure").unlink()
    src = AtNow(layout, **({"proc_root": proc} if proc else {}))
    assert src.collect(100.0, [container()])
    plan = src._paths[CID]
    assert plan.steps                                    # the first read made a plan
    _bump_all(v2) if shape != "no-psi" else bump(v2 / "cpu.stat", r"^usage_usec (\d+)", 1)
    if shape == "threads":
        (v2 / "init.scope/cgroup.threads").write_text("2481\n2482\n2483\n")
    if shape == "threads-top":
        (v2 / "cgroup.threads").write_text("2417\n2418\n")
    planned, stale = plan.read(cgroupfs.time.monotonic())
    full = read_cgroup(layout, REL, **({"proc_root": proc} if proc else {}))
    assert not stale and planned == full
    if shape == "threads":
        assert planned["tasks"] == 5.0
    if shape == "threads-top":
        assert planned["tasks"] == 2.0
    if shape == "hybrid":
        assert planned["cpu_limit_cores"] == 0.2           # v1 quota over period


class SteppedTime:
    """Stands in for the time module of cgroupfs: monotonic() moves when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


def test_a_file_that_appears_is_read_once_the_plan_ends(unified, monkeypatch):
    """A plan lasts as long as a file found absent stays absent (ABSENT_RETRY_S): a
    limit set later is found at the first full read after that, not never."""
    clock = SteppedTime()
    monkeypatch.setattr(cgroupfs, "time", clock)
    d = unified / REL
    (d / "memory.max").unlink()
    src = AtNow(Layout(unified=unified))
    assert "mem.limit_bytes" not in by_metric(src.collect(100.0, [container()]))
    (d / "memory.max").write_text("1073741824\n")
    clock.t += 1
    assert "mem.limit_bytes" not in by_metric(src.collect(101.0, [container()]))
    clock.t += cgroupfs.ABSENT_RETRY_S
    assert by_metric(src.collect(102.0, [container()]))["mem.limit_bytes"] == 1073741824.0


def test_a_planned_file_that_vanishes_falls_back_to_a_full_read(unified, monkeypatch):
    """A controller switched off (its files gone, the cgroup still there): the planned
    read fails, the full read that follows gives what is left, in the same interval."""
    monkeypatch.setattr(cgroupfs, "time", SteppedTime())
    d = unified / REL
    src = AtNow(Layout(unified=unified))
    assert "mem.usage_bytes" in by_metric(src.collect(100.0, [container()]))
    for name in ("memory.current", "memory.max", "memory.events", "memory.stat"):
        (d / name).unlink()
    got = by_metric(src.collect(101.0, [container()]))
    assert "mem.usage_bytes" not in got and "proc.count" in got and "cpu.limit_cores" in got


def test_the_cpu_and_cgroupfs_sources_share_one_cpu_stat_reading_per_tick(unified, monkeypatch):
    """On the host both sources want each container's cpu.stat every interval: it is read
    once per tick, and both rates are over that reading's own time, so they agree."""
    from cgwatch.sources.cgroupfs_layout import FileCache
    from tests.sources.test_kernel_arithmetic import FakeResolver, source

    reads: list[str] = []
    real = cgroupfs.read_file

    def counted(path: str) -> str:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(cgroupfs, "read_file", counted)
    files = FileCache(16)
    monkeypatch.setattr(files, "read", counted)
    fs = AtNow(Layout(unified=unified))
    fs._shared = True
    cpu = source(CpuSource, FakeResolver({}), ("cpu_stats",), t0=0.0)
    cpu.cgroup2, cpu._files, cpu._shared = unified, files, True
    c = container()
    stat = unified / REL / "cpu.stat"
    for tick in (100.0, 101.0, 102.0, 103.0):
        fs.t = cpu.clock.t = tick + 0.25                 # both read a little after the tick
        reads.clear()
        usage = cpu.cgroup_usage([c], tick)
        got = by_metric(fs.collect(tick, [c]))
        if tick >= 102.0:                                # the first tick made the plan by a full read
            assert reads.count(str(stat)) == 1
            assert got["cpu.cgroup_usage_cores"] == pytest.approx(usage[CID]) == pytest.approx(0.5)
        bump(stat, r"^usage_usec (\d+)", 500_000)
    files.close()


def test_memory_stat_s_two_figures_are_read_as_a_full_parse_reads_them():
    """memory.stat (about 40 lines) is searched for its one wanted line instead of split
    line by line: on the real files kept here, on this host's own, and on random files of
    ``key value`` lines (the key anywhere, or absent), it gives what a full parse gives."""
    import random

    full = {"pgmajfault": cgroupfs.pick(pgmajfault="major_faults", inactive_file="inactive_file"),
            "total_pgmajfault": cgroupfs.pick(total_pgmajfault="major_faults", total_inactive_file="inactive_file")}
    fast = {"pgmajfault": cgroupfs._V2_MEMSTAT, "total_pgmajfault": cgroupfs._V1_MEMSTAT}
    texts = [p.read_text() for p in TD.rglob("memory.stat")]
    texts += [p.read_text() for p in (Path("/sys/fs/cgroup/memory/memory.stat"),
                                      Path("/sys/fs/cgroup/unified/memory.stat"),
                                      Path("/sys/fs/cgroup/memory.stat")) if p.exists()]
    assert len(texts) >= 2
    rng = random.Random(3)
    keys = ["cache", "rss", "pgmajfault", "total_pgmajfault", "pgmajfault_x", "x_pgmajfault", "total_cache",
            "inactive_file", "total_inactive_file", "active_file"]
    for _ in range(500):
        lines = [f"{k} {rng.randrange(10**12)}" for k in rng.sample(keys, rng.randint(0, len(keys)))]
        texts.append("\n".join(lines) + rng.choice(["", "\n"]))
    for text in texts:
        for name in fast:
            assert fast[name](text) == full[name](text), (name, text)
    with pytest.raises(ValueError):
        fast["pgmajfault"]("cache 1\npgmajfault lots\n")
