#!/usr/bin/env python3
"""What cgwatch's BPF probes add to the events they watch, next to bpftrace doing the same.

Run as root from the project's venv (``make bench``)::

    .venv/bin/python bench/bench_probes.py [--quick] [--rounds N] [--json FILE]

Method (docs/performance.md has the long version):

* Small C workloads, compiled with gcc at start into a temporary directory,
  each pinned to one CPU and run inside a cgroup2 directory of their own:
  a pipe ping-pong between two processes (2 context switches and 2 wake-ups
  per round trip), a loop of ``syscall(SYS_getppid)``, and a loop that mmaps
  fresh anonymous memory (THP off) and touches every page (1 user page fault
  per page, counted with getrusage), and a loop of 1 us ``clock_nanosleep``
  with 1 ns timer slack (1 hrtimer expiry per sleep; the CPU idles between).
* Every case is measured in every round *next to its own baseline*: runs
  alternate baseline, probe, baseline, probe, ... baseline (``--pairs`` probe
  runs), and each probe run is compared with the mean of the two baseline
  runs around it; the round's figure is the median of those differences. The
  cases' order is shuffled each round. "Added" is the median over rounds;
  ``±`` is the median absolute deviation of the rounds' figures. (This VM's
  speed jumps between levels ~40 % apart that last seconds; framing each probe
  run by baselines a fraction of a second away cancels that.)
* cgwatch's programs are loaded once, exactly as their Source classes load
  them (same -D flags), then attached only while their case runs; bpftrace is
  started for its case and stopped after it (its maps are checked for the
  workload's events, so a probe that was not attached shows up).
* A pass with ``kernel.bpf_stats_enabled=1`` after the rounds reads every
  program's own ``run_time_ns / run_cnt`` (BPF's own time, no tracepoint
  dispatch). It is kept out of the timed rounds: the stats add two clock
  reads to every run of every program.
* hrtimer expiries: cpu.bpf.c's ``timer:hrtimer_expire_entry`` program (CGW_REFILL,
  the CFS bandwidth refills) is attached alone for its case; its peer is a
  bpftrace script doing the same. The host's expiries per second come from that
  program's ``run_cnt`` over ``--expiry-seconds`` with no workload running.
* Agreement: a ``while :; do :; done`` shell in its own cgroup2 directory,
  alone on a CPU, for three 5 s intervals; cgwatch's ``cpu.usage_cores``
  (CpuSource.collect, with and without run-queue latency) over each interval
  against the cgroup's own ``cpu.stat usage_usec``; the worst interval counts.

Everything it creates (bpftrace processes, the workload and burner
processes, cgroup directories, BPF programs, the temporary directory) is
removed on exit, Ctrl-C and SIGTERM included; the sysctl is restored.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes as ct
import datetime as _dt
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))

# --------------------------------------------------------------------------- targets
TARGET_SWITCH_NS = 250.0        # cgwatch cpu (on-CPU + switches): ns added per context switch
TARGET_SWITCH_RATIO = 0.35      # ... and at most this much of bpftrace doing the same
TARGET_OTHER_RATIO = 0.5        # every other probe vs its bpftrace equivalent
TARGET_AGREEMENT = 0.02         # |bpf / cgroupfs - 1|
TARGET_BLAME_NS = 100.0         # who waited behind whom (CGW_BLAME): ns added per switch over the default without it

# --------------------------------------------------------------------------- workloads
WORKLOAD_C = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* Prints "<ns per event> <events>". */

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}
static void die(const char *m) { perror(m); exit(2); }
static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    if (sched_setaffinity(0, sizeof s, &s)) die("sched_setaffinity");
}

/* two processes on one CPU; each round trip is 2 switches and 2 wake-ups */
static void pingpong(long n, int cpu) {
    int a[2], b[2];
    char c = 0;
    if (pipe(a) || pipe(b)) die("pipe");
    pin(cpu);
    pid_t kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(a[1]); close(b[0]);
        for (;;) {
            if (read(a[0], &c, 1) != 1) _exit(0);
            if (write(b[1], &c, 1) != 1) _exit(0);
        }
    }
    close(a[0]); close(b[1]);
    for (long i = 0; i < n / 20 + 100; i++)
        if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) die("warm-up");
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) die("ping-pong");
    double t1 = now_ns();
    close(a[1]);
    waitpid(kid, NULL, 0);
    printf("%.3f %ld\n", (t1 - t0) / (2.0 * n), 2 * n);
}

static void syscalls(long n, int cpu) {
    pin(cpu);
    for (long i = 0; i < n / 20 + 100; i++) syscall(SYS_getppid);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    double t1 = now_ns();
    printf("%.3f %ld\n", (t1 - t0) / n, n);
}

static long minflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static void faults(long mib, long reps, int cpu) {
    pin(cpu);
    size_t len = (size_t)mib << 20;
    long page = sysconf(_SC_PAGESIZE);
    double t0 = 0;
    long f0 = 0;
    for (long r = -1; r < reps; r++) {          /* r == -1: warm-up */
        if (r == 0) { f0 = minflt(); t0 = now_ns(); }
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) die("mmap");
        madvise(p, len, MADV_NOHUGEPAGE);       /* one fault per 4 KiB page */
        for (size_t off = 0; off < len; off += page) p[off] = 1;
        munmap(p, len);
    }
    double t1 = now_ns();
    long f = minflt() - f0;
    printf("%.3f %ld\n", (t1 - t0) / (f ? f : 1), f);
}

/* hrtimer expiries: 1 us sleeps with 1 ns slack, each one timer that expires */
static void timers(long n, int cpu) {
    struct timespec d = {0, 1000};
    pin(cpu);
    if (prctl(PR_SET_TIMERSLACK, 1UL)) die("prctl");
    for (long i = 0; i < n / 20 + 100; i++) clock_nanosleep(CLOCK_MONOTONIC, 0, &d, NULL);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) clock_nanosleep(CLOCK_MONOTONIC, 0, &d, NULL);
    double t1 = now_ns();
    printf("%.3f %ld\n", (t1 - t0) / n, n);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 4 && !strcmp(argv[1], "pingpong")) pingpong(atol(argv[2]), atoi(argv[3]));
    else if (argc == 4 && !strcmp(argv[1], "syscall")) syscalls(atol(argv[2]), atoi(argv[3]));
    else if (argc == 5 && !strcmp(argv[1], "fault")) faults(atol(argv[2]), atol(argv[3]), atoi(argv[4]));
    else if (argc == 4 && !strcmp(argv[1], "timer")) timers(atol(argv[2]), atoi(argv[3]));
    else { fprintf(stderr, "usage: work pingpong|syscall|timer N CPU | work fault MIB REPS CPU\n"); return 2; }
    return 0;
}
"""

