"""Loading rule files: the good cases, macros and lists, files and directories.

Error messages, one test per kind, are in test_load_errors.py; hostile input
in test_load_badinput.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cgwatch.model import Container
from cgwatch.rules.context import DictContext
from cgwatch.rules.load import AnomalySpec, Rule, Select, load, load_rules, rule_files

GOOD = """\
macros:
  hot: cpu.usage_cores > 0.9 * cpu.limit_cores
  is_shell: event.comm in shells
lists:
  shells: [sh, bash]
  codes: [137, 143]
rules:
  - name: cpu-hog
    description: A container kept more than 90% of its CPU limit busy.
    select: {name: "web-*", image: "nginx*", runtime: docker, labels: {env: prod}}
    expr: hot
    for: 30s
    severity: warning
    summary: "{{ container }} used {{ value | round(2) }} cores for 30s"
    notify: [slack, pager]
    repeat: 1h
    labels: {team: web}
  - name: shell
    event: exec
    where: is_shell and container.image != "debug"
    severity: critical
    enabled: false
  - name: killed
    event: exit
    where: event.code in codes
    severity: info
  - name: cpu-baseline
    anomaly: {metrics: [cpu.usage_cores, mem.usage_bytes], sensitivity: 0.5, warmup: 100}
    severity: info
  - name: mem-baseline
    anomaly: {metric: mem.usage_bytes}
    severity: info
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(name: str, text: str) -> str:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    Path(name).write_text(text)
    return name


def good_rules() -> dict[str, Rule]:
    rules, errors = load_rules([write("good.yaml", GOOD)])
    assert errors == []
    return {r.name: r for r in rules}


def test_a_threshold_rule_has_every_field() -> None:
    r = good_rules()["cpu-hog"]
    assert (r.name, r.severity, r.event, r.where, r.anomaly) == ("cpu-hog", "warning", None, None, None)
    assert r.description == "A container kept more than 90% of its CPU limit busy."
    assert r.select == Select("web-*", "nginx*", "docker", {"env": "prod"})
    assert r.expr is not None and r.expr.kind == "metric"
    assert r.expr.metrics == {"cpu.usage_cores", "cpu.limit_cores"}
    assert (r.for_s, r.repeat_s, r.notify, dict(r.labels)) == (30.0, 3600.0, ("slack", "pager"), {"team": "web"})
    assert r.enabled and (r.file, r.line) == ("good.yaml", 8)
    assert r.summary is not None
    assert r.summary.render({"container": "web-1", "value": 0.9731}) == "web-1 used 0.97 cores for 30s"


def test_event_rules_compile_where_with_macros_and_lists() -> None:
    rules = good_rules()
    shell, killed = rules["shell"], rules["killed"]
    assert (shell.event, shell.enabled, shell.line, shell.expr) == ("exec", False, 18, None)
    assert shell.where is not None and shell.where.kind == "event"
    assert shell.where.text == '(event.comm in ["sh", "bash"]) and container.image != "debug"'
    ctx = DictContext(fields={"event.comm": "bash", "container.image": "nginx"})
    assert shell.where.evaluate(ctx, 0.0)
    assert not shell.where.evaluate(DictContext(fields={"event.comm": "bash", "container.image": "debug"}), 0.0)
    assert killed.where is not None and killed.where.text == "event.code in [137, 143]"
    assert killed.where.evaluate(DictContext(fields={"event.code": 137}), 0.0)


def test_anomaly_rules_keep_their_spec_and_defaults() -> None:
    rules = good_rules()
    assert rules["cpu-baseline"].anomaly == AnomalySpec(("cpu.usage_cores", "mem.usage_bytes"), "auto", 0.5, 100)
    assert rules["mem-baseline"].anomaly == AnomalySpec(("mem.usage_bytes",), "auto", None, None)
    assert rules["mem-baseline"].select == Select() and rules["mem-baseline"].for_s == 0.0


def test_a_threshold_rule_evaluates() -> None:
    expr = good_rules()["cpu-hog"].expr
    assert expr is not None
    assert expr.evaluate(DictContext({"cpu.usage_cores": 0.95, "cpu.limit_cores": 1.0}), 0.0)
    assert not expr.evaluate(DictContext({"cpu.usage_cores": 0.5, "cpu.limit_cores": 1.0}), 0.0)


def test_rules_are_frozen_and_hashable() -> None:
    r = good_rules()["cpu-hog"]
    with pytest.raises(AttributeError):
        r.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.labels["team"] = "x"  # type: ignore[index]
    assert hash(r) == hash(r)


def test_names_quoted_and_unquoted_scalars_read_as_written() -> None:
    rules, errors = load_rules([write("r.yaml", "rules:\n  - {name: 404, event: exec, severity: info,"
                                                " labels: {code: 0x1F, on: yes}}\n")])
    assert errors == []
    assert rules[0].name == "404" and dict(rules[0].labels) == {"code": "0x1F", "on": "yes"}


