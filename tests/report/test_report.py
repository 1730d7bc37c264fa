"""`cgwatch report` end to end: the real CLI on a recording with known numbers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cgwatch.cli import main

from .conftest import Recording, run


class Cells(HTMLParser):
    """Collects summary cells (container, metric, stat -> data-value), skipped lines, alert rows, the JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.container = self.metric = ""
        self.stats: dict[tuple[str, str, str], float] = {}
        self.skipped: list[int] = []
        self.events: dict[str, dict[str, int]] = {}
        self.alert_rows: list[list[str]] = []
        self.urls: list[str] = []
        self._in_alerts = self._in_data = False
        self._row: list[str] | None = None
        self._text = ""
        self.data = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href") and not (v or "").startswith("#")]
        if tag == "details":
            self.container = a["data-container"] or ""
        if tag == "tr" and "data-metric" in a:
            self.metric = a["data-metric"] or ""
        if tag == "td" and "data-stat" in a:
            self.stats[(self.container, self.metric, a["data-stat"] or "")] = float(a["data-value"] or "nan")
        if tag == "li" and "data-line" in a:
            self.skipped.append(int(a["data-line"] or 0))
        if tag == "span" and "data-kind" in a:
            self.events.setdefault(self.container, {})[a["data-kind"] or ""] = int(a["data-count"] or 0)
        if tag == "table":
            self._in_alerts = a.get("id") == "alert-list"
        if tag == "tr" and self._in_alerts:
            self._row = []
        if tag == "td" and self._row is not None:
            self._text = ""
        if tag == "script" and a.get("id") == "data":
            self._in_data = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None:
            self._row.append(self._text.strip())
        if tag == "tr" and self._row is not None:
            if self._row:
                self.alert_rows.append(self._row)
            self._row = None
        if tag == "table":
            self._in_alerts = False
        if tag == "script":
            self._in_data = False

    def handle_data(self, data: str) -> None:
        self._text += data
        if self._in_data:
            self.data += data


def parse(path: Path) -> Cells:
    c = Cells()
    c.feed(path.read_text(encoding="utf-8"))
    return c


def test_table_numbers_equal_numpy_on_the_recording(recording: Recording, html_report: Path) -> None:
    cells = parse(html_report)
    assert recording.values
    for (c, m), vals in recording.values.items():
        v = np.array(vals)
        want = {"count": len(v), "mean": v.mean(), "p50": np.percentile(v, 50), "p95": np.percentile(v, 95),
                "max": v.max()}
        for stat, expected in want.items():
            assert cells.stats[(c, m, stat)] == pytest.approx(expected, rel=1e-12), (c, m, stat)
    # container a's cpu is 0..99: the textbook numbers
    assert [cells.stats[("a", "cpu.usage_cores", s)] for s in ("mean", "p50", "p95", "max")] == [49.5, 49.5, 94.05, 99.0]
    assert cells.events == recording.events


def test_report_header_skipped_lines_and_offline(recording: Recording, html_report: Path) -> None:
    page = html_report.read_text(encoding="utf-8")
    cells = parse(html_report)
    assert "2 lines skipped" in page
    assert cells.skipped == recording.garbage
    assert "line 11: not JSON" in page and 'line 201: &#34;ts&#34; must be a number' in page
    assert "node-1" in page and "2024-11-25T00:00:00Z → 2024-11-25T00:01:39Z" in page
    assert cells.urls == []                                   # nothing to fetch
    assert not re.search(r"https?://", page)                  # no URL at all
    assert "MIT License" in page                              # uPlot's licence kept
    data = json.loads(cells.data)                             # the JSON survives the </script> in an event
    assert [c["name"] for c in data["containers"]] == ["a", "b"]
    assert page.count("</script>") == 3                       # data, uPlot, report.js: nothing ended early


def test_alerts_are_those_of_replay(recording: Recording, html_report: Path) -> None:
    rows = parse(html_report).alert_rows
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [("oom", "b", "firing", "critical"),
                                                        ("a-busy", "a", "firing", "warning")]
    assert rows[1][0] == "2024-11-25T00:01:01Z" and rows[1][5] == "61"   # > 50 from 51 s, for 10 s
    replay = run("replay", "--rules", str(recording.rules), "--input", str(recording.clean))
    assert replay.returncode == 0, replay.stderr
    got = [json.loads(line) for line in replay.stdout.splitlines()]
    assert [(a["rule"], a["container"], a["state"]) for a in got] == [(r[1], r[2], r[3]) for r in rows]
    page = html_report.read_text(encoding="utf-8")
    assert 'data-rule="a-busy"' in page and "OOM killed java&lt;/script&gt;" in page   # escaped, not markup


