"""Metadata: names, images and labels from runtime state files under a fake root."""

from __future__ import annotations

import fcntl
import json
import logging
import sqlite3
import struct
from collections.abc import Callable
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


# --- podman -------------------------------------------------------------------------------
# podman 4 (Debian 12) keeps names and the user's labels only in libpod's BoltDB; the tests build
# such files with a small bbolt writer (bbolt's page layout; see cgwatch.identity.boltdb), podman 5's
# SQLite file with sqlite3, and the real thing is read in tests/runtimes/test_identity_engines.py.

STORE = "var/lib/containers/storage"
ANNOTATIONS = {"io.container.manager": "libpod", "io.podman.annotations.autoremove": "FALSE",
               "org.opencontainers.image.stopSignal": "15"}


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class BoltWriter:
    """Writes nested dicts (bucket name → dict or bytes) as a bbolt file, as bbolt lays it out:
    two meta pages, a freelist page, leaf pages (with overflow), one level of branch pages when
    a bucket has more than ``leaf_max`` keys, small buckets of plain values inline."""

    def __init__(self, page_size: int = 4096, leaf_max: int = 1000) -> None:
        self.ps, self.leaf_max = page_size, leaf_max
        self.pages: list[bytes] = []

    def file(self, tree: dict[bytes, Any], txids: tuple[int, int] = (4, 5)) -> bytes:
        self.pages = [b"", b"", struct.pack("<QHHI", 2, 0x10, 0, 0).ljust(self.ps, b"\0")]
        root = self._tree(sorted(tree.items()))
        hwm = len(self.pages)
        for i, txid in enumerate(txids):
            body = struct.pack("<IIIIQQQQQ", 0xED0CDAED, 2, self.ps, 0, root, 0, 2, hwm, txid)
            self.pages[i] = (struct.pack("<QHHI", i, 0x04, 0, 0) + body
                             + struct.pack("<Q", _fnv64a(body))).ljust(self.ps, b"\0")
        return b"".join(self.pages)

    def _value(self, v: Any) -> tuple[int, bytes]:
        if not isinstance(v, dict):
            return 0, v
        items = sorted(v.items())
        plain = all(not isinstance(x, dict) for _, x in items)
        if plain and sum(len(k) + len(x) + 16 for k, x in items) + 32 < self.ps // 4:
            return 1, struct.pack("<QQ", 0, 0) + self._leaf(items, 0)
        return 1, struct.pack("<QQ", self._tree(items), 0)

    def _leaf(self, items: list[tuple[bytes, Any]], pgid: int) -> bytes:
        vals = [(k, *self._value(v)) for k, v in items]
        head, data = b"", b""
        for i, (k, flags, v) in enumerate(vals):
            pos = 16 * len(vals) + len(data) - 16 * i
            head += struct.pack("<IIII", flags, pos, len(k), len(v))
            data += k + v
        return struct.pack("<QHHI", pgid, 0x02, len(vals), 0) + head + data

    def _alloc(self, make: Callable[[int], bytes]) -> int:
        pgid = len(self.pages)
        self.pages.append(b"")
        page = make(pgid)
        n = -(-len(page) // self.ps)
        page = page[:12] + struct.pack("<I", n - 1) + page[16:]
        self.pages[pgid] = page.ljust(n * self.ps, b"\0")
        self.pages.extend([b""] * (n - 1))   # overflow pages are part of this one
        return pgid

    def _tree(self, items: list[tuple[bytes, Any]]) -> int:
        chunks = [items[i:i + self.leaf_max] for i in range(0, len(items), self.leaf_max)] or [[]]
        leaves = [(c[0][0] if c else b"", self._alloc(lambda pgid, c=c: self._leaf(c, pgid))) for c in chunks]
        if len(leaves) == 1:
            return leaves[0][1]

        def branch(pgid: int) -> bytes:
            head, data = b"", b""
            for i, (k, child) in enumerate(leaves):
                head += struct.pack("<IIQ", 16 * len(leaves) + len(data) - 16 * i, len(k), child)
                data += k
            return struct.pack("<QHHI", pgid, 0x01, len(leaves), 0) + head + data
        return self._alloc(branch)


def libpod_config(cid: str, name: str, labels: dict[str, str] | None, annotations: dict[str, str] | None = None,
                  image: str = "docker.io/library/redis:7") -> dict[str, Any]:
    """The parts of podman 4.3's ContainerConfig JSON (bucket ctr/<id>, key config) that matter."""
    return {
        "spec": {"ociVersion": "1.0.2-dev", "process": {"args": ["redis-server"]},
                 "annotations": annotations if annotations is not None else ANNOTATIONS,
                 "linux": {"cgroupsPath": f"/libpod_parent/libpod-{cid}"}},
        "id": cid, "name": name, "lockID": 3,
        "CreateCommand": ["podman", "run", "-d", "--label", "tier=batch", "--name", name, "redis:7"],
        "RawImageName": "redis:7", "rootfsImageID": "7fc37b47", "rootfsImageName": image,
        "labels": labels, "stopSignal": 15, "cgroupManager": "cgroupfs", "cgroupParent": "/libpod_parent",
        "logDriver": "k8s-file", "runtime": "runc",
    }


def libpod_tree(configs: list[dict[str, Any]]) -> dict[bytes, Any]:
    """libpod's bucket layout: ctr/<id>/{config, state, dependencies}, registries, runtime config."""
    ids = {c["id"].encode(): c["name"].encode() for c in configs}
    return {
        b"all-ctrs": dict(ids), b"allPods": {}, b"allVolumes": {}, b"exec": {}, b"exit-code": {},
        b"ctr": {c["id"].encode(): {b"config": json.dumps(c).encode(), b"dependencies": {},
                                    b"state": b'{"state":3,"pid":4242}'} for c in configs},
        b"id-registry": dict(ids), b"name-registry": {v: k for k, v in ids.items()}, b"pod": {},
        b"runtime-config": {b"graph-root": b"/var/lib/containers/storage", b"os": b"linux"},
    }


def bolt_db(root: Path, configs: list[dict[str, Any]], store: str = STORE, **kw: Any) -> Path:
    path = root / store / "libpod/bolt_state.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BoltWriter(**kw).file(libpod_tree(configs)))
    return path


def sqlite_db(root: Path, configs: list[dict[str, Any]]) -> Path:
    """podman 5's db.sql, the tables and columns that matter."""
    path = root / STORE / "libpod/db.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE ContainerConfig(ID TEXT PRIMARY KEY NOT NULL, Name TEXT UNIQUE NOT NULL, "
                "PodID TEXT, JSON TEXT NOT NULL)")
    con.executemany("INSERT INTO ContainerConfig VALUES (?, ?, NULL, ?)",
                    [(c["id"], c["name"], json.dumps(c)) for c in configs])
    con.commit()
    con.close()
    return path


