"""One SQLite file, ``<state_dir>/alerts.db``: alert history, the alerts that
fire now, silences, and the delivery outbox (Vector's disk buffer: a notice
stays there, one row per notification x sink, until its sink says delivered).

The file runs in WAL mode with ``synchronous=NORMAL``: a commit survives the
daemon crashing or being killed; a power cut may lose the last commits. The
schema version lives in ``PRAGMA user_version``. A file written by a newer
cgwatch is refused with a one-line :class:`StoreError` (never touched); a file
that is not a database or is corrupt is moved aside to
``alerts.db.corrupt-<unix ts>`` with a warning and a fresh one is started, so
the daemon still delivers and the old data can still be inspected.

Examples
--------
>>> import tempfile
>>> with Store.open(tempfile.mkdtemp()) as store:
...     store.schema_version()
2
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .notification import Notification

log = logging.getLogger(__name__)

DB_NAME = "alerts.db"
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, fingerprint TEXT NOT NULL, ts REAL NOT NULL,
    rule TEXT NOT NULL, container TEXT NOT NULL, state TEXT NOT NULL, severity TEXT NOT NULL,
    silenced_by TEXT, sinks TEXT NOT NULL, recorded REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_fp ON history(fingerprint);
CREATE INDEX IF NOT EXISTS history_recorded ON history(recorded);
CREATE INDEX IF NOT EXISTS history_id ON history(id);
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY, silenced INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_silenced ON alerts(silenced) WHERE silenced = 1;
CREATE TABLE IF NOT EXISTS notified (
    fingerprint TEXT NOT NULL, sink TEXT NOT NULL, repeat INTEGER NOT NULL, next_repeat REAL NOT NULL,
    PRIMARY KEY (fingerprint, sink));
CREATE INDEX IF NOT EXISTS notified_next ON notified(next_repeat);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, rule TEXT, container TEXT, created_at REAL NOT NULL, ends_at REAL NOT NULL,
    comment TEXT NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, sink TEXT NOT NULL, body TEXT NOT NULL,
    created REAL NOT NULL, due REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending', last_error TEXT NOT NULL DEFAULT '', done_at REAL,
    fingerprint TEXT NOT NULL DEFAULT '', UNIQUE (id, sink));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(sink, status, due);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(status) WHERE status = 'pending';
"""

#: what turns a file of version ``v - 1`` into version ``v`` (run in one transaction)
_MIGRATIONS = {
    # 2: the outbox knows each row's alert, so that an alert's notices leave in order
    2: "ALTER TABLE outbox ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';"
       "UPDATE outbox SET fingerprint = json_extract(body, '$.fingerprint');",
}
_INDEXES = """
CREATE INDEX IF NOT EXISTS outbox_chain ON outbox(fingerprint, sink, status, seq);
"""

# A row waits while an earlier row of the same alert and sink is pending and not due by the
# cut-off (``?``): a resolution never overtakes its firing notice (backed off, or held for
# a profile), whatever the due times say.
_IN_ORDER = ("NOT EXISTS (SELECT 1 FROM outbox p WHERE p.sink = o.sink AND p.fingerprint = o.fingerprint"
             " AND p.status = 'pending' AND p.seq < o.seq AND p.due > ?)")


class StoreError(Exception):
    """alerts.db cannot be used (newer schema, unreadable) or written (disk full, read-only,
    locked by another process); the message is one line."""


def to_row(n: Notification) -> str:
    return json.dumps(n.to_json(), separators=(",", ":"))


def from_row(body: str) -> Notification:
    """The inverse of :meth:`Notification.to_json` (as stored in a row).

    >>> n = Notification(id="x", fingerprint="r/c", ts=1.0, rule="r", state="firing", severity="info",
    ...                  value=None, summary="s", container="c", container_id="c", runtime="docker",
    ...                  starts_at=1.0, host="h", repeat=2, labels={"team": "a"})
    >>> from_row(to_row(n)) == n, from_row(to_row(n)).labels
    (True, {'team': 'a'})
    """
    d: dict[str, Any] = json.loads(body)
    return Notification(
        id=d["id"], fingerprint=d["fingerprint"], ts=d["ts"], rule=d["rule"], state=d["state"],
        severity=d["severity"], value=d["value"], summary=d["summary"], container=d["container"],
        container_id=d["container_id"], runtime=d["runtime"], starts_at=d["starts_at"], host=d["host"],
        ends_at=d.get("ends_at"), description=d.get("description", ""), image=d.get("image", ""),
        labels=d.get("labels", {}), container_labels=d.get("container_labels", {}), repeat=d.get("repeat", 0),
        profile=d.get("profile"), card=d.get("card"))


