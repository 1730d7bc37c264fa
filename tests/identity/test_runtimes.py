"""identify(): cgroup paths as real hosts show them → Container."""

from __future__ import annotations

import pytest

from cgwatch.identity.runtimes import identify, unescape
from cgwatch.model import HOST

A = "3b7e8f0c2d1a4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b"
B = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
C = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UID = "0e5a1c2d-3b4f-4a6e-9c8d-7f1e2d3c4b5a"
UIDU = UID.replace("-", "_")
STATIC = "6f1ac2e79cdb5a0b7d2c8e4f3a9b1d0c"  # a static pod's uid: a config hash, no dashes

BURST_SLICE = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UIDU}.slice"
BE_SLICE = f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UIDU}.slice"
GUAR_SLICE = f"kubepods.slice/kubepods-pod{UIDU}.slice"
KIND = f"system.slice/docker-{A}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice"
USER = "user.slice/user-1000.slice/user@1000.service"

# (path, runtime, id, name, cgroup, pod, qos)
CASES = [
    # docker
    (f"system.slice/docker-{A}.scope", "docker", A, A[:12], f"system.slice/docker-{A}.scope", "", ""),
    (f"system.slice/docker-{A}.scope/init", "docker", A, A[:12], f"system.slice/docker-{A}.scope", "", ""),
    (f"docker/{A}", "docker", A, A[:12], f"docker/{A}", "", ""),
    (f"docker/{A}/init", "docker", A, A[:12], f"docker/{A}", "", ""),
    (f"{USER}/user.slice/docker-{A}.scope", "docker", A, A[:12], f"{USER}/user.slice/docker-{A}.scope", "", ""),
    (f"ecs/8a3f7c6e9b2d4f01a5c6e7d8f9012345/{A}", "docker", A, A[:12], f"ecs/8a3f7c6e9b2d4f01a5c6e7d8f9012345/{A}", "", ""),
    (f"actions_job/{A}", "docker", A, A[:12], f"actions_job/{A}", "", ""),
    (f"docker/{A}/docker/{B}", "docker", B, B[:12], f"docker/{A}/docker/{B}", "", ""),  # docker in docker
    # containerd / kubelet, systemd driver
    (f"{BURST_SLICE}/cri-containerd-{B}.scope", "containerd", B, B[:12], f"{BURST_SLICE}/cri-containerd-{B}.scope", UID, "burstable"),
    (f"{BE_SLICE}/cri-containerd-{B}.scope", "containerd", B, B[:12], f"{BE_SLICE}/cri-containerd-{B}.scope", UID, "besteffort"),
    (f"{GUAR_SLICE}/cri-containerd-{B}.scope", "containerd", B, B[:12], f"{GUAR_SLICE}/cri-containerd-{B}.scope", UID, "guaranteed"),
    (f"{BURST_SLICE}/docker-{B}.scope", "docker", B, B[:12], f"{BURST_SLICE}/docker-{B}.scope", UID, "burstable"),  # cri-dockerd
    # containerd without SystemdCgroup under a systemd kubelet
    (f"system.slice/containerd.service/kubepods-burstable-pod{UIDU}.slice:cri-containerd:{B}", "containerd", B, B[:12],
     f"system.slice/containerd.service/kubepods-burstable-pod{UIDU}.slice:cri-containerd:{B}", UID, "burstable"),
    (f"system.slice/containerd.service/kubepods-pod{UIDU}.slice:cri-containerd:{B}", "containerd", B, B[:12],
     f"system.slice/containerd.service/kubepods-pod{UIDU}.slice:cri-containerd:{B}", UID, "guaranteed"),
    # kubelet, cgroupfs driver: the runtime is not in the path
    (f"kubepods/besteffort/pod{UID}/{B}", "cri", B, B[:12], f"kubepods/besteffort/pod{UID}/{B}", UID, "besteffort"),
    (f"kubepods/burstable/pod{UID}/{B}", "cri", B, B[:12], f"kubepods/burstable/pod{UID}/{B}", UID, "burstable"),
    (f"kubepods/pod{UID}/{B}", "cri", B, B[:12], f"kubepods/pod{UID}/{B}", UID, "guaranteed"),
    (f"kubepods/burstable/pod{STATIC}/{B}", "cri", B, B[:12], f"kubepods/burstable/pod{STATIC}/{B}", STATIC, "burstable"),
    (f"kubepods/besteffort/pod{UID}/crio-{B}", "cri-o", B, B[:12], f"kubepods/besteffort/pod{UID}/crio-{B}", UID, "besteffort"),
    # CRI-O, systemd driver
    (f"{GUAR_SLICE}/crio-{C}.scope", "cri-o", C, C[:12], f"{GUAR_SLICE}/crio-{C}.scope", UID, "guaranteed"),
    (f"{BURST_SLICE}/crio-{C}.scope/container", "cri-o", C, C[:12], f"{BURST_SLICE}/crio-{C}.scope", UID, "burstable"),
    # kind: pods inside a docker "node" container — the inner container wins
    (f"{KIND}/kubelet-kubepods-besteffort-pod{UIDU}.slice/cri-containerd-{B}.scope", "containerd", B, B[:12],
     f"{KIND}/kubelet-kubepods-besteffort-pod{UIDU}.slice/cri-containerd-{B}.scope", UID, "besteffort"),
    (f"system.slice/docker-{A}.scope/system.slice/containerd.service", "docker", A, A[:12], f"system.slice/docker-{A}.scope", "", ""),
    # podman
    (f"machine.slice/libpod-{C}.scope", "podman", C, C[:12], f"machine.slice/libpod-{C}.scope", "", ""),
    (f"machine.slice/libpod-{C}.scope/container", "podman", C, C[:12], f"machine.slice/libpod-{C}.scope", "", ""),
    (f"machine.slice/machine-libpod_pod_{A}.slice/libpod-{C}.scope", "podman", C, C[:12],
     f"machine.slice/machine-libpod_pod_{A}.slice/libpod-{C}.scope", "", ""),
    (f"{USER}/user.slice/libpod-{C}.scope", "podman", C, C[:12], f"{USER}/user.slice/libpod-{C}.scope", "", ""),
    (f"{USER}/user.slice/libpod-{C}.scope/container", "podman", C, C[:12], f"{USER}/user.slice/libpod-{C}.scope", "", ""),
    (f"libpod_parent/libpod-{C}", "podman", C, C[:12], f"libpod_parent/libpod-{C}", "", ""),
    # LXC / LXD
    ("lxc.payload.web01", "lxc", "web01", "web01", "lxc.payload.web01", "", ""),
    ("lxc.payload.web01/system.slice/nginx.service", "lxc", "web01", "web01", "lxc.payload.web01", "", ""),
    ("lxc.payload/web01/init.scope", "lxc", "web01", "web01", "lxc.payload/web01", "", ""),
    ("lxc/web01", "lxc", "web01", "web01", "lxc/web01", "", ""),
    (f"lxc.payload.dev/system.slice/docker-{A}.scope", "docker", A, A[:12], f"lxc.payload.dev/system.slice/docker-{A}.scope", "", ""),
    ("machine.slice/machine-lxc\\x2d4242\\x2dwebsrv.scope", "lxc", "websrv", "websrv", "machine.slice/machine-lxc\\x2d4242\\x2dwebsrv.scope", "", ""),
    # systemd-nspawn
    ("machine.slice/systemd-nspawn@debian.service", "nspawn", "debian", "debian", "machine.slice/systemd-nspawn@debian.service", "", ""),
    ("machine.slice/systemd-nspawn@build\\x2dbox.service/payload/system.slice/cron.service", "nspawn", "build-box", "build-box",
     "machine.slice/systemd-nspawn@build\\x2dbox.service", "", ""),
    ("machine.slice/machine-arch\\x2ddev.scope", "nspawn", "arch-dev", "arch-dev", "machine.slice/machine-arch\\x2ddev.scope", "", ""),
    ("machine.slice/machine-arch\\x2ddev.scope/supervisor", "nspawn", "arch-dev", "arch-dev", "machine.slice/machine-arch\\x2ddev.scope", "", ""),
    # plain systemd units
    ("system.slice/nginx.service", "systemd", "nginx.service", "nginx.service", "system.slice/nginx.service", "", ""),
    ("system.slice/docker.service", "systemd", "docker.service", "docker.service", "system.slice/docker.service", "", ""),
    ("system.slice/containerd.service", "systemd", "containerd.service", "containerd.service", "system.slice/containerd.service", "", ""),
    ("system.slice/run-r0b1c2d3.scope", "systemd", "run-r0b1c2d3.scope", "run-r0b1c2d3.scope", "system.slice/run-r0b1c2d3.scope", "", ""),
    ("system.slice/system-getty.slice/getty@tty1.service", "systemd", "getty@tty1.service", "getty@tty1.service",
     "system.slice/system-getty.slice/getty@tty1.service", "", ""),
    ("init.scope", "systemd", "init.scope", "init.scope", "init.scope", "", ""),
    ("user.slice/user-1000.slice/session-3.scope", "systemd", "session-3.scope", "session-3.scope", "user.slice/user-1000.slice/session-3.scope", "", ""),
    (f"{USER}/init.scope", "systemd", "user@1000.service/init.scope", "user@1000.service/init.scope", f"{USER}/init.scope", "", ""),
    (f"{USER}/app.slice/dbus.service", "systemd", "user@1000.service/dbus.service", "user@1000.service/dbus.service",
     f"{USER}/app.slice/dbus.service", "", ""),
    (USER, "systemd", "user@1000.service", "user@1000.service", USER, "", ""),
    # conmon and LXC monitors: the runtime's helper, charged to what holds it
    (f"{USER}/user.slice/libpod-conmon-{C}.scope", "systemd", "user@1000.service", "user@1000.service", USER, "", ""),
    (f"system.slice/docker-{A}.scope/kubepods.slice/kubepods-pod{UIDU}.slice/crio-conmon-{C}.scope", "docker", A, A[:12],
     f"system.slice/docker-{A}.scope", "", ""),
    # libvirt's VMs are units, not containers
    ("machine.slice/machine-qemu\\x2d1\\x2dubuntu.scope/libvirt/vcpu0", "systemd", "machine-qemu\\x2d1\\x2dubuntu.scope",
     "machine-qemu\\x2d1\\x2dubuntu.scope", "machine.slice/machine-qemu\\x2d1\\x2dubuntu.scope", "", ""),
]