def podman_entry(cid: str, name: str) -> dict[str, Any]:
    meta = {"image-name": "docker.io/library/redis:7", "image-id": "7fc37b47", "name": name, "created-at": 1732492800}
    return {"id": cid, "names": [name], "image": "7fc37b47acde", "layer": "f1e2d3c4",
            "metadata": json.dumps(meta), "created": "2024-11-25T00:00:00.0Z", "flags": {"MountLabel": ""}}


def podman_storage(root: Path, cid: str = ID, name: str = "cache") -> None:
    """What containers/storage keeps beside libpod's database: no user labels, OCI annotations."""
    write(root, f"{STORE}/overlay-containers/containers.json", [podman_entry(SANDBOX, "other"), podman_entry(cid, name)])
    write(root, f"{STORE}/overlay-containers/{cid}/userdata/config.json", oci_spec(ANNOTATIONS))


def podman_container() -> Container:
    return identify(f"libpod_parent/libpod-{ID}")


def test_podman_labels_are_the_users_not_the_oci_annotations(tmp_path: Path) -> None:
    podman_storage(tmp_path)
    bolt_db(tmp_path, [libpod_config(SANDBOX, "other", {"tier": "web"}),
                       libpod_config(ID, "cache", {"tier": "batch", "team": "data"})])
    c = Metadata(tmp_path).enrich(podman_container(), 0.0)
    assert (c.name, c.image, c.runtime) == ("cache", "docker.io/library/redis:7", "podman")
    assert dict(c.labels) == {"tier": "batch", "team": "data"}


@pytest.mark.parametrize("labels", [None, {}])
def test_podman_without_labels_has_none(tmp_path: Path, labels: dict[str, str] | None) -> None:
    bolt_db(tmp_path, [libpod_config(ID, "cache", labels)])
    c = Metadata(tmp_path).enrich(podman_container(), 0.0)
    assert (c.name, dict(c.labels)) == ("cache", {})


def test_podman_sqlite_state(tmp_path: Path) -> None:
    sqlite_db(tmp_path, [libpod_config(SANDBOX, "other", {}), libpod_config(ID, "cache", {"tier": "batch"})])
    c = Metadata(tmp_path).enrich(podman_container(), 0.0)
    assert (c.name, c.image, dict(c.labels)) == ("cache", "docker.io/library/redis:7", {"tier": "batch"})


def test_podman_many_containers_span_branch_pages(tmp_path: Path) -> None:
    ids = [f"{i:02x}" * 32 for i in range(1, 60)]
    bolt_db(tmp_path, [libpod_config(cid, f"c{n}", {"n": str(n)}) for n, cid in enumerate(ids)], leaf_max=4)
    md = Metadata(tmp_path)
    for n, cid in enumerate(ids):
        c = md.enrich(identify(f"libpod_parent/libpod-{cid}"), 0.0)
        assert (c.name, dict(c.labels)) == (f"c{n}", {"n": str(n)})
    assert md.enrich(podman_container(), 0.0).name == ID[:12]          # between two keys: absent


