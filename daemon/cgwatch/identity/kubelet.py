"""Pod names, namespaces and labels from the node's kubelet, read-only.

On a Kubernetes node a container's cgroup names its pod's uid, and the
runtime's state names the pod, but the pod's **labels** live only in the API:
the kubelet serves this node's pods at ``GET /pods`` (a ``PodList``; on port
10250 with a service-account token, authorised as ``nodes/proxy``). A
:class:`PodIndex` reads it every ``refresh`` seconds, off the collector's path,
and keeps the last good answer: a kubelet that is down, slow, answers 5xx or
half a document costs nothing but staleness (counted in ``errors``, logged
once per distinct problem). ``file://`` URLs read a ``PodList`` JSON file
instead (a static setup, tests).

Examples
--------
>>> body = b'''{"kind": "PodList", "items": [{"metadata": {"uid": "0a1b-2c", "namespace": "shop",
...   "name": "web-7d9", "labels": {"app": "web"}}, "status": {"containerStatuses": [
...   {"name": "nginx", "containerID": "containerd://4f1c"}]}}]}'''
>>> pods = parse_pods(body)
>>> p = pods["0a1b-2c"]
>>> p.namespace, p.name, dict(p.labels), dict(p.containers)
('shop', 'web-7d9', {'app': 'web'}, {'4f1c': 'nginx'})
>>> parse_pods(b'{"kind": "PodList", "items": [{"metadata"')
Traceback (most recent call last):
...
ValueError: not a PodList: Expecting ':' delimiter: line 1 column 42 (char 41)
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..files import read_small_bytes, read_small_file

log = logging.getLogger("cgwatch.identity")

#: the largest /pods answer read (a node runs at most a few hundred pods: a few MB)
MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Pod:
    """One pod on this node, as the kubelet reports it."""

    uid: str
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    containers: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Runtime container id (no ``containerd://`` prefix) -> container name."""


def parse_pods(body: bytes) -> dict[str, Pod]:
    """A ``PodList`` document by pod uid; ValueError (one line) when it is not one."""
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
            raise ValueError("no 'items' list")
        out: dict[str, Pod] = {}
        for item in doc["items"]:
            meta = item.get("metadata") or {}
            uid = str(meta.get("uid", ""))
            if not uid:
                continue
            containers: dict[str, str] = {}
            status = item.get("status") or {}
            for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
                for cs in status.get(key) or ():
                    cid = str(cs.get("containerID", "")).partition("://")[2]
                    if cid:
                        containers[cid] = str(cs.get("name", ""))
            labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
            out[uid] = Pod(uid, str(meta.get("namespace", "")), str(meta.get("name", "")), labels, containers)
        return out
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"not a PodList: {e}") from None


@dataclass(slots=True)
class PodStats:
    fetches: int = 0
    errors: int = 0
    pods: int = 0
    last_error: str = ""


class PodIndex:
    """This node's pods by uid and by container id; replaced whole on each good read."""

    def __init__(self, url: str, token_file: str | None = None, tls_verify: bool = True,
                 ca_file: str | None = None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.tls_verify = tls_verify
        self.ca_file = ca_file
        self.timeout = timeout
        self.stats = PodStats()
        self._pods: dict[str, Pod] = {}
        self._by_container: dict[str, tuple[Pod, str]] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def pod(self, uid: str) -> Pod | None:
        """The pod with this uid (``_`` as systemd cgroup names write ``-`` is accepted)."""
        return self._pods.get(uid.replace("_", "-"))

    def container(self, cid: str) -> tuple[Pod, str] | None:
        """(pod, container name) of a runtime container id."""
        return self._by_container.get(cid)

    def fetch(self) -> bool:
        """Read the kubelet once (blocking: call it from a thread); False, keeping what was
        known, when the answer is not a good PodList."""
        self.stats.fetches += 1
        try:
            pods = parse_pods(self._read())
        except (OSError, ValueError, urllib.error.URLError) as e:
            self.stats.errors += 1
            text = _describe(e)
            self.stats.last_error = text
            if text not in self._warned:
                self._warned.add(text)
                log.warning("kubelet pods from %s: %s (the last good list stays in use)", self.url, text)
            return False
        by_container = {cid: (p, name) for p in pods.values() for cid, name in p.containers.items()}
        with self._lock:
            self._pods, self._by_container = pods, by_container
        self.stats.pods = len(pods)
        self._warned.clear()
        return True

    def _read(self) -> bytes:
        if self.url.startswith("file://"):
            return read_small_bytes(self.url[len("file://"):], MAX_BODY)
        headers = {"Accept": "application/json"}
        if self.token_file:     # read at each refresh (tokens rotate), bounded like every secret file
            headers["Authorization"] = "Bearer " + read_small_file(self.token_file).strip()
        req = urllib.request.Request(self.url + "/pods", headers=headers)
        ctx = None
        if self.url.startswith("https://"):
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if not self.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(req, timeout=self.timeout, context=ctx) as r:  # noqa: S310 - http(s)/file only
            body: bytes = r.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise ValueError(f"answer larger than {MAX_BODY} bytes")
        return body


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return f"cannot connect: {e.reason}"
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return str(e)

