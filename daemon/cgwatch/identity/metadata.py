"""Names, images and labels from the container runtimes' own state files.

cgwatch asks no runtime API: it reads the JSON each runtime keeps on disk, so
it works the same with any client version, costs one small file read per
container, and needs no socket access. Where the files live (relative to
``root``, which is ``/`` on a host and a temporary directory in tests):

=============  ==============================================================
docker         ``var/lib/docker/containers/<id>/config.v2.json``
containerd     ``run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/config.json``
               (the OCI spec; CRI annotations name pod, namespace, container, image)
CRI-O          ``run/containers/storage/overlay-containers/<id>/userdata/config.json``
               (then the same under ``var/lib``)
podman         libpod's database in ``var/lib/containers/storage/libpod/``:
               ``bolt_state.db`` (BoltDB; podman 4, Debian 12's) or ``db.sql``
               (SQLite; podman 5); rootless: the same below the user's
               ``~/.local/share/containers/storage`` (home from ``etc/passwd``)
=============  ==============================================================

podman keeps a container's name, image and the user's ``--label``\ s only in
libpod's database (the ``config`` of bucket ``ctr/<id>``, or table
``ContainerConfig``); ``overlay-containers/containers.json`` has the name and
image but no labels, and ``userdata/config.json`` has OCI *annotations*
(``io.container.manager``, ``io.podman.annotations.*``), which are not labels
and never become labels. BoltDB files are read by :mod:`.boltdb`, a small
read-only reader, under a shared ``flock`` (podman takes it exclusively while
it writes; a busy file is a miss, retried); SQLite files read-only. Where a
storage has no database at all, ``containers.json`` still gives name and image.

Kubernetes containers are named ``<namespace>/<pod>/<container>`` (a pod's
sandbox, the pause container, is ``<namespace>/<pod>/POD``); their labels hold
the pod's labels where the state has them (CRI-O, cri-dockerd) plus
``io.kubernetes.pod.namespace``, ``io.kubernetes.pod.name`` and
``io.kubernetes.container.name``. A container of runtime ``cri`` (kubelet's
cgroupfs driver, where the path does not say) takes the runtime whose state
holds its id: containerd, then CRI-O, then docker.

Docker writes ``config.v2.json`` shortly *after* the cgroup appears, so a miss
is normal: it is retried at most every ``retry_after`` seconds until found.
A miss that lasts ``warn_after`` seconds (the runtime absent or stopped, its
state somewhere else) logs one warning per id on the ``cgwatch.identity``
logger, and from then on the id is looked for every ``warn_after`` seconds
(a runtime that comes back names it within a minute; hundreds of unnamed
cgroups do not cost a lookup each every few seconds). A file that is unreadable, half written or not the shape expected
keeps the short-id name, logs one warning per id, and is retried like a miss.
Nothing here raises, and nothing guesses: a container is named only from its
own entry in its runtime's state, else it keeps its short id.

Examples
--------
>>> from cgwatch.model import Container
>>> md = Metadata(Path("/nonexistent"))
>>> md.enrich(Container(id="ab" * 32, name="abababababab", runtime="docker"), 0.0).name
'abababababab'
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..model import K8S_CONTAINER_LABEL, Container
from . import boltdb
from .kubelet import PodIndex

log = logging.getLogger("cgwatch.identity")

_NS = "io.kubernetes.pod.namespace"
_POD = "io.kubernetes.pod.name"
_CTR = K8S_CONTAINER_LABEL
_CRI = "io.kubernetes.cri."
_CRIO = "io.kubernetes.cri-o."
_USER_SLICE = re.compile(r"(?:^|/)user-(\d+)\.slice(?:/|$)")


@dataclass(frozen=True, slots=True)
class _Found:
    """What a runtime's state says about one container."""

    runtime: str
    name: str
    image: str = ""
    labels: Mapping[str, str] | None = None


