"""Hostile and broken rule files: one clear error each, never a traceback or a hang."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgwatch.rules import document
from cgwatch.rules.document import Source, compose
from cgwatch.rules.fields import MAX_ERRORS
from cgwatch.rules.load import load, load_rules


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # no timed assertion here: how fast bad input is refused is bench/'s to measure
    # (a shared CI machine made 1.18 s of a 1.0 s budget); a hang still fails the run
    monkeypatch.chdir(tmp_path)
    yield


def only_error(data: str | bytes, name: str = "r.yaml") -> str:
    if isinstance(data, str):
        data = data.encode()
    Path(name).write_bytes(data)
    rules, errors = load_rules([name])
    assert rules == [] and len(errors) == 1, errors
    return errors[0].format()


def test_a_missing_file() -> None:
    rules, errors = load_rules(["gone.yaml"])
    assert [e.format() for e in errors] == ["gone.yaml:1:1: cannot read gone.yaml: No such file or directory"]


def test_a_file_over_1_mib_is_not_read() -> None:
    two_mib = ("#" * 1023 + "\n") * 2048
    assert only_error(two_mib) == "r.yaml:1:1: file too large (2097152 bytes, limit 1 MiB)"


def test_binary_garbage_is_not_utf8() -> None:
    assert only_error(b"rules:\n  - n\xffame: x\x00\x01\n" + os.urandom(4096)) == (
        "r.yaml:2:6: file is not UTF-8 (byte 0xff)\n"
        "  - n\ufffdame: x\ufffd\ufffd\n"
        "     ^")


def test_control_characters_are_refused_where_they_are() -> None:
    assert only_error("rules: []\n# \x00\n") == "r.yaml:2:3: character #x0000 is not allowed in YAML\n# \ufffd\n  ^"


def test_a_byte_order_mark_is_fine() -> None:
    Path("r.yaml").write_bytes(b"\xef\xbb\xbfrules:\n  - {name: a, event: exec, severity: info}\n")
    rules, errors = load_rules(["r.yaml"])
    assert [r.name for r in rules] == ["a"] and errors == []


def test_billion_laughs_is_refused_at_the_first_alias() -> None:
    lol = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lol += [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    assert only_error("\n".join(lol) + "\nrules: *i\n") == (
        "r.yaml:2:8: YAML aliases (*name) are not allowed in rule files\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "       ^")


def test_nesting_100_deep_is_refused() -> None:
    assert only_error("rules: " + "[" * 100 + "]" * 100 + "\n").splitlines()[0] == (
        "r.yaml:1:39: nesting deeper than 32 levels")
    block = "".join("  " * i + "a:\n" for i in range(100))
    assert only_error(block).splitlines()[0] == "r.yaml:32:63: nesting deeper than 32 levels"


def test_a_megabyte_of_open_brackets() -> None:
    assert only_error("[" * ((1 << 20) - 1)).splitlines()[0] == "r.yaml:1:33: nesting deeper than 32 levels"


def test_a_very_long_line_is_shown_as_a_window() -> None:
    got = only_error("rules: [" + " " * 4000 + "x]\n").splitlines()
    assert got[0] == "r.yaml:1:4009: rule must be a mapping, got 'x'"
    assert len(got[1]) < 200 and got[1].startswith("...") and got[1].endswith("x]")
    assert got[1][len(got[2]) - 1] == "x" and got[2].endswith(" ^")


def test_too_many_errors_stop_at_a_limit() -> None:
    Path("r.yaml").write_text("rules: [" + "x, " * 100_000 + "]\n")
    _, errors = load_rules(["r.yaml"])
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1].message == f"too many errors (stopping after {MAX_ERRORS})"


@pytest.mark.parametrize(("text", "want"), [
    ("- name: a\n", "r.yaml:1:1: top level must be a mapping with a 'rules' list, got a list\n- name: a\n^"),
    ("just words\n", "r.yaml:1:1: top level must be a mapping with a 'rules' list, got 'just words'\n"
                     "just words\n^~~~~~~~~~"),
    ("", "r.yaml:1:1: empty file (a rule file is a mapping with a 'rules' list; write 'rules: []' for none)\n\n^"),
    ("# all commented out\n", "r.yaml:1:1: empty file (a rule file is a mapping with a 'rules' list; "
                              "write 'rules: []' for none)\n# all commented out\n^"),
    ("macros: {}\n", "r.yaml:1:1: missing 'rules' (a list of rules)\nmacros: {}\n^~~~~~"),
    ("rules: {name: a}\n", "r.yaml:1:8: rules must be a list, got a mapping\nrules: {name: a}\n       ^"),
    ("rules: []\n---\nrules: []\n", "r.yaml:2:1: a rule file is one YAML document, but another begins here\n---\n^"),
    ("rules: []\n? [a, b]\n: 1\n", "r.yaml:2:3: keys of top level must be strings, got a list\n? [a, b]\n  ^"),
    ("rules:\n - name: !!python/object:os.system x\n   event: exec\n   severity: info\n",
     "r.yaml:2:10: name must be a string, got a value tagged !!python/object:os.system\n"
     " - name: !!python/object:os.system x\n         ^~~~~~~~~~~~~~~~~~~~~~~~~~~"),
    ("rules:\r\n  - {name: a, event: exec, severity: bad}\r\n",
     "r.yaml:2:38: severity must be one of info, warning, critical, got 'bad'\n"
     "  - {name: a, event: exec, severity: bad}\n                                     ^~~"),
])
def test_file_level_problems(text: str, want: str) -> None:
    assert only_error(text) == want


@pytest.mark.parametrize("loader", document._LOADERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("text", "where"), [
    ("rules:\n  - name: a\n    severity: info\n   event: exec\n", "r.yaml:4:4: "),
    ("rules: [a, b\nx: 1\n", "r.yaml:2:2: "),
    ("rules:\n\t- a\n", "r.yaml:2:1: "),
    ("a: b: c\n", "r.yaml:1:5: "),
    ('rules: "abc\n', "r.yaml:2:1: "),
])
def test_malformed_yaml_is_reported_at_yamls_own_mark(loader: type, text: str, where: str) -> None:
    got = compose(Source("r.yaml", text), loader)
    assert isinstance(got, document.RuleError)
    assert got.format().startswith(where) and len(got.message) > 10


def test_malformed_yaml_through_load_rules() -> None:
    got = only_error("rules:\n  - name: a\n    severity: info\n   event: exec\n").splitlines()
    assert got[0].startswith("r.yaml:4:4: ") and got[1:] == ["   event: exec", "   ^"]


def test_a_directory_without_rule_files() -> None:
    os.mkdir("empty")
    Path("empty/a.test.yaml").write_text("tests: []\n")
    assert [e.format() for e in load(["empty"]).errors] == [
        "empty:1:1: no rule files (*.yaml, *.yml) in empty"]


def test_a_fifo_does_not_hang() -> None:
    os.mkfifo("pipe.yaml")
    assert [e.format() for e in load(["pipe.yaml"]).errors] == [
        "pipe.yaml:1:1: cannot read pipe.yaml: not a regular file"]


def test_an_empty_drop_in_directory_beside_rules_is_fine() -> None:
    os.mkdir("rules.d")
    Path("main.yaml").write_text("rules:\n  - {name: a, expr: cpu.usage_cores > 1, severity: info}\n")
    got = load(["main.yaml", "rules.d"])
    assert got.errors == [] and [r.name for r in got.rules] == ["a"]
