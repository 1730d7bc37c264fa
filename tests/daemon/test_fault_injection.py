"""Fault injection: the daemon killed with SIGKILL at random moments while
containers' alerts fire and resolve and the receiver goes down, errs, hangs
and comes back. Afterwards the receiver's ledger must show, for every alert,
firing then resolved, in order, each notice accepted under one id, nothing
that the daemon accepted missing, and nothing left firing or pending.

The scenario is seeded (``CGWATCH_FAULT_SEED``); the number of SIGKILLs is
``CGWATCH_FAULT_KILLS`` (6 in ``make test``; the full run is 30 or more:
``CGWATCH_FAULT_KILLS=30 pytest tests/daemon/test_fault_injection.py``).
The containers are cgroups named as docker names them, each with a real
process; an alert's condition is "two or more tasks", so the test starts and
kills a second process to make it hold and end, with no CPU load. Only the
cgroupfs collector runs, so that a restart takes a second rather than a BPF
compile: the alert state, the outbox and delivery are the same either way.

Also here: SIGTERM while a send hangs, a ``state_dir`` on a full file
system, and an alerts database that is locked or corrupt.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.daemon.running import Daemon
from tests.receiver import Receiver, free_port, hook_sink

pytestmark = pytest.mark.bpf   # root: cgroups, and the daemon's collection

SEED = int(os.environ.get("CGWATCH_FAULT_SEED", "1214"))
KILLS = int(os.environ.get("CGWATCH_FAULT_KILLS", "6"))
PREFIX = secrets.token_hex(3)     # docker ids are 64 hex digits


def busy_rules(name: str) -> str:
    """A rule file with one rule, ``name``: a :class:`Box` of ours runs two tasks or more."""
    return f"""
rules:
  - name: {name}
    select: {{name: "{PREFIX}*"}}
    expr: proc.count >= 2
    for: 1s
    severity: warning
    summary: "{{{{ container }}}} runs {{{{ value }}}} tasks"
"""


def write_config(tmp: Path, port: int, state: Path | None = None) -> Path:
    (tmp / "rules.yaml").write_text(busy_rules("fi-busy"))
    cfg = tmp / "config.yaml"
    cfg.write_text(f"""interval: 1s
state_dir: {state or tmp / 'state'}
listen: 127.0.0.1:{free_port()}
rules: [{tmp / 'rules.yaml'}]
collectors: {{cpu: false, proc: false, mem: false, net: false, exit_codes: false}}
notify:
{hook_sink(port)}""")
    return cfg


class Box:
    """A container: a cgroup named like docker's, one process always, a second one when busy."""

    def __init__(self, make) -> None:  # type: ignore[no-untyped-def]
        self.id = PREFIX + secrets.token_hex(29)
        self.name = self.id[:12]
        self.cg = make(f"docker/{self.id}")
        self.cg.run(["sleep", "100000"])
        self.extra: subprocess.Popen[bytes] | None = None

    @property
    def busy(self) -> bool:
        return self.extra is not None

    def set_busy(self, busy: bool) -> None:
        if busy and self.extra is None:
            self.extra = self.cg.run(["sleep", "100000"])
        elif not busy and self.extra is not None:
            self.extra.kill()
            self.extra.wait()
            self.cg.procs.remove(self.extra)
            self.extra = None

    def remove(self) -> None:
        self.extra = None
        self.cg.stop()


class Scene(NamedTuple):
    cfg: Path
    db: Path
    box: Box
    rx: Receiver


@contextlib.contextmanager
def scene(tmp_path: Path, cgroups) -> Iterator[Scene]:  # type: ignore[no-untyped-def]
    """A daemon's config (fi-busy on ``box``, a webhook to ``rx``), where its alerts.db goes,
    the container's cgroup and the receiver; the cgroup is removed after, whatever happened."""
    port = free_port()
    cfg = write_config(tmp_path, port)
    box = Box(cgroups)
    try:
        with Receiver(port) as rx:
            yield Scene(cfg, tmp_path / "state" / "alerts.db", box, rx)
    finally:
        box.remove()


def ledger_by_alert(alerts: list[dict]) -> dict[str, list[dict]]:
    """The accepted notices per fingerprint, in the order they arrived, each id once."""
    seen: set[str] = set()
    out: dict[str, list[dict]] = defaultdict(list)
    for a in alerts:
        if a["id"] not in seen:
            seen.add(a["id"])
            out[a["fingerprint"]].append(a)
    return out