class Metadata:
    """Runtime metadata for containers, cached per container id.

    Parameters
    ----------
    root:
        Where the host's file system is (``/``; a test's tmp dir).
    retry_after:
        Seconds before an id whose state was missing or bad is looked for again; later
        waits grow with the time it has stayed unnamed, up to ``warn_after``.

    Examples
    --------
    >>> import json, tempfile
    >>> from cgwatch.model import Container
    >>> root = Path(tempfile.mkdtemp())
    >>> cid = "4f1c" * 16
    >>> d = root / "var/lib/docker/containers" / cid
    >>> c = Container(id=cid, name=cid[:12], runtime="docker")
    >>> md = Metadata(root, retry_after=10.0)
    >>> md.enrich(c, 100.0).name, md.settled(c)          # not written yet
    ('4f1c4f1c4f1c', False)
    >>> d.mkdir(parents=True)
    >>> _ = (d / "config.v2.json").write_text(json.dumps(
    ...     {"Name": "/web-1", "Config": {"Image": "nginx:1.25", "Labels": {"env": "prod"}}}))
    >>> md.enrich(c, 105.0).name                          # too soon to look again
    '4f1c4f1c4f1c'
    >>> w = md.enrich(c, 110.0)
    >>> w.name, w.image, dict(w.labels), md.settled(c)
    ('web-1', 'nginx:1.25', {'env': 'prod'}, True)
    """

    def __init__(self, root: Path = Path("/"), retry_after: float = 10.0, pods: PodIndex | None = None,
                 warn_after: float = 60.0) -> None:
        self.root = root
        self.retry_after = retry_after
        self.warn_after = warn_after
        #: the kubelet's pods (names, namespaces, labels), on Kubernetes nodes
        self.pods = pods
        self._found: dict[str, _Found] = {}
        self._tried: dict[str, float] = {}
        self._first: dict[str, float] = {}
        self._warned: set[str] = set()

    def enrich(self, c: Container, now: float) -> Container:
        """``c`` with the name, image, labels (and runtime, for ``cri``) its state gives.

        Returns ``c`` itself while nothing is known; ``now`` (any clock, in
        seconds) paces the retries.

        Examples
        --------
        >>> from cgwatch.model import HOST
        >>> Metadata().enrich(HOST, 0.0) is HOST
        True
        """
        found = self._found.get(c.id)
        if found is None:
            found = self._look(c, now)
        if found is not None:
            labels = dict(found.labels) if found.labels else dict(c.labels)
            c = replace(c, runtime=found.runtime, name=found.name or c.name, image=found.image or c.image,
                        labels=labels)
        return self._with_pod(c) if self.pods is not None and c.pod else c

    def _with_pod(self, c: Container) -> Container:
        """``c`` with its pod's labels (and, when the runtime did not name it, its
        ``<namespace>/<pod>/<container>`` name) from the kubelet."""
        assert self.pods is not None
        hit = self.pods.container(c.id)
        pod = hit[0] if hit is not None else self.pods.pod(c.pod)
        if pod is None:
            return c
        labels = {**pod.labels, **c.labels, _NS: pod.namespace, _POD: pod.name}
        name = c.name
        if hit is not None and hit[1]:
            labels[_CTR] = hit[1]
            if name == c.id[:12]:
                name = f"{pod.namespace}/{pod.name}/{hit[1]}"
        return replace(c, name=name, labels=labels)

    def settled(self, c: Container) -> bool:
        """True when :meth:`enrich` will never change ``c`` again.

        Examples
        --------
        >>> from cgwatch.model import Container
        >>> Metadata().settled(Container(id="cron.service", name="cron.service", runtime="systemd"))
        True
        """
        if self.pods is not None and c.pod and self.pods.pod(c.pod) is None:
            return False          # the kubelet has not listed its pod yet
        return c.runtime not in _READERS or c.id in self._found

    def may_change(self, c: Container, now: float) -> bool:
        """Whether :meth:`enrich` at ``now`` may give other than ``c``: not settled, and
        its state due for another look (or its pod's labels may have come). Cheaper
        than calling it for every lookup of a container that stays unnamed.

        Examples
        --------
        >>> from cgwatch.model import Container
        >>> md, c = Metadata(Path("/nonexistent"), retry_after=10.0), Container(id="ab" * 32, name="x", runtime="docker")
        >>> md.may_change(c, 100.0), md.enrich(c, 100.0) is c, md.may_change(c, 105.0), md.may_change(c, 110.0)
        (True, True, False, True)
        """
        if self.settled(c):
            return False
        return bool(self.pods is not None and c.pod) or self._due(c.id, now)

    def _due(self, cid: str, now: float) -> bool:
        """Whether the state of ``cid`` may be looked for again at ``now``: never tried, or
        long enough since the last try, which is ``retry_after`` at first and then as long
        as the id has stayed unnamed, up to ``warn_after`` (a runtime whose state is not
        where we look is not asked 500 times a minute); a clock that went back makes it due.

        >>> md = Metadata(Path("/nonexistent"), retry_after=10.0, warn_after=60.0)
        >>> c = Container(id="ab" * 32, name="x", runtime="docker")
        >>> [t for t in range(0, 300) if md.may_change(c, t) and md.enrich(c, t) is c]
        [0, 10, 20, 40, 80, 140, 200, 260]
        """
        last = self._tried.get(cid)
        if last is None:
            return True
        pace = min(max(self.retry_after, last - self._first.get(cid, last)), max(self.retry_after, self.warn_after))
        return not 0 <= now - last < pace

    def forget(self, cid: str) -> None:
        """Drop what is cached for a container id (call when it stopped).

        Examples
        --------
        >>> Metadata().forget("gone")
        """
        self._found.pop(cid, None)
        self._tried.pop(cid, None)
        self._first.pop(cid, None)
        self._warned.discard(cid)

    def _look(self, c: Container, now: float) -> _Found | None:
        """Read the state files for ``c`` unless it was tried too recently."""
        readers = _READERS.get(c.runtime)
        if not readers or not self._due(c.id, now):
            return None
        self._tried[c.id] = now
        first = self._first.setdefault(c.id, now)
        for reader in readers:
            try:
                found = reader(self.root, c)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
                self._warn(c, f"cannot read {c.runtime} metadata of container {c.id[:12]}: {e}")
                return None
            if found is not None:
                self._found[c.id] = found
                self._tried.pop(c.id, None)
                self._first.pop(c.id, None)
                return found
        if now - first >= self.warn_after:
            self._warn(c, f"no {c.runtime} metadata for container {c.id[:12]} after {now - first:.0f}s "
                          f"(is the runtime running, is its state under {self.root}?); it is named by its id")
        return None

    def _warn(self, c: Container, message: str) -> None:
        """Log one warning per id that stays unnamed."""
        if c.id not in self._warned:
            self._warned.add(c.id)
            log.warning("%s", message)


