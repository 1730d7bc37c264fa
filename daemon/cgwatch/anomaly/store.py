"""Anomaly baselines on disk: saved periodically and at shutdown, loaded at start.

One file holds every model: gzip-compressed JSON with a header (format
version, the cgwatch and River versions that wrote it, the time written) and
one entry per model: its key (rule name, container id, metric), when it was
last used and its :meth:`~cgwatch.anomaly.thresholds.Thresholder.state`.

:func:`save` is atomic: it writes a temporary file in the same directory,
flushes and fsyncs it, renames it over the old file and fsyncs the directory,
so a crash leaves either the old file or the new one, never half of one. The
file is mode 0600.

:func:`load` never raises. A missing file loads nothing quietly; a file that
cannot be read, is not gzip or JSON, has the wrong shape, is past the size cap
or has another format version gives one warning and loads nothing (the models
relearn). A single entry that does not load (a state of an older detector
version, an HST state from another River version, a malformed state) is
skipped and counted, the others load, and one summary warning says how many.
Only JSON is parsed: no pickle anywhere.

Idle time is counted while the daemon runs, not while it is down: each loaded
model's last use is moved forward by the downtime (time of loading minus time
written), so a restart after a long stop does not evict every baseline at the
first idle sweep.

Examples
--------
>>> import tempfile
>>> from cgwatch.anomaly.baselines import Baselines, ModelSpec
>>> path = Path(tempfile.mkdtemp()) / "baselines.json.gz"
>>> b = Baselines()
>>> m = b.get(("r", "web", "cpu"), ModelSpec("mad"), now=0.0)
>>> save(b, path, now=10.0)
1
>>> fresh = Baselines()
>>> load(path, fresh, now=20.0).loaded, list(fresh.keys())
(1, [('r', 'web', 'cpu')])
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.metadata
import json
import logging
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import STATE_VERSION
from .baselines import Baselines, Key
from .hst import river_version
from .models import KINDS
from .thresholds import Thresholder

log = logging.getLogger("cgwatch.anomaly")

#: The file format; bump when the layout or meaning of the file changes.
FORMAT_VERSION = 1

#: What the ``format`` field of the header says, so other JSON is told apart.
FORMAT_NAME = "cgwatch-baselines"

#: Stop reading past this many decompressed bytes (a hostile or runaway file).
MAX_BYTES = 512 * 1024 * 1024

_TMP_SUFFIX = ".tmp"


def cgwatch_version() -> str:
    """The installed cgwatch version, or "0" when it is not installed.

    >>> isinstance(cgwatch_version(), str)
    True
    """
    try:
        return importlib.metadata.version("cgwatch")
    except importlib.metadata.PackageNotFoundError:
        return "0"


@dataclass(slots=True)
class LoadResult:
    """What :func:`load` did: models loaded, entries skipped, and warnings.

    ``skipped_old`` entries were written by another detector state version or
    River version, ``skipped_bad`` ones were malformed; ``dropped`` ones did
    not fit in ``max_models`` (the least recently used go first).

    >>> r = LoadResult()
    >>> r.loaded, r.skipped_bad, r.skipped_old, r.dropped, r.warnings
    (0, 0, 0, 0, [])
    """

    loaded: int = 0
    skipped_bad: int = 0
    skipped_old: int = 0
    dropped: int = 0
    warnings: list[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        """Record a warning and log it.

        >>> r = LoadResult(); r.warn("x"); r.warnings
        ['x']
        """
        self.warnings.append(msg)
        log.warning("%s", msg)


# -- saving -------------------------------------------------------------------


def _entries(baselines: Baselines, now: float) -> Iterator[tuple[Key, Thresholder, float]]:
    """Every model with its key and last use, least recently used first.

    >>> from cgwatch.anomaly.baselines import ModelSpec
    >>> b = Baselines(); _ = b.get(("r", "c", "m"), ModelSpec(), now=5.0)
    >>> [(k, t) for k, _, t in _entries(b, 9.0)]
    [(('r', 'c', 'm'), 5.0)]
    """
    # Baselines keeps the last-use time privately; fall back to "now" if it ever stops.
    models = getattr(baselines, "_models", None)
    if isinstance(models, dict):
        for key, (model, used) in list(models.items()):
            yield key, model, float(used)
    else:
        for key, model in list(baselines.items()):
            yield key, model, float(now)


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename in it survives a power cut (best effort).

    >>> _fsync_dir(Path("."))
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


Snapshot = list[tuple[Key, dict[str, Any], float]]


def snapshot(baselines: Baselines, now: float) -> Snapshot:
    """Every model's key, state and last use, copied: the cheap half of a save.

    A daemon takes the snapshot on its event loop (the models are not touched
    by anything else meanwhile) and hands it to :func:`write` in a worker
    thread, so encoding, compressing and fsyncing never stall the loop.

    >>> from cgwatch.anomaly.baselines import ModelSpec
    >>> b = Baselines(); _ = b.get(("r", "c", "m"), ModelSpec(), now=5.0)
    >>> [(k, t, sorted(st)[:2]) for k, st, t in snapshot(b, 9.0)]
    [(('r', 'c', 'm'), 5.0, ['active', 'below'])]
    """
    return [(key, model.state(), used) for key, model, used in _entries(baselines, now)]


def save(baselines: Baselines, path: Path, now: float) -> int:
    """Write every model to ``path`` atomically (mode 0600); return how many were written.

    A model whose state does not serialise (never expected) is left out and
    logged. OSError (disk full, no permission) is raised after removing the
    temporary file; the old file stays as it was.

    >>> import tempfile
    >>> from cgwatch.anomaly.baselines import ModelSpec
    >>> path = Path(tempfile.mkdtemp()) / "b.json.gz"
    >>> b = Baselines()
    >>> for c in ("web", "db"):
    ...     _ = b.get(("r", c, "cpu"), ModelSpec("forecast"), now=1.0)
    >>> save(b, path, now=2.0), oct(path.stat().st_mode & 0o777)
    (2, '0o600')
    """
    return write(snapshot(baselines, now), path, now)


def write(entries: Snapshot, path: Path, now: float) -> int:
    """The slow half of :func:`save`: encode a :func:`snapshot` and write it atomically.

    >>> import tempfile
    >>> write([], Path(tempfile.mkdtemp()) / "b.json.gz", now=1.0)
    0
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    prefix = _tmp_prefix(path)
    # leftovers of a save that died before its rename
    for stale in directory.glob(f"{prefix}*{_TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()

    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "cgwatch": cgwatch_version(),
        "river": river_version(),
        "written_at": float(now),
    }
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=_TMP_SUFFIX)
    tmp = Path(tmp_name)
    written = 0
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                head = json.dumps(header, allow_nan=False)
                gz.write(head[:-1].encode() + b', "models": [')
                for key, state, used in entries:
                    try:
                        entry = json.dumps(
                            {"key": list(key), "last_used": used, "state": state},
                            allow_nan=False,
                            separators=(",", ":"),
                        )
                    except (ValueError, TypeError) as exc:
                        log.warning("anomaly model %s not saved: %s", "/".join(map(str, key)), exc)
                        continue
                    gz.write((b"," if written else b"") + entry.encode())
                    written += 1
                gz.write(b"]}")
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)
    return written