HOSTS = [
    "",
    "/",
    "system.slice",
    "user.slice/user-1000.slice",
    "kubepods.slice",
    "kubepods.slice/kubepods-burstable.slice",
    BURST_SLICE,  # the pod's own cgroup
    f"kubepods/besteffort/pod{UID}",
    f"{GUAR_SLICE}/crio-conmon-{C}.scope",
    f"kubepods/besteffort/pod{UID}/crio-conmon-{C}",
    f"machine.slice/libpod-conmon-{C}.scope",
    "libpod_parent/conmon",
    "lxc.monitor.web01",
    "lxc.monitor/web01",
    "lxc.pivot",
    "docker",
    "docker/not-a-container-id",
    f"docker/{A[:63]}",
    "machine.slice",
]


@pytest.mark.parametrize(("path", "runtime", "cid", "name", "cgroup", "pod", "qos"), CASES)
def test_identify(path: str, runtime: str, cid: str, name: str, cgroup: str, pod: str, qos: str) -> None:
    c = identify(path)
    assert (c.runtime, c.id, c.name, c.cgroup, c.pod, c.qos) == (runtime, cid, name, cgroup, pod, qos)
    assert (c.image, dict(c.labels)) == ("", {})


@pytest.mark.parametrize("path", HOSTS)
def test_host(path: str) -> None:
    assert identify(path) is HOST


def test_table_is_big_enough() -> None:
    assert len(CASES) + len(HOSTS) >= 25


@pytest.mark.parametrize(("path", "runtime", "cid", "name", "cgroup", "pod", "qos"), CASES)
def test_sub_cgroups_and_the_prefix_map_to_the_same_container(
    path: str, runtime: str, cid: str, name: str, cgroup: str, pod: str, qos: str
) -> None:
    top = identify(cgroup)
    assert top == identify(path)
    assert top == identify(cgroup + "/some/child")


def test_pod_uid_always_has_dashes() -> None:
    assert identify(f"{BURST_SLICE}/cri-containerd-{B}.scope").pod == UID
    assert "_" not in identify(f"system.slice/containerd.service/kubepods-burstable-pod{UIDU}.slice:cri-containerd:{B}").pod


def test_unescape() -> None:
    assert unescape("build\\x2dbox") == "build-box"
    assert unescape("plain") == "plain"
