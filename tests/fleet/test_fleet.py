"""A fleet on one kernel: two cgwatch hosts, each in a network namespace of its
own, scraped by one real Prometheus and alerting into one real 3-node
Alertmanager cluster, one node of which is down.

    root ns: bridge 10.a.b.1 ── Prometheus, webhook receiver
      ├─ h1 10.a.b.11  cgwatch host-1  ─┐ alerts to all three,
      ├─ h2 10.a.b.12  cgwatch host-2  ─┘ as Prometheus sends them
      ├─ am1 10.a.b.21 Alertmanager (killed before the workloads start)
      ├─ am2 10.a.b.22 Alertmanager ─┐ gossip: one notification
      └─ am3 10.a.b.23 Alertmanager ─┘ per group, not one per node

Every cgwatch sees every cgroup (one kernel), so each host's rule selects only
its own containers, by a 6-hex name prefix.
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import FakeContainer, burner
from tests.fleet.netns import HookReceiver, NetnsDaemon, Proc, Topology, get_json, ip, wait_http
from tests.receiver import free_port

pytestmark = pytest.mark.bpf

REPO = Path(__file__).resolve().parents[2]
SHIPPED_RULES = REPO / "packaging" / "prometheus" / "cgwatch.rules.yml"
TOP10 = "cgwatch:container_cpu_usage_cores:top10"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PROMETHEUS = "/usr/bin/prometheus"
HOSTS = {"h1": 11, "h2": 12}
AMS = {"am1": 21, "am2": 22, "am3": 23}
TOKEN = secrets.token_urlsafe(24)
AM_REPEAT = 60.0      # the alertmanager sink's repeat below
SETTLE = 5.0          # after the first notification: long enough for a duplicate from the other node
# Busy loops per host. The cpu controller is cgroup v1's here, with every task in its root: CPU is
# shared task by task, with the daemons and whatever else runs on this 2-core machine. 3 against 4
# keep host-1's container well over the rule's 0.5 cores (~0.8 alone, ~0.65 beside one other busy
# task) and make host-2's the busiest (~1.1). Not niced: a niced burner yields to any busy moment of
# a daemon (a reload) and dips under 0.5: the alert resolves and fires again.
BURNERS = {"h1": 3, "h2": 4}


@dataclass
class Host:
    role: str
    name: str             # host-1: the "instance" label in Alertmanager
    prefix: str           # its containers' 6-hex id prefix
    tmp: Path
    daemon: NetnsDaemon | None = None

    @property
    def rules(self) -> Path:
        return self.tmp / "rules.yaml"

    def write_rules(self, broken: bool = False) -> None:
        self.rules.write_text("rules:\n  - name: [broken\n" if broken else f"""rules:
  - name: fleet-cpu-hot
    select: {{name: "{self.prefix}*"}}
    expr: cpu.usage_cores > 0.5
    for: 2s
    severity: warning
    summary: "{{{{ container }}}} burns {{{{ value | round(2) }}}} cores"
""")


@dataclass
class Fleet:
    topo: Topology
    rx: HookReceiver
    hosts: dict[str, Host]
    ams: dict[str, Proc]
    prom: Proc
    prom_url: str

    def query(self, q: str) -> list[dict]:
        body = get_json(f"{self.prom_url}/api/v1/query?query={urllib.parse.quote(q)}")
        assert body["status"] == "success", body
        return body["data"]["result"]

    def logs(self) -> str:
        out = [f"--- {h.name}\n{h.daemon.log_text()[-2500:]}" for h in self.hosts.values()
               if h.daemon is not None and not h.daemon.log.closed]
        out += [f"--- {r}\n{p.log_text()[-1500:]}" for r, p in self.ams.items() if not p.stopped]
        return "\n".join(out)


# Alertmanager HA is at-least-once: a node that is not first in the cluster takes its snapshot of a
# group, waits peer-timeout x its position, then checks the gossiped notification log. If the other
# node sends "resolved" inside that wait, this node still holds "firing" and sends a stale firing
# (and later a second resolved) -- seen here with group_interval 1s and peer-timeout 2s in 1 run of
# 4. The race needs this node's group tick within peer-timeout before the resolution reaches it AND
# the other node's tick right after: about (P/G)^2/2, 0.4% with P = 1s, G = 10s (the cost: the
# resolved notification comes up to G after cgwatch resolves). P must still exceed one gossip round
# (200ms) or the first firing is sent twice.
PEER_TIMEOUT = "1s"


def am_config(tmp: Path, hook: str) -> Path:
    cfg = tmp / "alertmanager.yml"
    cfg.write_text(f"""route:
  receiver: hook
  group_by: ['alertname', 'instance', 'container']
  group_wait: 1s
  group_interval: 10s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook}
        send_resolved: true
