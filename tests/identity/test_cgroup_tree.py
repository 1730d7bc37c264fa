"""find_cgroup2_root on real mountinfo texts; CgroupTree on a directory tree in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgwatch.identity import cgroups
from cgwatch.identity.cgroups import CgroupTree, cgroup2_mounts, find_cgroup2_root, walk

# Debian 12 / Ubuntu 22.04+ / RHEL 9: systemd, cgroup v2 only.
UNIFIED = """\
22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 28 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4012345k,nr_inodes=1003086,mode=755,inode64
28 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw,errors=remount-ro
26 22 0:6 / /sys/kernel/security rw,nosuid,nodev,noexec,relatime shared:8 - securityfs securityfs rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 22 0:27 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
32 22 0:28 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:11 - bpf bpf rw,mode=700
1203 28 0:26 / /var/lib/kubelet/pods/x/volumes/cg rw,relatime shared:9 - cgroup2 cgroup2 rw
"""

# Ubuntu 20.04 / Debian 10 / RHEL 8: systemd hybrid, v1 controllers + cgroup2 at unified/.
HYBRID = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
34 25 0:29 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
35 34 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
36 34 0:31 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
39 34 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
40 34 0:35 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpu,cpuacct
41 34 0:36 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
"""

# Inside a container with a cgroup namespace: the bind of a sub-tree, no optional fields.
CONTAINER_VIEW = """\
600 599 0:26 /../../.. /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
601 599 0:26 / /mnt/cg\\040root rw,relatime - cgroup2 cgroup2 rw
"""

# Legacy v1 only (CentOS 7): no cgroup2 at all.
LEGACY = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
34 25 0:29 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
39 34 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (UNIFIED, Path("/sys/fs/cgroup")),
        (HYBRID, Path("/sys/fs/cgroup/unified")),
        (CONTAINER_VIEW, Path("/mnt/cg root")),
        (LEGACY, None),
        ("", None),
    ],
)
def test_find_cgroup2_root(tmp_path: Path, text: str, expected: Path | None) -> None:
    f = tmp_path / "mountinfo"
    f.write_text(text)
    assert find_cgroup2_root(str(f)) == expected


def test_find_cgroup2_root_missing_file(tmp_path: Path) -> None:
    assert find_cgroup2_root(str(tmp_path / "nope")) is None


def test_cgroup2_mounts_skips_optional_fields_and_odd_lines() -> None:
    assert cgroup2_mounts(UNIFIED) == [("/", "/sys/fs/cgroup"), ("/", "/var/lib/kubelet/pods/x/volumes/cg")]
    assert cgroup2_mounts("garbage\n1 2 3\n") == []


def test_this_host_has_a_cgroup2_mount() -> None:
    root = find_cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 mounted here")
    assert (root / "cgroup.procs").exists()


@pytest.fixture()
def top(tmp_path: Path) -> Path:
    for d in ("system.slice/cron.service", f"system.slice/docker-{'ab' * 32}.scope/init", "user.slice"):
        (tmp_path / "cg" / d).mkdir(parents=True)
    (tmp_path / "cg" / "cgroup.procs").write_text("1\n")
    (tmp_path / "cg" / "system.slice" / "cpu.stat").write_text("usage_usec 1\n")
    return tmp_path / "cg"


def ino(p: Path) -> int:
    return os.stat(p).st_ino


def test_walk_maps_inodes_to_relative_paths(top: Path) -> None:
    paths = walk(top)
    assert paths[ino(top)] == ""
    assert paths[ino(top / "system.slice/cron.service")] == "system.slice/cron.service"
    assert sorted(paths.values()) == sorted([
        "", "system.slice", f"system.slice/docker-{'ab' * 32}.scope",
        f"system.slice/docker-{'ab' * 32}.scope/init", "system.slice/cron.service", "user.slice",
    ])


def test_refresh_reports_added_then_removed(top: Path) -> None:
    tree = CgroupTree(top)
    added, removed = tree.refresh()
    assert len(added) == 6 and removed == {}
    assert tree.refresh() == ({}, {})
    cron = ino(top / "system.slice/cron.service")
    (top / "system.slice/cron.service").rmdir()
    (top / "system.slice/nginx.service").mkdir()
    added, removed = tree.refresh()
    assert removed == {cron: "system.slice/cron.service"}
    assert added == {ino(top / "system.slice/nginx.service"): "system.slice/nginx.service"}


def test_path_is_cached_and_rewalks_at_most_once_per_min_refresh(top: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = CgroupTree(top, min_refresh=1.0)
    tree.refresh()
    walks = []
    real = cgroups.walk
    monkeypatch.setattr(cgroups, "walk", lambda root: walks.append(root) or real(root))
    assert tree.path(ino(top / "user.slice"), 0.0) == "user.slice"
    assert walks == []  # known: no walk
    assert tree.path(42, 10.0) is None and tree.path(43, 10.5) is None
    assert len(walks) == 1  # the second unknown id came too soon
    (top / "user.slice/user-1000.slice").mkdir()
    new = ino(top / "user.slice/user-1000.slice")
    assert tree.path(new, 10.9) is None
    assert tree.path(new, 11.0) == "user.slice/user-1000.slice"
    assert len(walks) == 2
    # what path()'s own walk saw is still reported by the next refresh()
    assert tree.refresh() == ({new: "user.slice/user-1000.slice"}, {})


def test_a_clock_that_went_back_does_not_block_rewalks(top: Path) -> None:
    tree = CgroupTree(top)
    tree.path(42, 1000.0)
    (top / "late").mkdir()
    assert tree.path(ino(top / "late"), 5.0) == "late"


def test_added_then_removed_between_refreshes_is_not_reported(top: Path) -> None:
    tree = CgroupTree(top)
    tree.refresh()
    (top / "blip").mkdir()
    assert tree.path(ino(top / "blip"), 0.0) == "blip"
    (top / "blip").rmdir()
    assert tree.refresh() == ({}, {})


def test_rename_is_removed_and_added(top: Path) -> None:
    tree = CgroupTree(top)
    tree.refresh()
    i = ino(top / "user.slice")
    (top / "user.slice").rename(top / "users.slice")
    assert tree.refresh() == ({i: "users.slice"}, {i: "user.slice"})


def test_directories_vanishing_mid_walk_are_skipped(top: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.scandir
    victim = top / "system.slice" / "cron.service"

    def racing_scandir(path: str) -> Iterator[os.DirEntry[str]]:
        if Path(path) == victim:  # listed by its parent, gone before we open it
            victim.rmdir()
        return real(path)

    monkeypatch.setattr(cgroups.os, "scandir", racing_scandir)
    paths = walk(top)
    assert "system.slice/cron.service" in paths.values()  # its parent saw it
    assert "user.slice" in paths.values()  # and the walk went on


def test_missing_root_is_an_empty_tree(tmp_path: Path) -> None:
    tree = CgroupTree(tmp_path / "gone")
    assert tree.refresh() == ({}, {})
    assert tree.path(1, 0.0) is None
    assert len(tree) == 0