def check_ledger(alerts: list[dict], db: Path) -> dict[str, int]:
    """What the issue asks of the ledger; returns counts for the test's output."""
    by_fp = ledger_by_alert(alerts)
    for fp, notes in by_fp.items():
        states = [n["state"] for n in notes]
        assert states == ["firing", "resolved"] * (len(states) // 2) and len(states) % 2 == 0, (fp, states)
        for fire, res in zip(notes[::2], notes[1::2]):
            assert res["starts_at"] == fire["starts_at"], (fp, fire, res)
    ids = {a["id"] for a in alerts}
    with sqlite3.connect(db) as conn:
        routed = {r[0] for r in conn.execute("SELECT id FROM history WHERE sinks != ''")}
        left = conn.execute("SELECT status, count(*) FROM outbox WHERE status != 'sent' GROUP BY status").fetchall()
        firing = conn.execute("SELECT fingerprint FROM alerts").fetchall()
    assert routed <= ids, f"accepted but never delivered: {sorted(routed - ids)}"
    assert left == [], f"outbox rows not sent: {left}"
    assert firing == [], f"alerts left firing: {firing}"
    return {"alerts": sum(len(v) for v in by_fp.values()) // 2, "notices": len(ids),
            "duplicates": len(alerts) - len(ids)}


def settle(rx: Receiver, boxes: list[Box], db: Path, d: Daemon, timeout: float = 120.0) -> None:
    """Wait until every alert the daemon holds has resolved and the outbox is empty."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        time.sleep(0.5)
        assert d.proc.poll() is None, d.log_text()
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            pending = conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
            firing = conn.execute("SELECT count(*) FROM alerts").fetchone()[0]
        if not pending and not firing:
            return
    raise AssertionError(f"not settled: {pending} pending, {firing} firing\n{d.log_text()[-4000:]}")


def fires_then_resolves(rx: Receiver, box: Box, db: Path, d: Daemon) -> None:
    """``box`` (busy) has its alert at the receiver; idle, its resolution; then a clean stop."""
    assert rx.wait_for(lambda al: any(a["state"] == "firing" for a in al), 30), d.log_text()
    box.set_busy(False)
    settle(rx, [box], db, d)
    assert d.stop(signal.SIGTERM) == 0


def notified_once(rx: Receiver, box: Box, db: Path) -> None:
    """The ledger holds, and ``box``'s alert was told once: firing, then resolved."""
    check_ledger(rx.alerts, db)
    assert [a["state"] for a in ledger_by_alert(rx.alerts)[f"fi-busy/{box.id}"]] == ["firing", "resolved"]


def test_sigkill_at_random_moments_loses_nothing_and_leaves_nothing_stuck(tmp_path, cgroups):
    rng = random.Random(SEED)
    port = free_port()
    cfg = write_config(tmp_path, port)
    db = tmp_path / "state" / "alerts.db"
    boxes = [Box(cgroups) for _ in range(4)]
    kills = 0
    with Receiver(port) as rx:
        d = Daemon(tmp_path, cfg)
        try:
            while kills < KILLS:
                # a few things happen, then the daemon dies at a random moment (start-up included)
                for _ in range(rng.randint(1, 4)):
                    what = rng.random()
                    if what < 0.55:
                        b = rng.choice(boxes)
                        b.set_busy(not b.busy)
                    elif what < 0.85:
                        rx.mode = rng.choice(["up", "up", "error", "down", "hang"])
                    else:             # a container goes away, busy or not, and another comes
                        gone = boxes.pop(rng.randrange(len(boxes)))
                        gone.remove()
                        boxes.append(Box(cgroups))
                    time.sleep(rng.uniform(0.2, 2.5))
                d.stop(signal.SIGKILL)
                kills += 1
                d = Daemon(tmp_path, cfg)
            for b in boxes:
                b.set_busy(False)
            rx.mode = "up"
            d.ready()
            settle(rx, boxes, db, d)
        finally:
            code = d.stop(signal.SIGTERM)
            for b in boxes:
                b.remove()
    assert code == 0
    counts = check_ledger(rx.alerts, db)
    print(f"{kills} SIGKILLs (seed {SEED}): {counts}")
    assert counts["alerts"] >= 1, "the scenario should have fired something"


def test_sigterm_while_a_send_hangs_then_a_restart_delivers_it(tmp_path, cgroups):
    with scene(tmp_path, cgroups) as (cfg, db, box, rx):
        rx.mode = "hang"
        d = Daemon(tmp_path, cfg)
        d.ready()
        box.set_busy(True)
        end = time.monotonic() + 120     # waits for the send; the bound only stops a broken run
        while time.monotonic() < end and rx.requests == 0:
            time.sleep(0.1)
        assert rx.requests >= 1, d.log_text()        # a send is in flight and hangs
        assert d.stop(signal.SIGTERM) == 0
        rx.mode = "up"
        d = Daemon(tmp_path, cfg)
        d.ready()
        fires_then_resolves(rx, box, db, d)
    notified_once(rx, box, db)


def wait_log(d: Daemon, text: str, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in d.log_text():
            return True
        assert d.proc.poll() is None, d.log_text()
        time.sleep(0.2)
    return False


def fill(directory: Path) -> Path:
    """Fill ``directory``'s file system to the last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_state_dir_delays_alerts_and_loses_none(tmp_path, cgroups):
    """alerts.db on a small tmpfs that fills up: the daemon says so once, keeps running, and
    records and delivers the alert once there is room; a SIGKILL afterwards loses nothing."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "cgwatch-test", str(state)], check=True)
    try:
        with scene(tmp_path, cgroups) as (cfg, db, box, rx):
            d = Daemon(tmp_path, cfg)
            d.ready()
            filler = fill(state)
            box.set_busy(True)
            assert wait_log(d, "database or disk is full"), d.log_text()
            assert d.log_text().count("database or disk is full") <= 2, d.log_text()  # once per stage
            assert rx.alerts == []                     # not recorded, so not sent: not yet accepted
            filler.unlink()
            assert rx.wait_for(lambda al: any(a["state"] == "firing" for a in al), 30), d.log_text()
            assert "alert change(s) that waited are recorded" in d.log_text()
            d.stop(signal.SIGKILL)                     # what was accepted survives
            box.set_busy(False)
            d = Daemon(tmp_path, cfg)
            d.ready()
            settle(rx, [box], db, d)
            assert d.stop(signal.SIGTERM) == 0
            check_ledger(rx.alerts, db)
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert [a["state"] for a in ledger_by_alert(rx.alerts)[f"fi-busy/{box.id}"]] == ["firing", "resolved"]


def test_a_locked_alerts_db_delays_alerts_and_loses_none(tmp_path, cgroups):
    """Another process holds alerts.db's write lock (an operator's sqlite3 shell left in a
    transaction): the daemon says so, keeps running, and records the alert once it is free."""
    with scene(tmp_path, cgroups) as (cfg, db, box, rx):
        d = Daemon(tmp_path, cfg)
        d.ready()
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        box.set_busy(True)
        assert wait_log(d, "database is locked"), d.log_text()
        assert rx.alerts == []
        other.execute("ROLLBACK")
        other.close()
        fires_then_resolves(rx, box, db, d)
    notified_once(rx, box, db)


def test_a_corrupt_alerts_db_is_moved_aside_and_a_holding_alert_fires_again(tmp_path, cgroups):
    """alerts.db overwritten while the daemon was down: it starts with a new one, keeps the
    broken file for inspection and says where; an alert that still holds is notified again."""
    with scene(tmp_path, cgroups) as (cfg, db, box, rx):
        d = Daemon(tmp_path, cfg)
        d.ready()
        box.set_busy(True)
        assert rx.wait_for(lambda al: len(al) == 1, 30), d.log_text()
        d.stop(signal.SIGKILL)
        for suffix in ("-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        db.write_bytes(b"not a database, " * 4096)
        d = Daemon(tmp_path, cfg)
        d.ready()
        assert wait_log(d, "moved it to"), d.log_text()
        [aside] = db.parent.glob("alerts.db.corrupt-*")
        assert aside.read_bytes().startswith(b"not a database")
        assert rx.wait_for(lambda al: len(al) == 2, 30), d.log_text()
        box.set_busy(False)
        settle(rx, [box], db, d)
        assert d.stop(signal.SIGTERM) == 0
    states = [(a["state"], a["starts_at"]) for a in rx.alerts]
    assert [s for s, _ in states] == ["firing", "firing", "resolved"], states
    assert states[1][1] == states[2][1] != states[0][1]     # the new alert resolves; the old one was in the file