FAULT_MIB = 64

# --------------------------------------------------------------------------- bpftrace peers
BT_CPU = r"""
// on-CPU time, switches and involuntary switches per cgroup: what cpu.bpf.c does
tracepoint:sched:sched_switch
{
    $now = nsecs;
    $last = @last[cpu];
    @last[cpu] = $now;
    if (args->prev_pid != 0 && $last != 0) {
        $c = cgroup;
        @oncpu_ns[$c] = sum($now - $last);
        @switches[$c] = count();
        if ((args->prev_state & 0xff) == 0) { @involuntary[$c] = count(); }
    }
}
END { clear(@last); }
"""

BT_RUNQ = r"""
// the above plus run-queue latency per cgroup (log2 histogram of us, and the
// sum), charged to the task's own cgroup when it next switches out: what
// cpu.bpf.c does with -DCGW_RUNQ
tracepoint:sched:sched_wakeup,
tracepoint:sched:sched_wakeup_new
{
    if (args->pid != 0) { @wake[args->pid] = nsecs; }
}

tracepoint:sched:sched_switch
{
    $now = nsecs;
    $prev = args->prev_pid;
    $next = args->next_pid;
    $inv = (args->prev_state & 0xff) == 0;
    $last = @last[cpu];
    @last[cpu] = $now;
    $pp = @pend_pid[cpu];
    if ($prev != 0 && $last != 0) {
        $c = cgroup;
        @oncpu_ns[$c] = sum($now - $last);
        @switches[$c] = count();
        if ($inv) { @involuntary[$c] = count(); }
        if ($pp == $prev) {
            $lat = @pend_ns[cpu];
            @runq_us[$c] = hist($lat / 1000);
            @runq_ns[$c] = sum($lat);
        }
    }
    if ($inv && $prev != 0) { @wake[$prev] = $now; }
    $ts = @wake[$next];
    if ($ts != 0 && $now > $ts) {
        @pend_ns[cpu] = $now - $ts;
        @pend_pid[cpu] = $next;
    } else {
        if ($pp != 0) { @pend_pid[cpu] = 0; }
    }
    if ($ts != 0) { delete(@wake[$next]); }
}
END { clear(@last); clear(@pend_pid); clear(@pend_ns); clear(@wake); }
"""

BT_SYSCALL = r"""
// the only syscall-path probe cgwatch has: exit codes from exit_group(2)
tracepoint:syscalls:sys_enter_exit_group
{
    if ((args->error_code & 0xff) != 0) { @exit_code[pid] = args->error_code & 0xff; }
}
"""

BT_FAULT = r"""
tracepoint:exceptions:page_fault_user { @faults[cgroup] = count(); }
"""

BT_REFILL = r"""
// what cpu.bpf.c does with -DCGW_REFILL: stamp this CPU when a CFS bandwidth
// timer expires (addresses of its callbacks from /proc/kallsyms)
tracepoint:timer:hrtimer_expire_entry
{
    @expiries = count();
    $fn = (uint64)args->function;
    if ($fn == PERIOD_FN || $fn == SLACK_FN) { @refill[cpu] = nsecs; }
}
"""


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    key: str
    label: str
    workload: str                   # switch | syscall | fault
    kind: str                       # cgwatch | bpftrace
    sources: tuple[str, ...] = ()   # cgwatch: which loaded sources to attach
    script: str = ""                # bpftrace
    check_map: str = ""             # bpftrace map (keyed by cgroup) that must count the workload
    only: tuple[bytes, ...] = ()    # cgwatch: attach only these tracepoints of its sources
    baseline: list[float] = field(default_factory=list)   # per round: median of its baseline runs
    probed: list[float] = field(default_factory=list)     # per round: median of its probed runs
    added: list[float] = field(default_factory=list)      # per round: median of its pair differences
    runs: list[dict[str, list[float]]] = field(default_factory=list)  # per round: the raw runs
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.added) if self.added else float("nan")

    @property
    def mad(self) -> float:
        a = self.added
        if len(a) < 2:
            return float("nan")
        m = statistics.median(a)
        return statistics.median(abs(x - m) for x in a)


def make_cases() -> list[Case]:
    return [
        Case("cgw_cpu", "cgwatch cpu: on-CPU + switches (runq=False)", "switch", "cgwatch",
             sources=("cpu",)),
        Case("cgw_cpu_runq", "cgwatch cpu + run-queue latency + blame (default)", "switch",
             "cgwatch", sources=("cpu_runq",)),
        Case("cgw_cpu_noblame", "cgwatch cpu + run-queue latency, without CGW_BLAME", "switch", "cgwatch",
             sources=("cpu_noblame",)),
        Case("bt_cpu", "bpftrace: on-CPU + switches per cgroup", "switch", "bpftrace",
             script=BT_CPU, check_map="switches"),
        Case("bt_runq", "bpftrace: + run-queue latency per cgroup", "switch", "bpftrace",
             script=BT_RUNQ, check_map="switches"),
        Case("cgw_all", "cgwatch all default programs (cpu, proc, mem, net, cgroups)", "syscall", "cgwatch",
             sources=("cpu_runq", "proc", "mem", "net", "cgroups")),
        Case("bt_syscall", "bpftrace: sys_enter_exit_group exit codes", "syscall", "bpftrace",
             script=BT_SYSCALL),
        Case("cgw_mem", "cgwatch mem: page faults per cgroup", "fault", "cgwatch",
             sources=("mem",)),
        Case("bt_fault", "bpftrace: page faults per cgroup", "fault", "bpftrace",
             script=BT_FAULT, check_map="faults"),
        Case("cgw_refill", "cgwatch cpu: hrtimer_expire_entry alone (CGW_REFILL)", "timer", "cgwatch",
             sources=("cpu_runq",), only=(REFILL_TP,)),
        Case("bt_refill", "bpftrace: the same refill stamp per CPU", "timer", "bpftrace",
             script=BT_REFILL),
    ]