""")
    return cfg


def start_alertmanagers(topo: Topology, tmp: Path, hook: str) -> dict[str, Proc]:
    cfg = am_config(tmp, hook)
    procs = {}
    for role in AMS:
        ns = topo.ns[role]
        store = tmp / role
        store.mkdir()
        peers = [f"--cluster.peer={topo.ns[r].addr}:9094" for r in AMS if r != role]
        argv = [ALERTMANAGER, f"--config.file={cfg}", f"--storage.path={store}",
                f"--web.listen-address={ns.addr}:9093", f"--cluster.listen-address={ns.addr}:9094", *peers,
                "--cluster.settle-timeout=2s", "--cluster.gossip-interval=200ms",
                "--cluster.pushpull-interval=2s", f"--cluster.peer-timeout={PEER_TIMEOUT}"]
        procs[role] = topo.spawn(ns.exec_argv(argv), tmp / f"{role}.log")
    for role, p in procs.items():
        wait_http(f"http://{topo.ns[role].addr}:9093/api/v2/status", 30,
                  lambda s: s["cluster"]["status"] == "ready" and len(s["cluster"]["peers"]) == 3, proc=p)
    return procs


def start_prometheus(topo: Topology, tmp: Path) -> tuple[Proc, str]:
    port = free_port()
    cfg = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
           "scrape_configs": [{"job_name": "cgwatch", "authorization": {"credentials": TOKEN},
                               "static_configs": [{"targets": [f"{topo.ns[r].addr}:9477" for r in HOSTS]}]}]}
    if SHIPPED_RULES.exists():
        cfg["rule_files"] = [str(SHIPPED_RULES)]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    (tmp / "tsdb").mkdir()
    p = topo.spawn([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address={topo.gateway}:{port}"], tmp / "prometheus.log")
    url = f"http://{topo.gateway}:{port}"
    wait_http(f"{url}/-/ready", 30, proc=p)
    return p, url


def start_cgwatch(topo: Topology, h: Host, ams: list[str]) -> None:
    h.tmp.mkdir()
    h.write_rules()
    cfg = h.tmp / "config.yaml"
    cfg.write_text(f"""interval: 1s
state_dir: {h.tmp / 'state'}
host: {h.name}
listen: {topo.ns[h.role].addr}:9477
auth: {{token: {TOKEN}}}
rules: [{h.rules}]
collectors: {{proc: false, mem: false, net: false}}
profiles: {{enabled: false}}
notify:
  am:
    type: alertmanager
    url: [{', '.join(ams)}]
    group_wait: 0.1s
    repeat: {AM_REPEAT:g}s
    timeout: 2s
