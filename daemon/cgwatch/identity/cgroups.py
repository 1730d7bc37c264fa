"""Cgroup id → cgroup path, by walking the cgroup2 tree.

``bpf_get_current_cgroup_id()`` is the inode number of a task's **cgroup2**
directory, so a walk of the cgroup2 mount that notes each directory's inode
maps every id the BPF programs report to a path. ``os.scandir`` gives both the
entry type and the inode from ``readdir`` itself: the walk makes no ``stat``
call except one for the root directory.

The cgroup2 mount is ``/sys/fs/cgroup`` on unified hosts and
``/sys/fs/cgroup/unified`` on hybrid ones (v1 controllers beside it);
:func:`find_cgroup2_root` reads it from ``/proc/self/mountinfo``.

Examples
--------
>>> import os, tempfile
>>> top = tempfile.mkdtemp()
>>> os.makedirs(os.path.join(top, "system.slice", "cron.service"))
>>> tree = CgroupTree(Path(top))
>>> added, removed = tree.refresh()
>>> sorted(added.values()), removed
(['', 'system.slice', 'system.slice/cron.service'], {})
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

_OCTAL = re.compile(r"\\([0-7]{3})")
#: Where cgroup2 is mounted on systemd hosts, best first.
_USUAL = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


def find_cgroup2_root(mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """The cgroup2 mount point, or None when cgroup2 is not mounted.

    Parses ``mountinfo`` (``proc(5)``): the file system type follows the
    ``-`` separator, after a variable number of optional fields. Among several
    cgroup2 mounts (a bind mount, a container's view) it prefers a mount of
    the hierarchy's root, at one of the usual places.

    Examples
    --------
    >>> import tempfile
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".mountinfo", delete=False)
    >>> _ = f.write("35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\\n")
    >>> f.close()
    >>> find_cgroup2_root(f.name)
    PosixPath('/sys/fs/cgroup')
    """
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            mounts = cgroup2_mounts(f.read())
    except OSError:
        return None
    if not mounts:
        return None
    whole = [point for root, point in mounts if root == "/"] or [point for _, point in mounts]
    best = next((p for p in _USUAL if p in whole), whole[0])
    return Path(best)


def cgroup2_mounts(text: str) -> list[tuple[str, str]]:
    """``(root within the hierarchy, mount point)`` of every cgroup2 mount in a mountinfo text.

    Examples
    --------
    >>> cgroup2_mounts("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\\n"
    ...                "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\\n")
    [('/', '/sys/fs/cgroup/unified')]
    """
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) > sep + 1 and fields[sep + 1] == "cgroup2":
            out.append((_unoctal(fields[3]), _unoctal(fields[4])))
    return out


def _unoctal(field: str) -> str:
    r"""Undo mountinfo's octal escapes (``\040`` is a space)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


