"""Resolver over a fake cgroup tree of plain directories in tmp_path (no root needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cgwatch.identity import CgroupTree, Metadata, Resolver
from cgwatch.model import HOST, Container

A = "3b7e8f0c2d1a4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b"
B = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
UID = "0e5a1c2d-3b4f-4a6e-9c8d-7f1e2d3c4b5a"
DOCKER_A = f"system.slice/docker-{A}.scope"
POD_B = f"kubepods/besteffort/pod{UID}/{B}"


class Host:
    """A fake host: a cgroup2 tree and a state root side by side."""

    def __init__(self, tmp: Path) -> None:
        self.cg = tmp / "cgroup"
        self.state = tmp / "root"
        self.cg.mkdir()
        self.state.mkdir()
        self.resolver = Resolver(CgroupTree(self.cg, min_refresh=1.0), Metadata(self.state, retry_after=5.0))

    def mkdir(self, rel: str) -> int:
        (self.cg / rel).mkdir(parents=True, exist_ok=True)
        return os.stat(self.cg / rel).st_ino

    def rmtree(self, rel: str) -> None:
        for d, _, _ in sorted(os.walk(self.cg / rel), key=lambda w: -len(w[0])):
            os.rmdir(d)

    def docker_config(self, cid: str, name: str) -> None:
        d = self.state / "var/lib/docker/containers" / cid
        d.mkdir(parents=True)
        (d / "config.v2.json").write_text(json.dumps({"Name": "/" + name, "Config": {"Image": "nginx:1.25"}}))


@pytest.fixture()
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def ids(cs: list[Container]) -> list[str]:
    return sorted(c.id for c in cs)


def test_root_and_unknown_ids_are_the_host(host: Host) -> None:
    r = host.resolver
    assert r.container(os.stat(host.cg).st_ino, 0.0) is HOST
    assert r.container(123456789, 0.0) is HOST
    assert host.mkdir("system.slice") and r.container(host.mkdir("system.slice"), 10.0) is HOST


def test_every_sub_cgroup_maps_to_its_container(host: Host) -> None:
    top = host.mkdir(DOCKER_A)
    init = host.mkdir(DOCKER_A + "/init")
    r = host.resolver
    c = r.container(init, 0.0)
    assert (c.id, c.runtime, c.cgroup, c.name) == (A, "docker", DOCKER_A, A[:12])
    assert r.container(top, 0.0) == c


def test_refresh_reports_starts_and_stops(host: Host) -> None:
    r = host.resolver
    host.mkdir("system.slice/cron.service")
    started, stopped = r.refresh(0.0)
    assert ids(started) == ["cron.service"] and stopped == []
    host.mkdir(DOCKER_A + "/init")
    host.mkdir(POD_B)
    started, stopped = r.refresh(1.0)
    assert ids(started) == sorted([A, B]) and stopped == []
    assert ids(r.containers()) == sorted(["host", "cron.service", A, B])
    b = next(c for c in r.containers() if c.id == B)
    assert (b.runtime, b.pod, b.qos) == ("cri", UID, "besteffort")

    host.rmtree(DOCKER_A + "/init")  # a sub-cgroup goes: still alive
    assert r.refresh(2.0) == ([], [])
    host.rmtree(DOCKER_A)
    started, stopped = r.refresh(3.0)
    assert started == [] and ids(stopped) == [A]
    assert ids(r.containers()) == sorted(["host", "cron.service", B])


def test_the_host_never_starts_or_stops(host: Host) -> None:
    host.mkdir("system.slice")
    host.mkdir("kubepods/besteffort")
    assert host.resolver.refresh(0.0) == ([], [])
    host.rmtree("kubepods")
    assert host.resolver.refresh(1.0) == ([], [])
    assert host.resolver.containers() == [HOST]


def test_restart_between_refreshes_is_stop_and_start(host: Host) -> None:
    r = host.resolver
    old = host.mkdir(DOCKER_A)
    r.refresh(0.0)
    host.rmtree(DOCKER_A)
    host.mkdir("filler")  # takes the freed inode: ext4 reuses them at once, cgroupfs never does
    if host.mkdir(DOCKER_A) == old:  # docker restart: same id, new cgroup
        pytest.skip("this file system gave the new directory the old inode")
    started, stopped = r.refresh(1.0)
    assert ids(started) == [A] and ids(stopped) == [A]
    assert ids(r.containers()) == sorted(["host", A])


def test_metadata_names_the_container_later(host: Host) -> None:
    r = host.resolver
    cgid = host.mkdir(DOCKER_A)
    started, _ = r.refresh(0.0)
    assert started[0].name == A[:12]  # docker has not written its config yet
    host.docker_config(A, "web-1")
    assert r.container(cgid, 1.0).name == A[:12]  # retry paced by Metadata
    c = r.container(cgid, 5.0)
    assert (c.id, c.name, c.image) == (A, "web-1", "nginx:1.25")
    assert r.container(cgid, 6.0) is c
    assert [x.name for x in r.containers() if x.id == A] == ["web-1"]


def test_refresh_also_names_alive_containers(host: Host) -> None:
    r = host.resolver
    host.mkdir(DOCKER_A)
    r.refresh(0.0)
    host.docker_config(A, "web-1")
    r.refresh(10.0)
    assert [x.name for x in r.containers() if x.id == A] == ["web-1"]


def test_a_container_seen_by_lookup_is_counted_at_the_next_refresh(host: Host) -> None:
    r = host.resolver
    r.refresh(0.0)
    cgid = host.mkdir(DOCKER_A)
    assert r.container(cgid, 10.0).id == A  # the tree re-walked for this unknown id
    assert ids(r.containers()) == ["host"]
    started, _ = r.refresh(11.0)
    assert ids(started) == [A]


def test_a_container_that_came_and_went_between_refreshes_leaves_nothing(host: Host) -> None:
    r = host.resolver
    r.refresh(0.0)
    cgid = host.mkdir(DOCKER_A)
    assert r.container(cgid, 10.0).id == A
    host.rmtree(DOCKER_A)
    assert r.refresh(11.0) == ([], [])
    assert set(r._ids.values()) == {"host"} and set(r._byid) == {"host"}  # noqa: SLF001 - nothing leaks


def test_units_count_as_containers(host: Host) -> None:
    r = host.resolver
    host.mkdir("user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service")
    started, _ = r.refresh(0.0)
    assert ids(started) == ["user@1000.service", "user@1000.service/dbus.service"]
    assert all(c.runtime == "systemd" for c in started)


def test_a_removed_cgroups_last_counts_still_name_its_container(host: Host) -> None:
    """Sources read a dead cgroup's final counters right after the refresh that
    saw it go: they still belong to the container, and cost no re-walk."""
    r = host.resolver
    cgid = host.mkdir(DOCKER_A)
    r.refresh(0.0)
    assert r.container(cgid, 0.0).id == A
    host.rmtree(DOCKER_A)
    assert ids(r.refresh(5.0)[1]) == [A]
    assert r.container(cgid, 5.0).id == A and not r.alive(cgid)
    r.refresh(10.0)
    assert r.container(cgid, 10.0) is HOST        # one interval later it is forgotten


def test_a_container_charged_but_gone_before_a_refresh_flashes_once(host: Host) -> None:
    # removed before any walk counted it (cgwatch starting, or a container shorter
    # than an interval): what was charged to it must still end with a stop
    r = host.resolver
    r.refresh(0.0)
    cgid = host.mkdir(DOCKER_A)
    assert r.container(cgid, 0.5).id == A          # its counts arrive: charged to it
    host.rmtree(DOCKER_A)
    assert r.refresh(1.0) == ([], [])
    assert ids(r.flashed) == [A]
    r.container(cgid, 1.2)                         # its last counts, read after the refresh
    r.refresh(2.0)
    assert r.flashed == []                         # reported once
    assert ids(r.containers()) == ["host"]


def test_a_stopped_container_read_once_more_does_not_flash(host: Host) -> None:
    r = host.resolver
    cgid = host.mkdir(DOCKER_A)
    r.refresh(0.0)
    host.rmtree(DOCKER_A)
    _, stopped = r.refresh(1.0)
    assert ids(stopped) == [A]
    r.container(cgid, 1.5)                         # last counts, this interval and the next
    r.refresh(2.0)
    r.container(cgid, 2.5)
    r.refresh(3.0)
    assert r.flashed == []


def containerd_config(host: Host, cid: str, ctr: str) -> None:
    d = host.state / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid
    d.mkdir(parents=True)
    notes = {"io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.sandbox-name": "web-7d9",
             "io.kubernetes.cri.container-name": ctr, "io.kubernetes.cri.image-name": "nginx:1.27"}
    (d / "config.json").write_text(json.dumps({"annotations": notes}))


def test_a_kubernetes_restart_is_a_new_id_of_the_same_workload(host: Host) -> None:
    """Kubernetes cannot run here: the pod's cgroups are named as the kubelet's cgroupfs
    driver names them, and containerd's state is written as containerd writes it."""
    from cgwatch.identity.workloads import Workloads

    r, w = host.resolver, Workloads()
    pod = f"kubepods/besteffort/pod{UID}"
    containerd_config(host, A, "nginx")
    containerd_config(host, B, "nginx")
    host.mkdir(f"{pod}/{A}")
    w.events(0.0, *r.refresh(0.0))
    host.rmtree(f"{pod}/{A}")                      # the container died; the kubelet starts a new one
    host.mkdir(f"{pod}/{B}")
    events = w.events(1.0, *r.refresh(1.0), r.flashed)
    got = [(e.kind, e.container.id, e.container.name, e.fields["restarts"]) for e in events]
    assert got == [("container_stop", A, "shop/web-7d9/nginx", 0), ("container_start", B, "shop/web-7d9/nginx", 1)]
    assert events[0].container.workload == events[1].container.workload == f"pod:{UID}/nginx"


def test_a_systemd_unit_restarted_is_the_same_workload(host: Host) -> None:
    from cgwatch.identity.workloads import Workloads

    r, w = host.resolver, Workloads()
    unit = "system.slice/worker.service"
    host.mkdir(unit)
    w.events(0.0, *r.refresh(0.0))
    host.rmtree(unit)
    w.events(1.0, *r.refresh(1.0))                 # Restart=: stopped ...
    host.mkdir(unit)
    [start] = w.events(2.0, *r.refresh(2.0))       # ... and started again
    assert (start.kind, start.container.id, start.fields["restarts"]) == ("container_start", "worker.service", 1)
