"""The shipped rule pack is valid and its own unit tests pass."""

from __future__ import annotations

import io
from pathlib import Path

from cgwatch.anomaly.stage import AnomalyStage
from cgwatch.rules.check import check
from cgwatch.rules.load import load_rules
from cgwatch.rules.testing import run_test_files

RULES = Path(__file__).resolve().parents[2] / "rules"


def test_default_pack_checks_clean():
    out, err = io.StringIO(), io.StringIO()
    assert check([str(RULES)], out=out, err=err) == 0, err.getvalue()
    assert out.getvalue().strip() == f"{RULES}/default.yaml: 11 rules OK"


def test_every_default_rule_says_why_and_is_tested():
    rules, errors = load_rules([str(RULES / "default.yaml")])
    assert errors == []
    tests = (RULES / "tests" / "default.test.yaml").read_text()
    for r in rules:
        assert len(r.description) > 80, f"{r.name}: say why it matters and what to do"
        assert f"rule: {r.name}" in tests, f"{r.name} has no rules test"


def test_default_pack_unit_tests_pass():
    out, err = io.StringIO(), io.StringIO()
    files = sorted(str(p) for p in (RULES / "tests").glob("*.test.yaml"))
    assert run_test_files(files, out=out, err=err, anomaly=AnomalyStage.for_rules) == 0, \
        out.getvalue() + err.getvalue()
    assert out.getvalue().strip().endswith("13 passed, 0 failed")


def test_a_failing_rule_test_shows_what_differs(tmp_path):
    (tmp_path / "t.test.yaml").write_text(f"""
rule_files: [{RULES}/default.yaml]
tests:
  - name: wrong expectation
    input:
      - {{container: db, metric: mem.usage_ratio, values: "0.95x200"}}
    expect:
      - at: 150s
        firing: [{{rule: memory-near-limit, container: web}}]
""")
    out = io.StringIO()
    assert run_test_files([str(tmp_path / "t.test.yaml")], out=out, err=io.StringIO()) == 1
    text = out.getvalue()
    assert "FAIL" in text and "'wrong expectation'" in text
    assert "expected, not firing: memory-near-limit on web" in text
    assert "firing, not expected: memory-near-limit on db" in text
    assert text.strip().endswith("0 passed, 1 failed")
