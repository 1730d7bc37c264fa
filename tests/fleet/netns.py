"""Several "hosts" on one kernel: network namespaces joined by veth pairs to one
Linux bridge, processes started inside them, HTTP endpoints waited for.

``Topology`` builds it and tears it all down (processes by pid, namespaces,
veths, bridge), even when the test fails. Every name carries a random 4-hex
suffix and the /24 is picked at random in 10.0.0.0/8 (clear of this host's own
addresses and routes), so leftovers of a killed run never collide with the next.

Two ways in: ``Netns.exec_argv`` is ``ip netns exec``, which also gives the
process a private mount namespace with a fresh ``/sys`` for that namespace —
there ``/sys/fs/cgroup``, ``/sys/kernel/tracing`` and ``/sys/fs/bpf`` are gone,
so cgwatch (cgroup2, BCC) cannot run that way. ``Netns.enter_argv`` is
``nsenter --net=``: the network namespace only, the host's mounts as they are.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.daemon.running import Daemon
from tests.receiver import Receiver


def ip(*args: str) -> str:
    """Run ``ip ARGS``; raise with its stderr on failure."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def pick_subnet() -> ipaddress.IPv4Network:
    """A random 10.a.b.0/24 overlapping none of this host's addresses or routes."""
    taken = []
    for line in (ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")).splitlines():
        for word in line.split():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    taken = [n for n in taken if n.prefixlen > 0]          # "default" parses as nothing; 0.0.0.0/0 ignored
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{random.randint(1, 254)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError("no free /24 in 10.0.0.0/8")


class Proc:
    """A process with its output in a log file, stopped by its own pid."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv, self.log_path = argv, log
        self._log = open(log, "ab")   # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def stopped(self) -> bool:
        return self._log.closed

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@dataclass
class Netns:
    """One namespace: ``eth0`` (a veth to the bridge) at ``addr``, ``lo`` up."""

    name: str
    addr: str
    veth: str            # the root-namespace end, enslaved to the bridge

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``ip netns exec``: own network and a private /sys (no cgroupfs, no tracefs)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def enter_argv(self, argv: list[str]) -> list[str]:
        """``nsenter --net``: own network, the host's mounts (what a BPF/cgroup daemon needs)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", "--", *argv]


@dataclass
class Topology:
    """A bridge at ``gateway`` (.1) and one namespace per role, at ``10.a.b.<host>``.

    >>> Topology({"h1": 11}).ns                               # nothing built before ``with``
    {}
    """

    hosts: dict[str, int]
    suffix: str = field(default_factory=lambda: secrets.token_hex(2))
    ns: dict[str, Netns] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    net: ipaddress.IPv4Network | None = None

    @property
    def bridge(self) -> str:
        return f"cgwbr{self.suffix}"

    @property
    def gateway(self) -> str:
        assert self.net is not None
        return str(self.net[1])

    def names(self) -> list[str]:
        """Every namespace and link name this topology uses (for the leftover check)."""
        return [self.bridge, *(f"cgw-{self.suffix}-{r}" for r in self.hosts),
                *(f"cgw{self.suffix}{r}" for r in self.hosts)]

    def __enter__(self) -> Topology:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        self.net = pick_subnet()
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for role, n in self.hosts.items():
            ns = Netns(f"cgw-{self.suffix}-{role}", str(self.net[n]), f"cgw{self.suffix}{role}")
            assert len(ns.veth) <= 15, ns.veth
            ip("netns", "add", ns.name)
            self.ns[role] = ns
            ip("link", "add", ns.veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
            ip("link", "set", ns.veth, "master", self.bridge, "up")
            ip("-n", ns.name, "addr", "add", f"{ns.addr}/24", "dev", "eth0")
            ip("-n", ns.name, "link", "set", "eth0", "up")
            ip("-n", ns.name, "link", "set", "lo", "up")

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
        """Start a process (argv already prefixed) that ``close()`` will stop."""
        p = Proc(argv, log, env)
        self.procs.append(p)
        return p

    def close(self) -> None:
        """Stop what was spawned, then delete namespaces, veths and the bridge; every step is tried."""
        errors: list[str] = []
        for p in reversed(self.procs):
            try:
                p.stop(signal.SIGTERM, timeout=5)
            except Exception as e:  # noqa: BLE001 - teardown goes on
                errors.append(f"stop {p.argv[:4]}: {e}")
        self.procs.clear()
        for ns in self.ns.values():
            for args in (("netns", "del", ns.name), ("link", "del", ns.veth)):
                try:
                    ip(*args)
                except RuntimeError as e:
                    if "Cannot find" not in str(e) and "No such file" not in str(e) and "does not exist" not in str(e):
                        errors.append(str(e))
        self.ns.clear()
        if self.net is not None:
            try:
                ip("link", "del", self.bridge)
            except RuntimeError as e:
                if "Cannot find" not in str(e) and "does not exist" not in str(e):
                    errors.append(str(e))
        if errors:
            raise RuntimeError("teardown: " + "; ".join(errors))

    def leftovers(self) -> list[str]:
        """Names of this topology still present in ``ip netns list`` or ``ip link``."""
        listed = ip("netns", "list") + ip("-o", "link", "show")
        return [n for n in self.names() if n in listed]


class NetnsDaemon(Daemon):
    """tests/daemon's ``Daemon`` (notify socket, ``ready()``, ``stop()``), its command behind ``prefix``."""

    def __init__(self, tmp: Path, config: Path, prefix: list[str]) -> None:
        super().__init__(tmp, config, tuple(prefix))


class HookReceiver(Receiver):
    """tests.receiver's ``Receiver`` bound on ``host``: ``bodies`` holds each request, ``alerts``
    every alert of every request (Alertmanager's webhook: ``{"alerts": [{"status", "labels"}…]}``)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(port, host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> Any:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def wait_http(url: str, timeout: float, pred: Callable[[Any], bool] | None = None,
              headers: dict[str, str] | None = None, proc: Proc | None = None) -> Any:
    """Poll ``url`` until it answers 2xx JSON (or text) for which ``pred`` holds; return that answer.

    Fails at once, with the process's log, if ``proc`` has exited."""
    end = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.argv[:4]} exited {proc.proc.returncode}:\n{proc.log_text()[-3000:]}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                body = r.read()
            try:
                last = json.loads(body)
            except ValueError:
                last = body.decode(errors="replace")
            if pred is None or pred(last):
                return last
        except (OSError, urllib.error.URLError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{url}: not as expected within {timeout}s; last answer: {last!r}"
                         + (f"\n{proc.log_text()[-3000:]}" if proc is not None else ""))
