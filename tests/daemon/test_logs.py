"""Where ``cgwatch run`` logs: the journal (with fields) when systemd gave it
a journal stream, stderr otherwise; a bad config is one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.sinks.test_journald import journald  # noqa: F401  (the fixture)

CGWATCH = str(Path(sys.executable).with_name("cgwatch"))


def bad_config(tmp: Path) -> Path:
    p = tmp / f"config-{uuid.uuid4().hex[:8]}.yaml"
    p.write_text("interval: soon\n")
    return p


def test_a_bad_config_is_one_line_on_stderr_and_exit_2(tmp_path):
    cfg = bad_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
    r = subprocess.run([CGWATCH, "run", "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cgwatch: ERROR: {cfg}:1:11: interval")


def test_under_systemd_logs_go_to_the_journal_with_fields(tmp_path, journald):  # noqa: F811
    cfg = bad_config(tmp_path)
    with open(tmp_path / "stderr", "wb") as err:
        st = os.fstat(err.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        r = subprocess.run([CGWATCH, "run", "--config", str(cfg)], stderr=err, env=env, timeout=60)
    assert r.returncode == 2
    assert (tmp_path / "stderr").read_text() == ""          # not on stderr: in the journal
    found = None
    deadline = time.monotonic() + 10
    while found is None and time.monotonic() < deadline:
        out = subprocess.run(["journalctl", "-o", "json", "-t", "cgwatch", "--no-pager", "-n", "200"],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            entry = json.loads(line)
            if str(cfg) in str(entry.get("MESSAGE", "")):
                found = entry
        time.sleep(0.2)
    assert found is not None, "no journal entry for the bad config"
    assert found["PRIORITY"] == "3" and found["SYSLOG_IDENTIFIER"] == "cgwatch"
    assert found["LOGGER"] == "cgwatch" and "CODE_FILE" in found