def test_markdown_report(recording: Recording) -> None:
    out = recording.path.with_name("report.md")
    p = run("report", "-i", str(recording.path), "-r", str(recording.rules), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "2 lines of" in p.stderr and "skipped (first: line 11: not JSON" in p.stderr
    md = out.read_text(encoding="utf-8")
    assert md.startswith("### cgwatch report: rec.jsonl")
    assert "**2 lines skipped** (unreadable, or of a container beyond the bound): line 11: not JSON" in md and "line 201:" in md
    assert "| 1 | `a` | 49.5 |" in md                     # top CPU
    assert "| 1 | `b` | 1.00GiB |" in md                   # top memory (max)
    assert "| a-busy | 1 | 0 |" in md
    # every table is well formed: a header, a delimiter row, rows of the same width
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, re.M):
        rows = block.splitlines()
        assert re.fullmatch(r"\|(?:-{3}:?\|)+", rows[1]), rows[1]
        widths = {len(re.findall(r"(?<!\\)\|", r)) for r in rows}
        assert len(widths) == 1, block
    # --format md to stdout gives the same summary
    p = run("report", "-i", str(recording.path), "-r", str(recording.rules), "-o", "-", "--format", "md")
    assert p.returncode == 0 and p.stdout.splitlines()[:4] == md.splitlines()[:4]


def test_default_rules_are_the_shipped_pack(recording: Recording, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert main(["report", "-i", str(recording.clean), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "oom-kill" in page                                 # the shipped pack's OOM rule fired
    assert "lines skipped" not in page


@pytest.mark.parametrize("args, message", [
    (["-i", "{d}/missing.jsonl"], "missing.jsonl: no such file"),
    (["-i", "{d}"], ": not a file"),
    (["-i", "{rec}", "--format", "pdf"], "--format 'pdf': use html or md"),
    (["-i", "{rec}", "-r", "{d}/bad.yaml"], "error(s) in the rules"),
    (["-i", "{rec}", "-o", "{d}/no/such/dir/r.html"], "cannot write"),
])
def test_bad_input_is_one_line_and_exit_2(recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], message: str) -> None:
    (tmp_path / "bad.yaml").write_text("rules:\n  - {name: x, expr: 'cpu.usage_cores >', severity: info}\n")
    argv = ["report", "-o", str(tmp_path / "r.html")] + [a.format(d=tmp_path, rec=recording.path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cgwatch: ") and message in err[-1], err


def test_bad_format_via_the_real_command(recording: Recording) -> None:
    p = run("report", "-i", str(recording.path), "-o", "x.pdf", "--format", "pdf")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "use html or md" in p.stderr


def test_a_report_runs_the_forecast_and_gives_each_firing_its_card() -> None:
    """The recorded real leak (tests/testdata/leak): the report's alerts are the daemon's,
    the memory forecast included, and each firing has a root-cause card."""
    from cgwatch.config import default_rules
    from cgwatch.report.markdown import render_markdown
    from cgwatch.report.summary import summarize
    from cgwatch.rules.load import load_rules

    rules, errors = load_rules(default_rules())
    assert errors == []
    leak = Path(__file__).resolve().parents[1] / "testdata" / "leak" / "leak.jsonl.gz"
    r = summarize(str(leak), rules)
    firing = [(i, a.rule, a.container.name) for i, a in enumerate(r.alerts or []) if a.state == "firing"]
    assert [(rule, name) for _, rule, name in firing] == [("memory-limit-forecast", "cgw-leak"),
                                                          ("oom-kill", "cgw-leak")]
    assert sorted(r.cards) == [i for i, _, _ in firing]
    assert [e["kind"] for e in r.cards[firing[0][0]]["events"]] == ["container_start"]
    assert "oom_kill" not in [e["kind"] for e in r.cards[firing[1][0]]["events"]]   # its own event is the alert
    text = render_markdown(r)
    assert "#### Around the onset" in text and "**memory-limit-forecast** on **cgw-leak**" in text
