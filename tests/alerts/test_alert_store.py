"""alerts.db: schema version, refusing newer files, moving corrupt ones aside, outbox basics."""

from __future__ import annotations

import sqlite3

import pytest

from cgwatch.alerts.state import AlertManager
from cgwatch.alerts.store import SCHEMA_VERSION, Store, StoreError, from_row, to_row
from tests.alerts.conftest import box, fire


def test_new_store_is_wal_with_schema_version(tmp_path):
    with Store.open(tmp_path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "alerts.db").exists()
    with Store.open(tmp_path) as s:  # reopening an existing file is fine
        assert s.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "alerts.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as e:
        Store(path)
    msg = str(e.value)
    assert "\n" not in msg and "schema version 99" in msg and str(path) in msg
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99  # untouched
    conn.close()


def test_corrupt_file_is_moved_aside_with_a_warning(tmp_path, caplog):
    path = tmp_path / "alerts.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with Store(path, clock=lambda: 1234.0) as s:
        assert s.schema_version() == SCHEMA_VERSION
    aside = tmp_path / "alerts.db.corrupt-1234"
    assert aside.read_bytes().startswith(b"this is not sqlite")
    assert any("moved it to" in r.getMessage() for r in caplog.records)


def test_notification_round_trips_and_outbox_is_unique_per_id_and_sink(tmp_path):
    with Store.open(tmp_path) as s:
        m = AlertManager(s, {}, {}, host="h")
        n = m._notice(fire("r", box(1)), "r/x", "firing", 100.0)
        assert from_row(to_row(n)) == n
        assert s.enqueue(n, "a", 0.0) is True
        assert s.enqueue(n, "a", 0.0) is False  # same id, same sink: queued once
        assert s.enqueue(n, "b", 0.0) is True
        assert s.counts() == {"pending": 2} and s.pending_count() == 2
        rows = s.take("a", 1.0, 10)
        assert [r.notification.id for r in rows] == [n.id]
        s.mark_sent([rows[0].seq])
        assert s.counts("a") == {"sent": 1} and s.pending_count() == 1
        assert s.prune(keep_s=-1) >= 1  # finished rows can be pruned; pending ones never
        assert s.counts() == {"pending": 1}


def test_tx_rolls_back_on_error(tmp_path):
    with Store.open(tmp_path) as s:
        m = AlertManager(s, {}, {}, host="h")
        n = m._notice(fire("r", box(1)), "r/x", "firing", 100.0)
        with pytest.raises(RuntimeError), s.tx():
            s.enqueue(n, "a", 0.0)
            raise RuntimeError("boom")
        assert s.counts() == {}


def test_rows_of_a_sink_removed_from_the_config_are_dropped_not_kept_pending(tmp_path):
    with Store.open(tmp_path) as s:
        m = AlertManager(s, {}, {}, host="h")
        n = m._notice(fire("r", box(1)), "r/x", "firing", 100.0)
        for sink in ("kept", "gone", "gone-too"):
            s.enqueue(n, sink, 0.0)
        assert s.drop_orphans(["kept"]) == {"gone": 1, "gone-too": 1}
        assert s.pending_count() == 1 and s.counts() == {"pending": 1, "dropped": 2}
        assert s.drop_orphans(["kept"]) == {}
        assert s.drop_orphans([]) == {"kept": 1}          # notify: {} sends nothing: nothing waits
