"""The BPF sources on this kernel, with real workloads in cgroups named like
real runtimes name them. Each test asserts what an operator would check."""

from __future__ import annotations

import sys
import time

import pytest

from cgwatch.collect import open_collector
from cgwatch.model import Sample
from tests.conftest import burner, hexid, pod_uid

pytestmark = pytest.mark.bpf


def values(samples: list[Sample], container_id: str, metric: str) -> list[float]:
    return [s.value for s in samples if s.container.id == container_id and s.metric == metric]


def one(samples: list[Sample], container_id: str, metric: str) -> float:
    v = values(samples, container_id, metric)
    assert len(v) == 1, f"{metric} for {container_id[:12]}: {v}"
    return v[0]


@pytest.fixture(scope="module")
def collector():
    col = open_collector(["cpu", "proc", "mem"])
    yield col
    col.close()


def settle(col, seconds: float = 0.3) -> float:
    """Let identity learn new cgroups and start a fresh interval."""
    time.sleep(seconds)
    now = time.time()
    col.tick(now)
    return now


def test_cpu_burner_agrees_with_cgroup_accounting(collector, cgroups):
    """A busy loop's cpu.usage_cores matches cpu.stat within 5%; idle neighbours see none of it."""
    cid = hexid()
    busy = cgroups(f"system.slice/docker-{cid}.scope")
    uid = pod_uid()
    quiet_id = hexid()
    quiet = cgroups(
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}.slice/"
        f"cri-containerd-{quiet_id}.scope"
    )
    quiet.run(["sleep", "30"])
    busy.run(burner())
    settle(collector)
    u0, t0 = busy.usage_usec(), time.time()
    collector.tick(t0)
    time.sleep(2.0)
    u1, t1 = busy.usage_usec(), time.time()
    samples, _ = collector.tick(t1)

    kernel_cores = (u1 - u0) / 1e6 / (t1 - t0)
    bpf_cores = one(samples, cid, "cpu.usage_cores")
    assert kernel_cores > 0.5, "the burner did not get a core"
    assert bpf_cores == pytest.approx(kernel_cores, rel=0.05)
    assert one(samples, quiet_id, "cpu.usage_cores") < 0.02
    assert one(samples, cid, "cpu.ctx_switches") >= 0
    runtimes = {s.container.id: s.container.runtime for s in samples}
    assert runtimes[cid] == "docker" and runtimes[quiet_id] == "containerd"


def test_exec_loop_counts_only_in_its_container(collector, cgroups):
    """≥ 50 execs/s where a shell loop runs /bin/true, none in a burner beside it."""
    loop_id, burn_id = hexid(), hexid()
    loop = cgroups(f"kubepods.slice/kubepods-pod{pod_uid().replace('-', '_')}.slice/crio-{loop_id}.scope")
    burn = cgroups(f"docker/{burn_id}")
    burn.run(burner())
    loop.run(["/bin/sh", "-c", "while :; do /bin/true; done"])
    t0 = settle(collector)
    time.sleep(2.0)
    samples, events = collector.tick(time.time())
    assert one(samples, loop_id, "proc.execs") >= 50
    assert one(samples, burn_id, "proc.execs") == 0
    assert one(samples, loop_id, "proc.forks") >= 50
    execs = [e for e in events if e.kind == "exec" and e.container.id == loop_id]
    assert len(execs) >= 50
    assert {e.fields["filename"] for e in execs} == {"/bin/true"}
    assert all(e.fields["comm"] == "true" and e.fields["pid"] > 0 for e in execs)
    assert all(t0 - 1 <= e.ts <= time.time() for e in execs)
    assert not [e for e in events if e.kind == "exec" and e.container.id == burn_id]


def test_abnormal_exits_are_events(collector, cgroups):
    """A non-zero exit code and a fatal signal each give an exit event in their container."""
    cid = hexid()
    c = cgroups(f"machine.slice/libpod-{cid}.scope")
    settle(collector)
    c.run(["/bin/sh", "-c", "exit 7"]).wait()
    crash = c.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    crash.wait()
    c.run(["/bin/true"]).wait()
    time.sleep(0.2)
    samples, events = collector.tick(time.time())
    exits = [e for e in events if e.kind == "exit" and e.container.id == cid]
    assert {(e.fields["code"], e.fields.get("signal")) for e in exits} == {(7, None), (0, "SIGSEGV")}
    assert [e.fields["pid"] for e in exits if e.fields.get("signal")] == [crash.pid]
    assert one(samples, cid, "proc.exits_nonzero") > 0


