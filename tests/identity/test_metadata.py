"""Metadata: names, images and labels from runtime state files under a fake root."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from cgwatch.identity.metadata import Metadata
from cgwatch.identity.runtimes import identify
from cgwatch.model import HOST, Container

ID = "3b7e8f0c2d1a4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b"
SANDBOX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
UID = "0e5a1c2d-3b4f-4a6e-9c8d-7f1e2d3c4b5a"


def write(root: Path, rel: str, data: Any) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def docker_config(name: str, image: str, labels: dict[str, str]) -> dict[str, Any]:
    """The parts of a real docker 24 config.v2.json that matter, and some that don't."""
    return {
        "StreamConfig": {},
        "State": {"Running": True, "Paused": False, "Pid": 4242, "ExitCode": 0,
                  "StartedAt": "2024-11-25T00:00:00.123456789Z"},
        "ID": ID,
        "Created": "2024-11-25T00:00:00.0Z",
        "Managed": False,
        "Path": "/docker-entrypoint.sh",
        "Args": ["nginx", "-g", "daemon off;"],
        "Config": {
            "Hostname": ID[:12], "Domainname": "", "User": "", "Tty": False,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_VERSION=1.25.3"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "Image": image,
            "Volumes": None, "WorkingDir": "", "Entrypoint": ["/docker-entrypoint.sh"],
            "OnBuild": None, "Labels": labels, "StopSignal": "SIGQUIT",
        },
        "Image": "sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6",
        "NetworkSettings": {"Bridge": "", "SandboxID": "e0f1", "Networks": {"bridge": {}}},
        "LogPath": f"/var/lib/docker/containers/{ID}/{ID}-json.log",
        "Name": name,
        "Driver": "overlay2",
        "OS": "linux",
        "RestartCount": 0,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "docker-default",
    }