@pytest.mark.parametrize(("select", "container", "matches"), [
    (Select(), Container("c1", "anything", "podman"), True),
    (Select(name="web-*"), Container("c1", "web-1", "docker"), True),
    (Select(name="web-*"), Container("c1", "api-1", "docker"), False),
    (Select(name="web-[12]"), Container("c1", "web-3", "docker"), False),
    (Select(image="nginx:*"), Container("c1", "web-1", "docker", image="nginx:1.27"), True),
    (Select(image="nginx:*"), Container("c1", "web-1", "docker"), False),
    (Select(runtime="cri*"), Container("c1", "web-1", "cri-o"), True),
    (Select(runtime="docker"), Container("c1", "web-1", "podman"), False),
    (Select(labels={"env": "prod"}), Container("c1", "w", "docker", labels={"env": "prod", "x": "y"}), True),
    (Select(labels={"env": "prod", "tier": "1"}), Container("c1", "w", "docker", labels={"env": "prod"}), False),
    (Select(name="Web-*"), Container("c1", "web-1", "docker"), False),     # case matters
])
def test_select_matches_containers(select: Select, container: Container, matches: bool) -> None:
    assert select.matches(container) is matches


def test_select_from_yaml_matches() -> None:
    rules, errors = load_rules([write("r.yaml", 'rules:\n  - {name: a, event: exec, severity: info,'
                                                ' select: {name: "db-?", labels: {env: prod}}}\n')])
    assert errors == []
    sel = rules[0].select
    assert sel.matches(Container("c1", "db-1", "docker", labels={"env": "prod"}))
    assert not sel.matches(Container("c1", "db-10", "docker", labels={"env": "prod"}))


def test_macros_nest_and_see_lists() -> None:
    text = ("macros:\n  big: mem.usage_bytes > 1GiB\n  bad: big and not calm\n  calm: cpu.usage_cores < 0.1\n"
            "rules:\n  - {name: a, expr: bad or cpu.usage_cores > 4, severity: info}\n")
    rules, errors = load_rules([write("r.yaml", text)])
    assert errors == []
    expr = rules[0].expr
    assert expr is not None
    assert expr.text == "((mem.usage_bytes > 1GiB) and not (cpu.usage_cores < 0.1)) or cpu.usage_cores > 4"


def test_macros_do_not_touch_strings_dotted_names_or_units() -> None:
    text = ('macros:\n  m: event.comm == "m"\n  comm: x\nrules:\n'
            '  - {name: a, event: exec, where: m and event.comm != "comm", severity: info}\n')
    rules, errors = load_rules([write("r.yaml", text)])
    assert errors == []
    assert rules[0].where is not None
    assert rules[0].where.text == '(event.comm == "m") and event.comm != "comm"'


def test_macros_and_lists_belong_to_their_file() -> None:
    write("d/a.yaml", "macros:\n  hot: cpu.usage_cores > 1\nrules: []\n")
    write("d/b.yaml", "rules:\n  - {name: b, expr: hot, severity: info}\n")
    _, errors = load_rules(["d"])
    assert [e.format() for e in errors] == [
        "d/b.yaml:2:21: unknown name 'hot' (metric names are dotted, e.g. cpu.usage_cores)\n"
        "  - {name: b, expr: hot, severity: info}\n"
        "                    ^~~"]


def test_directories_are_read_sorted_skipping_tests_and_hidden_files() -> None:
    for name in ("b.yml", "a.yaml", "a.test.yaml", ".#a.yaml", "notes.txt"):
        write(f"d/{name}", "rules:\n  - {name: %s, event: exec, severity: info}\n" % name.replace("#", ""))
    os.mkdir("d/sub.yaml")
    files, errors = rule_files(["d"])
    assert (files, errors) == (["d/a.yaml", "d/b.yml"], [])
    rules, errors = load_rules(["d"])
    assert [r.name for r in rules] == ["a.yaml", "b.yml"] and errors == []


def test_a_file_named_twice_is_read_once() -> None:
    write("d/a.yaml", "rules:\n  - {name: a, event: exec, severity: info}\n")
    got = load(["d", "d/a.yaml", "./d/a.yaml"])
    assert (got.files, [r.name for r in got.rules], got.errors) == (["d/a.yaml"], ["a"], [])


def test_an_explicit_test_file_is_read_as_a_rule_file() -> None:
    write("x.test.yaml", "rules: []\n")
    assert load(["x.test.yaml"]).files == ["x.test.yaml"]


def test_errors_come_in_file_then_line_order_and_good_rules_still_load() -> None:
    write("d/1.yaml", "rules:\n  - {name: a, event: exec, severity: info}\n  - {name: b, event: ex, severity: info}\n")
    write("d/2.yaml", "rules:\n  - {name: c, event: exec, severity: bad}\n  - {name: a, event: exec, severity: info}\n")
    rules, errors = load_rules(["d"])
    assert [r.name for r in rules] == ["a"]
    assert [(e.file, e.line, e.col) for e in errors] == [("d/1.yaml", 3, 22), ("d/2.yaml", 2, 38),
                                                         ("d/2.yaml", 3, 12)]
    assert errors[2].message == "duplicate rule name 'a' (first defined at d/1.yaml:2)"


def test_an_empty_rules_list_is_fine() -> None:
    assert load_rules([write("r.yaml", "rules: []\n")]) == ([], [])


def test_pathlike_paths_work() -> None:
    rules, _ = load_rules([Path(write("r.yaml", "rules:\n  - {name: a, event: exec, severity: info}\n"))])
    assert rules[0].file == "r.yaml"
