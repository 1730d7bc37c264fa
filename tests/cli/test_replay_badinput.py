"""`cgwatch replay` and `cgwatch report` on hostile recordings, through the real command (issue 15).

A bad line is one line of error naming FILE:LINE for ``replay`` (which refuses a damaged
file: its alerts could not be trusted) and a skipped, counted line for ``report``; never a
traceback. Containers beyond the first ``MAX_CONTAINERS`` are dropped, said in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgwatch.record import MAX_CONTAINERS, MAX_TS, parse_line

CGWATCH = str(Path(sys.executable).with_name("cgwatch"))
T0 = 1732492800.0
#: generated lines per run: 300 in make test, 10,000 or more for the long run (docs/troubleshooting.md)
EXAMPLES = int(os.environ.get("CGWATCH_FUZZ_EXAMPLES", "300"))
RULES = """
rules:
  - name: hot
    expr: cpu.usage_cores > 0.5
    severity: warning
  - name: oom
    event: oom_kill
    severity: critical
"""


def line(ts: float | str, **extra: object) -> str:
    """A sample line; ``ts`` given as text is written as is (``1e20``, ``Infinity``, ``NaN``)."""
    body = {"container": "web-1", "metric": "cpu.usage_cores", "value": 0.9, **extra}
    return '{"ts": ' + (ts if isinstance(ts, str) else json.dumps(ts)) + ", " + json.dumps(body)[1:]


def cgwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CGWATCH, *args], capture_output=True, text=True, timeout=120)


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Error:" not in p.stderr.replace("cgwatch: ", ""), p.stderr


# (the bad second line, what the error says); lines 1 and 3 are good, 1 s apart
BAD = [
    (line("1e20"), '"ts" 1e+20 is not Unix seconds between 0 and 253402300799 (the year 9999)'),
    (line("Infinity"), '"ts" inf is not Unix seconds between 0'),
    (line("-Infinity"), '"ts" -inf is not Unix seconds between 0'),
    (line("NaN"), '"ts" must be a number (Unix seconds)'),
    (line("-1"), '"ts" -1 is not Unix seconds between 0'),
    (line("1" + "0" * 400), '"ts" (a huge integer) is not Unix seconds'),
    (line(T0 + 1, id=["a", "b"]), '"id" must be a string, not a list'),
    (line(T0 + 1, id={"a": 1}), '"id" must be a string, not an object'),
    (line(T0 + 1, runtime=["docker"]), '"runtime" must be a string, not a list'),
    (line(T0 + 1, image={"x": []}), '"image" must be a string, not an object'),
    (line(T0 + 1, labels={"env": ["prod"]}), '"labels" values must be strings ("env" is a list)'),
    (line(T0 + 1, labels={"env": {"a": "b"}}), '"labels" values must be strings ("env" is an object)'),
    (line(T0 + 1, value=int("9" * 400)), '"value" is too large for a float'),
    ('{"ts": ' + "1" * 5000 + "}", "not JSON that can be read"),
    ("[" * 100_000 + "]" * 100_000, "not JSON that can be read"),
]


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    (tmp_path / "r.yaml").write_text(RULES)
    return tmp_path / "r.yaml"


def recording(tmp_path: Path, bad: str) -> Path:
    rec = tmp_path / "rec.jsonl"
    rec.write_text("\n".join([line(T0), bad, line(T0 + 2)]) + "\n")
    return rec


@pytest.mark.parametrize(("bad", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_replay_refuses_a_bad_line_in_one_line(tmp_path: Path, rules: Path, bad: str, message: str) -> None:
    rec = recording(tmp_path, bad)
    p = cgwatch("replay", "-r", str(rules), "-i", str(rec))
    no_traceback(p)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith(f"cgwatch: {rec}:2: {message}") and p.stderr.count("\n") == 1, p.stderr


@pytest.mark.parametrize(("bad", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_report_skips_and_counts_a_bad_line(tmp_path: Path, rules: Path, bad: str, message: str) -> None:
    rec, out = recording(tmp_path, bad), tmp_path / "r.md"
    p = cgwatch("report", "-r", str(rules), "-i", str(rec), "-o", str(out))
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert f"1 lines of {rec} skipped (first: line 2: {message}" in p.stderr
    text = out.read_text()
    assert "**1 line skipped**" in text, text[:2000]
    assert f"line 2: {message}" in text, text[:2000]


def test_a_bad_ts_does_not_make_every_later_line_out_of_order(tmp_path: Path, rules: Path) -> None:
    """1e20 used to be accepted: then each later (right) line was 'before the previous line'."""
    rec = tmp_path / "rec.jsonl"
    rec.write_text("\n".join([line(T0), line("1e20"), *(line(T0 + i) for i in range(1, 6))]) + "\n")
    p = cgwatch("report", "-r", str(rules), "-i", str(rec), "-o", str(tmp_path / "r.md"))
    assert p.returncode == 0 and f"1 lines of {rec} skipped (first: line 2:" in p.stderr, p.stderr


def many_containers(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):     # quiet values: the rules stay inactive, so the engine's cost stays small
            f.write(json.dumps({"ts": T0 + i * 0.001, "container": f"c{i}", "metric": "cpu.usage_cores",
                                "value": 0.1}) + "\n")
        f.write(json.dumps({"ts": T0 + n, "container": "c0", "event": "oom_kill", "fields": {}}) + "\n")
        f.write(json.dumps({"ts": T0 + n + 1, "container": f"c{n + 5}", "event": "oom_kill", "fields": {}}) + "\n")


def test_replay_keeps_the_first_containers_and_says_what_it_dropped(tmp_path: Path, rules: Path) -> None:
    rec = tmp_path / "many.jsonl"
    extra = 25
    many_containers(rec, MAX_CONTAINERS + extra)
    p = cgwatch("replay", "-r", str(rules), "-i", str(rec))
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    alerts = [json.loads(x) for x in p.stdout.splitlines()]
    assert [(a["rule"], a["container"]) for a in alerts] == [("oom", "c0")]    # c10030's oom was dropped
    first = MAX_CONTAINERS + 1                                                   # its line number
    assert p.stderr.splitlines() == [
        f"cgwatch: WARNING: {rec}:{first}: container 'c{MAX_CONTAINERS}' dropped: beyond the first "
        f"{MAX_CONTAINERS} containers; only the first {MAX_CONTAINERS} containers of a recording are kept, "
        "lines of any further one are dropped",
        f"cgwatch: WARNING: {rec}: {extra + 1} lines of containers beyond the first {MAX_CONTAINERS} were dropped",
    ]


def test_report_counts_the_dropped_containers_lines_as_skipped(tmp_path: Path, rules: Path) -> None:
    rec, out = tmp_path / "many.jsonl", tmp_path / "r.md"
    many_containers(rec, MAX_CONTAINERS + 3)
    p = cgwatch("report", "-r", str(rules), "-i", str(rec), "-o", str(out))
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert f"4 lines of {rec} skipped (first: line {MAX_CONTAINERS + 1}: container 'c{MAX_CONTAINERS}' dropped" \
        in p.stderr, p.stderr
    assert f"container 'c{MAX_CONTAINERS}' dropped: beyond the first {MAX_CONTAINERS}" in out.read_text()


# -- the line parser under any JSON ---------------------------------------------------------------

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=8),
              st.sampled_from([0, T0, 1e20, 10**400, "web-1", "cpu.usage_cores", "oom_kill"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)
KEYS = ["ts", "container", "metric", "value", "event", "fields", "id", "image", "runtime", "labels", "pod", "qos"]
LINES = st.one_of(st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS, JSON)),
                  st.fixed_dictionaries({"ts": st.floats(0, 2e9), "container": st.just("w"),
                                         "metric": st.just("m"), "value": st.floats()},
                                        optional=dict.fromkeys(["id", "image", "runtime", "labels", "pod"], JSON)),
                  JSON)


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None)
@given(obj=LINES)
def test_any_json_line_is_an_item_or_a_value_error(obj: object) -> None:
    cache: dict = {}
    try:
        item = parse_line(json.dumps(obj), cache)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert 0 <= item.ts <= MAX_TS and isinstance(item.container.id, str)
    assert all(isinstance(v, str) for v in item.container.labels.values())
    hash(item.container)


def test_a_gzip_recording_replays_as_the_plain_one_and_one_cut_short_is_one_line(tmp_path: Path,
                                                                                 rules: Path) -> None:
    import gzip

    lines = [line(T0 + i, value=0.9 if 3 <= i < 8 else 0.1) for i in range(12)]
    plain, packed, cut = tmp_path / "rec.jsonl", tmp_path / "rec.jsonl.gz", tmp_path / "cut.jsonl.gz"
    plain.write_text("\n".join(lines) + "\n")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    cut.write_bytes(packed.read_bytes()[:-12])          # the end marker and the last bytes missing
    a, b = cgwatch("replay", "-r", str(rules), "-i", str(plain)), cgwatch("replay", "-r", str(rules), "-i", str(packed))
    assert a.returncode == b.returncode == 0, b.stderr
    assert b.stdout == a.stdout and [json.loads(x)["state"] for x in b.stdout.splitlines()] == ["firing", "resolved"]

    p = cgwatch("replay", "-r", str(rules), "-i", str(cut))
    no_traceback(p)
    assert p.returncode == 2 and p.stderr.startswith(f"cgwatch: {cut}:") and "cannot read" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr

    out = tmp_path / "r.md"
    p = cgwatch("report", "-r", str(rules), "-i", str(cut), "-o", str(out))
    no_traceback(p)
    assert p.returncode == 0 and "cannot read this line or any after it" in p.stderr, p.stderr
    assert "**1 line skipped**" in out.read_text()
