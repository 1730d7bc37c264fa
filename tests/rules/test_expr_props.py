"""Properties of the rule expression compiler, with hypothesis.

* Any text compiles or raises ExprError (with an offset inside the text), promptly; what
  compiles evaluates without raising against any data.
* Random valid expressions, generated as trees here and printed, evaluate exactly as a
  plain recursive reference evaluator written below (three-valued logic and all).
* Printing a parsed expression and parsing it again gives the same tree.

test_expr_grid.py runs the same reference over exhaustive grids of edge cases.
"""

from __future__ import annotations

import fnmatch
import math
import operator
from typing import Any

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from cgwatch.rules.expr import DictContext, ExprError, compile_expr
from cgwatch.rules.parser import parse
from cgwatch.rules.tree import unparse

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 300.0
METRICS = ["a.x", "a.y", "b.z"]
DURATIONS = {"500ms": 0.5, "30s": 30.0, "1m": 60.0, "90s": 90.0, "5m": 300.0}
WINDOW_FUNCS = ["avg", "min", "max", "p50", "p95", "p99", "rate", "delta", "total"]
CMP = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
       "!=": operator.ne}
ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
FIELDS = ["event.comm", "event.code", "container.name", "event.missing"]


# -- any text -----------------------------------------------------------------------------
TOKENS = ["cpu.x", "a.y", "event.comm", "container.name", "avg", "p95", "rate", "abs", "startswith", "glob",
          "(", ")", "[", "]", ",", "+", "-", "*", "/", ">", ">=", "<", "<=", "==", "!=", "=", "!", "&&",
          "and", "or", "not", "in", "1", "0", "2.5", "1e999", "5m", "512MiB", "5mins", "8d", '"sh"', "'x'",
          '"', "\\", ".", "$", "≥", "\x00", " ", "\n"]
CHARS = st.sampled_from("abcdefgmsxyzAE_.0123456789 ()[],+-*/<>=!&|\"'\\%^$ \t\n≥é\x00")


def check_compiles_or_clean_error(text: str, kind: str) -> None:
    try:
        c = compile_expr(text, kind)
    except ExprError as e:
        assert e.message and str(e) == e.message
        assert 0 <= e.offset <= len(text) and e.length >= 1
        return
    for ctx in (DictContext(), DictContext({"cpu.x": math.nan, "a.y": [(1.0, 2.0), (299.0, 0.0)]},
                                           {"event.comm": ["odd"], "container.name": 10**400})):
        assert c.evaluate(ctx, NOW) in (True, False)
        v = c.value(ctx, NOW)
        assert v is None or type(v) is float


@FAST
@given(text=st.text(CHARS, max_size=120), kind=st.sampled_from(["metric", "event"]))
def test_random_characters(text: str, kind: str) -> None:
    check_compiles_or_clean_error(text, kind)


@FAST
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=60), sep=st.sampled_from(["", " "]),
       kind=st.sampled_from(["metric", "event"]))
def test_random_tokens(tokens: list[str], sep: str, kind: str) -> None:
    check_compiles_or_clean_error(sep.join(tokens), kind)


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(0, 2000), opener=st.sampled_from(["(", "not ", "-", "abs(", "avg(", "[", "not ("]))
def test_deep_nesting_never_overflows_the_stack(depth: int, opener: str) -> None:
    check_compiles_or_clean_error(opener * depth + "cpu.x > 1" + ")" * depth, "metric")


