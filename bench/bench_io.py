#!/usr/bin/env python3
"""What the io collector (bpf/io.bpf.c) costs a block request, next to no collector.

Run as root from the project's venv::

    .venv/bin/python bench/bench_io.py [--rounds 8] [--writes 3000] [--dir /var/tmp]

Method: a C-free workload, ``dd`` writing 4 KiB blocks with ``oflag=direct`` to a file on
the disk that holds ``--dir`` (one request per write, one at a time), in its own process.
Each round runs it twice: once with no io program loaded (baseline) and once with the io
source loaded exactly as the daemon loads it (``collectors: {io: true}``), in an order
that alternates between rounds. "Added" is the median over rounds of the per-write
difference of the two runs' wall time. A last pass with ``kernel.bpf_stats_enabled=1``
reads the kernel's own count of the three programs' run time per request (BPF's own
time, without the tracepoint dispatch). The file, the program cache and the sysctl are
cleaned up on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from bench_probes import process_progs  # noqa: E402  (bench/ is the script's directory)

from cgwatch.collect import open_collector  # noqa: E402
from cgwatch.sources.bpf import set_cache_dir  # noqa: E402

STATS = "/proc/sys/kernel/bpf_stats_enabled"


def writes(path: Path, n: int) -> float:
    """Seconds ``dd`` takes for ``n`` direct 4 KiB writes to ``path`` (which exists at that size)."""
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4k", f"count={n}", "oflag=direct", "conv=notrunc"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--writes", type=int, default=3000, help="direct 4 KiB writes per run")
    ap.add_argument("--dir", default="/var/tmp", help="a directory on the disk to write to")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench_io: needs root (loads BPF programs)")
    tmp = Path(tempfile.mkdtemp(prefix="cgwatch-bench-io-", dir=args.dir))
    cache = Path(tempfile.mkdtemp(prefix="cgwatch-bench-io-cache-"))
    stats_before = Path(STATS).read_text().strip()
    try:
        set_cache_dir(cache)
        data = tmp / "f"
        subprocess.run(["dd", "if=/dev/zero", f"of={data}", "bs=4k", f"count={args.writes}", "conv=fsync"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        open_collector(["io"]).close()           # compile once: the rounds load from the cache
        added = []
        base_rates = []
        for r in range(args.rounds):
            runs = {}
            for with_io in ((False, True) if r % 2 == 0 else (True, False)):
                col = open_collector(["io"]) if with_io else None
                try:
                    runs[with_io] = writes(data, args.writes)
                finally:
                    if col is not None:
                        col.close()
            added.append((runs[True] - runs[False]) / args.writes * 1e6)
            base_rates.append(args.writes / runs[False])
            print(f"round {r + 1}: baseline {runs[False] * 1e3:.0f} ms, with io {runs[True] * 1e3:.0f} ms "
                  f"for {args.writes} writes", flush=True)
        Path(STATS).write_text("1\n")
        col = open_collector(["io"])
        try:
            before = process_progs(os.getpid())
            writes(data, args.writes)
            after = process_progs(os.getpid())
        finally:
            col.close()
        ns = sum(after[k][0] - before.get(k, (0, 0))[0] for k in after)
        med = statistics.median(added)
        mad = statistics.median(abs(a - med) for a in added)
        print(f"\ndirect 4 KiB writes: {statistics.median(base_rates):.0f} a second without the io collector")
        print(f"added per request (wall, median of {args.rounds} alternated rounds): {med:+.2f} ± {mad:.2f} us")
        print(f"BPF's own time per request (kernel.bpf_stats_enabled, the three programs): "
              f"{ns / args.writes:.0f} ns")
        return 0
    finally:
        with contextlib.suppress(OSError):
            Path(STATS).write_text(stats_before + "\n")
        set_cache_dir(None)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