REFILL_TP = b"timer:hrtimer_expire_entry"


# peer (bpftrace) of each cgwatch case, and the targets
PEERS = {"cgw_cpu": "bt_cpu", "cgw_cpu_runq": "bt_runq", "cgw_all": "bt_syscall", "cgw_mem": "bt_fault",
         "cgw_refill": "bt_refill"}
WORKLOAD_TITLES = {
    "switch": "per context switch (pipe ping-pong, 2 processes on one CPU)",
    "syscall": "per syscall (getppid loop)",
    "fault": "per user page fault (mmap + touch every 4 KiB page)",
    "timer": "per hrtimer expiry (1 us clock_nanosleep loop, 1 ns slack)",
}


def attach_points(prog: Any) -> list[tuple[str, bytes, str]]:
    """(kind, tracepoint, program name) of each probe of a loaded program (the loader's
    :class:`~cgwatch.sources.bpfsys.Program`), from BCC's names for its programs."""
    out = []
    for fn in prog.funcs:
        if fn.startswith("raw_tracepoint__"):
            out.append(("raw", fn[len("raw_tracepoint__"):].encode(), fn))
        elif fn.startswith("tracepoint__"):
            group, _, event = fn[len("tracepoint__"):].partition("__")
            out.append(("tp", f"{group}:{event}".encode(), fn))
    return out


# --------------------------------------------------------------------------- small helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def read_sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value + "\n")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_ns(v: float, sign: bool = True) -> str:
    if v != v:  # nan
        return "n/a"
    return f"{v:+.0f}" if sign else f"{v:.0f}"


# --------------------------------------------------------------------------- BPF program info
_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_PROG_GET_NEXT_ID = 11
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_OBJ_GET_INFO_BY_FD = 15
_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long
# bpf_prog_info (uapi/linux/bpf.h) up to verified_insns
_INFO_LEN = 224
_PROG_TYPES = {2: "kprobe", 5: "tracepoint", 7: "perf_event", 17: "raw_tracepoint", 26: "tracing"}


def _bpf(cmd: int, attr: ct.Array) -> int:
    return _libc.syscall(_SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))


def prog_info(fd: int) -> dict[str, Any] | None:
    """type, id, name, run_time_ns, run_cnt of the BPF program behind ``fd``."""
    buf = (ct.c_uint8 * _INFO_LEN)()
    attr = (ct.c_uint8 * 16)()
    ct.memmove(attr, ct.byref(ct.c_uint32(fd)), 4)
    ct.memmove(ct.addressof(attr) + 4, ct.byref(ct.c_uint32(_INFO_LEN)), 4)
    ct.memmove(ct.addressof(attr) + 8, ct.byref(ct.c_uint64(ct.addressof(buf))), 8)
    if _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr) != 0:
        return None
    raw = bytes(buf)
    u32 = lambda o: int.from_bytes(raw[o:o + 4], "little")  # noqa: E731
    u64 = lambda o: int.from_bytes(raw[o:o + 8], "little")  # noqa: E731
    return {
        "type": u32(0), "id": u32(4),
        "name": raw[64:80].split(b"\0", 1)[0].decode(errors="replace"),
        "run_time_ns": u64(192), "run_cnt": u64(200),
    }


def prog_info_by_id(prog_id: int) -> dict[str, Any] | None:
    attr = (ct.c_uint8 * 12)()
    ct.memmove(attr, ct.byref(ct.c_uint32(prog_id)), 4)
    fd = _bpf(_BPF_PROG_GET_FD_BY_ID, attr)
    if fd < 0:
        return None
    try:
        return prog_info(fd)
    finally:
        os.close(fd)


def all_prog_ids() -> list[int]:
    out, start = [], 0
    while True:
        attr = (ct.c_uint8 * 12)()
        ct.memmove(attr, ct.byref(ct.c_uint32(start)), 4)
        if _bpf(_BPF_PROG_GET_NEXT_ID, attr) != 0:
            return out
        start = int.from_bytes(bytes(attr)[4:8], "little")
        out.append(start)


def fdinfo_stats(pid: int | str, fd: int) -> tuple[int, int, int] | None:
    """(prog_id, run_time_ns, run_cnt) from /proc/<pid>/fdinfo/<fd>, None if not a program."""
    try:
        text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    except OSError:
        return None
    f = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "prog_type" not in f:
        return None
    return int(f.get("prog_id", "0")), int(f.get("run_time_ns", "0")), int(f.get("run_cnt", "0"))


def process_progs(pid: int) -> dict[int, tuple[int, int]]:
    """prog_id -> (run_time_ns, run_cnt) of every program a process holds."""
    out = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return out
    for fd in fds:
        s = fdinfo_stats(pid, int(fd))
        if s:
            out[s[0]] = (s[1], s[2])
    return out