# -- metric expressions against a reference evaluator -------------------------------------
NUMBERS = st.one_of(
    st.sampled_from([("1", 1.0), ("2", 2.0), ("0.5", 0.5), ("0", 0.0)]),
    st.sampled_from([("10", 10.0), ("2KiB", 2048.0), ("1MB", 1e6), ("5m", 300.0), ("500ms", 0.5), ("1e-3", 1e-3)]),
    st.floats(0, 1e6, allow_nan=False).map(lambda f: (repr(f), f)),
)
VALUE_LEAVES = st.one_of(
    NUMBERS.map(lambda n: ("num", n[1], n[0])),
    st.sampled_from(METRICS).map(lambda m: ("metric", m)),
    st.tuples(st.just("win"), st.sampled_from(WINDOW_FUNCS), st.sampled_from(METRICS), st.sampled_from(list(DURATIONS))),
)
VALUES = st.recursive(VALUE_LEAVES, lambda inner: st.one_of(
    st.tuples(st.just("neg"), inner), st.tuples(st.just("abs"), inner), st.tuples(st.just("paren"), inner),
    st.tuples(st.just("arith"), st.sampled_from(list(ARITH)), inner, inner),
), max_leaves=6)
CONDITIONS = st.recursive(
    st.tuples(st.just("cmp"), st.sampled_from(list(CMP)), VALUES, VALUES),
    lambda inner: st.one_of(
        st.tuples(st.just("not"), inner), st.tuples(st.just("paren"), inner),
        st.tuples(st.just("bool"), st.sampled_from(["and", "or"]), inner, inner),
    ), max_leaves=5)
EDGE_VALUES = [0.0, 1.0, 2.0, -1.0, 0.5, math.nan, math.inf, -math.inf]
# edge values three times as likely as arbitrary ones
SAMPLE_VALUES = st.one_of(*[st.sampled_from(EDGE_VALUES)] * 3, st.floats(-1e6, 1e6, allow_nan=False))
SERIES = st.lists(st.tuples(st.integers(0, 300), SAMPLE_VALUES), max_size=8, unique_by=lambda p: p[0]).map(
    lambda pts: [(float(t), v) for t, v in sorted(pts)])
DATA = st.fixed_dictionaries({}, optional={m: st.one_of(SAMPLE_VALUES, SERIES) for m in METRICS})

PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7}


def show(t: tuple) -> tuple[str, int]:
    """Text for a generated tree, with the parentheses precedence needs, and its precedence."""
    kind = t[0]
    if kind in ("num", "str", "metric", "field"):
        return t[2 if kind in ("num", "str") else 1], 8
    if kind == "win":
        return f"{t[1]}({t[2]}, {t[3]})", 8
    if kind in ("abs", "paren"):
        return f"{'abs' if kind == 'abs' else ''}({show(t[1])[0]})", 8
    if kind == "call":
        return f"{t[1]}({show(t[2])[0]}, {show(t[3])[0]})", 8
    if kind == "neg":
        return "-" + wrap(t[1], 7), 7
    if kind == "not":
        return "not " + wrap(t[1], 3), 3
    if kind in ("arith", "bool"):
        p = PREC[t[1]]
        return f"{wrap(t[2], p)} {t[1]} {wrap(t[3], p + 1)}", p
    if kind == "cmp":
        return f"{wrap(t[2], 5)} {t[1]} {wrap(t[3], 5)}", 4
    if kind == "in":
        items = ", ".join(text for _, text in t[2])
        return f"{wrap(t[1], 5)} {'not in' if t[3] else 'in'} [{items}]", 4
    raise AssertionError(t)


def wrap(t: tuple, at_least: int) -> str:
    text, p = show(t)
    return f"({text})" if p < at_least else text


def depth(t: Any) -> int:
    return 1 + max((depth(c) for c in t if isinstance(c, tuple) and c and isinstance(c[0], str)), default=0)


def ref_points(data: dict, m: str, seconds: float) -> list[tuple[float, float]]:
    d = data.get(m)
    if not isinstance(d, list):
        return []
    return [(t, v) for t, v in d if NOW - seconds < t <= NOW]