# -- loading ------------------------------------------------------------------


def _read(path: Path, max_bytes: int) -> bytes:
    """Decompress ``path``, at most ``max_bytes``; ValueError past the cap or on bad gzip.

    >>> _read(Path("/nonexistent/x.gz"), 10)
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
    """
    with open(path, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raise ValueError("not a gzip file")
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                data = gz.read(max_bytes + 1)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"bad gzip data ({exc or type(exc).__name__})") from exc
    if len(data) > max_bytes:
        raise ValueError(f"more than {max_bytes} bytes decompressed; not read")
    return data


class _BadConstant(ValueError):
    """NaN or Infinity in the file: not standard JSON, and never written by :func:`save`."""


def _reject_constant(name: str) -> float:
    raise _BadConstant(f"non-standard constant {name}")


def _parse(data: bytes) -> dict[str, Any]:
    """The checked top level of a baselines file; ValueError naming the problem.

    >>> _parse(b'[1, 2]')
    Traceback (most recent call last):
    ...
    ValueError: wrong shape: top level is a list, not an object
    """
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except _BadConstant as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    except RecursionError as exc:
        raise ValueError("not JSON (nested too deeply)") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"wrong shape: top level is a {type(doc).__name__}, not an object")
    if doc.get("format") != FORMAT_NAME:
        raise ValueError(f"wrong shape: not a {FORMAT_NAME} file")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"wrong shape: format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"format version {version} is newer than this cgwatch reads ({FORMAT_VERSION})")
    if version < FORMAT_VERSION:
        raise ValueError(f"format version {version} is older than this cgwatch reads ({FORMAT_VERSION})")
    written = doc.get("written_at")
    if not _is_finite(written):
        raise ValueError("wrong shape: written_at is not a number")
    if not isinstance(doc.get("models"), list):
        raise ValueError("wrong shape: models is not a list")
    return doc