@dataclass(slots=True, frozen=True)
class OutboxRow:
    """One notification waiting for one sink."""

    seq: int
    sink: str
    notification: Notification
    created: float
    attempts: int


def _is_corrupt(e: sqlite3.DatabaseError) -> bool:
    if isinstance(e, sqlite3.OperationalError):  # locked, busy, I/O: not the file's fault
        return False
    code = getattr(e, "sqlite_errorcode", None)
    return code is None or (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class Store:
    """alerts.db, opened (and created or migrated) at ``path``.

    Every method is a short transaction of its own, unless called inside
    ``with store.tx():``, which commits once at the end (use it for batches).
    ``clock`` gives wall-clock Unix seconds (outbox ages, silences).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._depth = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = self._connect()
        except sqlite3.DatabaseError as e:
            if not _is_corrupt(e):
                raise StoreError(f"{self.path}: cannot open: {e}") from None
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self.clock())}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, str(aside) + suffix)
            log.warning("%s: %s; moved it to %s and started a new one", self.path, e, aside)
            self.conn = self._connect()

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], **kw: Any) -> Store:
        """The store of a state directory: ``<state_dir>/alerts.db``."""
        return cls(Path(state_dir) / DB_NAME, **kw)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} is newer than this cgwatch knows "
                                 f"({SCHEMA_VERSION}); upgrade cgwatch or point state_dir elsewhere")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if version < SCHEMA_VERSION:
                steps = [_SCHEMA] if version == 0 else [_MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1)]
                conn.executescript(f"BEGIN IMMEDIATE;{''.join(steps)}{_INDEXES}"
                                   f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
            conn.execute("SELECT count(*) FROM outbox").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0
                if self.conn.in_transaction:      # an error, or a COMMIT that failed (disk full)
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
        except sqlite3.OperationalError as e:     # full, read-only, locked for 5 s, I/O
            raise StoreError(f"{self.path}: cannot write: {e}") from e

    # -- history -------------------------------------------------------------------------------

    def add_history(self, n: Notification, sinks: Sequence[str] = (), *, state: str | None = None,
                    silenced_by: str | None = None) -> None:
        """Record a notice (``state`` defaults to the notice's; ``silenced`` for a silenced one)."""
        with self.tx() as c:
            c.execute("INSERT INTO history (id, fingerprint, ts, rule, container, state, severity, silenced_by,"
                      " sinks, recorded, body) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (n.id, n.fingerprint, n.ts, n.rule, n.container, state or n.state, n.severity,
                       silenced_by, ",".join(sinks), self.clock(), to_row(n)))

    def history(self, fingerprint: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` history entries, oldest first."""
        sql = ("SELECT id, fingerprint, ts, rule, container, state, severity, silenced_by, sinks,"
               " coalesce(json_extract(body, '$.summary'), '') FROM history")
        args: tuple[Any, ...] = ()
        if fingerprint is not None:
            sql, args = sql + " WHERE fingerprint = ?", (fingerprint,)
        rows = self.conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        keys = ("id", "fingerprint", "ts", "rule", "container", "state", "severity", "silenced_by", "sinks",
                "summary")
        return [dict(zip(keys, r)) for r in reversed(rows)]

    # -- alerts that fire now ------------------------------------------------------------------

    def get_alert(self, fingerprint: str) -> tuple[Notification, bool] | None:
        row = self.conn.execute("SELECT body, silenced FROM alerts WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return None if row is None else (from_row(row[0]), bool(row[1]))

    def put_alert(self, n: Notification, silenced: bool) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO alerts (fingerprint, silenced, body) VALUES (?,?,?)",
                      (n.fingerprint, int(silenced), to_row(n)))

    def delete_alert(self, fingerprint: str) -> list[str]:
        """Forget a firing alert; returns the sinks that were told it fired."""
        with self.tx() as c:
            sinks = [r[0] for r in c.execute("SELECT sink FROM notified WHERE fingerprint = ? ORDER BY sink",
                                              (fingerprint,))]
            c.execute("DELETE FROM notified WHERE fingerprint = ?", (fingerprint,))
            c.execute("DELETE FROM alerts WHERE fingerprint = ?", (fingerprint,))
        return sinks

    def active_alerts(self) -> list[Notification]:
        """Every alert firing now (silenced ones too), as its firing notice."""
        return [from_row(r[0]) for r in self.conn.execute("SELECT body FROM alerts ORDER BY fingerprint")]

    def active_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM alerts").fetchone()[0])

    def set_notified(self, fingerprint: str, sink: str, repeat: int, next_repeat: float) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO notified (fingerprint, sink, repeat, next_repeat) VALUES (?,?,?,?)",
                      (fingerprint, sink, repeat, next_repeat))

    def due_repeats(self, now: float, limit: int = 1000) -> list[tuple[str, int, float, Notification, bool]]:
        """(sink, repeat, next_repeat, firing notice, silenced) for repeats due by ``now``."""
        rows = self.conn.execute(
            "SELECT n.sink, n.repeat, n.next_repeat, a.body, a.silenced FROM notified n JOIN alerts a"
            " ON a.fingerprint = n.fingerprint WHERE n.next_repeat <= ? ORDER BY n.next_repeat LIMIT ?",
            (now, limit)).fetchall()
        return [(s, r, t, from_row(b), bool(sil)) for s, r, t, b, sil in rows]

    def silenced_alerts(self) -> list[Notification]:
        return [from_row(r[0]) for r in self.conn.execute("SELECT body FROM alerts WHERE silenced = 1 ORDER BY fingerprint")]

    # -- outbox --------------------------------------------------------------------------------

    def enqueue(self, n: Notification, sink: str, due: float) -> bool:
        """Queue ``n`` for ``sink``; False if that id is already queued (or done) for it."""
        with self.tx() as c:
            cur = c.execute("INSERT OR IGNORE INTO outbox (id, sink, body, created, due, fingerprint)"
                            " VALUES (?,?,?,?,?,?)", (n.id, sink, to_row(n), self.clock(), due, n.fingerprint))
        return cur.rowcount == 1

    def next_due(self, sink: str) -> tuple[float, int] | None:
        """(due, attempts) of the earliest pending row of ``sink`` that is first in its
        alert's line (a row behind an earlier one of the same alert goes after it)."""
        row = self.conn.execute(f"SELECT due, attempts FROM outbox o WHERE sink = ? AND status = 'pending'"
                                f" AND {_IN_ORDER} ORDER BY due LIMIT 1", (sink, float("-inf"))).fetchone()
        return None if row is None else (row[0], row[1])

    def rewrite(self, n: Notification, due: float) -> int:
        """Replace the body of notice ``n.id`` wherever it waits (outbox rows not yet sent,
        the firing alert, its history line) and make its pending rows due by ``due``;
        returns how many outbox rows changed."""
        body = to_row(n)
        with self.tx() as c:
            cur = c.execute("UPDATE outbox SET body = ?, due = MIN(due, ?) WHERE id = ? AND status = 'pending'",
                            (body, due, n.id))
            c.execute("UPDATE alerts SET body = ? WHERE fingerprint = ? AND json_extract(body, '$.id') = ?",
                      (body, n.fingerprint, n.id))
            c.execute("UPDATE history SET body = ? WHERE id = ?", (body, n.id))
        return cur.rowcount

    def release(self, notice_id: str, due: float) -> None:
        """Make the pending rows of notice ``notice_id`` due by ``due`` (a held notice goes now);
        a row backing off after a failed send keeps its backoff."""
        with self.tx() as c:
            c.execute("UPDATE outbox SET due = MIN(due, ?) WHERE id = ? AND status = 'pending' AND attempts = 0",
                      (due, notice_id))

    def take(self, sink: str, until: float, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` pending rows of ``sink`` due by ``until``, in the order they were
        queued, leaving out rows behind an earlier one of the same alert that is not due
        (rows stay pending)."""
        rows = self.conn.execute(f"SELECT seq, body, created, attempts FROM outbox o WHERE sink = ? AND status ="
                                 f" 'pending' AND due <= ? AND {_IN_ORDER} ORDER BY seq LIMIT ?",
                                 (sink, until, until, limit))
        return [OutboxRow(seq, sink, from_row(body), created, att) for seq, body, created, att in rows]

    def _mark(self, sql: str, args: tuple[Any, ...], seqs: Sequence[int]) -> None:
        with self.tx() as c:
            for i in range(0, len(seqs), 500):
                part = seqs[i:i + 500]
                c.execute(sql.format(",".join("?" * len(part))), (*args, *part))

    def mark_sent(self, seqs: Sequence[int]) -> None:
        self._mark("UPDATE outbox SET status = 'sent', done_at = ?, attempts = attempts + 1 WHERE seq IN ({})",
                   (self.clock(),), seqs)

    def mark_failed(self, seqs: Sequence[int], error: str) -> None:
        self._mark("UPDATE outbox SET status = 'failed', done_at = ?, last_error = ?, attempts = attempts + 1"
                   " WHERE seq IN ({})", (self.clock(), error), seqs)

    def mark_retry(self, seqs: Sequence[int], due: float, error: str) -> None:
        self._mark("UPDATE outbox SET due = ?, last_error = ?, attempts = attempts + 1 WHERE seq IN ({})",
                   (due, error), seqs)

    def drop_expired(self, sink: str, max_age_s: float) -> int:
        """Mark pending rows of ``sink`` older than ``max_age_s`` as dropped; returns how many."""
        now = self.clock()
        with self.tx() as c:
            cur = c.execute("UPDATE outbox SET status = 'dropped', done_at = ? WHERE sink = ? AND status ="
                            " 'pending' AND created <= ?", (now, sink, now - max_age_s))
        return cur.rowcount

    def drop_orphans(self, sinks: Iterable[str]) -> dict[str, int]:
        """Mark pending rows of sinks that are no longer configured as dropped (they could
        never be sent, and would look like a backlog forever); returns sink -> rows."""
        known = list(sinks)
        marks = ",".join("?" * len(known))
        where = f"status = 'pending' AND sink NOT IN ({marks})" if known else "status = 'pending'"
        with self.tx() as c:
            gone = dict(c.execute(f"SELECT sink, count(*) FROM outbox WHERE {where} GROUP BY sink", known).fetchall())
            if gone:
                c.execute(f"UPDATE outbox SET status = 'dropped', done_at = ?, last_error = 'sink removed from the "
                          f"config' WHERE {where}", (self.clock(), *known))
        return gone

    def expedite(self, sink: str) -> None:
        """Make every pending row of ``sink`` due now (the sink answers again)."""
        now = self.clock()
        with self.tx() as c:
            c.execute("UPDATE outbox SET due = ? WHERE sink = ? AND status = 'pending' AND attempts > 0 AND due > ?",
                      (now, sink, now))

    def counts(self, sink: str | None = None) -> dict[str, int]:
        """Outbox rows by status (``pending``, ``sent``, ``failed``, ``dropped``)."""
        sql, args = "SELECT status, count(*) FROM outbox", ()
        if sink is not None:
            sql, args = sql + " WHERE sink = ?", (sink,)
        return dict(self.conn.execute(sql + " GROUP BY status", args).fetchall())

    def pending_count(self) -> int:
        """Outbox rows not yet delivered (what /metrics shows at every scrape): read from a
        partial index of the pending rows only, not a scan of a week of finished ones."""
        return int(self.conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0])

    def prune(self, keep_s: float = 7 * 86400.0) -> int:
        """Forget finished outbox rows and history older than ``keep_s``; returns rows deleted."""
        before = self.clock() - keep_s
        with self.tx() as c:
            n = c.execute("DELETE FROM outbox WHERE status != 'pending' AND done_at < ?", (before,)).rowcount
            n += c.execute("DELETE FROM history WHERE recorded < ?", (before,)).rowcount
            n += c.execute("DELETE FROM silences WHERE ends_at < ?", (before,)).rowcount
        return n
