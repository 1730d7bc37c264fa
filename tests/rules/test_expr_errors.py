"""Every compile error of the rule expression language, with its message, offset and length;
and the limits that keep crafted input a clean ExprError (length, nesting, no RecursionError)."""

from __future__ import annotations

import math
import pickle

import pytest

from cgwatch.rules.expr import DictContext, ExprError, compile_expr
from cgwatch.rules.parser import MAX_DEPTH

CTX = DictContext({"cpu.x": 2.0, "a.b": 1.0, "zero.value": 0.0, "nan.value": math.nan},
                  {"event.comm": "sh"})
NOW = 600.0


def holds(text: str, ctx: DictContext = CTX) -> bool:
    return compile_expr(text).evaluate(ctx, NOW)


# -- errors: (text, kind, message, offset, length) ----------------------------------------
ERRORS = [
    ("", "metric", "empty expression", 0, 1),
    ("   ", "metric", "empty expression", 0, 3),
    ("avgg(cpu.usage_cores, 5m) > 1", "metric", "unknown function 'avgg' (did you mean avg?)", 0, 4),
    ("p95th(cpu.usage_cores, 5m) > 1", "metric", "unknown function 'p95th' (did you mean p95?)", 0, 5),
    ("startswth(event.comm, 'x')", "event", "unknown function 'startswth' (did you mean startswith?)", 0, 9),
    ("__import__('os') > 1", "metric", "unknown function '__import__' (functions: avg, min, max, p50, p95, p99, "
     "rate, delta, total, abs)", 0, 10),
    ("avg(cpu.usage_cores) > 1", "metric", "avg takes 2 arguments (metric, duration), got 1", 0, 20),
    ("avg() > 1", "metric", "avg takes 2 arguments (metric, duration), got 0", 0, 5),
    ("abs(cpu.x, 1) > 1", "metric", "abs takes 1 argument (number), got 2", 0, 13),
    ("startswith(event.comm) ", "event", "startswith takes 2 arguments (string, prefix), got 1", 0, 22),
    ("avg(cpu.usage_cores, 300) > 1", "metric",
     "the second argument of avg must be a duration such as 30s, 5m or 1h, got 300", 21, 3),
    ("max(cpu.x, 5MiB) > 1", "metric", "the second argument of max must be a duration such as 30s, 5m or 1h, got 5MiB",
     11, 4),
    ("rate(cpu.x, -5m) > 1", "metric", "the second argument of rate must be a duration such as 30s, 5m or 1h, got -5m",
     12, 3),
    ("avg(5m, cpu.x) > 1", "metric",
     "expected a metric name, got the duration 5m (the arguments are avg(metric, duration))", 4, 2),
    ("avg(cpu.x * 2, 5m) > 1", "metric",
     "the first argument of avg must be a metric name, e.g. avg(cpu.usage_cores, 5m)", 4, 9),
    ("avg(cpu.x, 8d) > 1", "metric", "the window of avg must be at most 7d, got 8d", 11, 2),
    ("avg(cpu.x, 0s) > 1", "metric", "the window of avg must be longer than 0", 11, 2),
    ("mem.usage_bytes > 5mins", "metric", "unknown unit 'mins' (did you mean 5m?)", 19, 4),
    ("mem.usage_bytes > 5mb", "metric", "unknown unit 'mb' (did you mean 5MB?)", 19, 2),
    ("mem.usage_bytes > 5G", "metric", "unknown unit 'G' (did you mean 5GB or 5GiB?)", 19, 1),
    ("cpu.x > 1h30m", "metric", "unknown unit 'h30m': write a single unit, e.g. 90m for 1h30m", 9, 4),
    ("cpu.x > 5qq", "metric", "unknown unit 'qq' (durations: ms s m h d; sizes: B KB MB GB TB KiB MiB GiB TiB)",
     9, 2),
    ("(cpu.x > 1", "metric", "'(' is never closed", 0, 1),
    ("avg(cpu.x, 5m > 1", "metric", "'(' is never closed", 3, 1),
    ("cpu.x > 1)", "metric", "unmatched ')'", 9, 1),
    ("(cpu.x > 1 cpu.y", "metric", "expected ')', got 'cpu.y'", 11, 5),
    ("cpu.x > 1 foo", "metric", "unexpected 'foo' after a complete expression", 10, 3),
    ("cpu.x > 1 2", "metric", "unexpected '2' after a complete expression", 10, 1),
    ("cpu.x > 1 AND cpu.y > 1", "metric", "write 'and' in lower case", 10, 3),
    ("cpu.x >", "metric", "unexpected end of expression: expected a value", 7, 1),
    ("cpu.x > * 2", "metric", "expected a value, got '*'", 8, 1),
    ('cpu.x > "high"', "metric", "strings are not allowed in metric expressions", 8, 6),
    ("event.comm == 1", "metric", "event.comm is an event field: only an event rule's where: can use it", 0, 10),
    ("container.name == 1", "metric", "container.name is an event field: only an event rule's where: can use it; "
     "choose containers with select:", 0, 14),
    ("cpu.usage_cores > 1", "event", "metric names are not available in event expressions: use event.<field> or "
     "container.name|image|runtime|id", 0, 15),
    ("comm == 'sh'", "event", "unknown name 'comm' in event expressions: use event.<field> or "
     "container.name|image|runtime|id", 0, 4),
    ("container.nmae == 'x'", "event", "unknown container field 'nmae' (did you mean container.name?)", 0, 14),
    ("cpu.usage_cores + 1", "metric", "expression must be a comparison or boolean", 0, 19),
    ("(cpu.x)", "metric", "expression must be a comparison or boolean", 0, 7),
    ("avg(cpu.x, 5m)", "metric", "expression must be a comparison or boolean", 0, 14),
    ("event.comm", "event", "expression must be a comparison or boolean", 0, 10),
    ("cpu.x and cpu.y > 1", "metric", "each side of 'and' must be a comparison or boolean, got a number", 0, 5),
    ("not cpu.x", "metric", "the operand of 'not' must be a comparison or boolean, got a number", 4, 5),
    ("(cpu.x > 1) + 1 > 2", "metric", "each side of '+' must be a value, got a condition", 0, 11),
    ("(cpu.x > 1) > 2", "metric", "each side of '>' must be a value, got a condition", 0, 11),
    ("1 < cpu.x < 2", "metric", "comparisons cannot be chained: write 'a < b and b < c'", 10, 1),
    ("cpu.x / 0 > 1", "metric", "division by zero", 8, 1),
    ("cpu.x / (2 - 2) > 1", "metric", "division by zero", 8, 7),
    ("cpu.x > 1e999", "metric", "number 1e999 is too large", 8, 5),
    ("cpu.x > 1e300 * 1e300", "metric", "this constant is too large", 8, 13),
    ("cpu.x[0] > 1", "metric", "indexing is not supported", 5, 1),
    ("avg(cpu.x, 5m).y > 1", "metric",
     "unexpected '.': attribute access is not supported (write metric names whole: cpu.usage_cores)", 14, 1),
    ("cpu.x.__class__ > 1", "metric", "'cpu.x.__class__' is not a metric name: metric names are dotted words that "
     "start with a letter, e.g. cpu.usage_cores", 0, 15),
    ("(cpu.x)(1) > 1", "metric", "only functions can be called", 0, 8),
    ("CPU.x > 1", "metric", "metric names are lower case: did you mean cpu.x?", 0, 5),
    ("usage > 1", "metric", "unknown name 'usage' (metric names are dotted, e.g. cpu.usage_cores)", 0, 5),
    ("avg > 1", "metric", "avg is a function: write avg(metric, duration)", 0, 3),
    ("startswith(event.comm, 'x')", "metric", "startswith() is only available in event expressions", 0, 10),
    ("avg(cpu.x, 5m) > 1", "event", "avg() is only available in metric expressions", 0, 3),
    ("cpu.x > 1 && cpu.y > 1", "metric", "use 'and' instead of '&&'", 10, 2),
    ("cpu.x > 1 || cpu.y > 1", "metric", "use 'or' instead of '||'", 10, 2),
    ("!(cpu.x > 1)", "metric", "use 'not' instead of '!'", 0, 1),
    ("cpu.x = 1", "metric", "use '==' to compare", 6, 1),
    ("cpu.x => 1", "metric", "did you mean '>='?", 6, 2),
    ("cpu.x ≥ 1", "metric", "use '>=' instead of '≥'", 6, 1),
    ("cpu.x % 2 > 1", "metric", "'%' is not supported; operators are + - * /", 6, 1),
    ("cpu.x ** 2 > 1", "metric", "'**' (power) is not supported; operators are + - * /", 6, 2),
    ("cpu.x > .5", "metric", "write 0.5 rather than .5", 8, 1),
    ("cpu.x > 1.", "metric", "a number cannot end with '.'", 9, 1),
    ("cpu.x > 1 $", "metric", "unexpected character '$'", 10, 1),
    ("cpu.x > 1 \x00", "metric", "unexpected character '\\x00'", 10, 1),
    ("() > 1", "metric", "empty parentheses", 0, 2),
    ("avg(cpu.x, 5m,) > 1", "metric", "expected a value, got ')'", 14, 1),
    ("avg(cpu.x 5m) > 1", "metric", "expected ',' or ')', got the number 5m", 10, 2),
    ("cpu.x in [1]", "metric", "'in' lists are only available in event expressions", 6, 2),
    ("cpu.x not in [1]", "metric", "'in' lists are only available in event expressions", 6, 3),
    ("[1] == cpu.x", "metric", "a list is only allowed after 'in'", 0, 1),
    ("event.comm in []", "event", "an empty list never matches", 14, 2),
    ('event.comm in "sh"', "event", "expected a list such as [\"sh\", \"bash\"] after 'in', got the string \"sh\"",
     14, 4),
    ('event.comm in ["sh", event.x]', "event", "list items must be string or number literals, got 'event.x'", 21, 7),
    ('event.comm in ["sh" "bash"]', "event", "expected ',' or ']', got the string \"bash\"", 20, 6),
    ('event.comm in ["sh"', "event", "'[' is never closed", 14, 1),
    ('event.comm == "sh', "event", "unterminated string (no closing \")", 14, 3),
    ('event.comm == "s\\n"', "event", "unknown escape '\\n' in a string (use \\\", \\' or \\\\)", 16, 2),
    ('event.comm > "sh"', "event", "strings can only be compared with == or !=, not '>'", 13, 4),
    ("event.code + 1 > 2", "event", "arithmetic is only available in metric expressions", 11, 1),
    ("-event.code > 2", "event", "unary minus applies only to numbers in event expressions", 1, 10),
    ("startswith(event.comm, 1)", "event", "the prefix of startswith must be a string, got a number", 23, 1),
    ("glob(event.comm == 'a', 'x')", "event", "the string of glob must be a string, got a condition", 5, 17),
    ("glob(event.filename, '/tmp/*') or", "event", "unexpected end of expression: expected a value", 33, 1),
]


