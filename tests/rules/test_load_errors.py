"""Every kind of rule error, each as the exact ``FILE:LINE:COL: message``,
source line and caret line that ``cgwatch rules check`` prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from cgwatch.rules import document
from cgwatch.rules.load import load_rules

#: a rule named "a" at line 2; a case's text continues it at line 3
HEAD = "rules:\n  - name: a\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def errors(text: str, name: str = "r.yaml") -> str:
    Path(name).write_text(text)
    rules, errs = load_rules([name])
    assert not errs or all(r.name != "a" for r in rules), "a rule with errors must not load"
    return "\n".join(e.format() for e in errs)


def lines(*text: str) -> str:
    return "\n".join(text)


RULE_CASES = {
    "unknown key, with a suggestion": (
        "    exprs: cpu.usage_cores > 1\n    severity: info\n",
        lines("r.yaml:3:5: unknown key 'exprs' (did you mean 'expr'?)",
              "    exprs: cpu.usage_cores > 1",
              "    ^~~~~")),
    "unknown key, nothing close": (
        "    event: exec\n    severity: info\n    colour: red\n",
        lines("r.yaml:5:5: unknown key 'colour' (expected one of name, description, severity, select, expr, event, "
              "anomaly, where, for, summary, notify, repeat, enabled, labels, profile)",
              "    colour: red",
              "    ^~~~~~")),
    "a key twice": (
        "    event: exec\n    severity: info\n    event: exit\n",
        lines("r.yaml:5:5: duplicate key 'event' (first at line 3)",
              "    event: exit",
              "    ^~~~~")),
    "severity not one of the three": (
        "    event: exec\n    severity: warn\n",
        lines("r.yaml:4:15: severity must be one of info, warning, critical, got 'warn'",
              "    severity: warn",
              "              ^~~~")),
    "severity of the wrong type": (
        "    event: exec\n    severity: [info]\n",
        lines("r.yaml:4:15: severity must be one of info, warning, critical, got a list",
              "    severity: [info]",
              "              ^")),
    "no severity": (
        "    event: exec\n",
        lines("r.yaml:2:5: rule 'a' has no 'severity' (one of info, warning, critical)",
              "  - name: a",
              "    ^~~~")),
    "a duration that is not one": (
        "    expr: cpu.usage_cores > 1\n    for: 5 parsecs\n    severity: info\n",
        lines("r.yaml:4:10: for: '5 parsecs' is not a duration (use e.g. 500ms, 30s, 5m, 1h)",
              "    for: 5 parsecs",
              "         ^~~~~~~~~")),
    "for longer than 7d": (
        "    expr: cpu.usage_cores > 1\n    for: 8d\n    severity: info\n",
        lines("r.yaml:4:10: for must be at most 7d, got '8d'",
              "    for: 8d",
              "         ^~")),
    "repeat shorter than 1m": (
        "    expr: cpu.usage_cores > 1\n    repeat: 30s\n    severity: info\n",
        lines("r.yaml:4:13: repeat must be at least 1m, got '30s'",
              "    repeat: 30s",
              "            ^~~")),
    "both expr and event": (
        "    expr: cpu.usage_cores > 1\n    event: exec\n    severity: info\n",
        lines("r.yaml:4:5: 'event' cannot be combined with 'expr' (a rule has exactly one of expr, event, anomaly)",
              "    event: exec",
              "    ^~~~~")),
    "neither expr nor event nor anomaly": (
        "    severity: info\n",
        lines("r.yaml:2:5: rule 'a' needs one of expr, event, anomaly",
              "  - name: a",
              "    ^~~~")),
    "where without event": (
        '    expr: cpu.usage_cores > 1\n    where: event.comm == "sh"\n    severity: info\n',
        lines("r.yaml:4:5: 'where' only applies to event rules",
              '    where: event.comm == "sh"',
              "    ^~~~~")),
    "for on an event rule": (
        "    event: exec\n    for: 1m\n    severity: info\n",
        lines("r.yaml:4:5: 'for' does not apply to event rules (an event fires once)",
              "    for: 1m",
              "    ^~~")),
    "an unknown event": (
        "    event: oom\n    severity: info\n",
        lines("r.yaml:3:12: event must be one of exec, exit, oom_kill, signal, container_start, container_stop, "
              "neighbours, got 'oom'",
              "    event: oom",
              "           ^~~")),
    "an unbalanced [ in a glob": (
        '    event: exec\n    severity: info\n    select: {name: "web-[12"}\n',
        lines("r.yaml:5:25: select.name: '[' is never closed",
              '    select: {name: "web-[12"}',
              "                        ^~~")),
    "a runtime glob that matches no runtime": (
        "    event: exec\n    severity: info\n    select: {runtime: dokcer}\n",
        lines("r.yaml:5:23: select.runtime 'dokcer' matches no runtime (known: docker, containerd, cri-o, cri, "
              "podman, lxc, nspawn, systemd, host)",
              "    select: {runtime: dokcer}",
              "                      ^~~~~~")),
    "an unknown select key": (
        "    event: exec\n    severity: info\n    select: {names: web}\n",
        lines("r.yaml:5:14: unknown key 'names' (did you mean 'name'?)",
              "    select: {names: web}",
              "             ^~~~~")),
    "select labels not a mapping": (
        "    event: exec\n    severity: info\n    select: {labels: [env]}\n",
        lines("r.yaml:5:22: select.labels must be a mapping, got a list",
              "    select: {labels: [env]}",
              "                     ^")),
    "notify as one string": (
        "    event: exec\n    severity: info\n    notify: slack\n",
        lines("r.yaml:5:13: notify must be a list of receiver names, got 'slack' (write [slack])",
              "    notify: slack",
              "            ^~~~~")),
    "a label name that is not one": (
        "    event: exec\n    severity: info\n    labels: {team-name: web}\n",
        lines("r.yaml:5:14: label name 'team-name' may hold only letters, digits and _ (not first)",
              "    labels: {team-name: web}",
              "             ^~~~~~~~~")),
    "enabled not a boolean": (
        "    event: exec\n    severity: info\n    enabled: maybe\n",
        lines("r.yaml:5:14: enabled must be true or false, got 'maybe'",
              "    enabled: maybe",
              "             ^~~~~")),
    "an empty expr": (
        "    expr: ''\n    severity: info\n",
        lines("r.yaml:3:11: expr must not be empty",
              "    expr: ''",
              "          ^~")),
    "expr with no value": (
        "    expr:\n    severity: info\n",
        lines("r.yaml:3:10: expr must be a string, got nothing",
              "    expr:",
              "         ^")),
    "a summary that does not parse": (
        '    event: exec\n    severity: info\n    summary: "{{ container }"\n',
        lines("r.yaml:5:15: summary: unexpected '}'",
              '    summary: "{{ container }"',
              "              ^~~~~~~~~~~~~~")),
    "an unknown filter on a summary's second line": (
        "    event: exec\n    severity: info\n    summary: |\n      {{ container }} ran\n"
        "      {{ event.comm | byts }}\n",
        lines("r.yaml:7:7: summary: unknown filter 'byts' (did you mean 'bytes'?)",
              "      {{ event.comm | byts }}",
              "      ^~~~~~~~~~~~~~~~~~~~~~~")),
    "an unknown summary variable": (
        '    event: exec\n    severity: info\n    summary: "{{ contianer }} ran {{ event.comm }}"\n',
        lines("r.yaml:5:15: summary: unknown variable 'contianer' (did you mean 'container'?)",
              '    summary: "{{ contianer }} ran {{ event.comm }}"',
              "              ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~")),
    "a name with a space": (
        "    event: exec\n    severity: info\n",
        lines("r.yaml:2:11: rule name 'a b' may hold only letters, digits and - _ . : (at most 128, the first "
              "a letter or digit)",
              "  - name: a b",
              "          ^~~")),
    "anomaly knobs out of range": (
        "    anomaly: {metric: cpu, sensitivity: 0, warmup: 1.5}\n    severity: info\n",
        lines("r.yaml:3:23: 'cpu' is not a metric name (such as cpu.usage_cores)",
              "    anomaly: {metric: cpu, sensitivity: 0, warmup: 1.5}",
              "                      ^~~",
              "r.yaml:3:41: anomaly.sensitivity must be in (0, 1], got 0",
              "    anomaly: {metric: cpu, sensitivity: 0, warmup: 1.5}",
              "                                        ^",
              "r.yaml:3:52: anomaly.warmup (samples) must be a whole number, got 1.5",
              "    anomaly: {metric: cpu, sensitivity: 0, warmup: 1.5}",
              "                                                   ^~~")),
    "anomaly model unknown, with a suggestion": (
        "    anomaly: {metric: m.x, model: madd}\n    severity: info\n",
        lines("r.yaml:3:35: unknown anomaly.model 'madd' (did you mean 'mad'?; a River detector is written "
              "{river: anomaly.NAME, params: {...}})",
              "    anomaly: {metric: m.x, model: madd}",
              "                                  ^~~~")),
    "River detector that does not exist": (
        "    anomaly: {metric: m.x, model: {river: anomaly.GausianScorer}}\n    severity: info\n",
        lines("r.yaml:3:43: River has no anomaly.GausianScorer (did you mean anomaly.GaussianScorer?)",
              "    anomaly: {metric: m.x, model: {river: anomaly.GausianScorer}}",
              "                                          ^~~~~~~~~~~~~~~~~~~~~")),
    "River class that is not a detector": (
        "    anomaly: {metric: m.x, model: {river: preprocessing.MinMaxScaler}}\n    severity: info\n",
        lines("r.yaml:3:43: river.preprocessing.MinMaxScaler is not an anomaly detector (it has no score_one)",
              "    anomaly: {metric: m.x, model: {river: preprocessing.MinMaxScaler}}",
              "                                          ^~~~~~~~~~~~~~~~~~~~~~~~~~")),
    "River parameter it does not take, nested": (
        "    anomaly:\n      metric: m.x\n      model:\n        river: anomaly.QuantileFilter\n"
        "        params:\n          q: 0.99\n          anomaly_detector: {river: anomaly.HalfSpaceTrees, "
        "params: {n_tree: 3}}\n    severity: info\n",
        lines("r.yaml:9:70: anomaly.HalfSpaceTrees takes no parameter 'n_tree' (did you mean 'n_trees'?)",
              "          anomaly_detector: {river: anomaly.HalfSpaceTrees, params: {n_tree: 3}}",
              "                                                                     ^~~~~~")),
    "River parameter River refuses": (
        "    anomaly: {metric: m.x, model: {river: anomaly.GaussianScorer, params: {window_size: -3}}}\n"
        "    severity: info\n",
        lines("r.yaml:3:43: anomaly.GaussianScorer(window_size=-3) failed: ValueError: maxlen must be non-negative",
              "    anomaly: {metric: m.x, model: {river: anomaly.GaussianScorer, params: {window_size: -3}}}",
              "                                          ^~~~~~~~~~~~~~~~~~~~~~")),
    "anomaly without a metric": (
        "    anomaly: {model: auto}\n    severity: info\n",
        lines("r.yaml:3:14: anomaly needs 'metric' (one) or 'metrics' (a list)",
              "    anomaly: {model: auto}",
              "             ^")),
}


@pytest.mark.parametrize("case", RULE_CASES)
def test_rule_errors(case: str) -> None:
    text, want = RULE_CASES[case]
    head = HEAD.replace("name: a", "name: a b") if case == "a name with a space" else HEAD
    assert errors(head + text) == want


# expressions: ExprError's offset lands on the right line and column, whatever the scalar style
EXPR_CASES = {
    "plain": (
        "    expr: avg(cpu.usage_cores, 5mins) > 1\n",
        lines("r.yaml:3:33: unknown unit 'mins' (did you mean 5m?)",
              "    expr: avg(cpu.usage_cores, 5mins) > 1",
              "                                ^~~~")),
    "plain, at the end of the text": (
        "    expr: cpu.usage_cores >\n",
        lines("r.yaml:3:28: unexpected end of expression: expected a value",
              "    expr: cpu.usage_cores >",
              "                           ^")),
    "plain over two lines": (
        "    expr: cpu.usage_cores > 1\n      and memm > 5\n",
        lines("r.yaml:4:11: unknown name 'memm' (metric names are dotted, e.g. cpu.usage_cores)",
              "      and memm > 5",
              "          ^~~~")),
    "double-quoted": (
        '    expr: "cpu.usage_cores > 1 && mem.usage_bytes > 1"\n',
        lines("r.yaml:3:32: use 'and' instead of '&&'",
              '    expr: "cpu.usage_cores > 1 && mem.usage_bytes > 1"',
              "                               ^~")),
    "double-quoted with escapes before and in the culprit": (
        '    expr: "cpu.usage_cores > \\x31 \\u0026\\u0026 x"\n',
        lines("r.yaml:3:35: use 'and' instead of '&&'",
              '    expr: "cpu.usage_cores > \\x31 \\u0026\\u0026 x"',
              "                                  ^~~~~~~~~~~~")),
    "single-quoted with a doubled quote": (
        "    event: exec\n    where: 'event.comm == ''sh'' && x'\n",
        lines("r.yaml:4:34: use 'and' instead of '&&'",
              "    where: 'event.comm == ''sh'' && x'",
              "                                 ^~")),
    "literal block": (
        "    expr: |\n      cpu.usage_cores > 1\n        and mem.usage_bytes > 5 &&\n",
        lines("r.yaml:5:33: use 'and' instead of '&&'",
              "        and mem.usage_bytes > 5 &&",
              "                                ^~")),
    "folded block": (
        "    expr: >\n      cpu.usage_cores > 1\n      and avgg(mem.usage_bytes, 1m) > 5\n",
        lines("r.yaml:5:11: unknown function 'avgg' (did you mean avg?)",
              "      and avgg(mem.usage_bytes, 1m) > 5",
              "          ^~~~")),
    "a tab inside the expression": (
        "    event: exec\n    where: event.comm ==\t'sh' && x\n",
        lines("r.yaml:4:31: use 'and' instead of '&&'",
              "    where: event.comm ==\t'sh' && x",
              "                        \t     ^~")),
}


@pytest.mark.parametrize("loader", document._LOADERS, ids=lambda c: c.__name__)   # libyaml's and PyYAML's
@pytest.mark.parametrize("case", EXPR_CASES)
def test_expression_errors_point_into_the_file(case: str, loader: type, monkeypatch: pytest.MonkeyPatch) -> None:
    if "tab" in case and loader.__name__ == "_PyLoader":
        pytest.skip("PyYAML's own parser refuses tabs between tokens; libyaml allows them")
    monkeypatch.setattr(document, "_LOADERS", [loader])
    text, want = EXPR_CASES[case]
    assert errors(HEAD + text + "    severity: info\n") == want


def test_an_error_inside_a_macro_points_at_the_macro_and_names_the_rule() -> None:
    text = "macros:\n  hot: cpu.usage_cores >> 2\nrules:\n  - name: r\n    expr: hot and x.y > 1\n    severity: info\n"
    assert errors(text) == lines(
        "r.yaml:2:25: expected a value, got '>' (in macro 'hot', used by rule 'r' at line 5)",
        "  hot: cpu.usage_cores >> 2",
        "                        ^")


def test_an_error_next_to_a_macro_points_into_the_rule() -> None:
    text = "macros:\n  hot: cpu.usage_cores > 1\nrules:\n  - {name: r, expr: hot and memm > 1, severity: info}\n"
    assert errors(text) == lines(
        "r.yaml:4:29: unknown name 'memm' (metric names are dotted, e.g. cpu.usage_cores)",
        "  - {name: r, expr: hot and memm > 1, severity: info}",
        "                            ^~~~")


def test_a_macro_cycle_is_one_error_at_the_macro_that_closes_it() -> None:
    text = "macros:\n  a: b and cpu.usage_cores > 1\n  b: a\nrules:\n  - {name: r, expr: a, severity: info}\n"
    assert errors(text) == lines(
        "r.yaml:3:6: macro cycle: a -> b -> a",
        "  b: a",
        "     ^")


def test_macros_nested_deeper_than_8_are_an_error() -> None:
    chain = "".join(f"  m{i}: m{i + 1}\n" for i in range(8)) + "  m8: cpu.usage_cores > 1\n"
    assert errors(f"macros:\n{chain}rules:\n  - {{name: r, expr: m0, severity: info}}\n") == lines(
        "r.yaml:9:7: macros nested deeper than 8: m0 -> m1 -> m2 -> m3 -> m4 -> m5 -> m6 -> m7 -> m8",
        "  m7: m8",
        "      ^~")
    assert errors(f"macros:\n{chain[chain.index('  m1'):]}rules:\n  - {{name: r, expr: m1, severity: info}}\n") == ""


def test_a_macro_that_expands_too_far_is_an_error_at_the_macro() -> None:
    macros = "".join(f"  m{i}: m{i + 1} and m{i + 1} and m{i + 1}\n" for i in range(6)) + "  m6: cpu.usage_cores > 1\n"
    assert errors(f"macros:\n{macros}rules:\n  - {{name: r, expr: m0, severity: info}}\n").splitlines()[0] == (
        "r.yaml:2:7: expression longer than 4096 characters after expanding macros")


def test_bad_macro_and_list_names_and_values() -> None:
    text = "macros:\n  and: x.y > 1\n  avg: x.y > 1\n  x: x.y > 1\nlists:\n  x: [a]\n  e: []\n  b: [sh, [x]]\n  c: sh\nrules: []\n"
    assert errors(text) == lines(
        "r.yaml:2:3: macro name 'and' is a reserved word", "  and: x.y > 1", "  ^~~",
        "r.yaml:3:3: macro name 'avg' is a reserved word", "  avg: x.y > 1", "  ^~~",
        "r.yaml:6:3: 'x' is both a macro and a list", "  x: [a]", "  ^",
        "r.yaml:7:6: list 'e' is empty", "  e: []", "     ^",
        "r.yaml:8:11: items of list 'b' must be strings or numbers, got a list", "  b: [sh, [x]]", "          ^",
        "r.yaml:9:6: list 'c' must be a list, got 'sh'", "  c: sh", "     ^~")


def test_a_rule_using_a_broken_macro_is_not_reported_twice() -> None:
    text = "macros:\n  m: [1]\nrules:\n  - {name: r, expr: m, severity: info}\n"
    assert errors(text) == lines("r.yaml:2:6: macro 'm' must be a string, got a list", "  m: [1]", "     ^")


def test_duplicate_names_within_a_file() -> None:
    text = "rules:\n  - {name: a, event: exec, severity: info}\n  - {name: a, event: exit, severity: info}\n"
    Path("r.yaml").write_text(text)
    rules, errs = load_rules(["r.yaml"])
    assert [r.event for r in rules] == ["exec"]
    assert "\n".join(e.format() for e in errs) == lines(
        "r.yaml:3:12: duplicate rule name 'a' (first defined at line 2)",
        "  - {name: a, event: exit, severity: info}",
        "           ^")


def test_duplicate_names_on_one_line() -> None:
    Path("r.yaml").write_text("rules: [{name: a, event: exec, severity: info}, {name: a, event: exit, severity: info}]\n")
    rules, errs = load_rules(["r.yaml"])
    assert [r.event for r in rules] == ["exec"]
    assert "\n".join(e.format() for e in errs) == lines(
        "r.yaml:1:56: duplicate rule name 'a' (first defined at line 1)",
        "rules: [{name: a, event: exec, severity: info}, {name: a, event: exit, severity: info}]",
        "                                                       ^")


def test_duplicate_names_across_files_name_the_first_file() -> None:
    Path("one.yaml").write_text("rules:\n  - {name: a, event: exec, severity: info}\n")
    Path("two.yaml").write_text("rules:\n\n  - name: a\n    event: exit\n    severity: info\n")
    _, errs = load_rules(["one.yaml", "two.yaml"])
    assert "\n".join(e.format() for e in errs) == lines(
        "two.yaml:3:11: duplicate rule name 'a' (first defined at one.yaml:2)",
        "  - name: a",
        "          ^")


def test_a_misspelled_key_is_not_also_reported_missing() -> None:
    assert errors("rules:\n  - nmae: a\n    event: exec\n    severity: info\n") == lines(
        "r.yaml:2:5: unknown key 'nmae' (did you mean 'name'?)", "  - nmae: a", "    ^~~~")
    assert errors("rule: []\n") == lines("r.yaml:1:1: unknown key 'rule' (did you mean 'rules'?)", "rule: []", "^~~~")


def test_all_errors_are_collected_in_line_order() -> None:
    text = ("rules:\n  - {name: a, event: exec, severity: warn}\n  - {name: b, event: nope, severity: info}\n"
            "  - {name: c, expr: 'cpu.usage_cores >', severity: info, for: x}\n")
    got = [e.split("\n")[0] for e in errors(text).split("\nr.yaml")]
    assert [g.split(": ", 1)[0].removeprefix("r.yaml") for g in got] == [":2:38", ":3:22", ":4:39", ":4:63"]