def test_oom_kill_names_the_victim(collector, cgroups):
    """An allocator over its memory limit is OOM-killed: an oom_kill event with its pid and comm."""
    cid = hexid()
    c = cgroups(f"system.slice/docker-{cid}.scope", memory_limit=48 * 2**20)
    settle(collector)
    hog = c.run([sys.executable, "-c", "a = []\nwhile True: a.append(bytearray(1 << 20))"])
    assert hog.wait(timeout=60) == -9
    time.sleep(0.2)
    _, events = collector.tick(time.time())
    ooms = [e for e in events if e.kind == "oom_kill"]
    assert [(e.container.id, e.fields["pid"]) for e in ooms] == [(cid, hog.pid)]
    assert ooms[0].fields["comm"].startswith("python")


def test_page_faults_follow_the_allocator(collector, cgroups):
    """Touching 64 MiB of fresh memory is ≥ 16k user page faults in that container only."""
    cid, other = hexid(), hexid()
    c = cgroups(f"lxc.payload.web-{cid[:6]}")
    o = cgroups(f"system.slice/docker-{other}.scope")
    o.run(["sleep", "30"])
    t0 = settle(collector)
    c.run([sys.executable, "-c", "b = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"]).wait()
    t1 = time.time()
    samples, _ = collector.tick(t1)
    name = f"web-{cid[:6]}"
    rates = [s.value for s in samples if s.container.name == name and s.metric == "mem.page_faults"]
    assert len(rates) == 1
    assert rates[0] * (t1 - t0) >= 16384          # a rate over the interval, back to a count
    assert one(samples, other, "mem.page_faults") == 0


def test_without_exit_codes_signal_deaths_still_count(cgroups):
    """--no-exit-codes: no syscall hook; a SIGSEGV is still an exit event, exit 7 is not."""
    col = open_collector(["proc"], exit_codes=False)
    try:
        assert not any("-DCGW_HAVE_EXIT_GROUP" in f for s in col.sources for f in s.cflags)
        cid = hexid()
        c = cgroups(f"system.slice/docker-{cid}.scope")
        settle(col)
        c.run(["/bin/sh", "-c", "exit 7"]).wait()
        c.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]).wait()
        time.sleep(0.2)
        _, events = col.tick(time.time())
        exits = [(e.fields["code"], e.fields.get("signal")) for e in events
                 if e.kind == "exit" and e.container.id == cid]
        assert exits == [(0, "SIGSEGV")]
    finally:
        col.close()


def test_on_cpu_time_of_a_task_that_keeps_its_cpu_arrives_every_interval(collector, cgroups):
    """On-CPU time reaches the map when a task is switched out, and a busy loop alone on
    its CPU may not be for seconds. Before each read the source makes the CPUs that have
    not switched lately switch (and leaves alone those that did, or idle): each interval's
    BPF time of a loop pinned to one CPU agrees with the kernel's accounting of it."""
    import os

    from cgwatch.sources.cpu import CpuSource, flush_cpus

    src = next(s for s in collector.sources if isinstance(s, CpuSource))
    cid = hexid()
    busy = cgroups(f"system.slice/docker-{cid}.scope")
    p = busy.run(burner())
    os.sched_setaffinity(p.pid, {max(os.sched_getaffinity(0))})
    settle(collector)

    def read() -> tuple[float, int, int]:
        """The loop's BPF time since the last read, and cpu.stat's usage just before and
        just after it (a busy host may stall this thread between them)."""
        before = busy.usage_usec()
        flush_cpus(src._stale_cpus())
        cs, d, _ = src.delta_rows("cpu_stats", time.time())
        mine = [float(row[0]) for c, row in zip(cs, d) if c.id == cid]
        return (mine[0] if mine else 0.0), before, busy.usage_usec()

    _, b0, a0 = read()
    for _ in range(4):
        time.sleep(0.5)
        bpf_ns, b1, a1 = read()
        least, most = (b1 - a0) * 1000.0, (a1 - b0) * 1000.0    # the kernel's time between the reads
        b0, a0 = b1, a1
        assert most > 0.05e9, "the loop did not run"
        assert least * 0.95 - 20e6 <= bpf_ns <= most * 1.05 + 20e6, (bpf_ns, least, most)
