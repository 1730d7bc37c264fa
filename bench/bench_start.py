#!/usr/bin/env python3
"""The daemon's start-up with and without its cache of compiled BPF programs.

Run as root from the project's venv::

    .venv/bin/python bench/bench_start.py [--starts 3]

``cgwatch run`` (this checkout's code) is started ``--starts`` times with an empty
``<state_dir>/bpf-cache`` (every program compiles, as at a first start or after a
kernel or BCC upgrade) and as many times with the cache its first start filled.
Each start is measured as bench_daemon.py measures it: Popen to ``READY=1`` on
our ``NOTIFY_SOCKET``, and the peak of the whole process tree's PSS (every 50 ms,
the BPF loader and its workers included) until then; then the daemon is stopped
(SIGTERM). It takes about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_daemon import ROOT, TARGET_PEAK_MB, TARGET_READY_S, StartPeak, free_port, stop  # noqa: E402


def start(state: Path, tmp: Path) -> tuple[float, float, int]:
    """(seconds to READY=1, tree peak PSS MB, most processes) of one start."""
    cfg = tmp / "config.yaml"
    cfg.write_text(f"interval: 1s\nstate_dir: {state}\nlisten: 127.0.0.1:{free_port()}\n"
                   f"notify:\n  out:\n    type: file\n    path: {tmp / 'alerts.jsonl'}\n")
    sock_path = tmp / "notify.sock"
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "PYTHONPATH": str(ROOT / "daemon")}
    t0 = time.monotonic()
    with open(tmp / "log", "ab") as logf:
        p = subprocess.Popen([sys.executable, "-m", "cgwatch", "run", "--config", str(cfg)], stdout=logf,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    peak = StartPeak(p.pid)
    peak.start()
    try:
        ready = None
        while ready is None and time.monotonic() - t0 < 120:
            if p.poll() is not None:
                raise RuntimeError(f"cgwatch exited with {p.returncode}: {(tmp / 'log').read_text()[-2000:]}")
            with contextlib.suppress(TimeoutError):
                if b"READY=1" in sock.recv(4096).split(b"\n"):
                    ready = time.monotonic() - t0
        if ready is None:
            raise RuntimeError("cgwatch: no READY=1 in 120 s")
        return ready, peak.stop(), peak.most_procs
    finally:
        peak.stop()
        stop(p)
        sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=3, help="starts of each kind (default 3)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (loads BPF programs)")
    tmp = Path(tempfile.mkdtemp(prefix="cgwatch-bench-start-"))
    state = tmp / "state"
    rows: dict[str, list[tuple[float, float, int]]] = {"compiled": [], "cached": []}
    try:
        for kind in ("compiled", "cached"):
            for _ in range(args.starts):
                if kind == "compiled":
                    shutil.rmtree(state / "bpf-cache", ignore_errors=True)
                r = start(state, tmp)
                rows[kind].append(r)
                print(f"bench: {kind:<8} READY=1 after {r[0]:.2f} s, tree peak {r[1]:.0f} MB PSS "
                      f"({r[2]} processes)", flush=True)
            if kind == "compiled":      # the first start of the next kind fills the cache
                start(state, tmp)
        entries = sorted(p.name.split(".")[0] for p in (state / "bpf-cache").glob("*.json"))
        print(f"\ncache: {', '.join(entries)}")
        ok = True
        for kind, rs in rows.items():
            ready = statistics.median(r[0] for r in rs)
            peak = statistics.median(r[1] for r in rs)
            print(f"{kind:<8} median of {len(rs)}: READY=1 {ready:.2f} s (max {max(r[0] for r in rs):.2f}), "
                  f"peak {peak:.0f} MB (max {max(r[1] for r in rs):.0f})")
            if kind == "cached":
                ok = max(r[0] for r in rs) <= TARGET_READY_S and max(r[1] for r in rs) <= TARGET_PEAK_MB
        print(f"targets (cached): READY=1 <= {TARGET_READY_S} s, peak <= {TARGET_PEAK_MB:.0f} MB: "
              f"{'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
