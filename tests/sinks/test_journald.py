"""The journald sink writes real entries that journalctl reads back.

Where no journald listens (a container without systemd), the fixture starts
the real ``systemd-journald`` and stops that process, by pid, afterwards.
Needs root (journald's sockets and /run/log/journal).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgwatch.sinks import build_sinks
from tests.sinks.conftest import note, send

SOCKET = Path("/run/systemd/journal/socket")
JOURNALD = "/lib/systemd/systemd-journald"


def listening() -> bool:
    """Whether a journald answers on its socket (a stale socket file refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(str(SOCKET))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def journald() -> Iterator[None]:
    """A listening journald: the host's, or one started here and stopped after."""
    if os.geteuid() != 0:
        pytest.skip("journald test needs root")
    if shutil.which("journalctl") is None:
        pytest.skip("journalctl is not installed")
    if listening():
        yield
        return
    if not os.access(JOURNALD, os.X_OK):
        pytest.skip(f"{JOURNALD} is not installed")
    SOCKET.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not listening():
            assert proc.poll() is None, f"systemd-journald exited with {proc.returncode}"
            assert time.monotonic() < deadline, "systemd-journald did not create its socket"
            time.sleep(0.05)
        yield
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


def read_back(notification_id: str, want: int = 1) -> list[dict[str, str]]:
    """Entries with this CGWATCH_NOTIFICATION_ID (polling up to 5 s: journald may be a moment behind)."""
    deadline = time.monotonic() + 5
    while True:
        out = subprocess.run(["journalctl", "-o", "json", "-t", "cgwatch", "--no-pager",
                              f"CGWATCH_NOTIFICATION_ID={notification_id}"],
                             capture_output=True, text=True, timeout=10).stdout
        rows = [json.loads(x) for x in out.splitlines() if x.strip()]
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_one_entry_per_notification_with_fields(journald: None) -> None:
    sink = build_sinks({"j": {"type": "journald"}})["j"]
    tag = uuid.uuid4().hex
    group = [note(1, id=f"{tag}-a", severity="critical", value=1.25),
             note(2, id=f"{tag}-b", severity="warning", state="resolved", ends_at=1732492900.0)]
    assert send(sink, group).ok  # type: ignore[arg-type]
    (a,) = read_back(f"{tag}-a")
    (b,) = read_back(f"{tag}-b")
    assert a["SYSLOG_IDENTIFIER"] == "cgwatch"
    assert a["PRIORITY"] == "2" and b["PRIORITY"] == "5"
    assert a["MESSAGE"] == "FIRING critical cpu-hog on web-1: web-1 used 0.97 cores for 30s"
    assert (a["CGWATCH_RULE"], a["CGWATCH_STATE"], a["CGWATCH_SEVERITY"]) == ("cpu-hog", "firing", "critical")
    assert (a["CONTAINER_NAME"], a["CONTAINER_ID"], a["CONTAINER_RUNTIME"]) == ("web-1", f"{1:064x}", "docker")
    assert a["CGWATCH_VALUE"] == "1.25" and a["CGWATCH_FINGERPRINT"] == "cpu-hog/c1"
    assert b["CGWATCH_STATE"] == "resolved" and b["CONTAINER_NAME"] == "web-2"


def test_a_card_is_two_fields_of_its_entry(journald: None) -> None:
    from tests.sinks.test_payloads import CARD

    sink = build_sinks({"j": {"type": "journald"}})["j"]
    tag = uuid.uuid4().hex
    assert send(sink, [note(1, id=f"{tag}-c", card=CARD)]).ok  # type: ignore[arg-type]
    (c,) = read_back(f"{tag}-c")
    assert c["CGWATCH_CARD"].splitlines()[0] == "changed: mem.usage_bytes 100.00MiB → 300.00MiB (z 27)"
    assert json.loads(c["CGWATCH_CARD_JSON"]) == CARD


@pytest.mark.parametrize("severity,priority", [("critical", "2"), ("warning", "4"), ("info", "6")])
def test_priority_follows_severity(journald: None, severity: str, priority: str) -> None:
    sink = build_sinks({"j": {"type": "journald"}})["j"]
    nid = uuid.uuid4().hex
    assert send(sink, [note(1, id=nid, severity=severity, value=None)]).ok  # type: ignore[arg-type]
    (e,) = read_back(nid)
    assert e["PRIORITY"] == priority and "CGWATCH_VALUE" not in e
