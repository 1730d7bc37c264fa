"""``cgwatch rules check``: exit codes and what goes to stdout and stderr."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cgwatch.rules.check import check

GOOD = """\
rules:
  - {name: a, event: exec, severity: info}
  - {name: b, expr: cpu.usage_cores > 1, severity: warning, enabled: false}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def run(*paths: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check(list(paths), out, err)
    return code, out.getvalue(), err.getvalue()


def test_valid_files_exit_0_with_a_line_each() -> None:
    Path("rules").mkdir()
    Path("rules/default.yaml").write_text(GOOD)
    Path("rules/extra.yml").write_text("rules:\n  - {name: c, event: exit, severity: critical}\n")
    Path("rules/default.test.yaml").write_text("not: [rules\n")
    Path("none.yaml").write_text("rules: []\n")
    assert run("rules", "none.yaml") == (
        0, "rules/default.yaml: 2 rules OK (1 disabled)\nrules/extra.yml: 1 rule OK\nnone.yaml: 0 rules OK\n", "")


def test_errors_go_to_stderr_and_exit_1() -> None:
    Path("good.yaml").write_text(GOOD)
    Path("bad.yaml").write_text("rules:\n  - name: c\n    event: exec\n    severity: warn\n    exprs: x\n")
    code, out, err = run("good.yaml", "bad.yaml", "gone.yaml")
    assert code == 1
    assert out == "good.yaml: 2 rules OK (1 disabled)\n"
    assert err == (
        "bad.yaml:4:15: severity must be one of info, warning, critical, got 'warn'\n"
        "    severity: warn\n"
        "              ^~~~\n"
        "bad.yaml:5:5: unknown key 'exprs' (did you mean 'expr'?)\n"
        "    exprs: x\n"
        "    ^~~~~\n"
        "gone.yaml:1:1: cannot read gone.yaml: No such file or directory\n"
        "3 errors in 2 files\n")


def test_a_directory_without_rules_is_an_error() -> None:
    Path("empty").mkdir()
    assert run("empty") == (1, "", "empty:1:1: no rule files (*.yaml, *.yml) in empty\n1 error in 1 file\n")


def test_no_paths_is_an_error() -> None:
    assert run() == (1, "", "no rule files or directories given\n")


def test_a_file_with_only_a_duplicate_of_another_files_rule_fails() -> None:
    Path("a.yaml").write_text(GOOD)
    Path("b.yaml").write_text(GOOD)
    code, out, err = run("a.yaml", "b.yaml")
    assert (code, out) == (1, "a.yaml: 2 rules OK (1 disabled)\n")
    assert err.count("duplicate rule name") == 2 and err.endswith("2 errors in 1 file\n")
