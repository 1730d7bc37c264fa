#!/usr/bin/env python3
"""The daemon's own CPU and memory at 10, 100 and 500 containers, next to netdata.

Run as root from the project's venv::

    .venv/bin/python bench/bench_daemon.py [--sizes 10,100,500] [--window 30]
        [--warmup 20] [--only cgwatch|netdata] [--json FILE]

It installs Debian's ``netdata`` package with ``apt-get install -y netdata`` when
``netdata`` is not on PATH (skip that with ``--only cgwatch``). A full run takes
about 14 minutes.

Method (docs/performance.md has the long version):

* For each size N, N docker-named cgroups (``<cgroup2 root>/docker/<64 hex>``)
  each get one small periodic workload, ``sh -c`` counting to ``--loop`` (500)
  and sleeping 1 s, forever. They all start before any monitor does.
* Baseline: the workloads alone for one window; their CPU comes from their
  cgroups' ``cpu.stat usage_usec``, the host's from ``/proc/stat``, so a
  saturated machine shows.
* cgwatch: ``cgwatch run --config FILE`` in the foreground with ``interval: 1s``,
  a temporary ``state_dir``, a free ``listen`` port, a file sink and the default
  rules. ``NOTIFY_SOCKET`` points at our datagram socket; time to ready is Popen
  to ``READY=1``, and the socket is read until cgwatch stops (a full socket
  queue blocks the sender). Measuring starts once ``/metrics`` lists all N of our ids.
* netdata: ``netdata -D`` (foreground, stock ``/etc/netdata``; as root it drops
  to user ``netdata`` by itself). Measuring starts once ``/api/v1/charts`` has
  ``cgroup_<12 hex>`` charts for all N of our ids (its cgroup discovery runs
  every 10 s). Only one monitor runs at a time.
* After ``--warmup`` s, CPU over a ``--window`` s window, as % of one core: the
  run time of every thread (``/proc/<pid>/task/*/schedstat``) plus cutime+cstime
  (children that exited and were reaped) summed over the monitor's live process
  tree, at start and end.
  Memory at the end: VmRSS summed over the tree, and the main process's VmHWM.
  From start to ready (cgwatch), the tree's PSS every 50 ms, and its peak: that
  includes the short-lived BPF loader and its compiling workers.
* cgwatch's cache of compiled BPF programs (``<state_dir>/bpf-cache``) is kept from
  one size to the next, as a host keeps it across restarts: the first cgwatch run
  compiles every program (a first start, or one after a kernel or BCC upgrade), the
  later ones load them from the cache. Start-up is judged for both kinds of start.
  The workloads' CPU during each window is also kept (BPF programs run on the
  workloads' time, not the daemon's).

Everything it creates (workloads, cgroups, the monitors, the temporary
directory) is removed on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))

TARGET_CPU_PCT = 1.0        # % of one core, at 100 containers
TARGET_CPU_VS_NETDATA = 0.3  # cgwatch CPU / netdata CPU in the same run, at 100 and 500
TARGET_RSS_MB = 120.0        # at 100 containers
TARGET_PEAK_MB = 200.0       # start-up: the whole process tree, the BPF loader included
TARGET_READY_S = 3.0
NETDATA_ARGV = ["netdata", "-D"]
NETDATA_URL = "http://127.0.0.1:19999"
CLK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------- /proc
def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds) of one process: its threads' run time plus its reaped children's.

    Threads come from ``/proc/<pid>/task/*/schedstat`` (the scheduler's own ns
    count). utime/stime in ``/proc/<pid>/stat`` are tick samples on this kernel
    (TICK_CPU_ACCOUNTING, HZ=250) and showed a daemon waking briefly every second
    as 0 over 30 s; only the reaped children's cutime+cstime come from there.
    """
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
        run_ns = 0
        for t in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                run_ns += int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return int(f[1]), run_ns / 1e9 + (int(f[13]) + int(f[14])) / CLK