@pytest.mark.parametrize(("text", "kind", "message", "offset", "length"), ERRORS, ids=[e[0][:40] for e in ERRORS])
def test_errors(text: str, kind: str, message: str, offset: int, length: int) -> None:
    with pytest.raises(ExprError) as info:
        compile_expr(text, kind)
    e = info.value
    assert (e.message, e.offset, e.length) == (message, offset, length)
    assert str(e) == message


def test_error_is_a_value_error_that_pickles_and_points() -> None:
    with pytest.raises(ValueError) as info:
        compile_expr("mem.usage_bytes > 5mins")
    e = info.value
    assert isinstance(e, ExprError)
    back = pickle.loads(pickle.dumps(e))
    assert (back.message, back.offset, back.length) == (e.message, e.offset, e.length)
    assert e.pointer("mem.usage_bytes > 5mins") == "mem.usage_bytes > 5mins\n                   ^^^^"
    text = "cpu.x > 1 and\n  cpu.y > 5mins"
    with pytest.raises(ExprError) as info:
        compile_expr(text)
    assert info.value.pointer(text) == "  cpu.y > 5mins\n           ^^^^"


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        compile_expr("cpu.x > 1", "metrics")


# -- limits against crafted input ---------------------------------------------------------
def test_length_limit() -> None:
    body = "cpu.x > 1" + " " * (4096 - len("cpu.x > 1"))
    assert holds(body, ctx=DictContext({"cpu.x": 2.0}))
    with pytest.raises(ExprError) as info:
        compile_expr(body + " ")
    assert (info.value.offset, info.value.length) == (4096, 1)
    assert info.value.message == "expression is 4097 characters long; the limit is 4096"


