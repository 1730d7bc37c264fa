"""Real container engines for the tests: Debian's docker.io and podman.

``make test`` installs ``docker.io`` (with containerd and runc), ``podman`` and
``busybox-static`` (scripts/setup.sh). :func:`docker` starts ``containerd`` and
``dockerd`` when they are not running (``--iptables=false --bridge=none``: this
machine has no network for containers) and stops what it started at the end of
the session. There is no image registry here, so the one image the tests run
is made on the spot: a busybox rootfs, ``docker import`` / ``podman import``.

Podman runs with ``--cgroup-manager cgroupfs --runtime runc``: its default
``crun`` refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported").

Every container a test starts is named with :func:`name` (a fresh prefix) and
removed by the fixture, whatever the test did.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

#: the image every runtime test runs: busybox-static and nothing else
IMAGE = "cgwatch-test/busybox:1"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "cat", "echo", "yes", "dd", "head", "true", "false", "ls", "kill", "seq", "tail")
PODMAN = ["podman", "--cgroup-manager", "cgroupfs", "--runtime", "runc"]


class EngineUnavailable(RuntimeError):
    """The engine cannot run here; the message says why."""


def wait_until(pred: Callable[[], object], timeout: float, what: str, step: float = 0.2) -> object:
    """``pred()``'s first truthy value, polled until ``timeout`` s have passed."""
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def rootfs_tar() -> Path:
    """A tar of a minimal rootfs: busybox-static and its applets."""
    if not Path(BUSYBOX).exists():
        raise EngineUnavailable(f"{BUSYBOX} is missing (Debian's busybox-static)")
    out = Path(tempfile.mkdtemp(prefix="cgw-rootfs-")) / "rootfs.tar"
    with tarfile.open(out, "w") as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for a in APPLETS:
            info = tarfile.TarInfo(f"bin/{a}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return out


def _run(argv: list[str], timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p


def name(prefix: str = "cgwt") -> str:
    """A fresh container name."""
    return f"{prefix}-{secrets.token_hex(3)}"


class Engine:
    """One container engine's CLI: run, inspect and remove containers."""

    def __init__(self, cli: list[str], runtime: str, run_args: tuple[str, ...] = ()) -> None:
        self.cli = cli
        self.run_args = run_args
        self.runtime = runtime          # what cgwatch calls it
        self.made: list[str] = []

    def __call__(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([*self.cli, *args], timeout=timeout, check=check)

    def import_image(self) -> None:
        if self("image", "inspect", IMAGE, check=False).returncode == 0:
            return
        tar = rootfs_tar()
        try:
            self("import", str(tar), IMAGE)
        finally:
            shutil.rmtree(tar.parent, ignore_errors=True)

    def run(self, *args: str, cmd: str = "sleep 3600", cname: str | None = None) -> str:
        """``run -d --network none [args] IMAGE sh -c cmd``; returns the full id."""
        cname = cname or name()
        self.made.append(cname)
        out = self("run", "-d", "--network", "none", "--name", cname, *self.run_args, *args, IMAGE, "sh", "-c", cmd)
        return out.stdout.strip().splitlines()[-1]

    def inspect(self, ref: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self("inspect", ref).stdout)[0]  # type: ignore[no-any-return]

    def pid(self, ref: str) -> int:
        return int(self.inspect(ref)["State"]["Pid"])

    def cleanup(self) -> None:
        for n in self.made:
            self("rm", "-f", n, check=False, timeout=60)
        self.made.clear()


def _running(pidfile: str, proc: str) -> bool:
    try:
        pid = int(Path(pidfile).read_text().strip())
        return Path(f"/proc/{pid}/comm").read_text().strip() == proc
    except (OSError, ValueError):
        return False


class DockerDaemons:
    """containerd and dockerd, started here when they are not running."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[subprocess.Popen[bytes]] = []

    def ensure(self) -> None:
        for tool in ("dockerd", "containerd", "docker", "runc"):
            if shutil.which(tool) is None:
                raise EngineUnavailable(f"{tool} is not installed (Debian's docker.io)")
        if _run(["docker", "version", "--format", "{{.Server.Version}}"], check=False, timeout=30).returncode == 0:
            return
        if not Path("/run/containerd/containerd.sock").exists() or not _running(
                "/run/containerd/containerd.pid", "containerd"):
            self._start(["containerd"], "containerd")
            wait_until(lambda: Path("/run/containerd/containerd.sock").exists(), 60, "containerd's socket")
        self._start(["dockerd", "--iptables=false", "--bridge=none", "--ip-masq=false",
                     "--containerd=/run/containerd/containerd.sock"], "dockerd")
        wait_until(lambda: _run(["docker", "version"], check=False, timeout=30).returncode == 0, 90,
                   f"dockerd to answer (log: {self.logdir / 'dockerd.log'})", step=0.5)

    def _start(self, argv: list[str], tag: str) -> None:
        log = open(self.logdir / f"{tag}.log", "ab")  # noqa: SIM115 - the daemon keeps it
        self.started.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        for p in reversed(self.started):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.started.clear()


def docker_engine() -> Engine:
    e = Engine(["docker"], "docker")
    e.import_image()
    return e


def podman_engine() -> Engine:
    if shutil.which("podman") is None:
        raise EngineUnavailable("podman is not installed")
    if shutil.which("runc") is None:
        raise EngineUnavailable("runc is not installed")
    # podman asks for rlimits above this machine's hard limits (nofile, nproc): runc refuses
    e = Engine(PODMAN, "podman", ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"))
    e.import_image()
    return e


def logdir() -> Path:
    d = Path(os.environ.get("CGW_ENGINE_LOGS", tempfile.gettempdir())) / "cgwatch-engines"
    d.mkdir(parents=True, exist_ok=True)
    return d