def _is_finite(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def _key(entry: Any) -> tuple[Key, float] | None:
    """An entry's key and last use, or None when malformed.

    >>> _key({"key": ["r", "c", "m"], "last_used": 3}), _key({"key": ["r"]})
    ((('r', 'c', 'm'), 3.0), None)
    """
    if not isinstance(entry, dict):
        return None
    key, used = entry.get("key"), entry.get("last_used")
    if not isinstance(key, list) or len(key) != 3 or not all(isinstance(k, str) for k in key):
        return None
    if not _is_finite(used):
        return None
    return (key[0], key[1], key[2]), float(used)


def _is_old(state: Any) -> bool:
    """Whether a state that did not load was written by another state or River version.

    Looks through nested detector states too (a detector made of others).

    >>> _is_old({"kind": "thresholder", "version": 0}), _is_old({"kind": "thresholder", "version": 1})
    (True, False)
    >>> _is_old({"kind": "thresholder", "version": 1, "detector": {"kind": "hst", "version": 1,
    ...          "data": {"river": "0.0.1"}}})
    True
    """
    if not isinstance(state, dict):
        return False
    if state.get("version") != Thresholder.VERSION:
        return True
    stack: list[Any] = [state.get("detector")]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if node.get("kind") in KINDS and node.get("version") != STATE_VERSION:
            return True
        if "river" in node and node["river"] != river_version():
            return True
        stack.extend(node.values())
    return False


def load(path: Path, baselines: Baselines, now: float, *, max_bytes: int = MAX_BYTES) -> LoadResult:
    """Load the models saved in ``path`` into ``baselines``; never raises.

    At most ``baselines.max_models`` models are held, the most recently used
    kept. A key that already has a live model keeps it (it is newer).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> r = load(d / "missing.json.gz", Baselines(), now=0.0)
    >>> r.loaded, r.warnings
    (0, [])
    >>> _ = (d / "junk").write_bytes(b"not gzip")
    >>> r = load(d / "junk", Baselines(), now=0.0)
    >>> r.loaded, r.warnings
    (0, ['anomaly baselines .../junk not loaded: not a gzip file; models start fresh'])
    """
    result = LoadResult()
    path = Path(path)
    try:
        doc = _parse(_read(path, max_bytes))
    except FileNotFoundError:
        return result
    except Exception as exc:  # any problem with the file: warn, start fresh
        problem = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        result.warn(f"anomaly baselines {path} not loaded: {problem}; models start fresh")
        return result

    downtime = max(0.0, float(now) - float(doc["written_at"]))
    latest: dict[Key, tuple[float, Any]] = {}
    for entry in doc["models"]:
        parsed = _key(entry)
        if parsed is None:
            result.skipped_bad += 1
            continue
        key, used = parsed
        if key not in latest or used > latest[key][0]:
            latest[key] = (used, entry.get("state"))

    live = set(baselines.keys())
    room = max(0, baselines.max_models - len(live))
    adopted: list[tuple[float, Key, Thresholder]] = []
    first_error = ""
    for key, (used, state) in sorted(latest.items(), key=lambda kv: kv[1][0], reverse=True):
        if key in live:
            continue
        if len(adopted) >= room:
            result.dropped += 1
            continue
        try:
            model = Thresholder.from_state(state)
        except Exception as exc:  # one bad entry never stops the others
            if _is_old(state):
                result.skipped_old += 1
            else:
                result.skipped_bad += 1
            first_error = first_error or f"{'/'.join(key)}: {exc}"
            continue
        adopted.append((min(float(now), used + downtime), key, model))

    for used, key, model in sorted(adopted, key=lambda t: t[0]):
        baselines.put(key, model, used)
    result.loaded = len(adopted)

    skipped = result.skipped_bad + result.skipped_old
    if skipped:
        parts = []
        if result.skipped_old:
            parts.append(f"{result.skipped_old} from another detector or River version")
        if result.skipped_bad:
            parts.append(f"{result.skipped_bad} malformed")
        example = f" (first: {first_error})" if first_error else ""
        result.warn(
            f"anomaly baselines {path}: {skipped} of {len(doc['models'])} models not loaded "
            f"({', '.join(parts)}){example}; they relearn"
        )
    if result.dropped:
        log.info(
            "anomaly baselines %s: %d least recently used models left out (max_models %d)",
            path, result.dropped, baselines.max_models,
        )
    return result


# -- periodic saving ----------------------------------------------------------


class Saver:
    """Save the baselines every ``every_s`` seconds; the daemon calls :meth:`maybe_save` each interval.

    The first call starts the clock (the models were just loaded). A failed
    save is logged, counted in ``failures`` and tried again ``every_s`` later.

    >>> import tempfile
    >>> s = Saver(Path(tempfile.mkdtemp()) / "b.json.gz", every_s=60.0)
    >>> b = Baselines()
    >>> s.maybe_save(b, now=0.0), s.maybe_save(b, now=59.0), s.maybe_save(b, now=60.0)
    (False, False, True)
    """

    def __init__(self, path: Path, every_s: float = 300.0) -> None:
        self.path = Path(path)
        self.every_s = float(every_s)
        self.last_save: float | None = None
        self.last_count = 0
        self.failures = 0

    def maybe_save(self, baselines: Baselines, now: float) -> bool:
        """Save if ``every_s`` has passed since the last save (or attempt); True if it saved.

        >>> import tempfile
        >>> s = Saver(Path(tempfile.mkdtemp()) / "b.json.gz", every_s=10.0)
        >>> [s.maybe_save(Baselines(), now=t) for t in (100.0, 105.0, 110.0, 115.0, 120.0)]
        [False, False, True, False, True]
        """
        if not self.due(now):
            return False
        return self.save(baselines, now)

    def due(self, now: float) -> bool:
        """Whether a periodic save is due at ``now`` (the first call starts the clock).

        >>> import tempfile
        >>> s = Saver(Path(tempfile.mkdtemp()) / "b.json.gz", every_s=10.0)
        >>> s.due(0.0), s.due(9.0), s.due(10.0)
        (False, False, True)
        """
        if self.last_save is None or now < self.last_save:  # first call, or the clock went back
            self.last_save = now
            return False
        return now - self.last_save >= self.every_s

    async def save_async(self, baselines: Baselines, now: float) -> bool:
        """:meth:`save` for an event loop: snapshot here, encode and write in a worker thread.

        >>> import asyncio, tempfile
        >>> s = Saver(Path(tempfile.mkdtemp()) / "b.json.gz")
        >>> asyncio.run(s.save_async(Baselines(), now=1.0)), s.last_count
        (True, 0)
        """
        import asyncio

        self.last_save = now
        entries = snapshot(baselines, now)
        try:
            self.last_count = await asyncio.to_thread(write, entries, self.path, now)
        except OSError as exc:
            self.failures += 1
            log.warning("anomaly baselines not saved to %s: %s", self.path, exc)
            return False
        return True

    def save(self, baselines: Baselines, now: float) -> bool:
        """Save now (at shutdown); True if it saved, False (logged) if it failed.

        >>> import tempfile
        >>> s = Saver(Path(tempfile.mkdtemp()) / "b.json.gz")
        >>> s.save(Baselines(), now=1.0), s.last_count, s.last_save
        (True, 0, 1.0)
        """
        self.last_save = now
        try:
            self.last_count = save(baselines, self.path, now)
        except OSError as exc:
            self.failures += 1
            log.warning("anomaly baselines not saved to %s: %s", self.path, exc)
            return False
        return True