class CgroupTree:
    """Every directory of a cgroup2 tree by inode (= cgroup id).

    Paths are relative to ``root`` with no leading slash; the root itself is
    ``""``. :meth:`refresh` reports what changed since the previous
    :meth:`refresh`, including what :meth:`path`'s own re-walks saw, so a
    caller that follows ``refresh()`` misses nothing.

    Parameters
    ----------
    root:
        The cgroup2 mount point (:func:`find_cgroup2_root`).
    min_refresh:
        Seconds between two re-walks that a lookup of an unknown id may cause.
    walk_every:
        With a feed of cgroup events (:meth:`apply`), :meth:`refresh` walks
        the whole tree only this often, as a safety net; without one
        (``None``) every refresh walks.

    Examples
    --------
    >>> import os, tempfile
    >>> top = tempfile.mkdtemp()
    >>> tree = CgroupTree(Path(top), min_refresh=1.0)
    >>> _ = tree.refresh()
    >>> os.mkdir(os.path.join(top, "docker"))
    >>> ino = os.stat(os.path.join(top, "docker")).st_ino
    >>> tree.path(ino, now=10.0)          # unknown: one re-walk finds it
    'docker'
    >>> tree.path(12345678, now=10.5) is None   # unknown, and too soon to walk again
    True
    >>> tree.refresh()[0] == {ino: "docker"}
    True
    """

    def __init__(self, root: Path, min_refresh: float = 1.0, walk_every: float | None = None) -> None:
        self.root = root
        self.min_refresh = min_refresh
        self.walk_every = walk_every
        self._paths: dict[int, str] = {}
        self._added: dict[int, str] = {}
        self._removed: dict[int, str] = {}
        self._walked_at: float | None = None
        self._full_walk_at: float | None = None
        self._stale = True
        #: set by whoever feeds :meth:`apply`: pull pending events now (an
        #: unknown id is usually a cgroup whose mkdir event is still queued)
        self.pull: Callable[[], None] | None = None
        # cgroups removed since the previous refresh, and in the interval before:
        # events of a short-lived container (`docker run --rm`) are read after
        # its cgroup is gone, and still belong to it
        self._gone: dict[int, str] = {}
        self._gone_before: dict[int, str] = {}
        #: grows whenever what :meth:`path` or ``in`` answer may have changed
        self.version = 0

    def refresh(self, now: float | None = None) -> tuple[dict[int, str], dict[int, str]]:
        """Return ``(added, removed)`` since the previous call, id → path.

        Walks the tree unless events keep it current (see ``walk_every``).
        A cgroup renamed in place is both removed (old path) and added (new).

        Examples
        --------
        >>> import tempfile
        >>> CgroupTree(Path(tempfile.mkdtemp())).refresh()[1]
        {}
        """
        due = (
            self.walk_every is None or now is None or self._stale
            or self._full_walk_at is None or not 0 <= now - self._full_walk_at < self.walk_every
        )
        if due:
            self._update()
            self._stale = False
            self._full_walk_at = now
        added, removed = self._added, self._removed
        if added or removed or self._gone or self._gone_before:
            self.version += 1
        self._added, self._removed = {}, {}
        self._gone_before, self._gone = self._gone, {}
        return added, removed

    def apply(self, changes: Iterable[tuple[int, str, bool]]) -> None:
        """Fold cgroup events, in order, into the tree: ``(id, path, removed)``.

        Paths may carry a leading slash (as the kernel's tracepoints give them).
        When events were lost, call :meth:`mark_stale` and the next refresh walks.

        Examples
        --------
        >>> import tempfile
        >>> t = CgroupTree(Path(tempfile.mkdtemp()), walk_every=60.0)
        >>> _ = t.refresh(now=0.0)
        >>> t.apply([(7, "/docker/abc", False), (8, "/tmp-x", False), (8, "/tmp-x", True)])
        >>> t.refresh(now=1.0)
        ({7: 'docker/abc'}, {})
        >>> t.apply([(7, "/docker/abc", True)]); t.refresh(now=2.0)
        ({}, {7: 'docker/abc'})
        """
        for cgid, path, removed in changes:
            path = path.strip("/")
            self.version += 1
            if removed:
                old = self._paths.pop(cgid, None)
                self._gone[cgid] = path
                if old is not None:
                    self._note_removed(cgid, old)
            elif self._paths.get(cgid) != path:
                self._paths[cgid] = path
                self._added[cgid] = path

    def mark_stale(self) -> None:
        """Events were lost: the next :meth:`refresh` walks the whole tree."""
        self._stale = True

    def path(self, cgid: int, now: float) -> str | None:
        """The path of cgroup ``cgid``, or None when it is not (or no longer) there.

        An unknown id triggers a re-walk, at most one per ``min_refresh``
        seconds (``now`` may be any clock in seconds).

        Examples
        --------
        >>> import os, tempfile
        >>> top = tempfile.mkdtemp()
        >>> CgroupTree(Path(top)).path(os.stat(top).st_ino, now=0.0)
        ''
        """
        found = self._paths.get(cgid)
        if found is not None:
            return found
        if self.pull is not None and not self._stale:
            self.pull()
            found = self._paths.get(cgid)
            if found is not None:
                return found
        found = self._gone.get(cgid) or self._gone_before.get(cgid)
        if found is not None:
            return found
        last = self._walked_at
        if last is not None and 0 <= now - last < self.min_refresh:
            return None
        self._walked_at = now
        self._update()
        return self._paths.get(cgid)

    def __contains__(self, cgid: object) -> bool:
        """Whether ``cgid`` was there at the last walk.

        Examples
        --------
        >>> import tempfile
        >>> 1 in CgroupTree(Path(tempfile.mkdtemp()))
        False
        """
        return cgid in self._paths

    def __len__(self) -> int:
        """How many cgroups the last walk saw.

        Examples
        --------
        >>> import tempfile
        >>> t = CgroupTree(Path(tempfile.mkdtemp())); _ = t.refresh(); len(t)
        1
        """
        return len(self._paths)

    def _update(self) -> None:
        """Walk, and fold the differences into the pending added/removed."""
        new = walk(self.root)
        old = self._paths
        for cgid, path in old.items():
            if new.get(cgid) != path:
                self._note_removed(cgid, path)
        for cgid, path in new.items():
            if old.get(cgid) != path:
                self._added[cgid] = path
        if new != old:
            self.version += 1
        self._paths = new

    def _note_removed(self, cgid: int, path: str) -> None:
        """A cgroup is gone: unreport it if it was never reported added."""
        if self._added.pop(cgid, None) is None:
            self._removed[cgid] = path


def walk(root: Path) -> dict[int, str]:
    """Inode → relative path of every directory under ``root`` (root included, as ``""``).

    Directories that vanish during the walk are skipped silently; a missing
    ``root`` gives an empty map.

    Examples
    --------
    >>> import os, tempfile
    >>> top = tempfile.mkdtemp(); os.mkdir(os.path.join(top, "a"))
    >>> sorted(walk(Path(top)).values())
    ['', 'a']
    >>> walk(Path(top, "gone"))
    {}
    """
    try:
        out = {os.stat(root).st_ino: ""}
    except OSError:
        return {}
    stack = [(os.fspath(root), "")]
    while stack:
        directory, rel = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = f"{rel}/{entry.name}" if rel else entry.name
                        out[entry.inode()] = child
                        stack.append((entry.path, child))
        except OSError:
            continue
    return out
