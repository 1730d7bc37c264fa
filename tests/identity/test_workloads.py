"""Workloads: restarts counted per workload, lifecycle events in the order they happened."""

from __future__ import annotations

from cgwatch.identity.workloads import Workloads
from cgwatch.model import HOST, Container

WEB = Container(id="a" * 64, name="web-1", runtime="docker")


def kinds(events):  # type: ignore[no-untyped-def]
    return [(e.kind, e.container.id, e.fields["restarts"]) for e in events]


def test_docker_restart_in_one_interval_stops_before_it_starts() -> None:
    w = Workloads()
    w.events(0.0, [WEB], [])
    assert kinds(w.events(1.0, started=[WEB], stopped=[WEB])) == [
        ("container_stop", WEB.id, 0), ("container_start", WEB.id, 1)]


def test_a_container_that_came_and_went_starts_then_stops() -> None:
    w = Workloads()
    assert kinds(w.events(1.0, [], [], flashed=[WEB])) == [
        ("container_start", WEB.id, 0), ("container_stop", WEB.id, 0)]
    # a restart loop of containers shorter than an interval: each one is a restart
    assert kinds(w.events(2.0, [], [], flashed=[WEB])) == [
        ("container_start", WEB.id, 1), ("container_stop", WEB.id, 1)]


def test_a_kubernetes_restart_has_a_new_id_but_is_the_same_workload() -> None:
    labels = {"io.kubernetes.container.name": "nginx"}
    old = Container(id="1" * 64, name="shop/web-7d9/nginx", runtime="containerd", pod="0a1b", labels=labels)
    new = Container(id="2" * 64, name="shop/web-7d9/nginx", runtime="containerd", pod="0a1b", labels=labels)
    other = Container(id="3" * 64, name="shop/web-7d9/sidecar", runtime="containerd", pod="0a1b",
                      labels={"io.kubernetes.container.name": "sidecar"})
    w = Workloads()
    w.events(0.0, [old, other], [])
    w.samples(0.0, [old, other])
    w.events(2.0, [new], [old])
    got = {s.container.id: s.value for s in w.samples(2.0, [new, other])}
    assert got == {new.id: 0.5, other.id: 0.0}      # one restart in a 2 s interval
    assert w.restarts(new) == 1 and w.restarts(other) == 0


def test_restarts_are_a_rate_for_every_container_but_the_host() -> None:
    w = Workloads()
    assert w.samples(0.0, [HOST, WEB]) == []        # no interval yet
    w.events(0.5, [], [WEB])
    w.events(0.8, [WEB], [])
    [s] = w.samples(1.0, [HOST, WEB])
    assert (s.metric, s.container, s.value) == ("proc.restarts", WEB, 1.0)
    [s] = w.samples(2.0, [HOST, WEB])
    assert s.value == 0.0


def test_a_workload_stopped_longer_than_remembered_starts_afresh() -> None:
    w = Workloads(remember_s=60.0)
    w.events(0.0, [WEB], [])
    w.events(10.0, [], [WEB])
    w.events(100.0, [], [])
    assert kinds(w.events(101.0, [WEB], [])) == [("container_start", WEB.id, 0)]
