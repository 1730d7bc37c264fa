"""Identity against real docker and podman: names, images and labels as users set them.

Everything is checked through cgwatch's own Resolver, reading the host's real
state (docker's ``config.v2.json``, podman 4's libpod BoltDB) and the real
cgroup tree, the way ``cgwatch run`` does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from cgwatch.identity import CgroupTree, Metadata, Resolver, find_cgroup2_root, identify
from cgwatch.model import HOST, Container
from cgwatch.rules.load import load_rules
from tests.engines import IMAGE, Engine, name, wait_until

pytestmark = pytest.mark.bpf

ENGINES = ["docker", "podman"]
#: what podman writes as OCI annotations; none of it is a label
ANNOTATION_PREFIXES = ("io.container.manager", "io.podman.annotations.", "org.opencontainers.", "io.kubernetes.cri-o.")


def cgroup2() -> Path:
    root = find_cgroup2_root()
    assert root is not None
    return root


def resolver() -> Resolver:
    return Resolver(CgroupTree(cgroup2()), Metadata(Path("/")))


def start(engine: Engine, *labels: str) -> str:
    """A container sleeping in its own cgroup, with ``labels`` (``k=v``); its full id.

    ``--stop-signal KILL``: busybox ``sh`` as pid 1 ignores SIGTERM, and podman
    would wait 10 s for it at every removal."""
    args = [a for kv in labels for a in ("--label", kv)]
    return engine.run("--stop-signal", "KILL", *args, cmd="sleep 600")


def cgroup_of(engine: Engine, cid: str) -> str:
    """The container's cgroup2 path (no leading slash), from its init process."""
    pid = engine.pid(cid)
    own = [ln.split(":", 2)[2].strip() for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
           if ln.startswith("0::")]
    return own[0].strip("/")


def expected(engine: Engine, cid: str) -> tuple[str, str, dict[str, str]]:
    """(name, image, labels) as the engine's own ``inspect`` shows them."""
    info = engine.inspect(cid)
    image = info["Config"]["Image"] if engine.runtime == "docker" else info["ImageName"]
    return info["Name"].lstrip("/"), image, dict(info["Config"]["Labels"] or {})


def named(r: Resolver, cid: str) -> Container | None:
    """``cid`` as the resolver knows it after a refresh, once it has a name."""
    r.refresh(time.monotonic())
    c = next((c for c in r.containers() if c.id == cid), None)
    return c if c is not None and c.name != cid[:12] else None


def check(engine: Engine, c: Container, cid: str) -> None:
    want_name, want_image, want_labels = expected(engine, cid)
    assert (c.id, c.runtime, c.cgroup) == (cid, engine.runtime, cgroup_of(engine, cid))
    assert (c.name, c.image) == (want_name, want_image)
    assert dict(c.labels) == want_labels
    assert c.labels.get("tier") == "batch"
    assert not [k for k in c.labels if k.startswith(ANNOTATION_PREFIXES)]


@pytest.mark.parametrize("which", ENGINES)
def test_name_image_labels_before_and_after_the_first_refresh(which: str, request: pytest.FixtureRequest) -> None:
    engine: Engine = request.getfixturevalue(which)
    before = start(engine, "tier=batch", "team=data")
    r = resolver()
    r.refresh(time.monotonic())
    check(engine, wait_until(lambda: named(r, before), 60, f"{which} container {before[:12]} named"), before)

    after = start(engine, "tier=batch")
    check(engine, wait_until(lambda: named(r, after), 60, f"{which} container {after[:12]} named"), after)

    cgid = os.stat(cgroup2() / cgroup_of(engine, after)).st_ino
    assert r.container(cgid, time.monotonic()).name == expected(engine, after)[0]


