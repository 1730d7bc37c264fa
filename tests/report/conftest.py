"""A small recording with known values, and the report of it made by the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

CGWATCH = Path(sys.executable).with_name("cgwatch")
T0 = 1732492800.0
RULES = """\
rules:
  - name: a-busy
    expr: cpu.usage_cores > 50
    for: 10s
    severity: warning
    summary: "{{ container }} used {{ value | round(2) }} cores"
  - name: oom
    event: oom_kill
    severity: critical
    summary: "{{ container }}: OOM killed {{ event.comm }}"
"""


@dataclass
class Recording:
    path: Path
    clean: Path                               # the same without its garbage lines
    values: dict[tuple[str, str], list[float]]
    events: dict[str, dict[str, int]]
    garbage: list[int]                        # line numbers of the bad lines
    rules: Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CGWATCH), *args], capture_output=True, text=True, timeout=60)


def make_recording(d: Path) -> Recording:
    """Container a: cpu 0..99 (one a second); b: cpu 0.25 constant; memory, execs, net, events."""
    values: dict[tuple[str, str], list[float]] = {}
    lines: list[str] = []

    def sample(ts: float, c: str, m: str, v: float) -> None:
        values.setdefault((c, m), []).append(v)
        lines.append(json.dumps({"ts": ts, "container": c, "metric": m, "value": v}))

    for i in range(100):
        ts = T0 + i
        if i in (5, 6, 7):
            lines.append(json.dumps({"ts": ts, "container": "a", "event": "exec", "fields": {"pid": i, "comm": "sh"}}))
        if i == 40:
            lines.append(json.dumps({"ts": ts, "container": "b", "event": "oom_kill",
                                     "fields": {"pid": 9, "comm": "java</script>"}}))
        sample(ts, "a", "cpu.usage_cores", float(i))
        sample(ts, "b", "cpu.usage_cores", 0.25)
        sample(ts, "a", "mem.usage_bytes", float(2**20 * (i % 7)))
        sample(ts, "b", "mem.usage_bytes", float(2**30 + i))
        sample(ts, "a", "proc.execs", float(i % 3))
        sample(ts, "b", "net.rx_bytes", 1000.0 * i)
        sample(ts, "b", "net.tx_bytes", 10.0)
    clean = d / "clean.jsonl"
    clean.write_text("\n".join(lines) + "\n")
    bad = list(lines)
    bad.insert(10, "this is not json")
    bad.insert(200, '{"ts": "yesterday", "container": "a", "metric": "m", "value": 1}')
    path = d / "rec.jsonl"
    path.write_text("\n".join(bad) + "\n")
    rules = d / "rules.yaml"
    rules.write_text(RULES)
    return Recording(path, clean, values, {"a": {"exec": 3}, "b": {"oom_kill": 1}}, [11, 201], rules)


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return make_recording(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="session")
def html_report(recording: Recording) -> Path:
    out = recording.path.with_name("report.html")
    p = run("report", "--input", str(recording.path), "--rules", str(recording.rules), "--output", str(out),
            "--host", "node-1")
    assert p.returncode == 0, p.stderr
    return out
