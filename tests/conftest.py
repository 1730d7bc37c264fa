"""Shared fixtures: real cgroups named like container runtimes name them.

Tests marked ``bpf`` load real BPF programs into this kernel. Where the host
cannot (not root, no BCC), they skip; under ``CI=true`` a skipped ``bpf``
test fails the run, because a kernel test that did not run proves nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from cgwatch.identity.cgroups import find_cgroup2_root

# CI machines are shared: no property test may fail because an example or its data took long
settings.register_profile("cgwatch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("cgwatch")


def bpf_unavailable() -> str | None:
    """Why this host cannot run the ``bpf`` tests, or None."""
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "needs BCC (python3-bpfcc)"
    if find_cgroup2_root() is None:
        return "needs a cgroup2 mount"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = bpf_unavailable()
    if why is None:
        return
    for item in items:
        if "bpf" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"bpf test: {why}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and "bpf" in item.keywords and os.environ.get("CI") == "true":
        rep.outcome = "failed"
        rep.longrepr = f"bpf test skipped under CI=true: {rep.longrepr}"


def hexid() -> str:
    """A 64-hex container id, fresh for each test."""
    return secrets.token_hex(32)


def pod_uid() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def v1_memory_parent() -> Path | None:
    """This process's own v1 memory cgroup (test limits go beneath it)."""
    base = Path("/sys/fs/cgroup/memory")
    if not (base / "memory.limit_in_bytes").exists():
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            return base / path.lstrip("/")
    return None


@dataclass
class FakeContainer:
    """A cgroup2 directory (+ optional v1 memory cgroup) with real processes in it."""

    root: Path
    rel: str
    v1_memory: Path | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.root / self.rel

    @property
    def cgid(self) -> int:
        return os.stat(self.dir).st_ino

    def run(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this container (moved in before it execs)."""
        targets = [self.dir / "cgroup.procs"]
        if self.v1_memory is not None:
            targets.append(self.v1_memory / "cgroup.procs")

        def enter() -> None:
            for t in targets:
                with open(t, "w") as f:
                    f.write("0")

        p = subprocess.Popen(argv, preexec_fn=enter, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def usage_usec(self) -> int:
        """The kernel's own CPU accounting for this cgroup (cpu.stat usage_usec)."""
        for line in (self.dir / "cpu.stat").read_text().splitlines():
            k, v = line.split()
            if k == "usage_usec":
                return int(v)
        raise AssertionError("no usage_usec in cpu.stat")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
        self.procs.clear()
        for d in (self.v1_memory, self.dir):
            if d is not None:
                _rmdir_tree(d)


def _rmdir_tree(top: Path) -> None:
    """rmdir a cgroup and its children, deepest first, waiting for dying tasks."""
    if not top.exists():
        return
    dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for d in [*dirs, top]:
        for _ in range(100):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


@pytest.fixture
def cgroups() -> Iterator[callable]:  # type: ignore[valid-type]
    """make(rel_path, memory_limit=None) -> FakeContainer under the real cgroup2 mount.

    Parent directories it creates (``system.slice`` ...) are removed afterwards
    unless they existed before.
    """
    root = find_cgroup2_root()
    assert root is not None
    made: list[FakeContainer] = []
    parents: list[Path] = []

    def make(rel: str, memory_limit: int | None = None) -> FakeContainer:
        path = root / rel
        for parent in reversed(path.parents):
            if parent != root and root in parent.parents and not parent.exists():
                parent.mkdir()
                parents.append(parent)
        path.mkdir()
        v1 = None
        if memory_limit is not None:
            base = v1_memory_parent()
            if base is None:   # unified host: the limit goes on the cgroup2 dir
                (path / "memory.max").write_text(str(memory_limit))
            else:
                v1 = base / f"cgwatch-test-{secrets.token_hex(4)}"
                v1.mkdir()
                (v1 / "memory.limit_in_bytes").write_text(str(memory_limit))
                try:
                    (v1 / "memory.swappiness").write_text("0")
                except OSError:
                    pass
        c = FakeContainer(root, rel, v1)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()
        for p in reversed(parents):
            _rmdir_tree(p)


def burner() -> list[str]:
    """A process that keeps one core busy."""
    return ["/bin/sh", "-c", "while :; do :; done"]


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


# --- real container engines (tests/engines.py) --------------------------------------------

def _engine_or_fail(make):  # type: ignore[no-untyped-def]
    """The engine, or a skip (a failure under CI=true, like a skipped bpf test)."""
    from tests.engines import EngineUnavailable

    if os.geteuid() != 0:
        pytest.skip("container engines need root")
    try:
        return make()
    except EngineUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"container engine unavailable under CI=true: {e}")
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def docker_daemons() -> Iterator[object]:
    """containerd + dockerd running (started here when they were not; stopped at the end)."""
    from tests.engines import DockerDaemons, logdir

    d = DockerDaemons(logdir())
    _engine_or_fail(d.ensure)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def docker(docker_daemons: object) -> Iterator[object]:
    """The real Docker engine with the test image imported; containers removed afterwards."""
    from tests.engines import docker_engine

    e = _engine_or_fail(docker_engine)
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture
def podman() -> Iterator[object]:
    """Real podman (cgroupfs manager, runc) with the test image imported."""
    from tests.engines import podman_engine

    e = _engine_or_fail(podman_engine)
    try:
        yield e
    finally:
        e.cleanup()
