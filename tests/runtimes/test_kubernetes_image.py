"""The Kubernetes image, built and run for real: packaging/kubernetes/Dockerfile built by the
local dockerd with no registry, then run the way daemonset.yaml runs it (host PID namespace,
capabilities dropped but those of :mod:`cgwatch.requirements`, seccomp unconfined, read-only
root, the host paths of ``HOST_PATHS`` with the runtimes' state under ``/host``, the config,
rules and token mounted as the ConfigMaps and Secret are). From inside it, cgwatch must name
the docker containers beside it and deliver an alert for one to a webhook on host loopback.

How it gets there without a registry:

- **base**: the Dockerfile's ``FROM`` (:data:`BASE`), made when missing with ``mmdebstrap
  --variant=minbase bookworm`` from this host's own Debian mirrors (its apt sources) and
  ``docker import``-ed under that tag, which keeps it.
- **image**: ``docker build --network host`` (dockerd has no bridge) from a tar of exactly
  the files the Dockerfile copies, tagged by their hash: an unchanged tree reuses the image,
  so only a fresh machine pays for the build. pip inside the build reads a wheelhouse that
  this host's pip fills (``PIP_FIND_LINKS``): the build's own pip cannot verify PyPI's
  certificate behind a TLS-inspecting proxy whose CA only this host trusts.
- **run**: podman (with runc, as tests/engines.py runs it), flag for flag what ``docker run``
  would take: Debian 12's docker 20.10 refuses ``--cap-add BPF`` ("unknown capability"), so
  it cannot run the DaemonSet's capability set (containerd and podman can).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from cgwatch.requirements import CAPABILITIES, HOST_PATHS, bare
from tests.engines import IMAGE, name, wait_until
from tests.receiver import Receiver, free_port

pytestmark = pytest.mark.bpf

ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "packaging" / "kubernetes"
DOCKERFILE = "packaging/kubernetes/Dockerfile"
#: what the image is built from: the Dockerfile and what it COPYs (its tag hashes these)
INPUTS = (DOCKERFILE, "pyproject.toml", "README.md", "daemon", "bpf", "rules")
SUITE = "bookworm"
#: the Dockerfile's base: pulled where there is a registry, made here from Debian's packages
#: under the same tag when missing (and kept: only a fresh machine makes it)
BASE = re.search(r"^FROM (\S+)", (ROOT / DOCKERFILE).read_text(), re.M).group(1)  # type: ignore[union-attr]
REPO = "cgwatch-test/cgwatch-k8s"
HOST_ROOT = "/host"
#: what mmdebstrap leaves out, as debian:bookworm-slim does
SLIM = ("path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*")
PROPAGATION = {"HostToContainer": "rslave", "Bidirectional": "rshared"}


def unavailable(why: str) -> None:
    """Skip, or fail under CI=true (like a missing engine in tests/conftest.py)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"kubernetes image test cannot run under CI=true: {why}")
    pytest.skip(why)


def sh(argv: list[str], timeout: float = 120.0, **kw: Any) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{' '.join(argv[:4])}… failed ({p.returncode}): {p.stderr.strip()[-3000:]}"
    return p


# --- the manifests ------------------------------------------------------------------------