def test_runtime_paths_are_recognised(docker: Engine, podman: Engine) -> None:
    d = start(docker)
    p = start(podman)
    assert cgroup_of(docker, d) == f"docker/{d}"            # docker's cgroupfs driver
    assert cgroup_of(podman, p) == f"libpod_parent/libpod-{p}"          # podman --cgroup-manager cgroupfs
    assert (identify(cgroup_of(docker, d)).runtime, identify(cgroup_of(docker, d)).id) == ("docker", d)
    assert (identify(cgroup_of(podman, p)).runtime, identify(cgroup_of(podman, p)).id) == ("podman", p)


def test_rule_selects_the_podman_container_by_label(podman: Engine, tmp_path: Path) -> None:
    rules_file = tmp_path / "batch.yaml"
    rules_file.write_text(
        "rules:\n"
        "  - {name: batch-exec, event: exec, severity: info, select: {labels: {tier: batch}}}\n"
        "  - {name: web-exec, event: exec, severity: info, select: {labels: {tier: web}}}\n")
    rules, errors = load_rules([rules_file])
    assert not errors, [e.format() for e in errors]
    batch, web = rules

    r = resolver()
    r.refresh(time.monotonic())
    cid = start(podman, "tier=batch")
    c = wait_until(lambda: named(r, cid), 60, f"podman container {cid[:12]} named")
    assert batch.select.matches(c)
    assert not web.select.matches(c)


@pytest.mark.parametrize("which", ENGINES)
def test_runtime_state_absent_keeps_the_id_with_one_warning(
        which: str, request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As if the runtime's state were not where cgwatch looks (runtime gone, another root)."""
    engine: Engine = request.getfixturevalue(which)
    cid = start(engine, "tier=batch")
    r = Resolver(CgroupTree(cgroup2()), Metadata(tmp_path, retry_after=0.0, warn_after=0.0))
    with caplog.at_level(logging.WARNING, logger="cgwatch.identity"):
        for _ in range(5):
            r.refresh(time.monotonic())
            c = next(c for c in r.containers() if c.id == cid)
            assert (c.name, c.runtime, dict(c.labels)) == (cid[:12], engine.runtime, {})
    mine = [rec for rec in caplog.records if rec.name == "cgwatch.identity" and cid[:12] in rec.getMessage()]
    assert len(mine) == 1


@pytest.mark.parametrize("which", ENGINES)
def test_container_gone_before_it_was_named(which: str, request: pytest.FixtureRequest) -> None:
    engine: Engine = request.getfixturevalue(which)
    r = resolver()
    r.refresh(time.monotonic())
    cid = start(engine, "tier=batch")
    path = cgroup_of(engine, cid)
    cgid = os.stat(cgroup2() / path).st_ino
    engine("rm", "-f", cid)
    wait_until(lambda: not (cgroup2() / path).exists(), 60, f"{path} removed")
    started, stopped = r.refresh(time.monotonic())
    assert cid not in {c.id for c in started}
    assert r.container(cgid, time.monotonic()) is HOST
    assert Metadata(Path("/")).enrich(identify(path), time.monotonic()).name == cid[:12]


def test_podman_named_right_while_podman_writes_its_database(podman: Engine) -> None:
    """Other podman commands rewrite the BoltDB while cgwatch reads it: a read is
    the right name or a miss (the id), never another name, never an error."""
    cid = start(podman, "tier=batch")
    path = cgroup_of(podman, cid)
    want = expected(podman, cid)
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(6):
                n = name("cgwt-churn")
                podman("create", "--network", "none", "--name", n, "--label", "tier=churn",
                       *podman.run_args, IMAGE, "true")
                podman("rm", "-f", n)
        except BaseException as e:          # reported below, in the test's thread
            errors.append(e)

    writer = threading.Thread(target=churn)
    writer.start()
    seen: dict[str, int] = {}
    while writer.is_alive():
        c = Metadata(Path("/")).enrich(identify(path), 0.0)
        got = (c.name, c.image, dict(c.labels)) if c.name != cid[:12] else ("<id>",)
        seen[repr(got)] = seen.get(repr(got), 0) + 1
    writer.join()
    assert not errors, errors
    assert set(seen) <= {repr(want), repr(("<id>",))}, seen
    assert repr(want) in seen, seen