def tree(root: int) -> dict[int, float]:
    """pid -> CPU seconds of ``root`` and all its live descendants."""
    info = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _ppid(int(d))) is not None:
            info[int(d)] = st
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in info.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in info and (st := _stat(p)) is not None:
            out[p] = st[1]
            todo.extend(kids.get(p, []))
    return out


def _ppid(pid: int) -> tuple[int, int] | None:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(s[s.rindex(")") + 2:].split()[1]), 0


def _status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in kB (0 when gone or absent)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size of one process (shared pages split among their users), kB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


class StartPeak(threading.Thread):
    """Samples the memory of a monitor's whole process tree every 50 ms until stopped:
    the start-up peak, the short-lived BPF loader and its compiling workers included.
    PSS, not RSS: the workers are forks sharing the loader's pages, and summing their
    RSS would count those pages once per worker."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak_kb = 0
        self.most_procs = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):
            pids = list(tree(self.root))
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in pids))
            self.most_procs = max(self.most_procs, len(pids))

    def stop(self) -> float:
        self._done.set()
        if self.is_alive():
            self.join()
        return self.peak_kb / 1024


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def host_busy() -> tuple[int, int]:
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            with contextlib.suppress(TimeoutError):
                sock.recv(4096)


def stop(p: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s; children that outlived it (plugins) are killed."""
    if p.poll() is not None:
        return
    kids = [k for k in tree(p.pid) if k != p.pid]
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)
    for k in kids:                         # plugins that outlived their parent
        with contextlib.suppress(OSError):
            os.kill(k, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


# --------------------------------------------------------------------------- bench
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="cgwatch-bench-daemon-"))
        self.work: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self.monitor: subprocess.Popen[bytes] | None = None
        self.parent: Path | None = None
        self.made_parent = False
        self.results: list[dict[str, Any]] = []
        #: the compiled programs a cgwatch run left, for the next run's state_dir
        self.cache = self.tmp / "bpf-cache"

    def setup(self) -> None:
        from cgwatch.identity.cgroups import find_cgroup2_root

        if os.geteuid() != 0:
            raise SystemExit("bench: needs root (creates cgroups, runs the monitors)")
        root = find_cgroup2_root()
        if root is None:
            raise SystemExit("bench: no cgroup2 mount")
        self.parent = root / "docker"
        if not self.parent.exists():
            self.parent.mkdir()
            self.made_parent = True
        if self.args.only != "cgwatch" and shutil.which("netdata") is None:
            log("bench: installing netdata (apt-get install -y netdata)")
            subprocess.run(["apt-get", "install", "-y", "netdata"], check=True,
                           stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        log(f"bench: cgroups under {self.parent}, temp dir {self.tmp}")

    # -- workloads ------------------------------------------------------------------
    def start_work(self, n: int) -> None:
        assert self.parent is not None
        loop = (f"while :; do i=0; while [ $i -lt {self.args.loop} ]; do i=$((i+1)); done; "
                "sleep 1; done")
        for _ in range(n):
            cid = secrets.token_hex(32)
            d = self.parent / cid
            d.mkdir()

            def enter(d: Path = d) -> None:
                (d / "cgroup.procs").write_text("0\n")

            p = subprocess.Popen(["/bin/sh", "-c", loop], preexec_fn=enter, stdin=subprocess.DEVNULL)
            self.work.append((cid, d, p))
            time.sleep(1.0 / max(n, 1))      # spread their phases over the second

    def work_usec(self) -> int:
        total = 0
        for _, d, _ in self.work:
            with contextlib.suppress(OSError):
                for line in (d / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        total += int(line.split()[1])
        return total

    def stop_work(self) -> None:
        for _, d, p in self.work:
            try:
                (d / "cgroup.kill").write_text("1\n")
            except OSError:
                with contextlib.suppress(OSError):
                    p.kill()
        for _, d, p in self.work:
            with contextlib.suppress(Exception):
                p.wait(timeout=10)
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
        self.work.clear()

    # -- measuring ------------------------------------------------------------------
    def window(self, pid: int | None) -> dict[str, Any]:
        """CPU of pid's tree, of the workloads and of the host over one window."""
        t0, w0, h0 = time.monotonic(), self.work_usec(), host_busy()
        c0 = tree(pid) if pid else {}
        time.sleep(self.args.window)
        c1 = tree(pid) if pid else {}
        t1, w1, h1 = time.monotonic(), self.work_usec(), host_busy()
        dt = t1 - t0
        out: dict[str, Any] = {
            "seconds": round(dt, 2),
            "workload_cpu_pct": 100 * (w1 - w0) / 1e6 / dt,
            "host_busy_pct": 100 * (h1[0] - h0[0]) / max(h1[1] - h0[1], 1),
        }
        if pid:
            per: dict[str, float] = {}
            for p, secs in c1.items():
                name = _comm(p)
                per[name] = per.get(name, 0.0) + secs - c0.get(p, 0.0)
            out["cpu_pct"] = 100 * sum(per.values()) / dt
            out["by_process_pct"] = {k: round(100 * v / dt, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}
            out["procs"] = len(c1)
            out["rss_mb"] = sum(_status(p, "VmRSS") for p in c1) / 1024
            out["main_hwm_mb"] = _status(pid, "VmHWM") / 1024
            out["main_rss_mb"] = _status(pid, "VmRSS") / 1024
            out["main_anon_mb"] = _status(pid, "RssAnon") / 1024
            out["main_file_mb"] = _status(pid, "RssFile") / 1024
        return out

    def _settle(self, pid: int) -> dict[str, Any]:
        log(f"bench:   warm-up {self.args.warmup:.0f} s, then a {self.args.window:.0f} s window")
        time.sleep(self.args.warmup)
        if self.monitor is not None and self.monitor.poll() is not None:
            raise RuntimeError(f"monitor exited with {self.monitor.returncode} during warm-up")
        return self.window(pid)

    def _wait_seen(self, what: str, count, limit: float) -> float:  # noqa: ANN001
        """Seconds until count() >= N; raises after limit seconds."""
        n, t0, got = len(self.work), time.monotonic(), 0
        while time.monotonic() - t0 < limit:
            assert self.monitor is not None
            if self.monitor.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.monitor.returncode}")
            with contextlib.suppress(OSError, ValueError):
                got = count()
                if got >= n:
                    return time.monotonic() - t0
            time.sleep(1)
        raise RuntimeError(f"{what} saw only {got} of {n} containers after {limit:.0f} s")

    def _ours(self, text: str, pattern: str) -> int:
        seen = {m[:12] for m in re.findall(pattern, text)}
        return sum(1 for cid, _, _ in self.work if cid[:12] in seen)

    def run_cgwatch(self) -> dict[str, Any]:
        d = self.tmp / f"cgwatch-{len(self.work)}"
        d.mkdir()
        port = free_port()
        cached = self.cache.is_dir()
        if cached:        # a restart: what the first run compiled (copytree keeps the 0700 mode)
            (d / "state").mkdir(mode=0o700)
            shutil.copytree(self.cache, d / "state" / "bpf-cache")
        cfg = d / "config.yaml"
        cfg.write_text(f"interval: 1s\nstate_dir: {d / 'state'}\nlisten: 127.0.0.1:{port}\n"
                       f"notify:\n  out:\n    type: file\n    path: {d / 'alerts.jsonl'}\n")
        sock_path = d / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(sock_path))
        sock.settimeout(0.5)
        exe = ROOT / ".venv" / "bin" / "cgwatch"
        t0 = time.monotonic()
        with open(d / "log", "wb") as logf:
            self.monitor = subprocess.Popen([str(exe), "run", "--config", str(cfg)], stdout=logf,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**os.environ, "NOTIFY_SOCKET": str(sock_path)})
        pid = self.monitor.pid
        peak = StartPeak(pid)
        peak.start()
        try:
            ready = None
            while ready is None and time.monotonic() - t0 < 120:
                if self.monitor.poll() is not None:
                    raise RuntimeError(f"cgwatch exited with {self.monitor.returncode}: "
                                       + (d / "log").read_text()[-2000:])
                with contextlib.suppress(TimeoutError):
                    if b"READY=1" in sock.recv(4096).split(b"\n"):
                        ready = time.monotonic() - t0
            if ready is None:
                raise RuntimeError("cgwatch: no READY=1 in 120 s")
            start_peak = peak.stop()
            log(f"bench:   cgwatch READY=1 after {ready:.2f} s; start-up peak {start_peak:.0f} MB "
                f"(PSS of up to {peak.most_procs} processes)")
            if ready > TARGET_READY_S:      # what it said meanwhile: the temp dir goes with the run
                tail = (d / "log").read_text(errors="replace").splitlines()[-20:]
                log("bench:   a slow start; the daemon's log so far ends:\n" + "\n".join("    " + t for t in tail))
            # keep reading, as systemd does: cgwatch sends STATUS= every tick, and a
            # full datagram queue (net.unix.max_dgram_qlen, 10) blocks its sender
            threading.Thread(target=_drain, args=(sock,), daemon=True).start()
            url = f"http://127.0.0.1:{port}/metrics"
            seen = self._wait_seen("cgwatch", lambda: self._ours(http_get(url), r'id="([0-9a-f]{12,64})"'), 60)
            total = re.search(r"^cgwatch_containers ([0-9.e+]+)", http_get(url), re.M)
            res = self._settle(pid)
            res.update(ready_s=ready, seen_s=ready + seen, containers_metric=float(total[1]) if total else None,
                       start_peak_mb=start_peak, start_procs=peak.most_procs, cached_start=cached)
            if self.args.browser:
                res["with_browser"] = self._window_with_browser(pid, f"http://127.0.0.1:{port}/")
            return res
        finally:
            peak.stop()
            self.stop_monitor()
            sock.close()
            if (d / "state" / "bpf-cache").is_dir():     # what the next start finds, as on a host
                shutil.rmtree(self.cache, ignore_errors=True)
                shutil.copytree(d / "state" / "bpf-cache", self.cache)

    def _window_with_browser(self, pid: int, url: str) -> dict[str, Any]:
        """One more window of the daemon's CPU while a headless Chromium shows its
        overview (live ticks over SSE): what one open dashboard costs the daemon."""
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            try:
                page = b.new_page(viewport={"width": 1500, "height": 900})
                page.goto(url)
                page.wait_for_selector("#overview tbody tr", timeout=30_000)
                log("bench:   a browser shows the overview; another window")
                time.sleep(self.args.warmup / 2)
                out = self.window(pid)
                out["ticks_seen"] = page.evaluate("+document.body.dataset.ticks || 0")
                return out
            finally:
                b.close()

    def run_netdata(self) -> dict[str, Any]:
        with contextlib.suppress(OSError):
            http_get(NETDATA_URL + "/api/v1/info")
            raise RuntimeError("something already answers on netdata's port 19999")
        with open(self.tmp / f"netdata-{len(self.work)}.log", "wb") as logf:
            self.monitor = subprocess.Popen(NETDATA_ARGV, stdout=logf, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        pid = self.monitor.pid
        try:
            def count() -> int:
                charts = json.loads(http_get(NETDATA_URL + "/api/v1/charts"))["charts"]
                return self._ours(" ".join(charts), r"cgroup_([0-9a-f]{12})\.cpu\b")
            try:
                seen = self._wait_seen("netdata", count, 300)
            except RuntimeError as e:
                tail = (self.tmp / f"netdata-{len(self.work)}.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{e}; netdata's log ends: {tail}") from None
            log(f"bench:   netdata charts all {len(self.work)} cgroups after {seen:.1f} s")
            res = self._settle(pid)
            res.update(seen_s=seen)
            return res
        finally:
            self.stop_monitor()

    def stop_monitor(self) -> None:
        p, self.monitor = self.monitor, None
        if p is not None:
            stop(p)

    def run(self) -> None:
        tools = [t for t in ("cgwatch", "netdata") if self.args.only in (None, t)]
        for n in self.args.sizes:
            log(f"bench: {n} containers: starting workloads")
            self.start_work(n)
            time.sleep(3)
            log("bench:   baseline (workloads alone)")
            row: dict[str, Any] = {"size": n, "baseline": self.window(None)}
            for tool in tools:
                log(f"bench:   {tool}")
                try:
                    row[tool] = self.run_cgwatch() if tool == "cgwatch" else self.run_netdata()
                except RuntimeError as e:      # one monitor's failure loses no other figure
                    log(f"bench:   {tool} FAILED: {e}")
                    row[tool] = {"error": str(e)}
                time.sleep(2)
            self.results.append(row)
            self.stop_work()

    def cleanup(self) -> None:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with contextlib.suppress(Exception):
                self.stop_monitor()
            self.stop_work()
            if self.made_parent and self.parent is not None:
                for _ in range(100):
                    try:
                        self.parent.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:
                        err = e
                        time.sleep(0.1)
                else:
                    log(f"bench: could not remove {self.parent}: {err}")
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old)