@pytest.mark.parametrize(("make", "offset"), [
    (lambda n: "(" * n + "cpu.x > 1" + ")" * n, MAX_DEPTH),
    (lambda n: "not " * n + "cpu.x > 1", 4 * MAX_DEPTH),
    (lambda n: "-" * n + "cpu.x > 1", MAX_DEPTH),
    (lambda n: "abs(" * n + "cpu.x" + ")" * n + " > 1", 4 * MAX_DEPTH + 3),
])
def test_nesting_limit(make, offset: int) -> None:  # type: ignore[no-untyped-def]
    compile_expr(make(MAX_DEPTH - 2))
    with pytest.raises(ExprError) as info:
        compile_expr(make(MAX_DEPTH + 1))
    assert info.value.message == "expression is nested too deeply (the limit is 64 levels)"
    assert info.value.offset == offset


def test_tree_depth_limit_beyond_parentheses() -> None:
    # each level adds a comparison and a boolean: 40 parenthesised levels make a tree deeper than 64
    text = "cpu.x > 1"
    for _ in range(40):
        text = f"(cpu.x > 1 and ({text}))"
    with pytest.raises(ExprError, match="nested too deeply"):
        compile_expr(text)


@pytest.mark.parametrize("text", [
    "(" * 4096, "-" * 4095 + "1", "not " * 1024, "abs(" * 1024, "[" * 4096, "1+" * 2047 + "1",
    "cpu.x > 1 and " * 292 + "cpu.x > 1", "1 - " * 1023 + "cpu.x > 1", '"' * 4096, "(" * 2048 + ")" * 2048,
])
def test_crafted_input_is_a_clean_error_or_compiles(text: str) -> None:
    try:
        c = compile_expr(text[:4096])
    except ExprError:
        return
    c.evaluate(CTX, NOW)
    c.value(CTX, NOW)


def test_long_flat_chains_are_not_deep() -> None:
    text = " and ".join(f"a.b > {i % 10}" for i in range(300))
    assert len(text) < 4096
    assert holds(text, ctx=DictContext({"a.b": 10.0})) and not holds(text, ctx=DictContext({"a.b": 9.0}))
    assert holds(text.replace(" and ", " or "), ctx=DictContext({"a.b": 1.0}))
    text = "cpu.x + " * 400 + "1 > 400"
    assert holds(text, ctx=DictContext({"cpu.x": 1.0}))