def _load(path: Path) -> Any | None:
    """Parsed JSON at ``path``; None when it does not exist (yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _object(value: Any, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object (None → empty), else ValueError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _strings(value: Any, what: str) -> dict[str, str]:
    """A string → string map from a JSON object, dropping non-string values."""
    return {str(k): v for k, v in _object(value, what).items() if isinstance(v, str)}


def _kube(ns: str, pod: str, ctr: str, image: str, labels: Mapping[str, str], runtime: str) -> _Found:
    """A Kubernetes container: ``<namespace>/<pod>/<container>`` and the pod keys."""
    out = dict(labels)
    out.update({_NS: ns, _POD: pod, _CTR: ctr})
    return _Found(runtime, f"{ns}/{pod}/{ctr}", image, out)


def _docker(root: Path, c: Container) -> _Found | None:
    """docker's ``config.v2.json`` (cri-dockerd's pods included)."""
    data = _object(_load(root / "var/lib/docker/containers" / c.id / "config.v2.json"), "config.v2.json")
    if not data:
        return None
    config = _object(data.get("Config"), "Config")
    image = str(config.get("Image") or "")
    labels = _strings(config.get("Labels"), "Config.Labels")
    if _POD in labels and _NS in labels:
        ctr = labels.get(_CTR, "POD")
        return _kube(labels[_NS], labels[_POD], ctr, image, labels, "docker")
    name = str(data.get("Name") or "").lstrip("/")
    return _Found("docker", name, image, labels)


def _containerd(root: Path, c: Container) -> _Found | None:
    """containerd CRI: the OCI spec's ``io.kubernetes.cri.*`` annotations."""
    path = root / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / c.id / "config.json"
    spec = _object(_load(path), "config.json")
    if not spec:
        return None
    notes = _strings(spec.get("annotations"), "annotations")
    ns, pod = notes.get(_CRI + "sandbox-namespace", ""), notes.get(_CRI + "sandbox-name", "")
    image = notes.get(_CRI + "image-name", "")
    if not (ns and pod):
        return _Found("containerd", "", image, {})
    sandbox = notes.get(_CRI + "container-type") == "sandbox"
    ctr = "POD" if sandbox else notes.get(_CRI + "container-name", "")
    return _kube(ns, pod, ctr, image, {}, "containerd")


def _crio(root: Path, c: Container) -> _Found | None:
    """CRI-O: the container's ``userdata/config.json`` annotations."""
    for base in ("run", "var/lib"):
        path = root / base / "containers/storage/overlay-containers" / c.id / "userdata/config.json"
        spec = _object(_load(path), "config.json")
        notes = _strings(spec.get("annotations"), "annotations")
        if _POD in notes:
            labels = _strings(json.loads(notes.get(_CRIO + "Labels") or "{}"), "cri-o Labels")
            image = notes.get(_CRIO + "ImageName") or notes.get(_CRIO + "Image", "")
            ctr = notes.get(_CTR) or labels.get(_CTR) or "POD"
            return _kube(notes.get(_NS, ""), notes[_POD], ctr, image, labels, "cri-o")
    return None