# --------------------------------------------------------------------------- the bench
class _ByCgroup:
    """Resolver stub: every cgroup id is its own container (id = str(cgid))."""

    def __init__(self) -> None:
        self._c: dict[int, Any] = {}

    def container(self, cgid: int, now: float) -> Any:
        from cgwatch.model import Container

        c = self._c.get(cgid)
        if c is None:
            c = self._c[cgid] = Container(id=str(cgid), name=str(cgid), runtime="host")
        return c

    def alive(self, cgid: int) -> bool:
        return True

    @property
    def generation(self) -> int:
        return len(self._c)       # moves when a cgroup is seen first


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="cgwatch-bench-"))
        self.cg_root: Path | None = None
        self.cgroups: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.sources: dict[str, Any] = {}
        self.attach_points: dict[str, list[tuple[str, bytes, bytes]]] = {}
        self.attached: set[str] = set()
        self.sysctl_saved: str | None = None
        cpus = sorted(os.sched_getaffinity(0))
        self.cpus = cpus
        self.work_cpu = args.cpu if args.cpu is not None else cpus[-1]
        self.other_cpus = [c for c in cpus if c != self.work_cpu] or cpus
        self.n: dict[str, int] = {}
        self.fault_reps = 1
        self.exe = self.tmp / "work"
        self.work_cg: Path | None = None
        self.work_cgid = 0
        self.cases = make_cases()
        self.stats: dict[str, Any] = {}
        self.agreement: dict[str, Any] = {}
        self.expiries: dict[str, Any] = {}
        self.foreign: list[str] = []    # tracing programs of others, seen at round starts
        self.t_start = time.time()
        self.load_start = _loadavg()
        self.busy_start = _cpu_busy()

    # -- set-up ---------------------------------------------------------------------
    def setup(self) -> None:
        from cgwatch.identity.cgroups import find_cgroup2_root
        from cgwatch.sources.bpf import check_host

        if os.geteuid() != 0:
            raise SystemExit("bench: needs root (loads BPF programs, creates cgroups)")
        check_host()
        for tool in ("gcc", "bpftrace"):
            if shutil.which(tool) is None:
                raise SystemExit(f"bench: {tool} not found: apt-get install -y {tool} (`make bench` installs bpftrace)")
        self.cg_root = find_cgroup2_root()
        if self.cg_root is None:
            raise SystemExit("bench: no cgroup2 mount")
        os.sched_setaffinity(0, self.other_cpus)
        self._note_foreign("at start")
        (self.tmp / "work.c").write_text(WORKLOAD_C)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(self.exe), str(self.tmp / "work.c")],
                       check=True, capture_output=True, text=True)
        self.work_cg = self._mkcg("work")
        self.work_cgid = os.stat(self.work_cg).st_ino
        log(f"bench: workload cgroup {self.work_cg} (id {self.work_cgid}), workload CPU {self.work_cpu}")
        self._load_sources()
        for c in self.cases:
            c.sources = tuple(x for x in c.sources if x in self.sources)
        self._refill_peer()
        self._calibrate()

    def _refill_peer(self) -> None:
        """Give the bpftrace refill script cpu.bpf.c's timer addresses; without the
        refill probe (no CFS bandwidth timers in kallsyms) drop both timer cases."""
        flags = dict(f[2:].split("=", 1) for f in getattr(self.sources.get("cpu_runq"), "cflags", [])
                     if f.startswith("-DCGW_") and "=" in f)
        pts = {tp for _, tp, _ in self.attach_points.get("cpu_runq", [])}
        if REFILL_TP not in pts or "CGW_PERIOD_FN" not in flags:
            log("bench: cpu.bpf.c has no refill probe here; no hrtimer cases")
            self.cases = [c for c in self.cases if c.workload != "timer"]
            return
        for c in self.cases:
            if c.key == "bt_refill":
                c.script = (c.script.replace("PERIOD_FN", flags["CGW_PERIOD_FN"].removesuffix("ULL"))
                            .replace("SLACK_FN", flags["CGW_SLACK_FN"].removesuffix("ULL")))

    def _foreign_tracing_progs(self) -> list[str]:
        """Tracing programs loaded by someone else (they tax every configuration)."""
        own = set()
        for src in self.sources.values():
            for fn in src.bpf.funcs.values():
                st = fdinfo_stats("self", fn.fd)
                if st:
                    own.add(st[0])
        out = []
        for pid in all_prog_ids():
            if pid in own:
                continue
            info = prog_info_by_id(pid)
            if info and info["type"] in _PROG_TYPES:
                out.append(f"{_PROG_TYPES[info['type']]}:{info['name'] or '?'}")
        return out

    def _note_foreign(self, when: str) -> None:
        progs = self._foreign_tracing_progs()
        if progs:
            self.foreign.append(f"{when}: {len(progs)} ({', '.join(sorted(set(progs)))})")

    def _mkcg(self, name: str) -> Path:
        assert self.cg_root is not None
        d = self.cg_root / f"cgwatch-bench-{os.getpid()}-{name}"
        d.mkdir()
        self.cgroups.append(d)
        return d

    def _load_sources(self) -> None:
        from cgwatch.sources.cpu import CpuSource
        from cgwatch.sources.mem import MemSource
        from cgwatch.sources.net import NetSource
        from cgwatch.sources.proc import ProcSource

        r = _ByCgroup()
        makers: dict[str, Any] = {
            "cpu": lambda: CpuSource(r, runq=False),
            "cpu_runq": lambda: CpuSource(r),
            "cpu_noblame": lambda: CpuSource(r, blame=False),
            "proc": lambda: ProcSource(r),
            "mem": lambda: MemSource(r),
            "net": lambda: NetSource(r),
        }
        try:   # identity's feed of cgroup mkdir/rmdir, loaded by every collector
            from cgwatch.sources.cgroups import CgroupFeed
            makers["cgroups"] = CgroupFeed
        except ImportError:
            pass
        for name, make in makers.items():
            t = time.time()
            src = make()
            self.sources[name] = src
            self.attach_points[name] = attach_points(src.bpf)
            self.attached.add(name)
            self._detach(name)
            log(f"bench: loaded {name:8s} {' '.join(getattr(src, 'cflags', []))}  ({time.time() - t:.2f} s)")

    def _attach(self, name: str, only: tuple[bytes, ...] = ()) -> None:
        from cgwatch.sources.bpf import tracefs
        from cgwatch.sources.bpfsys import attach_raw_tracepoint, attach_tracepoint

        b = self.sources[name].bpf
        for kind, tp, fn in self.attach_points[name]:
            if only and tp not in only:
                continue
            fd = b.funcs[fn].fd
            if kind == "tp":
                group, _, event = tp.decode().partition(":")
                b.links.append(attach_tracepoint(fd, str(tracefs() / "events"), group, event))
            else:
                b.links.append(attach_raw_tracepoint(fd, tp.decode()))
        self.attached.add(name)

    def _detach(self, *names: str) -> None:
        """Detach sources' probes, in parallel: closing a classic tracepoint's perf
        event waits for an RCU grace period (~75 ms here), one after another
        that is a second for every default program together."""
        from concurrent.futures import ThreadPoolExecutor

        jobs = []
        for name in names:
            if name not in self.attached:
                continue
            b = self.sources[name].bpf
            jobs += b.links             # closing a link detaches its probe
            b.links = []
            self.attached.discard(name)

        def one(fd: int) -> None:
            with contextlib.suppress(OSError):
                os.close(fd)

        if len(jobs) <= 1:
            for j in jobs:
                one(j)
            return
        with ThreadPoolExecutor(max_workers=len(jobs)) as ex:
            list(ex.map(one, jobs))

    def _join(self, cg: Path, cpus: list[int] | None = None):  # noqa: ANN202
        def pre() -> None:
            (cg / "cgroup.procs").write_text("0\n")
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
        return pre

    # -- workloads ------------------------------------------------------------------
    def run(self, workload: str) -> tuple[float, int]:
        assert self.work_cg is not None
        cpu = str(self.work_cpu)
        if workload == "switch":
            argv = [str(self.exe), "pingpong", str(self.n["switch"]), cpu]
        elif workload == "syscall":
            argv = [str(self.exe), "syscall", str(self.n["syscall"]), cpu]
        elif workload == "timer":
            argv = [str(self.exe), "timer", str(self.n["timer"]), cpu]
        else:
            argv = [str(self.exe), "fault", str(FAULT_MIB), str(self.fault_reps), cpu]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           preexec_fn=self._join(self.work_cg))
        if p.returncode != 0:
            raise RuntimeError(f"workload {workload} failed: {p.stderr.strip()}")
        ns, events = p.stdout.split()
        return float(ns), int(events)

    def _calibrate(self) -> None:
        target = self.args.seconds
        self.n = {"switch": 20000, "syscall": 500000, "timer": 2000}
        self.fault_reps = 1
        for w in ("switch", "syscall", "timer"):
            self.run(w)
            ns = min(self.run(w)[0] for _ in range(2))
            per_iter = ns * (2 if w == "switch" else 1)
            self.n[w] = max(1000, int(target * 1e9 / per_iter))
        self.run("fault")
        ns, events = self.run("fault")
        self.fault_reps = max(1, round(target * 1e9 / (ns * events)))
        log(f"bench: {self.n['switch']} round trips, {self.n['syscall']} syscalls, {self.n['timer']} sleeps, "
            f"{self.fault_reps} x {FAULT_MIB} MiB of faults per run (~{target:.2f} s each)")

    # -- bpftrace -------------------------------------------------------------------
    def bt_start(self, case: Case) -> tuple[subprocess.Popen, Path]:
        script = self.tmp / f"{case.key}.bt"
        script.write_text('BEGIN { printf("\\nREADY\\n"); }\n' + case.script)
        out = self.tmp / f"{case.key}.out"
        outf = open(out, "w")
        cpus = self.other_cpus

        def pre() -> None:
            os.sched_setaffinity(0, cpus)
            with contextlib.suppress(Exception):
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

        p = subprocess.Popen(["bpftrace", str(script)], stdout=outf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, preexec_fn=pre)
        outf.close()
        self.procs.append(p)
        deadline = time.time() + 60
        while "\nREADY" not in out.read_text():
            if p.poll() is not None:
                raise RuntimeError(f"bpftrace {case.key} exited: {out.read_text().strip()}")
            if time.time() > deadline:
                raise RuntimeError(f"bpftrace {case.key} did not start in 60 s")
            time.sleep(0.02)
        # bpftrace 0.17 runs BEGIN after attaching the other probes (a SIGINT sent
        # right after "Attaching N probes..." can be lost); the maps are checked
        # after the run to prove the probes saw the workload.
        time.sleep(self.args.settle)
        return p, out

    def bt_stop(self, p: subprocess.Popen, out: Path) -> str:
        # SIGINT makes bpftrace print its maps and exit; bpftrace 0.17 has been
        # seen to miss it now and then, SIGTERM does the same, SIGKILL is the end
        for sig in (signal.SIGINT, signal.SIGTERM):
            if p.poll() is not None:
                break
            p.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        _kill(p)
        time.sleep(0.05)
        with contextlib.suppress(ValueError):
            self.procs.remove(p)
        return out.read_text()

    def bt_check(self, case: Case, text: str, events: int) -> None:
        """The workload's cgroup must have about all its events in the bpftrace map."""
        if not case.check_map:
            return
        m = re.search(rf"^@{case.check_map}\[{self.work_cgid}\]: (\d+)$", text, re.M)
        got = int(m.group(1)) if m else 0
        if got < 0.95 * events:
            note = f"bpftrace map @{case.check_map} counted {got} of {events} events in the workload cgroup"
            if note not in case.notes:
                case.notes.append(note)
            log(f"bench: WARNING {case.key}: {note}")

    # -- rounds ---------------------------------------------------------------------
    def measure_case(self, case: Case) -> None:
        """One round of a case: B P B P ... B, each P between two baselines.

        The round's figure is the median over pairs of P - (B before + B after) / 2:
        this VM's speed drifts in steps lasting seconds, and a probe run framed by
        two baseline runs a fraction of a second away cancels the drift.
        """
        bs = [self.run(case.workload)[0]]
        ps: list[float] = []
        for _ in range(self.args.pairs):
            if case.kind == "cgwatch":
                for s in case.sources:
                    self._attach(s, case.only)
                try:
                    ps.append(self.run(case.workload)[0])
                finally:
                    self._detach(*case.sources)
            else:
                proc, out = self.bt_start(case)
                try:
                    p, events = self.run(case.workload)
                finally:
                    text = self.bt_stop(proc, out)
                self.bt_check(case, text, events)
                ps.append(p)
            bs.append(self.run(case.workload)[0])
        diffs = [p - (bs[i] + bs[i + 1]) / 2 for i, p in enumerate(ps)]
        case.added.append(statistics.median(diffs))
        case.baseline.append(statistics.median(bs))
        case.probed.append(statistics.median(ps))
        case.runs.append({"baseline": bs, "probed": ps})

    def rounds(self) -> None:
        rng = random.Random(self.args.seed)
        for r in range(self.args.rounds):
            t = time.time()
            order = list(self.cases)
            rng.shuffle(order)
            self._note_foreign(f"round {r + 1}")
            for case in order:
                self.measure_case(case)
            log(f"bench: round {r + 1}/{self.args.rounds} done in {time.time() - t:.1f} s: "
                + ", ".join(f"{c.key} {c.added[-1]:+.0f}" for c in self.cases))

    # -- bpf_stats pass -------------------------------------------------------------
    def stats_pass(self) -> None:
        self.sysctl_saved = read_sysctl("kernel.bpf_stats_enabled")
        write_sysctl("kernel.bpf_stats_enabled", "1")
        try:
            for case in self.cases:
                self.stats[case.key] = self._stats_case(case)
            if any(c.key == "cgw_refill" for c in self.cases):
                self.expiries = self._expiry_rate()
        finally:
            write_sysctl("kernel.bpf_stats_enabled", self.sysctl_saved)
            self.sysctl_saved = None

    def _expiry_rate(self) -> dict[str, Any]:
        """hrtimer expiries per second on this host with no workload running: the run
        count of cpu.bpf.c's hrtimer_expire_entry program, attached alone."""
        secs = self.args.expiry_seconds
        self._attach("cpu_runq", (REFILL_TP,))
        try:
            before = self._our_progs(("cpu_runq",))
            t = time.monotonic()
            time.sleep(secs)
            after = self._our_progs(("cpu_runq",))
            secs = time.monotonic() - t
        finally:
            self._detach("cpu_runq")
        key = next((k for k in after if k.endswith("hrtimer_expire_entry")), None)
        if key is None:
            return {}
        d_rt, d_cnt = after[key][0] - before.get(key, (0, 0))[0], after[key][1] - before.get(key, (0, 0))[1]
        return {"seconds": secs, "expiries": d_cnt, "per_s": d_cnt / secs,
                "bpf_ns_per_run": d_rt / d_cnt if d_cnt else float("nan"),
                "loadavg": _loadavg()}

    def _our_progs(self, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        out = {}
        for s in names:
            for fname, fn in self.sources[s].bpf.funcs.items():
                st = fdinfo_stats("self", fn.fd)
                if st:
                    out[f"{s}:{fname}"] = (st[1], st[2])
        return out

    def _our_counts(self, names: tuple[str, ...]) -> dict[str, int]:
        """Workload-cgroup counters in our maps (switches, runq count, faults)."""
        out = {}
        for s in names:
            src = self.sources[s]
            readers = getattr(src, "readers", {})
            for t, idx in (("cpu_stats", 1), ("runq_stats", 0), ("mem_stats", 0)):
                if t in readers:
                    v = readers[t].read().get(self.work_cgid)
                    out[f"{s}:{t}"] = int(v[idx]) if v is not None else 0
        return out

    def _stats_case(self, case: Case) -> dict[str, Any]:
        res: dict[str, Any] = {"programs": {}}
        if case.kind == "cgwatch":
            for s in case.sources:
                self._attach(s, case.only)
            try:
                before, c0 = self._our_progs(case.sources), self._our_counts(case.sources)
                ns, events = self.run(case.workload)
                after, c1 = self._our_progs(case.sources), self._our_counts(case.sources)
            finally:
                self._detach(*case.sources)
            names = {k: k for k in after}
            res["map_counts"] = {k: c1[k] - c0.get(k, 0) for k in c1}
        else:
            proc, out = self.bt_start(case)
            try:
                before = process_progs(proc.pid)
                ns, events = self.run(case.workload)
                after = process_progs(proc.pid)
                names = {}
                for pid_ in after:
                    info = prog_info_by_id(pid_)
                    names[pid_] = f"bpftrace:{info['name'] if info else pid_}"
            finally:
                text = self.bt_stop(proc, out)
            self.bt_check(case, text, events)
        total = 0
        for k, (rt, cnt) in after.items():
            rt0, cnt0 = before.get(k, (0, 0))
            d_rt, d_cnt = rt - rt0, cnt - cnt0
            if d_cnt <= 0:
                continue
            total += d_rt
            res["programs"][names[k]] = {
                "runs": d_cnt, "ns_per_run": d_rt / d_cnt, "runs_per_event": d_cnt / events,
            }
        res["bpf_ns_per_event"] = total / events
        res["wall_ns_per_event_with_stats"] = ns
        res["events"] = events
        return res

    # -- agreement ------------------------------------------------------------------
    def agreement_pass(self) -> None:
        """cpu.usage_cores of a busy loop against its cgroup's cpu.stat.

        The loop is pinned to a CPU of its own (the worst case: nothing else
        switches it out); this process gets back every CPU it was allowed at
        start, as the daemon has, so CpuSource's flush before each read can visit
        the loop's CPU. ``--agree-intervals`` consecutive intervals; the target
        applies to the worst of them.
        """
        from cgwatch.sources.cpu import CpuSource

        os.sched_setaffinity(0, self.cpus)
        secs = self.args.agree_seconds
        r = _ByCgroup()
        srcs = {"default": CpuSource(r), "runq=False": CpuSource(r, runq=False)}
        self.sources["agree_default"], self.sources["agree_cpu"] = srcs["default"], srcs["runq=False"]
        cg = self._mkcg("burn")
        cgid = os.stat(cg).st_ino
        burner = subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"],
                                  preexec_fn=self._join(cg, [self.work_cpu]))
        self.procs.append(burner)
        self.agreement = {"seconds": secs, "loop_cpu": self.work_cpu, "intervals": []}

        def snap() -> tuple[float, int, dict[str, list[Any]]]:
            t = time.time()
            u = _usage_usec(cg)
            return t, u, {k: s.collect(t, []) for k, s in srcs.items()}

        try:
            time.sleep(0.5)
            t0, u0, _ = snap()
            for _ in range(self.args.agree_intervals):
                time.sleep(secs)
                t1, u1, got = snap()
                kernel = (u1 - u0) / 1e6 / (t1 - t0)
                res: dict[str, Any] = {"seconds": t1 - t0, "cgroupfs_cores": kernel, "collectors": {}}
                for k, samples in got.items():
                    v = {x.metric: x.value for x in samples if x.container.id == str(cgid)}
                    cores = v.get("cpu.usage_cores", float("nan"))
                    res["collectors"][k] = {
                        "bpf_cores": cores,
                        "rel_diff": cores / kernel - 1 if kernel else float("nan"),
                        "switches_per_s": v.get("cpu.ctx_switches", float("nan")),
                    }
                self.agreement["intervals"].append(res)
                t0, u0 = t1, u1
        finally:
            _kill(burner)
            self.procs.remove(burner)

    # -- clean-up -------------------------------------------------------------------
    def cleanup(self) -> None:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for p in list(self.procs):
                if p.args and p.args[0] == "bpftrace" and p.poll() is None:
                    p.send_signal(signal.SIGINT)
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                _kill(p)
            self.procs.clear()
            for s in self.sources.values():
                with contextlib.suppress(Exception):
                    s.close()
            self.sources.clear()
            for cg in reversed(self.cgroups):
                _remove_cgroup(cg)
            self.cgroups.clear()
            if self.sysctl_saved is not None:
                with contextlib.suppress(OSError):
                    write_sysctl("kernel.bpf_stats_enabled", self.sysctl_saved)
                self.sysctl_saved = None
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old)

    # -- report ---------------------------------------------------------------------
    def machine(self) -> dict[str, Any]:
        busy0, total0 = self.busy_start
        busy1, total1 = _cpu_busy()
        return {
            "load_avg_start": self.load_start, "load_avg_end": _loadavg(),
            "cpu_busy_fraction": (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan"),
            "kernel": platform.release(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "bpftrace": _bpftrace_version(), "workload_cpu": self.work_cpu,
        }

    def verdicts(self) -> list[dict[str, Any]]:
        c = {x.key: x for x in self.cases}
        out = []

        def ratio(a: str) -> float:
            b = c[PEERS[a]].median
            return c[a].median / b if b > 0 else float("nan")

        r = ratio("cgw_cpu")
        out.append({"what": "cpu (on-CPU + switches): added ns per switch", "value": c["cgw_cpu"].median,
                    "target": f"<= {TARGET_SWITCH_NS:.0f} ns", "pass": c["cgw_cpu"].median <= TARGET_SWITCH_NS})
        out.append({"what": "cpu (on-CPU + switches) x bpftrace", "value": r,
                    "target": f"<= {TARGET_SWITCH_RATIO}", "pass": r <= TARGET_SWITCH_RATIO})
        r = ratio("cgw_cpu_runq")
        out.append({"what": "cpu + run-queue latency x bpftrace", "value": r,
                    "target": f"<= {TARGET_OTHER_RATIO}", "pass": r <= TARGET_OTHER_RATIO})
        blame = c["cgw_cpu_runq"].median - c["cgw_cpu_noblame"].median
        out.append({"what": "who waited behind whom (CGW_BLAME): added ns per switch", "value": blame,
                    "target": f"<= {TARGET_BLAME_NS:.0f} ns", "pass": blame <= TARGET_BLAME_NS})
        r = ratio("cgw_mem")
        out.append({"what": "mem page faults x bpftrace", "value": r,
                    "target": f"<= {TARGET_OTHER_RATIO}", "pass": r <= TARGET_OTHER_RATIO})
        own = self.agreement.get("intervals", [])
        for k in own[0]["collectors"] if own else ():
            worst = max((i["collectors"][k]["rel_diff"] for i in own), key=abs)
            out.append({"what": f"agreement, {k} collector (worst of {len(own)})", "value": worst,
                        "target": f"within {TARGET_AGREEMENT:.0%}",
                        "pass": abs(worst) <= TARGET_AGREEMENT})
        return out

    def report(self) -> dict[str, Any]:
        m = self.machine()
        lines = []
        p = lines.append
        p("")
        p(f"cgwatch probe cost  {m['date']}  kernel {m['kernel']}  {m['cpu_model']}, {m['cpus']} CPUs"
          f"  bpftrace {m['bpftrace']}")
        p(f"{self.args.rounds} interleaved rounds x {self.args.pairs} probe runs, each between two "
          f"baseline runs of the same round; added = median over rounds, ± = median absolute deviation; "
          f"workloads on CPU {self.work_cpu}")
        p(f"load average {m['load_avg_start']:.2f} at start, {m['load_avg_end']:.2f} at the end; all CPUs "
          f"{m['cpu_busy_fraction']:.0%} busy over the run (the bench itself keeps about one CPU busy)")
        if self.foreign:
            p("NOTE: tracing BPF programs of others were loaded (they add to baseline and probe runs alike):")
            for f in self.foreign:
                p(f"  {f}")
        by = {x.key: x for x in self.cases}
        noisy = False
        for w, title in WORKLOAD_TITLES.items():
            cases = [x for x in self.cases if x.workload == w]
            base = statistics.median([b for x in cases for b in x.baseline])
            p("")
            p(f"{title}: baseline {base:.0f} ns")
            p(f"  {'probe':62s} {'added ns':>9s} {'±':>5s} {'x bpftrace':>10s}")
            for x in cases:
                rr = ""
                if x.key in PEERS:
                    peer = by[PEERS[x.key]]
                    if peer.median <= 5:
                        rr = "n/a"
                    else:
                        rr = f"{x.median / peer.median:.2f}"
                        if peer.mad > peer.median / 2 or x.mad > max(abs(x.median), 1) / 2:
                            rr += "?"
                            noisy = True
                p(f"  {x.label:62s} {fmt_ns(x.median):>9s} {fmt_ns(x.mad, False):>5s} {rr:>10s}")
                for n in x.notes:
                    p(f"    ! {n}")
        if noisy:
            p("")
            p("? = the ± of ours or of bpftrace is more than half its figure: that ratio is uncertain")
        if self.stats:
            p("")
            p("BPF run time (kernel.bpf_stats_enabled=1, one extra pass): per program and per workload event")
            p(f"  {'case / program':56s} {'ns/run':>7s} {'runs/event':>10s} {'BPF ns/event':>12s}")
            for x in self.cases:
                st = self.stats.get(x.key)
                if not st:
                    continue
                p(f"  {x.key:56s} {'':>7s} {'':>10s} {st['bpf_ns_per_event']:12.1f}")
                rare = [pr for pr in st["programs"].values() if pr["runs_per_event"] < 0.01]
                for name, pr in sorted(st["programs"].items()):
                    if pr["runs_per_event"] >= 0.01:
                        p(f"    {name:54s} {pr['ns_per_run']:7.1f} {pr['runs_per_event']:10.3f}")
                if rare:
                    p(f"    ({len(rare)} more programs ran {sum(r['runs'] for r in rare)} times in all: "
                      "not on this workload's path)")
                mc = st.get("map_counts")
                if mc:
                    p("    map counts for the workload cgroup: "
                      + ", ".join(f"{k}={v}" for k, v in mc.items()) + f" (events {st['events']})")
        if self.expiries:
            e = self.expiries
            added = by["cgw_refill"].median if "cgw_refill" in by else float("nan")
            p("")
            p(f"hrtimer expiries on this host, nothing of the bench running: {e['per_s']:.0f}/s over "
              f"{e['seconds']:.1f} s (all CPUs; BPF {e['bpf_ns_per_run']:.1f} ns per run); "
              f"at {fmt_ns(added, False)} ns added each that is {e['per_s'] * added / 1e7:.4f} % of one CPU")
        if self.agreement:
            a = self.agreement
            p("")
            p(f"agreement: busy loop in its own cgroup2 directory, alone on CPU {a['loop_cpu']}; cgwatch "
              f"cpu.usage_cores vs the cgroup's cpu.stat usage_usec over the same {a['seconds']:.0f} s intervals")
            for i, res in enumerate(a["intervals"]):
                cols = "   ".join(f"{k}: {v['bpf_cores']:.4f} ({v['rel_diff']:+.2%})"
                                  for k, v in res["collectors"].items())
                sw = next(iter(res["collectors"].values()))["switches_per_s"]
                p(f"  {i + 1}. cpu.stat {res['cgroupfs_cores']:.4f} cores   {cols}   ({sw:.0f} switches/s)")
        p("")
        p("targets" + ("  (--quick: a smoke check, too few and too short runs for verdicts)" if self.args.quick else ""))
        verdicts = self.verdicts()
        for v in verdicts:
            val = v["value"]
            sval = f"{val:+.2%}" if "agreement" in v["what"] else (
                f"{val:.0f} ns" if "ns" in v["what"] else f"{val:.2f}")
            p(f"  {'PASS' if v['pass'] else 'FAIL'}  {v['what']:52s} {sval:>9s}  (target {v['target']})")
        p(f"\n(total {time.time() - self.t_start:.0f} s)")
        print("\n".join(lines), flush=True)
        return {
            "machine": m,
            "settings": {"rounds": self.args.rounds, "pairs": self.args.pairs,
                         "seconds_per_run": self.args.seconds,
                         "round_trips": self.n.get("switch"), "syscalls": self.n.get("syscall"),
                         "fault_mib": FAULT_MIB, "fault_reps": self.fault_reps, "seed": self.args.seed},
            "foreign_tracing_programs": self.foreign,
            "cases": {x.key: {"label": x.label, "workload": x.workload, "kind": x.kind,
                              "added_ns_median": x.median, "added_ns_mad": x.mad,
                              "added_ns": x.added, "baseline_ns": x.baseline, "probed_ns": x.probed,
                              "runs": x.runs,
                              "notes": x.notes, "peer": PEERS.get(x.key)} for x in self.cases},
            "bpf_stats": self.stats,
            "agreement": self.agreement,
            "hrtimer_expiries": self.expiries,
            "targets": verdicts,
            "all_pass": all(v["pass"] for v in verdicts),
        }


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


def _usage_usec(cg: Path) -> int:
    for line in (cg / "cpu.stat").read_text().splitlines():
        k, v = line.split()
        if k == "usage_usec":
            return int(v)
    raise RuntimeError(f"no usage_usec in {cg}/cpu.stat")


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)


def _remove_cgroup(cg: Path) -> None:
    """Kill what is left in a cgroup this bench made (only its own children), then rmdir."""
    for _ in range(50):
        try:
            pids = [int(x) for x in (cg / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    log(f"bench: WARNING could not remove {cg}")


def _bpftrace_version() -> str:
    try:
        return subprocess.run(["bpftrace", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split()[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds, shorter runs: a smoke check")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 7, --quick 3)")
    ap.add_argument("--pairs", type=int, help="probe runs per case per round, each between two baseline runs (default 3, --quick 2)")
    ap.add_argument("--seconds", type=float, help="seconds per workload run (default 0.1, --quick 0.06)")
    ap.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    ap.add_argument("--agree-intervals", type=int, help="intervals of the busy loop on its own CPU (default 3, --quick 1)")
    ap.add_argument("--cpu", type=int, help="CPU to pin the workloads to (default: the last one)")
    ap.add_argument("--expiry-seconds", type=float, help="seconds to count the host's hrtimer expiries (default 5, --quick 2)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the round order")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.pairs = args.pairs or (2 if args.quick else 3)
    args.seconds = args.seconds or (0.06 if args.quick else 0.1)
    args.settle = 0.1
    args.agree_seconds = 2.0 if args.quick else 5.0
    args.agree_intervals = args.agree_intervals or (1 if args.quick else 3)
    args.expiry_seconds = args.expiry_seconds or (2.0 if args.quick else 5.0)

    import logging
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # Ctrl-C, SIGTERM and SIGHUP all end in the clean-up, even when started with
    # SIGINT ignored (a background job of a non-interactive shell)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    bench = Bench(args)
    try:
        bench.setup()
        bench.rounds()
        bench.stats_pass()
        bench.agreement_pass()
    except KeyboardInterrupt:
        log("bench: interrupted; cleaning up")
        bench.cleanup()
        return 130
    except BaseException:
        bench.cleanup()
        raise
    bench.cleanup()
    data = bench.report()
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2, default=float) + "\n")
        log(f"bench: wrote {args.json}")
    return 0 if data["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
