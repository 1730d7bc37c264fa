#!/usr/bin/env python3
"""``GET /metrics`` at fleet scale: time and size of a scrape at 100, 500 and 1,000 containers.

The real app (``cgwatch.web.app.build_app``, served by ``cgwatch.web.app.serve``) on 127.0.0.1,
in a server process of its own, over a View whose containers each carry every metric the sources
declare (``cgwatch.collect.all_metrics``: what a live daemon on a kernel with every hook shows),
with Kubernetes-style names and 64-hex ids, a few firing alerts, and a daemon's usual counters.
An aiohttp client in this process scrapes it; per size, in interleaved rounds:

* ``/metrics`` asking for no compression (``Accept-Encoding: identity``);
* ``/metrics`` asking for gzip (``Accept-Encoding: gzip``), body read as sent (no decompression),
  to see whether cgwatch compresses;
* ``/healthz``, the cheapest endpoint, timed the same way: the floor of one request here;
* ``/healthz`` sent 2 ms after a ``/metrics`` request, while that scrape is being built: what a
  scrape does to the other requests the daemon's event loop serves meanwhile.

Each time is one request, from sending it to the last byte read. Also timed here, without HTTP,
over the same containers: the part of a scrape that runs in the daemon's event loop (reading the
View into metric families, ``registry.collect()``), the text rendering (``metrics.render``; the
daemon does it in a worker thread), and what gzip level 6 would make of the body.

    .venv/bin/python bench/bench_scrape.py [--n 50] [--sizes 100,500,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import multiprocessing
import os
import random
import statistics
import time

import aiohttp

from cgwatch.collect import all_metrics
from cgwatch.web.app import build_app, serve
from cgwatch.web.metrics import make_registry, render
from cgwatch.web.view import AlertInfo, ContainerInfo, Stats


class BenchView:
    """``n`` containers with every declared metric; alerts on a few; a healthy daemon's stats."""

    def __init__(self, n: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        names = sorted(all_metrics())
        apps = ["checkout", "cart", "search", "payments", "frontend", "catalog", "auth", "recommend"]
        self._containers = []
        for i in range(n):
            ns, app = f"team-{i % 12:02d}", apps[i % len(apps)]
            pod = f"{app}-{rng.getrandbits(40):010x}"[:len(app) + 11] + f"-{rng.getrandbits(20):05x}"
            cid = f"{rng.getrandbits(256):064x}"
            # byte and task counts are whole numbers; rates, ratios and latencies carry full precision
            metrics = {m: float(rng.randint(0, 4 << 30)) if m.endswith(("_bytes", "count")) and m.startswith(
                ("mem.", "proc.")) else rng.random() * 10 ** rng.randint(0, 3) for m in names}
            self._containers.append(ContainerInfo(
                id=cid, name=f"{ns}/{pod}/{app}", runtime="containerd", image=f"registry.local/{app}:1.{i % 9}",
                labels={}, pod=f"{ns}/{pod}", qos="burstable", cgroup=f"/kubepods.slice/cri-containerd-{cid}.scope",
                first_seen=1.7e9, last_seen=1.7e9 + 600, metrics=metrics))
        self._alerts = [AlertInfo(rule="cpu-hog", container=c.name, container_id=c.id, runtime=c.runtime,
                                  state="firing", severity="warning", since=1.7e9, value=1.9, summary="hot")
                        for c in self._containers[: max(1, n // 50)]]
        self.started = time.time()

    def containers(self) -> list[ContainerInfo]:
        return self._containers

    def alerts(self) -> list[AlertInfo]:
        return self._alerts

    def stats(self) -> Stats:
        now = time.time()
        return Stats(started_at=self.started, ready=True, interval_s=1.0, ticks=600, last_tick_at=now,
                     last_tick_s=0.02, rules_loaded=12, reload_ok=True, reload_error="", reloads=1,
                     samples_total=10 ** 7, events_total=10 ** 5, queue_drops={"rules": 0, "sinks": 0},
                     event_drops={"exec": 0, "cgroup": 0}, bpf_maps={"cpu_usage": len(self._containers)},
                     models=len(self._containers), models_evicted=0,
                     delivery={"webhook": {"sent": 40, "messages": 40}, "slack": {"sent": 12, "messages": 12}},
                     outbox_pending=0)

    def profiles(self) -> None:
        return None


def ms(values: list[float]) -> tuple[float, float]:
    """(median, p95) in milliseconds."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p95 * 1e3


async def one(session: aiohttp.ClientSession, path: str, encoding: str) -> tuple[float, bytes, str]:
    t0 = time.perf_counter()
    async with session.get(path, headers={"Accept-Encoding": encoding}) as resp:
        body = await resp.read()
        assert resp.status == 200, (path, resp.status, body[:200])
        sent_as = resp.headers.get("Content-Encoding", "identity")
    return time.perf_counter() - t0, body, sent_as


def _server(n_containers: int, ports: multiprocessing.Queue) -> None:
    """The daemon's side, in its own process (its own event loop and GIL), until terminated."""
    async def run() -> None:
        runner = await serve(build_app(BenchView(n_containers)), "127.0.0.1:0")
        ports.put(runner.addresses[0][1])
        await asyncio.Event().wait()
    asyncio.run(run())


async def scrape_times(port: int, n: int) -> tuple[dict[str, list[float]], bytes, bytes, str]:
    times: dict[str, list[float]] = {"metrics": [], "metrics_gzip": [], "healthz": [], "healthz_busy": []}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", auto_decompress=False) as session:
        for _ in range(3):  # warm-up: connections, caches
            await one(session, "/metrics", "identity")
            await one(session, "/healthz", "identity")
        for _ in range(n):
            dt, raw, _ = await one(session, "/metrics", "identity")
            times["metrics"].append(dt)
            dt, wire, sent_as = await one(session, "/metrics", "gzip")
            times["metrics_gzip"].append(dt)
            dt, _, _ = await one(session, "/healthz", "identity")
            times["healthz"].append(dt)
            scrape = asyncio.create_task(one(session, "/metrics", "identity"))
            await asyncio.sleep(0.002)
            dt, _, _ = await one(session, "/healthz", "identity")
            times["healthz_busy"].append(dt)
            await scrape
    return times, raw, wire, sent_as


def measure(n_containers: int, n: int) -> dict[str, object]:
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_server, args=(n_containers, ports), daemon=True)
    server.start()
    try:
        times, raw, wire, sent_as = asyncio.run(scrape_times(ports.get(timeout=60), n))
    finally:
        server.terminate()
        server.join()
    registry = make_registry(BenchView(n_containers))     # the same containers (same seed), in this process
    collect_s, render_s = [], []
    for _ in range(max(5, n // 5)):
        t0 = time.perf_counter()
        list(registry.collect())
        t1 = time.perf_counter()
        render(registry)
        collect_s.append(t1 - t0)
        render_s.append(time.perf_counter() - t1)
    t0 = time.perf_counter()
    gz = gzip.compress(raw, 6)
    gzip_s = time.perf_counter() - t0
    return {"containers": n_containers, "series": sum(1 for line in raw.splitlines() if not line.startswith(b"#")),
            "raw": len(raw), "wire_gzip": len(wire), "sent_as": sent_as, "gzip6": len(gz), "gzip6_ms": gzip_s * 1e3,
            "collect": ms(collect_s), "render": ms(render_s), **{k: ms(v) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="scrapes per endpoint and size (default 50)")
    ap.add_argument("--sizes", default="100,500,1000", help="container counts (default 100,500,1000)")
    args = ap.parse_args()
    rows = [measure(int(s), args.n) for s in args.sizes.split(",")]
    print(f"{args.n} scrapes per endpoint and size, interleaved; times in ms, median / p95; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
    print("| containers | series | /metrics | /metrics, gzip asked | /healthz | render, no HTTP | "
          "/healthz during a scrape | View read in the loop | body | with gzip asked | gzip -6 would be |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['containers']:,} | {r['series']:,} "
              f"| {r['metrics'][0]:.1f} / {r['metrics'][1]:.1f} "
              f"| {r['metrics_gzip'][0]:.1f} / {r['metrics_gzip'][1]:.1f} "
              f"| {r['healthz'][0]:.2f} / {r['healthz'][1]:.2f} "
              f"| {r['render'][0]:.1f} / {r['render'][1]:.1f} "
              f"| {r['healthz_busy'][0]:.1f} / {r['healthz_busy'][1]:.1f} "
              f"| {r['collect'][0]:.1f} / {r['collect'][1]:.1f} "
              f"| {r['raw'] / 1024:,.0f} KiB | {r['wire_gzip'] / 1024:,.0f} KiB ({r['sent_as']}) "
              f"| {r['gzip6'] / 1024:,.0f} KiB ({r['gzip6_ms']:.0f} ms) |")


if __name__ == "__main__":
    main()