""")
    h.daemon = NetnsDaemon(h.tmp, cfg, topo.ns[h.role].enter_argv([]))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    t0 = time.monotonic()
    hosts = {r: Host(r, f"host-{i}", secrets.token_hex(3), tmp_path / r) for i, r in enumerate(HOSTS, 1)}
    while len({h.prefix for h in hosts.values()}) < len(hosts):      # distinct, however unlikely
        hosts["h2"].prefix = secrets.token_hex(3)
    with Topology({**HOSTS, **AMS}) as topo:
        rx = HookReceiver(topo.gateway, free_port())
        with rx:
            try:
                ams = start_alertmanagers(topo, tmp_path, rx.url)
                print(f"alertmanager cluster of 3 ready after {time.monotonic() - t0:.1f}s")
                prom, prom_url = start_prometheus(topo, tmp_path)
                urls = [f"http://{topo.ns[r].addr}:9093" for r in AMS]
                for h in hosts.values():
                    start_cgwatch(topo, h, urls)
                for h in hosts.values():         # started together, waited for in turn
                    assert h.daemon is not None
                    h.daemon.ready()
                print(f"fleet ready after {time.monotonic() - t0:.1f}s")
                yield Fleet(topo, rx, hosts, ams, prom, prom_url)
            finally:
                for h in hosts.values():
                    if h.daemon is not None:
                        h.daemon.stop(signal.SIGTERM)
    assert topo.leftovers() == [], f"left behind: {topo.leftovers()}"


class CpuSampler(threading.Thread):
    """Each container's CPU per second as the kernel counts it (cpu.stat), for failure messages."""

    def __init__(self, containers: dict[str, FakeContainer]) -> None:
        super().__init__(daemon=True)
        self.containers, self.rows, self.done = containers, [], threading.Event()

    def run(self) -> None:
        last = {n: (time.monotonic(), c.usage_usec()) for n, c in self.containers.items()}
        while not self.done.wait(1.0):
            row = [time.strftime("%H:%M:%S")]
            for n, c in self.containers.items():
                try:
                    now = (time.monotonic(), c.usage_usec())
                except OSError:
                    return
                row.append(f"{n}={(now[1] - last[n][1]) / 1e6 / (now[0] - last[n][0]):.2f}")
                last[n] = now
            self.rows.append(" ".join(row))

    def __str__(self) -> str:
        return "cores per second:\n" + "\n".join(self.rows)


def firing_and_resolved(rx: HookReceiver, instance: str, container: str) -> tuple[int, int]:
    """How many firing and resolved notifications the receiver got for this alert, over all requests."""
    mine = [a for a in rx.alerts
            if a["labels"].get("instance") == instance and a["labels"].get("container") == container]
    return sum(a["status"] == "firing" for a in mine), sum(a["status"] == "resolved" for a in mine)


def scrapes_through(fleet: Fleet, instance: str, since: float) -> tuple[float, int]:
    """min and count of ``up`` for ``instance`` since ``since`` (wall clock)."""
    window = max(2, int(time.time() - since) + 1)
    lo = fleet.query(f'min_over_time(up{{instance="{instance}"}}[{window}s])')
    n = fleet.query(f'count_over_time(up{{instance="{instance}"}}[{window}s])')
    return float(lo[0]["value"][1]), int(float(n[0]["value"][1]))