def ref_window(func: str, pts: list[tuple[float, float]]) -> float | None:
    vs = [v for _, v in pts if not math.isnan(v)]
    if not vs:
        return None
    if func in ("avg", "min", "max"):
        r = sum(vs) / len(vs) if func == "avg" else min(vs) if func == "min" else max(vs)
    elif func in ("p50", "p95", "p99"):
        s, q = sorted(vs), int(func[1:]) / 100
        h = (len(s) - 1) * q
        lo = int(h)
        r = s[-1] if lo + 1 >= len(s) else s[lo] + (h - lo) * (s[lo + 1] - s[lo])
    elif func == "delta":
        r = vs[-1] - vs[0] if len(vs) > 1 else math.nan
    elif func == "total":   # each value times the gap before it (the first: the next gap),
        good = [(t, v) for t, v in pts if not math.isnan(v)]   # at most the lower-median gap
        if len(good) < 2 or good[-1][0] <= good[0][0]:
            return None
        gaps = sorted(good[k + 1][0] - good[k][0] for k in range(len(good) - 1))
        cap = gaps[(len(gaps) - 1) // 2]
        r = good[0][1] * min(good[1][0] - good[0][0], cap)
        for k in range(1, len(good)):
            r += good[k][1] * min(good[k][0] - good[k - 1][0], cap)
    else:   # rate: a drop is a counter reset to 0
        good = [(t, v) for t, v in pts if not math.isnan(v)]
        if len(good) < 2 or good[-1][0] <= good[0][0]:
            return None
        inc = 0.0
        for (_, a), (_, b) in zip(good, good[1:]):
            inc += b - a if b >= a else b
        r = inc / (good[-1][0] - good[0][0])
    return None if math.isnan(r) else r


def ref_metric(t: tuple, data: dict) -> Any:
    """The reference: values are float or None, conditions True, False or None (unknown)."""
    kind = t[0]
    if kind == "num" or kind == "paren":
        return t[1] if kind == "num" else ref_metric(t[1], data)
    if kind == "metric":
        d = data.get(t[1])
        v = d[-1][1] if isinstance(d, list) and d else d if isinstance(d, float) else None
        return None if v is None or math.isnan(v) else v
    if kind == "win":
        return ref_window(t[1], ref_points(data, t[2], DURATIONS[t[3]]))
    if kind in ("neg", "abs"):
        v = ref_metric(t[1], data)
        return None if v is None else -v if kind == "neg" else abs(v)
    if kind == "arith":
        a, b = ref_metric(t[2], data), ref_metric(t[3], data)
        if a is None or b is None or (t[1] == "/" and b == 0):
            return None
        r = ARITH[t[1]](a, b)
        return None if math.isnan(r) else r
    if kind == "cmp":
        a, b = ref_metric(t[2], data), ref_metric(t[3], data)
        return None if a is None or b is None else CMP[t[1]](a, b)
    return ref_logic(t, data, ref_metric)


def ref_logic(t: tuple, data: Any, ev: Any) -> bool | None:
    if t[0] == "not":
        v = ev(t[1], data)
        return None if v is None else not v
    a, b = ev(t[2], data), ev(t[3], data)
    if t[1] == "and":
        return False if False in (a, b) else None if None in (a, b) else True
    return True if True in (a, b) else None if None in (a, b) else False


def compiled_or_reject(text: str, kind: str) -> Any:
    try:
        return compile_expr(text, kind)
    except ExprError as e:
        # a literal divisor of 0 and a literal that overflows are compile errors by design
        assume(e.message not in ("division by zero", "this constant is too large"))
        raise


def same(a: float | None, b: float | None) -> bool:
    return a == b or (a is None and b is None)


def top_value(t: tuple, data: Any, ev: Any) -> Any:
    while t[0] in ("not", "bool", "paren"):
        t = t[1] if t[0] in ("not", "paren") else t[2]
    v = ev(t[2] if t[0] == "cmp" else t[1], data)
    return float(v) if type(v) in (int, float) and not math.isnan(v) else None


@FAST
@given(op=st.sampled_from(list(CMP)), left=VALUES, right=VALUES, data=DATA)
def test_metric_comparisons_and_their_negations(op: str, left: tuple, right: tuple, data: dict) -> None:
    """``L`` holds when the reference says true, ``not L`` when it says false: unknown is neither."""
    tree = ("cmp", op, left, right)
    assume(depth(tree) < 40)
    ctx, expected, text = DictContext(data), ref_metric(tree, data), show(tree)[0]
    c = compiled_or_reject(text, "metric")
    assert c.evaluate(ctx, NOW) is (expected is True), text
    assert compile_expr(f"not ({text})").evaluate(ctx, NOW) is (expected is False), text
    assert same(c.value(ctx, NOW), top_value(tree, data, ref_metric)), text


@FAST
@given(func=st.sampled_from(WINDOW_FUNCS), duration=st.sampled_from(list(DURATIONS)), points=SERIES)
def test_window_functions_agree_with_the_reference(func: str, duration: str, points: list) -> None:
    got = compile_expr(f"{func}(a.x, {duration}) > 0").value(DictContext({"a.x": points}), NOW)
    expected = ref_window(func, ref_points({"a.x": points}, "a.x", DURATIONS[duration]))
    assert same(got, expected)


@FAST
@given(tree=CONDITIONS, data=DATA)
def test_metric_expressions_agree_with_the_reference(tree: tuple, data: dict) -> None:
    assume(depth(tree) < 40)
    text = show(tree)[0]
    c = compiled_or_reject(text, "metric")
    ctx = DictContext(data)
    assert c.evaluate(ctx, NOW) is (ref_metric(tree, data) is True), text
    assert same(c.value(ctx, NOW), top_value(tree, data, ref_metric)), text


@FAST
@given(tree=CONDITIONS, data=DATA)
@example(tree=("not", ("bool", "and", ("cmp", ">", ("num", 1.0, "1"), ("num", 1.0, "1")),   # true: 1 > 1 is false
                        ("cmp", ">", ("num", 1.0, "1"), ("metric", METRICS[0])))), data={})
def test_a_condition_never_holds_without_a_metric_it_needs(tree: tuple, data: dict) -> None:
    """The engine skips a rule for a container without a value of one of ``needs``: with any
    one of them taken away, whatever the other data, the reference says it does not hold."""
    assume(depth(tree) < 40)
    text = show(tree)[0]
    c = compiled_or_reject(text, "metric")
    assert c.needs <= c.metrics
    for m in c.needs:
        without = {k: v for k, v in data.items() if k != m}
        assert ref_metric(tree, without) is not True, (text, m)
        assert c.evaluate(DictContext(without), NOW) is False, (text, m)


# -- event expressions against a reference evaluator --------------------------------------
def string_literal(s: str, quote: str) -> tuple[str, str, str]:
    return ("str", s, quote + s.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote)


STRINGS = st.text(st.sampled_from("sh\"'\\ab/*?x-1"), max_size=5)
STR_LIT = st.builds(string_literal, STRINGS, st.sampled_from(['"', "'"]))
NUM_LIT = st.one_of(st.integers(-200, 200).map(lambda i: ("num", float(i), str(i))),
                    st.sampled_from([("num", 2.5, "2.5"), ("num", 0.0, "0")]))
FIELD = st.sampled_from(FIELDS).map(lambda f: ("field", f))
EVENT_VALUE = st.one_of(FIELD, STR_LIT, NUM_LIT)
ORDERABLE = st.one_of(FIELD, NUM_LIT)
LIST_ITEM = st.one_of(STRINGS.map(lambda s: (s, string_literal(s, '"')[2])),
                      st.integers(-5, 140).map(lambda i: (float(i), str(i))))
EVENT_LEAVES = st.one_of(
    st.tuples(st.just("cmp"), st.sampled_from(["==", "!="]), EVENT_VALUE, EVENT_VALUE),
    st.tuples(st.just("cmp"), st.sampled_from([">", ">=", "<", "<="]), ORDERABLE, ORDERABLE),
    st.tuples(st.just("in"), EVENT_VALUE, st.lists(LIST_ITEM, min_size=1, max_size=4), st.booleans()),
    st.tuples(st.just("call"), st.sampled_from(["startswith", "endswith", "contains", "glob"]),
              st.one_of(FIELD, STR_LIT), st.one_of(FIELD, STR_LIT)),
)
EVENT_CONDITIONS = st.recursive(EVENT_LEAVES, lambda inner: st.one_of(
    st.tuples(st.just("not"), inner), st.tuples(st.just("paren"), inner),
    st.tuples(st.just("bool"), st.sampled_from(["and", "or"]), inner, inner)), max_leaves=5)
FIELD_VALUES = st.one_of(st.sampled_from(["sh", "bash", "", 'a"b', "x\\y", "/tmp/sh", 0, 1, 137, 2.5, True,
                                          math.nan, 10**400, b"sh", ["sh"]]), STRINGS, st.integers(-5, 140))
EVENT_DATA = st.fixed_dictionaries({}, optional={f: FIELD_VALUES for f in FIELDS if f != "event.missing"})
NUMERIC = (int, float, bool)


def ref_event(t: tuple, data: dict) -> Any:
    kind = t[0]
    if kind in ("num", "str", "paren"):
        return ref_event(t[1], data) if kind == "paren" else t[1]
    if kind == "field":
        v = data.get(t[1])
        return None if isinstance(v, float) and math.isnan(v) else v
    if kind == "cmp":
        a, b = ref_event(t[2], data), ref_event(t[3], data)
        if a is None or b is None:
            return None
        if type(a) in NUMERIC and type(b) in NUMERIC:
            return CMP[t[1]](a, b)
        if t[1] in ("==", "!="):
            same = type(a) is type(b) and isinstance(a, (str, bytes)) and a == b
            return same if t[1] == "==" else not same
        return None
    if kind == "in":
        x = ref_event(t[1], data)
        if x is None:
            return None
        items = [v for v, _ in t[2]]
        if isinstance(x, str):
            found = x in [v for v in items if isinstance(v, str)]
        elif type(x) in NUMERIC:
            found = any(x == v for v in items if not isinstance(v, str))
        else:
            found = False
        return found != t[3]
    if kind == "call":
        s, p = ref_event(t[2], data), ref_event(t[3], data)
        if not (isinstance(s, str) and isinstance(p, str)):
            return None
        return {"startswith": s.startswith, "endswith": s.endswith, "contains": lambda q: q in s,
                "glob": lambda q: fnmatch.fnmatchcase(s, q)}[t[1]](p)
    return ref_logic(t, data, ref_event)


@FAST
@given(leaf=EVENT_LEAVES, data=EVENT_DATA)
def test_event_leaves_and_their_negations(leaf: tuple, data: dict) -> None:
    ctx, expected, text = DictContext(fields=data), ref_event(leaf, data), show(leaf)[0]
    assert compile_expr(text, "event").evaluate(ctx, 0.0) is (expected is True), text
    assert compile_expr(f"not ({text})", "event").evaluate(ctx, 0.0) is (expected is False), text


@FAST
@given(tree=EVENT_CONDITIONS, data=EVENT_DATA)
def test_event_expressions_agree_with_the_reference(tree: tuple, data: dict) -> None:
    text = show(tree)[0]
    c = compile_expr(text, "event")
    ctx = DictContext(fields=data)
    assert c.evaluate(ctx, 0.0) is (ref_event(tree, data) is True), text


# -- round trip ---------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(tree=st.one_of(CONDITIONS.map(lambda t: (t, "metric")), EVENT_CONDITIONS.map(lambda t: (t, "event"))))
def test_print_parse_round_trip(tree: tuple[tuple, str]) -> None:
    t, kind = tree
    assume(depth(t) < 40)
    try:
        parsed = parse(show(t)[0], kind)
    except ExprError as e:
        assume(e.message not in ("division by zero", "this constant is too large"))
        raise
    printed = unparse(parsed)
    assert parse(printed, kind) == parsed
    assert unparse(parse(printed, kind)) == printed
