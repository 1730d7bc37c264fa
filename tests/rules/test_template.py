"""Summary templates: what they can use, what they cannot, and that rendering never fails."""

from __future__ import annotations

import logging
import time

import pytest

from cgwatch.rules.template import MAX_OUTPUT, TRUNCATED, VARIABLES, TemplateError, compile_template, human_duration

CTX = {"container": "web-1", "id": "4f1c", "image": "nginx:1.27", "runtime": "docker", "labels": {"env": "prod"},
       "value": 0.97312, "rule": "cpu-hog", "severity": "warning", "event": {"comm": "sh", "pid": 42}}


@pytest.mark.parametrize(("src", "want"), [
    ("{{ container }} used {{ value | round(2) }} cores", "web-1 used 0.97 cores"),
    ("{{ rule }}/{{ severity | upper }} on {{ id }} ({{ image }}, {{ runtime }})",
     "cpu-hog/WARNING on 4f1c (nginx:1.27, docker)"),
    ("{{ labels.env }} {{ labels['env'] }} {{ labels.tier | default('-') }}", "prod prod -"),
    ("{{ event.comm }}[{{ event.pid }}]", "sh[42]"),
    ("{{ 1536 | bytes }} {{ (3 * 2**30) | bytes }}", "1.50KiB 3.00GiB"),
    ("{{ 90 | duration }} {{ 0.25 | duration }} {{ 7200 | duration }}", "1m30s 250ms 2h"),
    ("{% if value > 0.9 %}hot{% else %}ok{% endif %}", "hot"),
    ("{% for k, v in labels | dictsort %}{{ k }}={{ v }}{% endfor %}", "env=prod"),
    ("{{ event.code is defined }}", "False"),
    ("plain text", "plain text"),
])
def test_renders(src: str, want: str) -> None:
    assert compile_template(src).render(CTX) == want


def test_variables_may_come_as_keywords_and_default_to_none() -> None:
    t = compile_template("{{ container }}:{{ value }}:{{ event }}")
    assert t.render(container="db") == "db:None:{}"
    assert t.render({"container": "a"}, container="b") == "b:None:{}"


@pytest.mark.parametrize(("src", "why"), [
    ("{{ event.code }} exited", "UndefinedError"),          # a field this event lacks
    ("{{ value | round(2) }}", "TypeError"),                # an event rule's value is None
    ("{{ value.__class__ }}", "SecurityError"),             # the sandbox (bombs: test_template_bounds.py)
    ("{{ labels.update({'a': 1}) }}", "SecurityError"),      # immutable
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_render_errors_give_the_source_and_log_once(src: str, why: str, caplog: pytest.LogCaptureFixture) -> None:
    t = compile_template(src)
    ctx = dict(CTX, value=None)
    with caplog.at_level(logging.WARNING, logger="cgwatch.rules"):
        assert t.render(ctx) == src
        assert t.render(ctx) == src
    assert len(caplog.records) == 1 and why in caplog.records[0].getMessage()


def test_output_is_cut() -> None:
    out = compile_template("{% for c in container * 2000 %}{{ c }}{% endfor %}").render(container="abcdefghij")
    assert len(out) == MAX_OUTPUT and out.endswith(TRUNCATED)


@pytest.mark.parametrize(("src", "message", "line"), [
    ("{{ container }", "unexpected '}'", 1),
    ("first\nsecond {% if %}", "Expected an expression, got 'end of statement block'", 2),
    ("{{ contianer }}", "unknown variable 'contianer' (did you mean 'container'?)", 1),
    ("a\n\n{{ hostname }}", "unknown variable 'hostname'", 3),
    ("{{ value | byts }}", "unknown filter 'byts' (did you mean 'bytes'?)", 1),
    ("{{ value is evn }}", "unknown test 'evn' (did you mean 'even'?)", 1),
    ("{% for i in range(10) %}{% endfor %}", "'range' is not available in summaries", 1),
    ('x\n{% include "other" %}', "'include' is not available in summaries", 2),
    ('{% extends "base" %}', "'extends' is not available in summaries", 1),
    ('{% import "m" as m %}', "'import' is not available in summaries", 1),
])
def test_compile_errors_have_a_message_and_a_line(src: str, message: str, line: int) -> None:
    with pytest.raises(TemplateError) as e:
        compile_template(src)
    assert (e.value.message, e.value.line) == (message, line)


def test_every_documented_variable_compiles() -> None:
    assert compile_template(" ".join("{{ %s }}" % v for v in VARIABLES)).render(CTX).startswith("web-1 0.97312")


def test_compiled_once_and_rendered_in_microseconds() -> None:
    src = "{{ container }} used {{ value | round(2) }} cores ({{ labels.env }})"
    t = compile_template(src)
    assert compile_template(src) is t
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        t.render(CTX)
    per = (time.perf_counter() - start) / n
    assert per < 100e-6, f"{per * 1e6:.1f} µs per render"


@pytest.mark.parametrize(("seconds", "want"), [
    (0, "0ms"), (0.0004, "0ms"), (0.5, "500ms"), (1, "1s"), (59.5, "59.5s"), (60, "1m"), (61, "1m1s"),
    (3600, "1h"), (3660, "1h1m"), (86400 * 3 + 7200, "3d2h"), (-90, "-1m30s"), (float("inf"), "inf"),
])
def test_human_duration(seconds: float, want: str) -> None:
    assert human_duration(seconds) == want