def test_fleet_dedups_through_a_degraded_alertmanager_cluster(fleet: Fleet, cgroups) -> None:
    t0 = time.monotonic()
    rx, h1 = fleet.rx, fleet.hosts["h1"]
    fleet.ams["am1"].stop(signal.SIGKILL)                  # one node of three down, before any alert
    targets = {r: f"{fleet.topo.ns[r].addr}:9477" for r in HOSTS}

    # Prometheus scrapes both hosts through their namespaces, with the token.
    for inst in targets.values():
        wait_http(f"{fleet.prom_url}/api/v1/query?query=" + urllib.parse.quote(f'up{{instance="{inst}"}}'), 15,
                  lambda b: any(r["value"][1] == "1" for r in b["data"]["result"]))

    containers = {}
    for r, h in fleet.hosts.items():
        cid = h.prefix + secrets.token_hex(29)
        c = cgroups(f"docker/{cid}")
        for _ in range(BURNERS[r]):
            c.run(burner())
        containers[r] = (c, cid[:12])
    name1, name2 = containers["h1"][1], containers["h2"][1]
    cpu = CpuSampler({n: c for c, n in containers.values()})
    cpu.start()

    # 1. One firing notification per host, though two Alertmanagers each got it from both ... once.
    assert rx.wait_for(lambda al: all(firing_and_resolved(rx, h.name, containers[r][1])[0] >= 1
                                      for r, h in fleet.hosts.items()), 30), \
        f"{rx.bodies}\n{cpu}\n{fleet.logs()}"
    print(f"both firing at the receiver {time.monotonic() - t0:.1f}s into the test")
    # Both live nodes hold both alerts: "one" is the cluster's doing. A POST that missed one node
    # (the sink counts a group delivered when any node took it) is made good by the sink's repeat.
    want = {(h1.name, name1), (fleet.hosts["h2"].name, name2)}
    for r in ("am2", "am3"):
        deadline = time.monotonic() + AM_REPEAT + 30
        while True:
            held = get_json(f"http://{fleet.topo.ns[r].addr}:9093/api/v2/alerts")
            if {(a["labels"]["instance"], a["labels"]["container"]) for a in held} >= want:
                break
            assert time.monotonic() < deadline, f"{r}: {held}\n{fleet.logs()}"
            time.sleep(1.0)

    # 3. Bad input while Prometheus scrapes: a broken rules file and SIGHUP, then the good one again.
    assert h1.daemon is not None
    hup_at = time.time()
    for broken in (True, False):
        since = h1.daemon.notify.mark()                      # only READY=1 sent after this HUP counts
        h1.write_rules(broken=broken)
        h1.daemon.proc.send_signal(signal.SIGHUP)
        got = h1.daemon.notify.wait_for(lambda m: m.get("READY") == "1", 10.0, since)
        assert got is not None and ("reload FAILED" in got.get("STATUS", "")) == broken, h1.daemon.log_text()

    time.sleep(SETTLE)                                     # any duplicate from the second node arrives by now
    for r, h in fleet.hosts.items():
        assert firing_and_resolved(rx, h.name, containers[r][1]) == (1, 0), \
            f"{h.name}: {rx.bodies}\n{cpu}\n{fleet.logs()}"

    lo, n = scrapes_through(fleet, targets["h1"], hup_at)
    assert lo == 1.0 and n >= 3, f"up of {targets['h1']} since the reloads: min {lo}, {n} scrapes"

    # 2. Prometheus: both up; the fleet's top 10 by CPU ranks host-2's container first.
    for inst in targets.values():
        assert [r["value"][1] for r in fleet.query(f'up{{instance="{inst}"}}')] == ["1"]
    if SHIPPED_RULES.exists():
        records = [rule.get("record") for g in yaml.safe_load(SHIPPED_RULES.read_text())["groups"]
                   for rule in g["rules"]]
        assert TOP10 in records, f"{SHIPPED_RULES} no longer records {TOP10}: {records}"
        query = TOP10
    else:
        # TODO: packaging/prometheus/cgwatch.rules.yml (being written) will record TOP10; until it
        # ships, rank with the expression directly.
        query = "topk(1, cgwatch_container_cpu_usage_cores)"
    mine = {name1, name2}

    def ranked() -> list[dict]:
        return sorted((s for s in fleet.query(query) if s["metric"].get("container") in mine),
                      key=lambda s: -float(s["value"][1]))

    end = time.monotonic() + 10
    while not ranked() and time.monotonic() < end:
        time.sleep(0.5)
    top = ranked()
    assert top and top[0]["metric"]["container"] == name2, f"{query}: {fleet.query(query)}"
    print(f"{query}: " + ", ".join(f"{s['metric']['container']}={float(s['value'][1]):.2f}" for s in top))

    # 1 (end). The workloads stop: exactly one resolved notification each.
    cpu.done.set()
    for c, _ in containers.values():
        c.stop()
    assert rx.wait_for(lambda al: all(firing_and_resolved(rx, h.name, containers[r][1])[1] >= 1
                                      for r, h in fleet.hosts.items()), 30), f"{rx.bodies}\n{cpu}\n{fleet.logs()}"
    time.sleep(SETTLE)
    for r, h in fleet.hosts.items():
        assert firing_and_resolved(rx, h.name, containers[r][1]) == (1, 1), \
            f"{h.name}: {rx.bodies}\n{cpu}\n{fleet.logs()}"
    assert all(p.alive() for r, p in fleet.ams.items() if r != "am1"), fleet.logs()
    print(f"test body took {time.monotonic() - t0:.1f}s; {len(rx.bodies)} webhook requests", file=sys.stderr)


def test_topology_tears_down_on_failure() -> None:
    """A failure inside ``with Topology`` still removes namespaces, veths and bridge."""
    topo = Topology({"x1": 11})
    with pytest.raises(RuntimeError, match="boom"), topo:
        assert topo.ns["x1"].name in ip("netns", "list")
        raise RuntimeError("boom")
    assert topo.leftovers() == []

