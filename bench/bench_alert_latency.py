#!/usr/bin/env python3
"""Alert latency: from a container's CPU going hot to its firing notice at a webhook.

Run as root from the project's venv::

    .venv/bin/python bench/bench_alert_latency.py [--runs 20] [--interval 1] [--for 2] [--json FILE]
        [--cgwatch "COMMAND"]      # another build, e.g. "env PYTHONPATH=/tmp/old/daemon python3 -m cgwatch"

Method (docs/performance.md shows the numbers):

* One ``cgwatch run`` in the foreground: ``interval`` as given, a temporary
  ``state_dir``, a free ``listen`` port, one webhook sink on loopback with
  ``group_wait: 0.1s``, and one rule: ``cpu.usage_cores > 0.5`` with the given
  ``for:``, selecting only this run's containers.
* Each run makes a docker-named cgroup (``<cgroup2 root>/docker/<64 hex>``), waits
  a random fraction of an interval (so that onsets fall anywhere between two
  ticks), then starts a busy loop in it: that instant is the **onset**. The
  receiver stamps the firing notice's arrival; latency = arrival - onset. The
  alert's ``starts_at`` splits it into *evaluation* (onset to the interval in
  which the rule fired) and *delivery* (that to the arrival). Then the loop is
  killed, the resolution awaited, the cgroup removed: one container at a time.
* Beside it, the bound the design promises: ``for`` + one interval (to see the
  condition) + delivery.

Everything it creates is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CGWATCH = str(Path(sys.executable).with_name("cgwatch"))


def cgroup2_root() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return Path(left.split()[4])
    sys.exit("no cgroup2 mount")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Webhook:
    """A loopback receiver that stamps each notice's arrival (time.time())."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict]] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()
                with outer.cond:
                    outer.got.extend((at, a) for a in body.get("alerts", body if isinstance(body, list) else []))
                    outer.cond.notify_all()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, container: str, state: str, timeout: float) -> tuple[float, dict] | None:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, a in self.got:
                    if a.get("container") == container and a.get("state") == state:
                        return at, a
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--for", dest="for_s", type=float, default=2.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cgwatch", default=CGWATCH, help="the command that runs cgwatch (default: the venv's)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: cgroups and BPF")
    root, prefix, rng = cgroup2_root(), secrets.token_hex(3), random.Random(1)
    hook = Webhook()
    tmp = Path(tempfile.mkdtemp(prefix="cgwatch-latency-"))
    (tmp / "rules.yaml").write_text(f"""rules:
  - name: bench-cpu-hot
    select: {{name: "{prefix}*"}}
    expr: cpu.usage_cores > 0.5
    for: {args.for_s}s
    severity: warning
""")
    (tmp / "config.yaml").write_text(f"""interval: {args.interval}s
state_dir: {tmp / 'state'}
listen: 127.0.0.1:{free_port()}
rules: [{tmp / 'rules.yaml'}]
notify:
  hook: {{type: webhook, url: "http://127.0.0.1:{hook.port}/", group_wait: 0.1s}}
""")
    log = (tmp / "daemon.log").open("w")
    daemon = subprocess.Popen([*shlex.split(args.cgwatch), "run", "--config", str(tmp / "config.yaml")], stdout=log, stderr=log)
    rows: list[dict] = []
    try:
        time.sleep(3 * args.interval)
        while "cgwatch running" not in (tmp / "daemon.log").read_text():
            if daemon.poll() is not None:
                sys.exit((tmp / "daemon.log").read_text())
            time.sleep(0.2)
        time.sleep(2 * args.interval)
        for i in range(args.runs):
            cid = prefix + secrets.token_hex(29)
            cg = root / "docker" / cid
            cg.mkdir(parents=True)
            time.sleep(args.interval + rng.random() * args.interval)

            def enter(cg: Path = cg) -> None:
                (cg / "cgroup.procs").write_text("0")

            onset = time.time()
            busy = subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"], preexec_fn=enter)
            got = hook.wait(cid[:12], "firing", 30 * args.interval + 30)
            busy.kill()
            busy.wait()
            if got is None:
                sys.exit(f"run {i}: no alert within the wait\n" + (tmp / "daemon.log").read_text()[-3000:])
            at, alert = got
            fired = float(alert["starts_at"])
            rows.append({"latency_s": at - onset, "evaluation_s": fired - onset, "delivery_s": at - fired})
            print(f"run {i + 1:2d}: {at - onset:5.2f} s (evaluation {fired - onset:4.2f} s, "
                  f"delivery {at - fired:4.2f} s)", flush=True)
            hook.wait(cid[:12], "resolved", 30 * args.interval + 30)
            for _ in range(100):
                try:
                    cg.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
        log.close()
        for d in (root / "docker").glob(prefix + "*"):
            for p in (d / "cgroup.procs").read_text().split():
                os.kill(int(p), signal.SIGKILL)
            time.sleep(0.1)
            d.rmdir()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    lat = sorted(r["latency_s"] for r in rows)
    summary = {"runs": len(rows), "interval_s": args.interval, "for_s": args.for_s,
               "bound_s": args.for_s + args.interval, "median_s": statistics.median(lat), "max_s": lat[-1],
               "min_s": lat[0], "median_evaluation_s": statistics.median(r["evaluation_s"] for r in rows),
               "median_delivery_s": statistics.median(r["delivery_s"] for r in rows)}
    print(f"\nonset -> webhook over {len(rows)} runs: median {summary['median_s']:.2f} s, "
          f"min {summary['min_s']:.2f} s, max {summary['max_s']:.2f} s "
          f"(for {args.for_s:g} s + one interval {args.interval:g} s = {summary['bound_s']:g} s + delivery); "
          f"median evaluation {summary['median_evaluation_s']:.2f} s, delivery {summary['median_delivery_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
