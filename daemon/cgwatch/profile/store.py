"""Profiles on disk: one gzip-JSON file each under ``STATE_DIR/profiles``,
bounded in total size, the oldest removed first.

Examples
--------
>>> import tempfile
>>> from ..model import Container
>>> from .model import Profile
>>> s = ProfileStore(Path(tempfile.mkdtemp()), max_bytes=10_000_000)
>>> c = Container(id="ab" * 32, name="web-1", runtime="docker")
>>> p = Profile(id="20241125T000000.000Z-abababababab", container=c, started=0.0, duration_s=1.0,
...             requested_s=1.0, hz=49, stacks={("app", "main"): 3})
>>> _ = s.save(p)
>>> [m.id for m in s.list(container_id=c.id)], s.load(p.id).samples, s.load("../etc/passwd")
(['20241125T000000.000Z-abababababab'], 3, None)
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .formats import top_functions, top_json
from .model import Profile

log = logging.getLogger("cgwatch.profile")

SUFFIX = ".json.gz"
ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.\-_]{0,80}$")
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """What a list of profiles shows without reading the stacks again."""

    id: str
    container_id: str
    container: str
    started: float
    duration_s: float
    samples: int
    partial: str
    rule: str
    top: tuple[tuple[str, float], ...]
    bytes: int

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "container_id": self.container_id, "container": self.container,
                "started": self.started, "duration_s": self.duration_s, "samples": self.samples,
                "partial": self.partial, "rule": self.rule, "bytes": self.bytes,
                "top": top_json(self.top)}


class ProfileStore:
    """The profiles directory; safe to share between the daemon's loop and its threads
    as long as one writer saves (the daemon's profiler)."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.dir = Path(root)
        self.max_bytes = max_bytes
        self._info: dict[str, ProfileInfo] = {}

    def path(self, pid: str) -> Path | None:
        """The file of profile ``pid``, or None for an id that is not one (no path tricks)."""
        if not ID_RE.match(pid):
            return None
        return self.dir / f"{pid}{SUFFIX}"

    def save(self, p: Profile) -> ProfileInfo:
        """Write ``p`` atomically, then remove the oldest profiles past the size bound."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.path(p.id)
        if target is None:
            raise ValueError(f"bad profile id {p.id!r}")
        tmp = target.with_name(f".{target.name}.tmp")
        data = gzip.compress(json.dumps(p.to_json(), separators=(",", ":")).encode(), compresslevel=6)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        info = self._info[p.id] = _info(p, len(data))
        self.prune()
        return info

    def load(self, pid: str) -> Profile | None:
        """Profile ``pid``, or None if there is none (or its file is damaged: logged)."""
        path = self.path(pid)
        if path is None:
            return None
        try:
            with gzip.open(path, "rt") as f:
                return Profile.from_json(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError) as e:
            log.warning("%s: not a readable profile (%s); skipped", path, e)
            return None

    def list(self, container_id: str | None = None) -> list[ProfileInfo]:
        """Stored profiles, newest first; only ``container_id``'s when given."""
        out = []
        for path, size in self._files():
            pid = path.name[: -len(SUFFIX)]
            if container_id is not None and not pid.endswith("-" + container_id[:12]):
                continue
            info = self._info.get(pid)
            if info is None:
                p = self.load(pid)
                if p is None:
                    continue
                info = self._info[pid] = _info(p, size)
            if container_id is None or info.container_id == container_id:
                out.append(info)
        out.sort(key=lambda i: (i.started, i.id), reverse=True)
        return out

    def total_bytes(self) -> int:
        return sum(size for _, size in self._files())

    def prune(self) -> list[str]:
        """Remove the oldest profiles until the rest fit in ``max_bytes``; returns their ids."""
        files = sorted(self._files(), key=lambda fs: fs[0].name)     # ids sort by time
        total = sum(size for _, size in files)
        gone = []
        for path, size in files:
            if total <= self.max_bytes:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            total -= size
            pid = path.name[: -len(SUFFIX)]
            self._info.pop(pid, None)
            gone.append(pid)
        return gone

    def _files(self) -> list[tuple[Path, int]]:
        out = []
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return []
        for e in entries:
            if e.name.endswith(SUFFIX) and not e.name.startswith("."):
                try:
                    out.append((Path(e.path), e.stat().st_size))
                except FileNotFoundError:
                    continue
        return out


def _info(p: Profile, size: int) -> ProfileInfo:
    return ProfileInfo(id=p.id, container_id=p.container.id, container=p.container.name, started=p.started,
                       duration_s=p.duration_s, samples=p.samples, partial=p.partial, rule=p.rule,
                       top=tuple(top_functions(p)), bytes=size)