@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_podman_kubernetes_style(tmp_path: Path, where: str) -> None:
    kube = {"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "web-7d9f8b6c5-x2x4k",
            "io.kubernetes.container.name": "nginx"}
    labels = {"app": "web", **(kube if where == "labels" else {})}
    annotations = {**ANNOTATIONS, **(kube if where == "annotations" else {})}
    bolt_db(tmp_path, [libpod_config(ID, "web-7d9f8b6c5-x2x4k-nginx", labels, annotations)])
    c = Metadata(tmp_path).enrich(podman_container(), 0.0)
    assert c.name == "shop/web-7d9f8b6c5-x2x4k/nginx"
    assert dict(c.labels) == {"app": "web", **kube}


def test_podman_rootless_storage_in_home(tmp_path: Path) -> None:
    write(tmp_path, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    bolt_db(tmp_path, [libpod_config(ID, "dev-db", {"who": "alice"})], store="home/alice/.local/share/containers/storage")
    bolt_db(tmp_path, [libpod_config(SANDBOX, "roots", {})])
    c = identify(f"user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope")
    e = Metadata(tmp_path).enrich(c, 0.0)
    assert (e.name, dict(e.labels)) == ("dev-db", {"who": "alice"})


def test_podman_without_a_database_is_named_from_containers_json(tmp_path: Path) -> None:
    podman_storage(tmp_path)
    c = Metadata(tmp_path).enrich(identify(f"machine.slice/libpod-{ID}.scope"), 0.0)
    assert (c.name, c.image, c.runtime) == ("cache", "docker.io/library/redis:7", "podman")
    assert dict(c.labels) == {}          # annotations are not labels, and containers.json has none


def test_podman_not_in_the_database_is_a_miss(tmp_path: Path) -> None:
    podman_storage(tmp_path)          # containers/storage knows it (created, or buildah's) ...
    bolt_db(tmp_path, [libpod_config(SANDBOX, "other", {})])          # ... libpod not yet
    md = Metadata(tmp_path)
    assert md.enrich(podman_container(), 0.0).name == ID[:12]
    assert not md.settled(podman_container())
    bolt_db(tmp_path, [libpod_config(ID, "cache", {"tier": "batch"})])
    assert md.enrich(podman_container(), 10.0).labels == {"tier": "batch"}


def test_podman_database_busy_is_a_quiet_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = bolt_db(tmp_path, [libpod_config(ID, "cache", {"tier": "batch"})])
    md = Metadata(tmp_path)
    with open(path, "rb") as podman, caplog.at_level(logging.WARNING, logger="cgwatch.identity"):
        fcntl.flock(podman, fcntl.LOCK_EX)          # what bbolt does for podman's read-write open
        assert md.enrich(podman_container(), 0.0).name == ID[:12]
        fcntl.flock(podman, fcntl.LOCK_UN)
        assert md.enrich(podman_container(), 10.0).name == "cache"
    assert not caplog.records


def test_podman_newer_meta_page_torn_reads_the_older(tmp_path: Path) -> None:
    path = bolt_db(tmp_path, [libpod_config(ID, "cache", {"tier": "batch"})])
    data = bytearray(path.read_bytes())
    data[4096 + 16 + 40] ^= 0xFF          # meta 1 (the newer txid): its txid no longer matches its checksum
    path.write_bytes(bytes(data))
    assert Metadata(tmp_path).enrich(podman_container(), 0.0).name == "cache"


def damaged_bolt_files() -> list[tuple[str, bytes]]:
    good = BoltWriter(leaf_max=3).file(libpod_tree(
        [libpod_config(f"{i:02x}" * 32, f"c{i}", {}) for i in range(1, 9)] + [libpod_config(ID, "cache", {"t": "b"})]))
    out = [("empty", b""), ("text", b"not a database\n" * 300), ("zeros", bytes(len(good)))]
    out += [(f"cut at {n}", good[:n]) for n in range(0, len(good), 509)]
    wild = bytearray(good)
    for pgid in range(2, len(good) // 4096):          # every page points everywhere
        struct.pack_into("<QHH", wild, pgid * 4096, pgid, 0x01, 0xFFFF)
    out.append(("branches everywhere", bytes(wild)))
    loop, root = bytearray(good), struct.unpack_from("<Q", good, 32)[0]
    struct.pack_into("<QHHIIIQ", loop, root * 4096, root, 0x01, 1, 0, 16, 0, root)  # the root, its own child
    out.append(("loop", bytes(loop)))
    return out


@pytest.mark.parametrize(("what", "data"), damaged_bolt_files(), ids=lambda v: v if isinstance(v, str) else "")
def test_podman_damaged_database_never_raises_never_misnames(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, what: str, data: bytes) -> None:
    path = tmp_path / STORE / "libpod/bolt_state.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    podman_storage(tmp_path, name="from-storage")          # must not be used while a database is there
    md = Metadata(tmp_path, retry_after=1.0)
    with caplog.at_level(logging.WARNING, logger="cgwatch.identity"):
        names = {md.enrich(podman_container(), float(t)).name for t in range(0, 120, 2)}
    assert names <= {ID[:12], "cache"}
    assert len([r for r in caplog.records if r.name == "cgwatch.identity"]) <= 1


@pytest.mark.parametrize("data", [b"", b"SQLite format 3\0" + b"\xff" * 500, b"garbage" * 100])
def test_podman_damaged_sqlite_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture, data: bytes) -> None:
    write(tmp_path, f"{STORE}/libpod/db.sql", data.decode("latin-1"))
    md = Metadata(tmp_path, retry_after=1.0)
    with caplog.at_level(logging.WARNING, logger="cgwatch.identity"):
        for t in range(5):
            assert md.enrich(podman_container(), float(t * 2)).name == ID[:12]
    assert len([r for r in caplog.records if r.name == "cgwatch.identity"]) == 1


def test_podman_config_of_the_wrong_shape_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = libpod_config(ID, "cache", {"tier": "batch"})
    cfg["spec"] = ["not", "an", "object"]
    bolt_db(tmp_path, [cfg])
    with caplog.at_level(logging.WARNING, logger="cgwatch.identity"):
        assert Metadata(tmp_path).enrich(podman_container(), 0.0).name == ID[:12]
    assert "spec" in caplog.records[0].getMessage()


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_runtime_absent_warns_once_after_warn_after(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, runtime: str) -> None:
    md = Metadata(tmp_path, retry_after=10.0, warn_after=60.0)
    c = container(runtime)
    with caplog.at_level(logging.WARNING, logger="cgwatch.identity"):
        for t in range(0, 60, 10):
            assert md.enrich(c, float(t)).name == ID[:12]
        assert not caplog.records
        for t in range(60, 300, 10):
            assert md.enrich(c, float(t)).name == ID[:12]
    assert len(caplog.records) == 1
    assert ID[:12] in caplog.records[0].getMessage() and runtime in caplog.records[0].getMessage()
    assert not md.settled(c)


def test_an_unnamed_id_is_looked_for_ever_less_often_up_to_once_a_minute_and_named_when_its_state_comes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The waits between looks grow with the time an id has stayed unnamed, up to a minute:
    hundreds of unnamed cgroups cost a lookup a minute each, not one every ``retry_after``;
    a runtime that comes back still names its container within that minute."""
    import cgwatch.identity.metadata as metadata

    looks: list[float] = []
    real = metadata._READERS["docker"]
    monkeypatch.setitem(metadata._READERS, "docker", tuple(
        (lambda root, c, r=r: (looks.append(now), r(root, c))[1]) for r in real))
    md = Metadata(tmp_path, retry_after=10.0, warn_after=60.0)
    c = container("docker")
    for t in range(0, 241, 10):
        now = float(t)
        md.enrich(c, now)
    assert looks == [0.0, 10.0, 20.0, 40.0, 80.0, 140.0, 200.0]
    docker(tmp_path)
    for t in range(250, 301, 10):
        now = float(t)
        named = md.enrich(c, now)
    assert named.name == "web-1" and md.settled(c)
    assert looks[-1] == 260.0


def test_container_gone_before_it_was_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    md = Metadata(tmp_path, warn_after=60.0)
    with caplog.at_level(logging.WARNING, logger="cgwatch.identity"):
        assert md.enrich(container("podman"), 0.0).name == ID[:12]
        md.forget(ID)          # its cgroup went: the resolver forgets it
        assert md.enrich(container("podman"), 100.0).name == ID[:12]          # an id seen anew starts over
    assert not caplog.records


def test_state_path_through_a_file_is_a_miss(tmp_path: Path) -> None:
    write(tmp_path, "var/lib/docker", "a file where a directory belongs")
    write(tmp_path, "var/lib/containers", "likewise")
    for runtime in ("docker", "podman"):
        assert Metadata(tmp_path).enrich(container(runtime), 0.0).name == ID[:12]


def test_runtimes_without_state_are_settled(tmp_path: Path) -> None:
    md = Metadata(tmp_path)
    for c in (HOST, identify("system.slice/cron.service"), identify("lxc.payload.web"), identify("machine.slice/machine-x.scope")):
        assert md.settled(c)
        assert md.enrich(c, 0.0) is c