# --------------------------------------------------------------------------- report
def report(results: list[dict[str, Any]], tools: list[str]) -> bool:
    ok = True
    for r in results:                  # a monitor that failed at a size: said, then left out
        for t in tools:
            if "error" in r.get(t, {}):
                print(f"{r['size']:>5} {t}: FAILED: {r.pop(t)['error'][:300]}")
                ok = False
    print(f"\n{'N':>5} {'monitor':<9} {'CPU %core':>9} {'RSS MB':>7} {'HWM MB':>7} {'peak MB':>7} {'procs':>5} "
          f"{'ready s':>7} {'seen s':>6} {'work %':>7} {'host %':>6}")
    for r in results:
        b = r["baseline"]
        print(f"{r['size']:>5} {'(none)':<9} {'':>9} {'':>7} {'':>7} {'':>7} {'':>5} {'':>7} {'':>6} "
              f"{b['workload_cpu_pct']:>7.1f} {b['host_busy_pct']:>6.1f}")
        for t in (t for t in tools if t in r):
            m = r[t]
            ready = f"{m['ready_s']:.2f}" if "ready_s" in m else "-"
            peak = f"{m['start_peak_mb']:.0f}" if "start_peak_mb" in m else "-"
            print(f"{r['size']:>5} {t:<9} {m['cpu_pct']:>9.2f} {m['rss_mb']:>7.1f} {m['main_hwm_mb']:>7.1f} {peak:>7} "
                  f"{m['procs']:>5} {ready:>7} {m['seen_s']:>6.1f} {m['workload_cpu_pct']:>7.1f} "
                  f"{m['host_busy_pct']:>6.1f}")
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(m["by_process_pct"].items())[:4])
            print(f"{'':>16}by process (% core): {top}")
            if "with_browser" in m:
                wb = m["with_browser"]
                print(f"{'':>16}with one browser on the dashboard: {wb['cpu_pct']:.2f} % "
                      f"(+{wb['cpu_pct'] - m['cpu_pct']:.2f} %, {wb['ticks_seen']} live ticks seen)")
    by = {r["size"]: r for r in results}
    if "cgwatch" in tools and "netdata" in tools:
        print("\ncgwatch CPU / netdata CPU: " + ", ".join(
            f"N={n}: {r['cgwatch']['cpu_pct'] / max(r['netdata']['cpu_pct'], 1e-9):.2f}" for n, r in by.items()
            if "cgwatch" in r and "netdata" in r))
    for t in tools:
        sizes = sorted(n for n, r in by.items() if t in r)
        steps = []
        for a, b in zip(sizes, sizes[1:]):
            g = by[b][t]["cpu_pct"] / max(by[a][t]["cpu_pct"], 1e-9)
            steps.append(f"{a}->{b}: CPU x{g:.2f}, RSS x{by[b][t]['rss_mb'] / by[a][t]['rss_mb']:.2f} "
                         f"(containers x{b / a:.0f})")
            if t == "cgwatch" and g > b / a:
                ok = False
        if steps:
            print(f"growth {t}: " + "; ".join(steps))
    if "cgwatch" in tools:
        print("\ntargets (cgwatch):")
        checks = []
        mine = [r for r in results if "cgwatch" in r]
        if 100 in by and "cgwatch" in by[100]:
            c = by[100]["cgwatch"]["cpu_pct"]
            checks.append((f"CPU at 100 containers {c:.2f} % <= {TARGET_CPU_PCT} % of one core", c <= TARGET_CPU_PCT))
            rss = by[100]["cgwatch"]["rss_mb"]
            checks.append((f"RSS at 100 containers {rss:.1f} MB <= {TARGET_RSS_MB:.0f} MB", rss <= TARGET_RSS_MB))
        if "netdata" in tools:
            for n in (100, 500):
                if n in by and "cgwatch" in by[n] and "netdata" in by[n]:
                    c, nd = by[n]["cgwatch"]["cpu_pct"], by[n]["netdata"]["cpu_pct"]
                    checks.append((f"CPU at {n}: {c:.2f} % <= {TARGET_CPU_VS_NETDATA} x netdata's {nd:.2f} % "
                                   f"({c / max(nd, 1e-9):.2f} x)", c <= TARGET_CPU_VS_NETDATA * nd))
        hwm = max((r["cgwatch"]["main_hwm_mb"] for r in mine), default=0.0)
        for cached, kind in ((False, "first start, compiling"), (True, "restart, from the program cache")):
            starts = [r["cgwatch"] for r in mine if r["cgwatch"].get("cached_start", False) == cached]
            if not starts:
                continue
            peak = max(m["start_peak_mb"] for m in starts)
            checks.append((f"start-up peak ({kind}; largest, whole tree, PSS) {peak:.0f} MB <= {TARGET_PEAK_MB:.0f} MB "
                           f"(the daemon's own VmHWM: {hwm:.0f} MB)", peak <= TARGET_PEAK_MB))
            ready = max(m["ready_s"] for m in starts)
            checks.append((f"ready ({kind}; slowest) {ready:.2f} s <= {TARGET_READY_S:.0f} s", ready <= TARGET_READY_S))
        for text, good in checks:
            print(f"  {'PASS' if good else 'FAIL'}  {text}")
            ok = ok and good
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,500", help="container counts (default 10,100,500)")
    ap.add_argument("--window", type=float, default=30.0, help="seconds measured per monitor (default 30)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds after ready and discovery (default 20)")
    ap.add_argument("--only", choices=("cgwatch", "netdata"), help="measure one monitor only")
    ap.add_argument("--loop", type=int, default=500, help="workload: count to this, then sleep 1 s (default 500)")
    ap.add_argument("--json", metavar="FILE", help="write every number as JSON")
    ap.add_argument("--browser", action="store_true",
                    help="also measure cgwatch while a headless Chromium shows its dashboard")
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    bench = Bench(args)
    try:
        bench.setup()
        bench.run()
    except KeyboardInterrupt:
        log("bench: interrupted; cleaning up")
        bench.cleanup()
        return 130
    finally:
        bench.cleanup()
    tools = [t for t in ("cgwatch", "netdata") if args.only in (None, t)]
    ok = report(bench.results, tools)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                               "netdata_argv": NETDATA_ARGV, "load_avg": os.getloadavg(),
                                               "results": bench.results}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
