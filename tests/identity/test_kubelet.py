"""Pod names and labels from a real HTTP "kubelet" on loopback: good answers, 5xx, half
documents, a rotating token, and what rules then select on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cgwatch.identity.kubelet import PodIndex
from cgwatch.identity.metadata import Metadata
from cgwatch.identity.runtimes import identify
from cgwatch.rules.load import Select

UID = "6a2f1e0c-93b4-4c55-9d1e-2f0c1b7d8e90"
CID = "ab" * 32


def pod_list(labels: dict[str, str]) -> bytes:
    return json.dumps({"kind": "PodList", "items": [{
        "metadata": {"uid": UID, "namespace": "shop", "name": "web-7d9f", "labels": labels},
        "status": {"containerStatuses": [{"name": "nginx", "containerID": f"containerd://{CID}"}]},
    }]}).encode()


class Kubelet:
    """Answers GET /pods with ``body`` and ``status`` when the bearer token is ``token``."""

    def __init__(self) -> None:
        self.body, self.status, self.token = pod_list({"app": "web"}), 200, "t0"
        self.seen_tokens: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.seen_tokens.append(self.headers.get("Authorization", ""))
                ok = self.path == "/pods" and self.headers.get("Authorization") == f"Bearer {outer.token}"
                code = outer.status if ok else 401
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(outer.body if ok else b'{"kind": "Status"}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def kubelet() -> Iterator[Kubelet]:
    k = Kubelet()
    try:
        yield k
    finally:
        k.server.shutdown()


def test_labels_come_from_the_kubelet_and_survive_its_trouble(kubelet, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0\n")
    pods = PodIndex(kubelet.url, str(token))
    assert pods.fetch() and pods.stats.pods == 1
    c = identify(f"kubepods/besteffort/pod{UID}/{CID}")
    seen = Metadata(tmp_path / "no-runtime-state", pods=pods).enrich(c, 0.0)
    assert seen.name == "shop/web-7d9f/nginx"
    assert seen.labels["app"] == "web" and seen.labels["io.kubernetes.pod.namespace"] == "shop"
    assert Select(labels={"app": "web"}).matches(seen) and not Select(labels={"app": "db"}).matches(seen)

    for trouble in ("500", "half", "not json", "401"):
        kubelet.status, kubelet.body = 200, pod_list({"app": "changed"})
        if trouble == "500":
            kubelet.status = 500
        elif trouble == "half":
            kubelet.body = kubelet.body[: len(kubelet.body) // 2]
        elif trouble == "not json":
            kubelet.body = b"<html>oops</html>"
        else:
            kubelet.token = "t1"              # the token rotated on the kubelet's side first
        assert not pods.fetch(), trouble
        assert pods.pod(UID) is not None and pods.pod(UID).labels["app"] == "web", trouble   # the last good list
    assert pods.stats.errors == 4 and "HTTP 401" in pods.stats.last_error
    token.write_text("t1\n")                  # ... and is read again at every fetch
    assert pods.fetch() and pods.pod(UID).labels["app"] == "changed"
    assert kubelet.seen_tokens[-1] == "Bearer t1"


def test_a_token_file_that_became_a_device_or_huge_is_a_failed_fetch_not_a_hang(kubelet, tmp_path):
    """The token is read at every refresh: a path swapped for /dev/zero or a 1 GiB file must not
    read forever or fill memory; the fetch fails with one line and the last good list stays."""
    token = tmp_path / "token"
    token.write_text("t0\n")
    pods = PodIndex(kubelet.url, str(token))
    assert pods.fetch()
    token.unlink()
    token.symlink_to("/dev/zero")
    assert not pods.fetch()
    assert "character device, not a regular file" in pods.stats.last_error
    token.unlink()
    with token.open("wb") as f:
        f.truncate(1 << 30)           # sparse: no disk used
    assert not pods.fetch()
    assert "too large" in pods.stats.last_error and "\n" not in pods.stats.last_error
    assert pods.pod(UID) is not None


def test_a_pod_the_kubelet_does_not_list_yet_is_looked_up_again(kubelet, tmp_path):
    kubelet.body = json.dumps({"kind": "PodList", "items": []}).encode()
    kubelet.token = ""
    pods = PodIndex(kubelet.url)
    kubelet.token = "none"
    md = Metadata(tmp_path, pods=pods)
    c = identify(f"kubepods/besteffort/pod{UID}/{CID}")
    assert not pods.fetch()                   # 401: nothing known yet
    assert md.enrich(c, 0.0).name == CID[:12] and not md.settled(c)
    pods.url = "file://" + str(tmp_path / "pods.json")
    (tmp_path / "pods.json").write_bytes(pod_list({"tier": "front"}))
    assert pods.fetch()
    assert md.enrich(c, 1.0).labels["tier"] == "front"
    # the systemd cgroup driver writes the uid with underscores
    assert pods.pod(UID.replace("-", "_")) is not None