def manifest(kind: str, mname: str) -> dict[str, Any]:
    for path in sorted(KDIR.glob("*.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            if d and d["kind"] == kind and d["metadata"]["name"] == mname:
                return d  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} {mname} in {KDIR}")


def pod_container() -> dict[str, Any]:
    (c,) = manifest("DaemonSet", "cgwatch")["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


# --- the image ----------------------------------------------------------------------------

def context_files() -> list[str]:
    files: list[str] = []
    for top in INPUTS:
        p = ROOT / top
        if p.is_file():
            files.append(top)
            continue
        for f in p.rglob("*"):
            rel = f.relative_to(ROOT)
            if f.is_file() and not any(part == "__pycache__" or part.endswith(".egg-info") for part in rel.parts):
                files.append(rel.as_posix())
    return sorted(files)


def inputs_hash(files: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0" + (ROOT / f).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def context_tar(files: list[str]) -> bytes:
    buf = io.BytesIO()
    # GNU, not PAX: docker's CLI tells a context archive from a Dockerfile by the first 512 bytes
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in files:
            tar.add(ROOT / f, f)
    return buf.getvalue()


def apt_sources() -> list[str]:
    """``deb URI SUITE main`` for this host's Debian bookworm suites (one-line and deb822 files)."""
    out: list[str] = []
    d = Path("/etc/apt")
    for path in [d / "sources.list", *sorted((d / "sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for para in text.split("\n\n"):
                f = {k.strip().lower(): v.split() for k, _, v in
                     (ln.partition(":") for ln in para.splitlines() if ln and not ln.startswith("#"))}
                if "deb" in f.get("types", []) and "main" in f.get("components", []):
                    out += [f"deb {u} {s} main" for u in f.get("uris", []) for s in f.get("suites", [])
                            if s.split("-")[0] == SUITE]
        elif path.suffix == ".list":
            for ln in text.splitlines():
                w = [x for x in ln.split("#")[0].split() if not x.startswith("[")]
                if len(w) >= 4 and w[0] == "deb" and w[2].split("-")[0] == SUITE and "main" in w[3:]:
                    out.append(f"deb {w[1]} {w[2]} main")
    return list(dict.fromkeys(out))


def ensure_base(docker: Any) -> None:
    if docker("image", "inspect", BASE, check=False).returncode == 0:
        return
    if shutil.which("mmdebstrap") is None:
        unavailable("mmdebstrap is not installed (scripts/setup.sh --test installs it)")
    sources = apt_sources()
    if not sources:
        unavailable(f"this host has no Debian {SUITE} apt sources to make the base image from")
    argv = ["mmdebstrap", "--variant=minbase", "--quiet", *(f"--dpkgopt={o}" for o in SLIM), SUITE, "-", *sources]
    with tempfile.TemporaryFile() as log:
        strap = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        imp = subprocess.run(["docker", "import", "--change", 'CMD ["bash"]', "-", BASE], stdin=strap.stdout,
                             capture_output=True, text=True, timeout=900)
        strap.stdout.close()  # type: ignore[union-attr]
        rc = strap.wait(60)
        log.seek(0)
        err = log.read().decode(errors="replace")[-3000:]
    assert rc == 0 and imp.returncode == 0, f"mmdebstrap | docker import: {err} {imp.stderr}"


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wheelhouse(tmp: Path) -> Iterator[str]:
    """cgwatch's build and run dependencies, fetched by this host's pip and served on loopback."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wants = [*meta["build-system"]["requires"], "wheel", *meta["project"]["dependencies"]]
    sh([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(tmp),
        "--only-binary=:all:", *wants], timeout=600)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(tmp)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


def ensure_image(docker: Any, podman: Any, tmp: Path) -> str:
    """The image for this tree, in podman's store (built and moved there only when missing)."""
    files = context_files()
    tag = f"{REPO}:{inputs_hash(files)}"
    if podman("image", "inspect", tag, check=False).returncode == 0:
        print(f"kubernetes image: {tag} reused")
        return tag
    t0 = time.monotonic()
    if docker("image", "inspect", tag, check=False).returncode != 0:
        ensure_base(docker)
        t1 = time.monotonic()
        with wheelhouse(tmp / "wheels") as url:
            b = subprocess.run(["docker", "build", "--network", "host", "-f", DOCKERFILE,
                                "--build-arg", f"PIP_FIND_LINKS={url}", "--build-arg", "PIP_NO_INDEX=1",
                                "-t", tag, "-"],
                               input=context_tar(files), capture_output=True, timeout=1500)
            assert b.returncode == 0, f"docker build: {b.stdout.decode()[-3000:]}{b.stderr.decode()[-3000:]}"
        print(f"kubernetes image: base {t1 - t0:.0f}s, build {time.monotonic() - t1:.0f}s")
    t2 = time.monotonic()
    save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
    load = subprocess.run([*podman.cli, "load", "-q"], stdin=save.stdout, capture_output=True, text=True,
                          timeout=900)
    save.stdout.close()  # type: ignore[union-attr]
    assert save.wait(60) == 0 and load.returncode == 0, load.stderr
    print(f"kubernetes image: docker save | podman load {time.monotonic() - t2:.0f}s")
    for cli in (["docker"], podman.cli):     # older trees' images: each is ~1 GB
        have = sh([*cli, "images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
        stale = [i for i in have if i.rpartition(":")[0].endswith(REPO) and not i.endswith(tag)]
        if stale:
            subprocess.run([*cli, "rmi", *stale], capture_output=True, timeout=300)
    return tag


# --- the pod ------------------------------------------------------------------------------

def run_flags(state: Path, config: Path, rules: Path, auth: Path) -> list[str]:
    """``docker run`` flags for the DaemonSet's pod: capabilities and host paths from
    :mod:`cgwatch.requirements`, mount propagation from daemonset.yaml; the state dir is this
    test's own, config, rules and token take the places of the ConfigMaps and the Secret."""
    propagation = {m["mountPath"]: PROPAGATION[m["mountPropagation"]]
                   for m in pod_container()["volumeMounts"] if "mountPropagation" in m}
    flags = ["--network", "host", "--pid", "host", "--cap-drop", "ALL"]
    flags += [f for cap in bare(CAPABILITIES) for f in ("--cap-add", cap)]
    flags += ["--security-opt", "seccomp=unconfined", "--read-only", "--tmpfs", "/tmp"]
    for p in HOST_PATHS:
        dst = HOST_ROOT + p.path if p.host_root else p.path
        src = p.path if p.read_only else str(state)
        if not Path(src).exists():
            # the runtime makes an empty directory for a hostPath without a type: the same as none
            assert not p.required, f"{p.path} is required ({p.why}) and missing on this host"
            continue
        mode = ",".join(["ro" if p.read_only else "rw", *([propagation[dst]] if dst in propagation else [])])
        flags += ["-v", f"{src}:{dst}:{mode}"]
    flags += ["-v", f"{config}:/etc/cgwatch:ro", "-v", f"{rules}:/etc/cgwatch/rules.d:ro",
              "-v", f"{auth}:/etc/cgwatch/auth:ro"]
    return flags


def pod_config(tmp: Path, port: int, hook: int) -> tuple[Path, Path, Path, Path, str]:
    """The ConfigMaps' config and rules and a token, as the kubelet lays them out."""
    config, rules, auth, state = (tmp / d for d in ("config", "rules", "auth", "state"))
    for d in (config, rules, auth, state):
        d.mkdir()
    cfg = yaml.safe_load(manifest("ConfigMap", "cgwatch-config")["data"]["config.yaml"])
    del cfg["kubernetes"]                    # no kubelet here
    cfg["listen"] = f"127.0.0.1:{port}"      # host network: loopback only
    cfg["notify"] = {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{hook}/hook"}}
    (config / "config.yaml").write_text(yaml.safe_dump(cfg))
    # the kubelet makes the mount points of nested volumes inside a ConfigMap's volume
    # (pkg/volume/util/nested_volumes.go): the container's view of it is read-only
    for sub in ("rules.d", "auth"):
        (config / sub).mkdir()
    for key, text in manifest("ConfigMap", "cgwatch-rules")["data"].items():
        (rules / key).write_text(text)
    token, secret = secrets.token_hex(16), auth / Path(cfg["auth"]["token_file"]).name
    secret.write_text(token)
    secret.chmod(0o400)                      # the Secret's defaultMode
    return config, rules, auth, state, token


def get(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def test_the_image_runs_as_the_daemonset_names_docker_siblings_and_alerts(docker, podman, tmp_path: Path) -> None:
    tag = ensure_image(docker, podman, tmp_path)
    port, node = free_port(), f"node-{secrets.token_hex(2)}"
    with Receiver(free_port()) as hook:
        config, rules, auth, state, token = pod_config(tmp_path, port, hook.port)
        pod = name("cgwk8s")
        podman.made.append(pod)
        t0 = time.monotonic()
        # podman's --read-only also puts tmpfs on /run and /var/tmp; docker's (and a pod's) do not
        podman("run", "-d", "--name", pod, *podman.run_args, "--read-only-tmpfs=false",
               *run_flags(state, config, rules, auth), "-e", f"NODE_NAME={node}", tag)
        base = f"http://127.0.0.1:{port}"

        def logs() -> str:
            return podman("logs", pod, check=False).stderr[-4000:]

        def healthy() -> bool:
            running = podman("inspect", "-f", "{{.State.Running}}", pod, check=False).stdout.strip()
            assert running == "true", f"the pod's container stopped:\n{logs()}"
            return get(f"{base}/healthz")[0] == 200

        probe = pod_container()["startupProbe"]
        wait_until(healthy, probe["periodSeconds"] * probe["failureThreshold"], "/healthz (the startup probe)", 0.5)
        print(f"kubernetes image: healthy {time.monotonic() - t0:.0f}s after podman run")

        quiet = docker.run(cmd="sleep 3600")
        loop = docker.run("--restart", "always", cmd="sleep 1; exit 3")
        names = {docker.inspect(c)["Name"].lstrip("/") for c in (quiet, loop)}
        loop_name = docker.inspect(loop)["Name"].lstrip("/")

        def listed() -> list[dict[str, Any]]:
            status, body = get(f"{base}/api/v1/containers?runtime=docker", token)
            assert status == 200, body
            found = [c for c in json.loads(body)["containers"] if c["name"] in names]
            return found if len(found) == len(names) else []

        seen = wait_until(listed, 60, f"cgwatch to list {sorted(names)}", 0.5)
        assert all(c["image"] == IMAGE and c["metrics"] for c in seen), seen  # type: ignore[union-attr]
        assert get(f"{base}/api/v1/containers")[0] == 401                   # the Secret's token is in force
        status, metrics = get(f"{base}/metrics")                            # public, like the probes
        assert status == 200 and f'container="{loop_name}"' in metrics

        def crash_loop(alerts: list[dict[str, Any]]) -> bool:
            return any(a["rule"] == "crash-loop" and a["container"] == loop_name and a["state"] == "firing"
                       for a in alerts)

        assert hook.wait_for(crash_loop, 120), f"no crash-loop alert: {hook.alerts}\n{logs()}"
        [alert] = [a for a in hook.alerts if crash_loop([a])]
        assert (alert["host"], alert["runtime"], alert["image"]) == (node, "docker", IMAGE), alert
