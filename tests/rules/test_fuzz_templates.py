"""Summary templates, rule expressions and whole rule files fuzzed with bombs in them (issue 15).

Templates are built from Jinja's statements, every filter and the methods of strings and
numbers, with arguments that are right, wrong or huge (widths of 10**9, ``'%0999999999d'``,
``'x' * 10**9``, loops in loops over long strings, recursive macros, captured output).
Expressions are built from the language's tokens and its bombs (deep nesting, long chains,
many windows, huge numbers). Rule files put both, with macros and lists, into YAML.

The only outcomes allowed: a :class:`TemplateError` / :class:`ExprError` / :class:`RuleError`
with a one-line message, or something that compiled and then renders (evaluates) without
raising. Every case stays under :data:`MEMORY` at its peak (tracemalloc) and every rendered
summary under ``MAX_OUTPUT``. Nothing is timed: work is bounded by counting operations, and
a bomb that escapes shows as memory long before a noisy CI machine could show it as time.

The normal suite runs a short, derandomized budget (300 cases per test); set
``CGWATCH_FUZZ_EXAMPLES`` (e.g. ``10000``) for a long run (docs/troubleshooting.md).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import tracemalloc
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgwatch.rules import template
from cgwatch.rules.document import RuleError
from cgwatch.rules.expr import DictContext, ExprError, compile_expr
from cgwatch.rules.load import load_rules
from cgwatch.rules.template import MAX_OUTPUT, TemplateError, compile_template

EXAMPLES = int(os.environ.get("CGWATCH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
#: what one case may allocate at its peak, beyond what was live when it started
MEMORY = 50 * 2**20

CONTEXTS = [
    {"container": "web-1", "value": 0.97, "rule": "r", "severity": "info", "labels": {"env": "prod"},
     "event": {"comm": "sh", "pid": 42}, "id": "4f1c", "image": "nginx:1", "runtime": "docker"},
    {"container": "x" * 3000, "value": None, "labels": {"a" * 50: "b" * 500, "k": "v"},
     "event": {"comm": "é\u2028\x00", "pid": -1, "argv": ["sh", "-c", "y" * 2000]}},
    {"container": "", "value": 1e308, "labels": {}, "event": {"comm": "a" * 70000}},
    {"container": "db", "value": -2, "labels": {"env": "prod"}, "event": {"code": 137, "signal": 9}},
]


class Peak:
    """The peak allocated inside a ``with`` block (traced only there: Hypothesis's own
    drawing runs at full speed)."""

    def __enter__(self) -> Peak:
        template._CACHE.clear()      # distinct sources would fill the compile cache across cases
        tracemalloc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


# -- templates ------------------------------------------------------------------------------
#: ordinary values three times as likely as huge ones, so that more cases get as far as rendering
NUMBERS = st.one_of(*[st.sampled_from(["0", "1", "2", "7", "-1", "-3", "80", "1.5", "true", "none"])] * 3,
                    st.sampled_from(["1999", "2000", "2001", "65536", "65537", "10**9", "(10**9)", "2000000000",
                                     "999999999", "2**20", "1e308"]))
STRINGS = st.one_of(*[st.sampled_from([
    "''", "'x'", "'ab'", "'%s'", "'%5.1f'", "'%*d'", "'%(a)s'", "'{}'", "'{0:.3f}'", "'{:{}}'", "'{0}{0}{0}{0}'",
    "'\\t'", "'a-b c'", "'<a href=x>'", "'http://x.y'", "'é'", "'\\n'", "'upper'", "'odd'", "'center'"])] * 3,
    st.sampled_from(["'%0999999999d'", "'%.999999999f'", "'%'", "'{:>999999999}'", "'{0.__class__}'", "'indent'",
                     "'x' * 60000"]))
NAMES = st.sampled_from(["container", "value", "rule", "severity", "labels", "event", "event.comm", "event.pid",
                         "event.argv", "labels.env", "labels['k']", "id", "image", "runtime", "v", "m(1)",
                         "m(value)"])
LOOP_NAMES = st.sampled_from(["x", "loop.index", "loop.length", "loop.cycle(1, 2)", "loop.changed(x)"])
LITERALS = st.sampled_from(["[1, 2]", "['x', 'y']", "[container, container]", "{'a': 1}", "{'a': container}",
                            "(1, 2)", "[]", "{}"])
FILTERS = ["center", "indent", "wordwrap", "format", "replace", "join", "batch", "slice", "sum", "round", "tojson",
           "truncate", "list", "sort", "unique", "string", "length", "first", "last", "upper", "lower", "title",
           "capitalize", "trim", "striptags", "urlize", "wordcount", "reverse", "dictsort", "items", "e", "int",
           "float", "abs", "bytes", "duration", "default", "map", "select", "reject", "max", "min", "count",
           "filesizeformat", "attr", "xmlattr", "urlencode", "groupby", "selectattr", "safe", "forceescape",
           "pprint", "nosuch"]
METHODS = ["center", "ljust", "rjust", "zfill", "format", "format_map", "replace", "join", "split", "expandtabs",
           "count", "upper", "strip", "startswith", "to_bytes", "translate", "encode", "get", "items", "keys",
           "index", "find", "partition", "splitlines", "title", "__class__", "mro", "bit_length", "hex"]
KWARGS = ["width", "wrapstring", "start", "indent", "attribute", "fill_with", "count", "length", "end", "first",
          "blank", "default", "tabsize"]
OPS = ["*", "**", "+", "-", "/", "//", "%", "~", "==", "!=", "<", ">", "in", "not in", "and", "or"]
TESTS = ["defined", "none", "number", "string", "divisibleby(3)", "divisibleby(0)", "in([1])", "eq(x)",
         "sameas(1)", "iterable", "mapping", "filter", "test", "lower", "odd", "nosuch"]


def _call_args(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    kw = st.tuples(st.sampled_from(KWARGS), inner).map(lambda p: f"{p[0]}={p[1]}")
    return st.tuples(st.lists(inner, max_size=3), st.lists(kw, max_size=1)).map(lambda a: ", ".join(a[0] + a[1]))


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    args = _call_args(inner)
    return st.one_of(
        st.tuples(inner, st.sampled_from(OPS), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "not ", "+"]), inner).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(inner, st.sampled_from(["is ", "is not "]), st.sampled_from(TESTS)).map(
            lambda t: f"({t[0]} {t[1]}{t[2]})"),
        st.tuples(inner, st.sampled_from(FILTERS), st.none() | args).map(
            lambda t: f"({t[0]} | {t[1]}{'' if t[2] is None else f'({t[2]})'})"),
        st.tuples(inner, st.sampled_from(METHODS), args).map(lambda t: f"{t[0]}.{t[1]}({t[2]})"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(inner, st.sampled_from(["[::-1]", "[1:]", "[:10**9]", "[::2]"])).map("".join),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.lists(inner, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
    )


@functools.cache
def expressions(in_loop: bool) -> st.SearchStrategy[str]:
    leaves = st.one_of(NUMBERS, STRINGS, NAMES, LITERALS, *([LOOP_NAMES] if in_loop else []))
    return st.recursive(leaves, _extend, max_leaves=6)


TEXT = st.sampled_from(["a", " ", "x" * 300, "é", "\n", "|", "(", "'", "\x00"])
#: a broken piece of syntax, put somewhere in some templates: fuzzed, but not drowning the rest
JUNK = st.sampled_from(["{", "}", "%", "#", "{{", "}}", "{%", "%}", "{#", "#}", "{% endfor %}", "{{ }}", "{% if %}"])


@functools.cache
def statements(depth: int, in_loop: bool) -> st.SearchStrategy[str]:
    e = expressions(in_loop)
    simple = st.one_of(
        TEXT,
        e.map(lambda x: f"{{{{ {x} }}}}"),
        e.map(lambda x: f"{{% set v = {x} %}}"),
    )
    if depth == 0:
        return simple
    body = st.lists(statements(depth - 1, in_loop), max_size=3).map("".join)
    loop_body = st.lists(statements(depth - 1, True), max_size=3).map("".join)
    return st.one_of(
        simple,
        st.tuples(expressions(in_loop), loop_body, st.none() | expressions(True), st.none() | body).map(
            lambda t: f"{{% for x in {t[0]}{'' if t[2] is None else f' if {t[2]}'} %}}{t[1]}"
                      f"{'' if t[3] is None else '{% else %}' + t[3]}{{% endfor %}}"),
        st.tuples(e, body, body).map(lambda t: f"{{% if {t[0]} %}}{t[1]}{{% else %}}{t[2]}{{% endif %}}"),
        body.map(lambda b: f"{{% set v %}}{b}{{% endset %}}"),
        st.tuples(st.sampled_from(FILTERS), st.none() | _call_args(e), body).map(
            lambda t: f"{{% filter {t[0]}{'' if t[1] is None else f'({t[1]})'} %}}{t[2]}{{% endfilter %}}"),
        st.tuples(e, body).map(lambda t: f"{{% with w = {t[0]} %}}{t[1]}{{% endwith %}}"),
        st.tuples(body, e).map(lambda t: f"{{% call m({t[1]}) %}}{t[0]}{{% endcall %}}"),
    )


MACRO = st.one_of(
    st.just("{% macro m(n) %}{{ n }}{% endmacro %}"),
    st.just("{% macro m(n) %}{% if n %}{{ m(n) }}{{ m(n) }}{% endif %}{% endmacro %}"),
    st.just("{% macro m(n) %}{{ caller() if caller else n }}{{ caller() if caller else n }}{% endmacro %}"),
    st.just("{% macro m(n) %}{% for x in n|string * 100 %}{{ m(n) }}{% endfor %}{% endmacro %}"),
)
TEMPLATES = st.tuples(MACRO, st.lists(statements(3, False), min_size=1, max_size=5)).map(
    lambda t: "{% set v = 1 %}" + t[0] + "".join(t[1]))
BROKEN = st.tuples(TEMPLATES, JUNK, st.floats(0, 1)).map(
    lambda t: t[0][: int(len(t[0]) * t[2])] + t[1] + t[0][int(len(t[0]) * t[2]):])
#: the issue's own bombs, so that each run starts from them and mutates them
BOMBS = st.sampled_from([
    "{{ '%0999999999d' % 1 }}", "{{ 'x' | indent(2000000000, true) }}", "{{ 'x' | center(10**9) }}",
    "{{ 'x'.ljust(10**9) }}", "{{ '{:>999999999}'.format(1) }}", "{{ 'x' * 10**9 }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{% for a in container * 2500 %}{% for b in container * 2500 %}{{ a }}{% endfor %}{% endfor %}",
])


def check_template(src: str, ctx: dict) -> None:
    with Peak() as peak:
        try:
            t = compile_template(src)
        except TemplateError as e:
            assert e.message and "\n" not in e.message and e.line >= 1, repr(e.message)
            out = None
        else:
            out = t.render(ctx)
            assert isinstance(out, str) and len(out) <= MAX_OUTPUT, (src, len(out))
    assert peak.bytes <= MEMORY, (src, peak.bytes)


@FUZZ
@given(src=st.one_of(TEMPLATES, TEMPLATES, TEMPLATES, BROKEN, BOMBS, st.tuples(TEMPLATES, BOMBS).map("".join)),
       ctx=st.sampled_from(CONTEXTS))
def test_templates_compile_or_fail_in_one_line_and_render_within_bounds(src: str, ctx: dict) -> None:
    check_template(src, ctx)


# -- expressions ----------------------------------------------------------------------------
EXPR_TOKENS = ["cpu.x", "a.y", "event.comm", "container.name", "avg(cpu.x, 5m)", "p99(cpu.x, 7d)",
               "rate(a.y, 1m)", "abs(", "startswith(", "glob(", "contains(", "(", ")", "[", "]", ",", "+", "-", "*",
               "/", ">", ">=", "<", "==", "!=", "and", "or", "not", "in", "1", "0", "2.5", "1e308", "1e999", "5m",
               "512MiB", "8d", '"sh"', "'*'", '"' + "*a" * 50 + '"', "\\", "1" * 400, "cpu." + "a" * 300]
BOMB_EXPRS = st.one_of(
    st.integers(1, 3000).map(lambda n: "(" * n + "cpu.x > 1" + ")" * n),
    st.integers(1, 40).map(lambda n: " + ".join(["p99(cpu.x, 7d)"] * n) + " > 1"),
    st.integers(1, 600).map(lambda n: "*".join(["1e300"] * n) + " > cpu.x"),
    st.integers(1, 1500).map(lambda n: "not " * n + "cpu.x > 1"),
    st.integers(1, 900).map(lambda n: " or ".join(['event.comm == "x"'] * n)),
)


@FUZZ
@given(text=st.one_of(st.lists(st.sampled_from(EXPR_TOKENS), max_size=60).map(" ".join), BOMB_EXPRS),
       kind=st.sampled_from(["metric", "event"]))
def test_expressions_compile_or_fail_in_one_line_and_evaluate(text: str, kind: str) -> None:
    with Peak() as peak:
        try:
            c = compile_expr(text, kind)
        except ExprError as e:
            assert e.message and "\n" not in e.message and 0 <= e.offset <= len(text)
        else:
            points = [(float(t), math.sin(t)) for t in range(0, 300, 3)]
            for ctx in (DictContext(), DictContext({"cpu.x": points, "a.y": [(1.0, math.nan), (299.0, 2.0)]},
                                                   {"event.comm": "*" * 5000, "container.name": "a" * 5000})):
                assert c.evaluate(ctx, 300.0) in (True, False)
                v = c.value(ctx, 300.0)
                assert v is None or type(v) is float
    assert peak.bytes <= MEMORY, (text[:200], peak.bytes)


# -- whole rule files -----------------------------------------------------------------------
METRIC_EXPRS = st.one_of(st.sampled_from(["cpu.usage_cores > 0.9", "hot", "hot and hot", "m0 > 1", "m1",
                                          "avg(cpu.usage_cores, 5m) > 1", "cpu.usage_cores >", "shells"]),
                         BOMB_EXPRS.filter(lambda t: "event" not in t))
EVENT_EXPRS = st.sampled_from(["event.comm in shells", "is_shell", 'glob(event.comm, container.name)',
                               "event.comm == 'sh' and not is_shell", "m0", "event.pid > 1"])
MACROS = st.dictionaries(st.sampled_from(["hot", "m0", "m1", "m2", "is_shell", "and", "x y"]),
                         st.one_of(st.sampled_from(["cpu.usage_cores > 0.9", "m1 + m1", "m2 * m2", "m0",
                                                    "event.comm in shells", "hot", "(((", "cpu.usage_cores"]),
                                   st.integers(1, 200).map(lambda n: " + ".join(["cpu.usage_cores"] * n))),
                         max_size=5)
LISTS = st.dictionaries(st.sampled_from(["shells", "m0", "nums"]),
                        st.lists(st.one_of(st.sampled_from(["sh", "bash", 'a"b', ""]), st.integers(-5, 5)),
                                 max_size=4), max_size=2)
VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(["", "x", "5m", "-1s", "info", "7d1s"]),
                   st.lists(st.sampled_from(["a", "b"]), max_size=2))
RULE = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "c", "a b", "", "x" * 200])},
    optional={
        "severity": st.sampled_from(["info", "warning", "critical", "warn"]),
        "expr": METRIC_EXPRS, "event": st.sampled_from(["exec", "exit", "oom_kill", "nope"]),
        "where": EVENT_EXPRS, "for": st.sampled_from(["30s", "0s", "8d", "x"]),
        "summary": st.one_of(TEMPLATES, BOMBS, VALUES),
        "labels": st.dictionaries(st.sampled_from(["team", "a-b", "x"]), st.sampled_from(["ops", ""]), max_size=2),
        "anomaly": st.sampled_from([{"metric": "cpu.usage_cores"}, {}, "x"]),
        "bogus": VALUES,
    })
FILES = st.fixed_dictionaries({}, optional={"rules": st.one_of(st.lists(RULE, max_size=5), VALUES),
                                            "macros": st.one_of(MACROS, VALUES), "lists": st.one_of(LISTS, VALUES)})


@FUZZ
@given(doc=FILES)
def test_rule_files_load_or_fail_in_one_line_each(doc: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="cgwatch-rules-fuzz-") as d:
        path = Path(d, "r.yaml")
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, width=10**6))
        with Peak() as peak:
            rules, errors = load_rules([path])
            for e in errors:
                assert isinstance(e, RuleError) and "\n" not in e.message, e
                assert e.format().startswith(f"{path}:{e.line}:{e.col}: ")
            for r in rules:
                if r.summary is not None:
                    assert len(r.summary.render(CONTEXTS[1])) <= MAX_OUTPUT
    assert peak.bytes <= MEMORY, (doc, peak.bytes)