def _podman(root: Path, c: Container) -> _Found | None:
    """podman: libpod's database of the root or the rootless user's storage.

    A storage without any database (another libpod ``static_dir``) falls back
    to ``containers.json``, which names the container but has no labels.
    """
    for storage in _podman_storages(root, c):
        dbs = [storage / "libpod" / n for n in ("bolt_state.db", "db.sql")]
        dbs = [db for db in dbs if db.exists()]
        for db in dbs:
            raw = boltdb.get(db, b"ctr", c.id.encode(), b"config") if db.suffix == ".db" else _sqlite_config(db, c.id)
            if raw is not None:
                return _podman_config(_object(json.loads(raw), f"{db.name}: config of {c.id[:12]}"))
        if not dbs:
            found = _podman_storage_entry(storage, c)
            if found is not None:
                return found
    return None


def _podman_config(cfg: dict[str, Any]) -> _Found:
    """libpod's ``ContainerConfig`` JSON: ``name``, ``rootfsImageName``, ``labels``.

    The OCI annotations in ``spec`` only tell a Kubernetes-style container
    (``podman kube play``) its pod; they are never labels.
    """
    name = str(cfg.get("name") or "")
    image = str(cfg.get("rootfsImageName") or cfg.get("RawImageName") or "")
    labels = _strings(cfg.get("labels"), "labels")
    notes = _strings(_object(cfg.get("spec"), "spec").get("annotations"), "spec.annotations")
    kube = {**notes, **labels}
    if _POD in kube and _NS in kube:
        return _kube(kube[_NS], kube[_POD], kube.get(_CTR, name), image, labels, "podman")
    return _Found("podman", name, image, labels)


def _podman_storage_entry(storage: Path, c: Container) -> _Found | None:
    """containers/storage's ``containers.json`` entry for ``c``: name and image only."""
    entries = _load(storage / "overlay-containers/containers.json")
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise ValueError("containers.json is not a JSON list")
    entry = next((e for e in entries if isinstance(e, dict) and e.get("id") == c.id), None)
    if entry is None:
        return None
    names = entry.get("names") or []
    meta = _object(json.loads(entry.get("metadata") or "{}"), "metadata")
    image = str(meta.get("image-name") or entry.get("image") or "")
    name = str(names[0]) if isinstance(names, list) and names else str(meta.get("name") or "")
    return _Found("podman", name, image, {})


def _sqlite_config(path: Path, cid: str) -> str | None:
    """libpod's SQLite ``ContainerConfig.JSON`` for ``cid``; None when absent or busy.

    Read-only; where SQLite cannot open it so (a WAL database on a read-only
    mount, as under ``ProtectSystem=strict``) it is read as immutable, which
    sees what was checkpointed into the main file: a container younger than
    that is a miss, retried.
    """
    for mode in ("mode=ro", "immutable=1"):
        try:
            con = sqlite3.connect(f"{path.as_uri()}?{mode}", uri=True, timeout=0.05)
            try:
                row = con.execute("SELECT JSON FROM ContainerConfig WHERE ID = ?", (cid,)).fetchone()
            finally:
                con.close()
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                return None
            if mode == "mode=ro" and "unable to open" in str(e):
                continue
            raise ValueError(f"{path}: {e}") from None
        except sqlite3.Error as e:
            raise ValueError(f"{path}: {e}") from None
        if row is None:
            return None
        if not isinstance(row[0], (str, bytes)):
            raise ValueError(f"{path}: ContainerConfig.JSON of {cid[:12]} is not text")
        return row[0] if isinstance(row[0], str) else row[0].decode("utf-8")
    return None


def _podman_storages(root: Path, c: Container) -> list[Path]:
    """Where podman keeps storage for ``c``: root's, or its rootless user's."""
    m = _USER_SLICE.search(c.cgroup)
    home = _home(root, int(m.group(1))) if m else None
    if home is None:
        return [root / "var/lib/containers/storage"]
    return [root / home.lstrip("/") / ".local/share/containers/storage", root / "var/lib/containers/storage"]


def _home(root: Path, uid: int) -> str | None:
    """The home directory of ``uid`` in ``root``'s ``etc/passwd``."""
    try:
        lines = (root / "etc/passwd").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5]
    return None


#: Readers tried, in order, for each runtime; ``cri`` is "a CRI runtime, which one unknown".
_READERS: dict[str, tuple[Callable[[Path, Container], _Found | None], ...]] = {
    "docker": (_docker,),
    "containerd": (_containerd,),
    "cri-o": (_crio,),
    "podman": (_podman,),
    "cri": (_containerd, _crio, _docker),
}