def oci_spec(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "ociVersion": "1.1.0",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/pause"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "web-7d9f8b6c5-x2x4k",
        "annotations": annotations,
        "linux": {"cgroupsPath": f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice:cri-containerd:{ID}",
                  "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]},
    }


def docker(root: Path, name: str = "/web-1", image: str = "nginx:1.25",
           labels: dict[str, str] | None = None) -> Path:
    cfg = docker_config(name, image, labels if labels is not None else {"com.example.team": "payments"})
    return write(root, f"var/lib/docker/containers/{ID}/config.v2.json", cfg)


def container(runtime: str, cgroup: str = "") -> Container:
    return Container(id=ID, name=ID[:12], runtime=runtime, cgroup=cgroup)


def test_docker(tmp_path: Path) -> None:
    docker(tmp_path)
    c = Metadata(tmp_path).enrich(identify(f"system.slice/docker-{ID}.scope"), 0.0)
    assert (c.id, c.name, c.runtime, c.image) == (ID, "web-1", "docker", "nginx:1.25")
    assert dict(c.labels) == {"com.example.team": "payments"}
    assert c.cgroup == f"system.slice/docker-{ID}.scope"


def test_docker_under_cri_dockerd_is_named_like_kubernetes(tmp_path: Path) -> None:
    labels = {
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.name": "web-7d9f8b6c5-x2x4k",
        "io.kubernetes.container.name": "nginx",
        "io.kubernetes.pod.uid": UID,
        "io.kubernetes.docker.type": "container",
    }
    docker(tmp_path, name="/k8s_nginx_web-7d9f8b6c5-x2x4k_shop_" + UID + "_0", labels=labels)
    c = Metadata(tmp_path).enrich(container("docker"), 0.0)
    assert c.name == "shop/web-7d9f8b6c5-x2x4k/nginx"
    assert c.labels["io.kubernetes.pod.uid"] == UID


def test_miss_is_retried_only_after_retry_after(tmp_path: Path) -> None:
    md = Metadata(tmp_path, retry_after=10.0)
    c = container("docker")
    assert md.enrich(c, 100.0) is c
    docker(tmp_path)
    assert md.enrich(c, 109.9).name == ID[:12]
    assert md.enrich(c, 110.0).name == "web-1"
    assert md.settled(c)


def test_found_is_cached(tmp_path: Path) -> None:
    path = docker(tmp_path)
    md = Metadata(tmp_path)
    assert md.enrich(container("docker"), 0.0).name == "web-1"
    path.unlink()
    assert md.enrich(container("docker"), 1000.0).name == "web-1"
    md.forget(ID)
    assert md.enrich(container("docker"), 1001.0).name == ID[:12]


def test_malformed_json_warns_once_and_keeps_the_short_id(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, f"var/lib/docker/containers/{ID}/config.v2.json", '{"Name": "/web-1", "Config": {')
    md = Metadata(tmp_path, retry_after=1.0)
    with caplog.at_level(logging.WARNING, logger="cgwatch.identity"):
        for t in range(5):
            assert md.enrich(container("docker"), float(t * 2)).name == ID[:12]
    warnings = [r for r in caplog.records if r.name == "cgwatch.identity"]
    assert len(warnings) == 1 and ID[:12] in warnings[0].getMessage()
    docker(tmp_path)  # docker rewrote it
    assert md.enrich(container("docker"), 100.0).name == "web-1"


@pytest.mark.parametrize("text", ["[]", '{"Config": "nginx"}', '{"Config": {"Labels": ["a"]}}', "null"])
def test_wrong_shapes_never_raise(tmp_path: Path, text: str) -> None:
    write(tmp_path, f"var/lib/docker/containers/{ID}/config.v2.json", text)
    assert Metadata(tmp_path).enrich(container("docker"), 0.0).name == ID[:12]


def containerd_annotations(kind: str = "container") -> dict[str, str]:
    notes = {
        "io.kubernetes.cri.container-type": kind,
        "io.kubernetes.cri.sandbox-id": SANDBOX,
        "io.kubernetes.cri.sandbox-name": "web-7d9f8b6c5-x2x4k",
        "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.sandbox-uid": UID,
    }
    if kind == "container":
        notes |= {"io.kubernetes.cri.container-name": "nginx",
                  "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25"}
    return notes


def test_containerd_cri(tmp_path: Path) -> None:
    write(tmp_path, f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json",
          oci_spec(containerd_annotations()))
    c = Metadata(tmp_path).enrich(container("containerd"), 0.0)
    assert (c.name, c.image, c.runtime) == ("shop/web-7d9f8b6c5-x2x4k/nginx", "docker.io/library/nginx:1.25", "containerd")
    assert dict(c.labels) == {
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.name": "web-7d9f8b6c5-x2x4k",
        "io.kubernetes.container.name": "nginx",
    }


def test_containerd_sandbox_is_the_pods_POD(tmp_path: Path) -> None:
    write(tmp_path, f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json",
          oci_spec(containerd_annotations("sandbox")))
    assert Metadata(tmp_path).enrich(container("containerd"), 0.0).name == "shop/web-7d9f8b6c5-x2x4k/POD"


def crio_annotations() -> dict[str, str]:
    labels = {
        "app": "web", "pod-template-hash": "7d9f8b6c5",
        "io.kubernetes.container.name": "nginx", "io.kubernetes.pod.name": "web-7d9f8b6c5-x2x4k",
        "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.uid": UID,
    }
    return {
        "io.kubernetes.container.name": "nginx",
        "io.kubernetes.pod.name": "web-7d9f8b6c5-x2x4k",
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.uid": UID,
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.ImageName": "quay.io/acme/web:2.3",
        "io.kubernetes.cri-o.Image": "sha256:5a8a4c5d",
        "io.kubernetes.cri-o.Labels": json.dumps(labels),
        "io.kubernetes.cri-o.SandboxID": SANDBOX,
    }


def test_crio(tmp_path: Path) -> None:
    write(tmp_path, f"run/containers/storage/overlay-containers/{ID}/userdata/config.json", oci_spec(crio_annotations()))
    c = Metadata(tmp_path).enrich(container("cri-o"), 0.0)
    assert (c.name, c.image, c.runtime) == ("shop/web-7d9f8b6c5-x2x4k/nginx", "quay.io/acme/web:2.3", "cri-o")
    assert c.labels["app"] == "web" and c.labels["io.kubernetes.pod.uid"] == UID


@pytest.mark.parametrize(
    ("rel", "spec", "runtime"),
    [
        (f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json", oci_spec(containerd_annotations()), "containerd"),
        (f"run/containers/storage/overlay-containers/{ID}/userdata/config.json", oci_spec(crio_annotations()), "cri-o"),
    ],
)
def test_cri_runtime_is_found_from_state(tmp_path: Path, rel: str, spec: dict[str, Any], runtime: str) -> None:
    write(tmp_path, rel, spec)
    c = identify(f"kubepods/besteffort/pod{UID}/{ID}")
    assert c.runtime == "cri"
    e = Metadata(tmp_path).enrich(c, 0.0)
    assert (e.runtime, e.name, e.pod, e.qos) == (runtime, "shop/web-7d9f8b6c5-x2x4k/nginx", UID, "besteffort")


def test_cri_via_cri_dockerd(tmp_path: Path) -> None:
    docker(tmp_path)
    assert Metadata(tmp_path).enrich(identify(f"kubepods/pod{UID}/{ID}"), 0.0).runtime == "docker"


def podman_entry(cid: str, name: str) -> dict[str, Any]:
    meta = {"image-name": "docker.io/library/redis:7", "image-id": "7fc37b47", "name": name, "created-at": 1732492800}
    return {"id": cid, "names": [name], "image": "7fc37b47acde", "layer": "f1e2d3c4",
            "metadata": json.dumps(meta), "created": "2024-11-25T00:00:00.0Z", "flags": {"MountLabel": ""}}


def test_podman(tmp_path: Path) -> None:
    store = "var/lib/containers/storage/overlay-containers"
    write(tmp_path, f"{store}/containers.json", [podman_entry(SANDBOX, "other"), podman_entry(ID, "cache")])
    write(tmp_path, f"{store}/{ID}/userdata/config.json", oci_spec({"io.container.manager": "libpod"}))
    c = Metadata(tmp_path).enrich(identify(f"machine.slice/libpod-{ID}.scope"), 0.0)
    assert (c.name, c.image, c.runtime) == ("cache", "docker.io/library/redis:7", "podman")
    assert dict(c.labels) == {"io.container.manager": "libpod"}


def test_podman_rootless_storage_in_home(tmp_path: Path) -> None:
    write(tmp_path, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    write(tmp_path, "home/alice/.local/share/containers/storage/overlay-containers/containers.json",
          [podman_entry(ID, "dev-db")])
    c = identify(f"user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope")
    assert Metadata(tmp_path).enrich(c, 0.0).name == "dev-db"


def test_podman_missing_entry_is_a_miss(tmp_path: Path) -> None:
    write(tmp_path, "var/lib/containers/storage/overlay-containers/containers.json", [podman_entry(SANDBOX, "x")])
    md = Metadata(tmp_path)
    assert md.enrich(container("podman"), 0.0).name == ID[:12]
    assert not md.settled(container("podman"))


def test_runtimes_without_state_are_settled(tmp_path: Path) -> None:
    md = Metadata(tmp_path)
    for c in (HOST, identify("system.slice/cron.service"), identify("lxc.payload.web"), identify("machine.slice/machine-x.scope")):
        assert md.settled(c)
        assert md.enrich(c, 0.0) is c
