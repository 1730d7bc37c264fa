#!/usr/bin/env python3
"""What CPU profiles cost: the workload being profiled, its neighbours, and the daemon.

Side by side in one run (root; numbers for docs/performance.md):

1. **Throughput of a CPU-bound C program** pinned to one CPU, in its own docker-named
   cgroup, in interleaved rounds under three conditions: no profiler attached
   (the baseline), the profiler attached with *this* cgroup wanted (profiled), and
   attached with *another* cgroup wanted (unprofiled). Cost = the median over
   rounds of the loss against that round's baseline. Throughput noise on a busy VM
   is about +-1%, so the kernel's own count is printed too: the profiler program's
   run time per sample (``kernel.bpf_stats_enabled``), times the sampling rate, as a
   share of one CPU. That share excludes the timer interrupt itself, which the
   throughput rounds include.
2. **User-space cost of a 10 s profile**: CPU seconds cgwatch's thread spends taking,
   naming and folding the samples of a 10 s profile of a Python process (about 30
   mapped files), first with cold caches (every ELF file read), then warm, beside
   the 10 s it covers.

    sudo .venv/bin/python bench/bench_profile.py [--rounds 7] [--seconds 2] [--hz 49]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cgwatch.identity.cgroups import find_cgroup2_root
from cgwatch.model import Container
from cgwatch.profile.formats import folded, top_functions
from cgwatch.profile.profiler import cgroup_ids
from cgwatch.profile.sampler import Sampler, Session
from cgwatch.profile.store import ProfileStore
from cgwatch.profile.symbols import Symbolizer

SPIN = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
__attribute__((noinline)) uint64_t work(uint64_t x) { for (int i = 0; i < 100000; i++) x = x * 6364136223846793005ULL + i; return x; }
int main(int argc, char **argv) {
    double end = now() + atof(argv[1]); uint64_t x = 1, n = 0;
    while (now() < end) { x = work(x); n++; }
    printf("%llu %llu\n", (unsigned long long)n, (unsigned long long)(x & 1));
    return 0;
}
"""


def cgroup(root: Path, name: str) -> Path:
    d = root / "docker" / name
    d.mkdir(parents=True)
    return d


def run_in(d: Path, argv: list[str]) -> subprocess.Popen[str]:
    def enter() -> None:
        with open(d / "cgroup.procs", "w") as f:
            f.write("0")

    return subprocess.Popen(argv, preexec_fn=enter, stdout=subprocess.PIPE, text=True)


def prog_stats(sampler: Sampler) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the profiler's program, from its fdinfo."""
    fd = sampler.bpf.funcs[b"on_sample"].fd
    text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    get = {k: int(v) for k, v in re.findall(r"^(run_time_ns|run_cnt):\s+(\d+)", text, re.M)}
    return get.get("run_time_ns", 0), get.get("run_cnt", 0)


def throughput(args: argparse.Namespace, root: Path, spin: Path) -> None:
    cpu = str(max(os.sched_getaffinity(0)))
    me, other = cgroup(root, secrets.token_hex(32)), cgroup(root, secrets.token_hex(32))
    sampler = Sampler(args.hz)
    try:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
        per_cond: dict[str, list[float]] = {"baseline": [], "profiled": [], "unprofiled": []}
        ns: dict[str, list[float]] = {"profiled": [], "unprofiled": []}
        for r in range(args.rounds):
            order = list(per_cond)
            random.Random(r).shuffle(order)
            for cond in order:
                want = {"profiled": {os.stat(me).st_ino}, "unprofiled": {os.stat(other).st_ino}}.get(cond, set())
                if want:
                    sampler.want(want)
                t0 = prog_stats(sampler) if want else (0, 0)
                p = run_in(me, ["taskset", "-c", cpu, str(spin), str(args.seconds)])
                out, _ = p.communicate()
                if want:
                    t1 = prog_stats(sampler)
                    if t1[1] > t0[1]:
                        ns[cond].append((t1[0] - t0[0]) / (t1[1] - t0[1]))
                    sampler.unwant(want)
                per_cond[cond].append(int(out.split()[0]) / args.seconds)
        base = per_cond["baseline"]
        print(f"CPU-bound C program pinned to CPU {cpu}, {args.rounds} rounds x {args.seconds:g} s, {args.hz} Hz")
        print(f"  baseline            {statistics.median(base):12.0f} work units/s")
        for cond in ("profiled", "unprofiled"):
            loss = [100.0 * (b - x) / b for b, x in zip(base, per_cond[cond], strict=True)]
            run_ns = statistics.median(ns[cond]) if ns[cond] else float("nan")
            share = 100.0 * args.hz * run_ns / 1e9
            print(f"  {cond:<18}  {statistics.median(per_cond[cond]):12.0f} work units/s   "
                  f"loss {statistics.median(loss):+.2f}% (rounds {min(loss):+.2f}..{max(loss):+.2f}%)   "
                  f"program {run_ns:,.0f} ns/sample = {share:.4f}% of a CPU")
    finally:
        sampler.close()
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text("0")
        for d in (me, other):
            d.rmdir()


def user_space(args: argparse.Namespace, root: Path) -> None:
    box = cgroup(root, secrets.token_hex(32))
    p = run_in(box, ["python3", "-c", "import json, random\nwhile True: json.dumps([random.random() for _ in range(50)])"])
    sampler = Sampler(args.hz)
    names = Symbolizer()
    try:
        time.sleep(0.5)
        c = Container(id=box.name, name="bench", runtime="docker", cgroup=f"docker/{box.name}")
        for label in ("cold caches", "warm caches"):
            s = Session(sampler, names, c, lambda: cgroup_ids(root, c), 10.0)
            cpu = 0.0
            while True:
                t0 = time.thread_time()
                going = s.poll()
                cpu += time.thread_time() - t0
                if not going:
                    break
                time.sleep(1.0)
            t0 = time.thread_time()
            prof = s.finish()
            top_functions(prof)
            text = folded(prof)
            with tempfile.TemporaryDirectory() as tmp:
                ProfileStore(Path(tmp)).save(prof)
            cpu += time.thread_time() - t0
            print(f"10 s profile of a Python process, {label}: {prof.samples} samples, {len(prof.stacks)} stacks, "
                  f"{len(text) / 1024:.1f} KiB folded; cgwatch CPU {cpu * 1000:.0f} ms "
                  f"({100 * cpu / 10.0:.2f}% of one CPU over the profile)")
            names.watch(p.pid)     # the second round reuses the ELF caches, as the daemon does
    finally:
        p.kill()
        p.wait()
        sampler.close()
        time.sleep(0.2)
        box.rmdir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--hz", type=int, default=49)
    ap.add_argument("--only", choices=("throughput", "user"), default=None)
    args = ap.parse_args()
    root = find_cgroup2_root()
    assert root is not None, "no cgroup2"
    with tempfile.TemporaryDirectory() as tmp:
        spin = Path(tmp) / "spin"
        (Path(tmp) / "spin.c").write_text(SPIN)
        subprocess.run(["gcc", "-O2", "-fno-omit-frame-pointer", "-o", str(spin), str(Path(tmp) / "spin.c")],
                       check=True)
        if args.only in (None, "throughput"):
            throughput(args, root, spin)
        if args.only in (None, "user"):
            user_space(args, root)


if __name__ == "__main__":
    main()
