"""Silences: stop notices for matching alerts until a time, with a reason.

A silence matches by rule glob and/or container glob (:func:`fnmatch.fnmatchcase`;
the container glob is tried on the container's name and on its id); when both
are given, both must match. A silenced notice is recorded in the history with
state ``silenced`` and is not sent. Expiry is wall-clock time (the store's
clock), live and in replay alike.

``cgwatch silence add|list|expire`` calls :class:`Silences` on the state
directory: ``Silences(state_dir).add(rule="cpu-*", duration_s=3600, ...)``.

Examples
--------
>>> import tempfile
>>> s = Silences(tempfile.mkdtemp(), clock=lambda: 1000.0)
>>> sid = s.add(rule="cpu-*", duration_s=60, comment="deploy", created_by="ops")
>>> s.match("cpu-hog", "web-1", "4f1c").id == sid, s.match("oom-kill", "web-1", "4f1c")
(True, None)
>>> s.expire(sid), s.list(), len(s.list(include_expired=True))
(True, [], 1)
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from .store import Store


@dataclass(slots=True, frozen=True)
class Silence:
    """One silence. ``rule`` and ``container`` are globs; None matches everything."""

    id: str
    rule: str | None
    container: str | None
    created_at: float
    ends_at: float
    comment: str
    created_by: str

    def matches(self, rule: str, container: str, container_id: str = "") -> bool:
        """>>> Silence("s", None, "web-*", 0, 1, "", "").matches("x", "web-1")
        True
        """
        if self.rule is not None and not fnmatchcase(rule, self.rule):
            return False
        if self.container is not None and not (
                fnmatchcase(container, self.container) or (container_id and fnmatchcase(container_id, self.container))):
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Silences:
    """The silences kept in a :class:`Store` (or in a state directory's alerts.db)."""

    def __init__(self, store: Store | str | os.PathLike[str], *, clock: Callable[[], float] | None = None) -> None:
        self._owned = not isinstance(store, Store)
        if isinstance(store, Store):
            self.store = store
        else:
            self.store = Store.open(Path(store), **({"clock": clock} if clock else {}))
        self.clock = clock or self.store.clock

    def add(self, rule: str | None = None, container: str | None = None, *, duration_s: float,
            comment: str = "", created_by: str = "") -> str:
        """Silence matching alerts for ``duration_s`` seconds from now; returns the new id."""
        if not rule and not container:
            raise ValueError("a silence needs a rule glob, a container glob, or both")
        if not duration_s > 0:
            raise ValueError(f"duration must be positive, not {duration_s}")
        sid = secrets.token_hex(4)
        now = self.clock()
        with self.store.tx() as c:
            c.execute("INSERT INTO silences (id, rule, container, created_at, ends_at, comment, created_by)"
                      " VALUES (?,?,?,?,?,?,?)", (sid, rule or None, container or None, now, now + duration_s,
                                                  comment, created_by))
        return sid

    def list(self, include_expired: bool = False) -> list[Silence]:
        """Silences in force (or all of them), oldest first."""
        sql = "SELECT id, rule, container, created_at, ends_at, comment, created_by FROM silences"
        args: tuple[Any, ...] = ()
        if not include_expired:
            sql, args = sql + " WHERE ends_at > ?", (self.clock(),)
        return [Silence(*r) for r in self.store.conn.execute(sql + " ORDER BY created_at, rowid", args)]

    def expire(self, silence_id: str) -> bool:
        """End a silence now; False if there is no such silence in force."""
        now = self.clock()
        with self.store.tx() as c:
            cur = c.execute("UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?", (now, silence_id, now))
        return cur.rowcount == 1

    def match(self, rule: str, container: str, container_id: str = "") -> Silence | None:
        """The first silence in force that matches, or None."""
        for s in self.list():
            if s.matches(rule, container, container_id):
                return s
        return None

    def close(self) -> None:
        """Close the store if this object opened it (from a state directory)."""
        if self._owned:
            self.store.close()
