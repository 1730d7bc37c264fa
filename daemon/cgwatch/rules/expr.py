"""Rule expressions compiled to Python closures: ``expr:`` conditions and event ``where:`` filters.

Two kinds share one syntax. A *metric* expression (a rule's ``expr:``) reads dotted metric
names (``cpu.usage_cores``), numbers with units (``512MiB`` in bytes, KB/MB/GB/TB decimal,
KiB/MiB/GiB/TiB binary; ``5m`` in seconds: ms s m h d), ``+ - * /``, unary ``-``,
parentheses, ``> >= < <= == !=``, ``and or not``, ``abs(x)`` and the window functions
``avg min max p50 p95 p99 rate delta`` as ``avg(metric, 5m)`` (see
:mod:`cgwatch.rules.windows`; windows up to 7d). An *event* expression (an event rule's
``where:``) reads ``event.<field>`` and ``container.name|image|runtime|id``, strings in
single or double quotes (escapes ``\\"`` ``\\'`` ``\\\\``), numbers, comparisons,
``x in [...]`` / ``x not in [...]`` over literals, ``and or not`` and
``startswith(s, prefix)``, ``endswith(s, suffix)``, ``contains(s, substring)`` and
``glob(s, pattern)`` (:func:`fnmatch.fnmatchcase`: case-sensitive ``* ? [seq]``; a pattern
read from a field, not written, is unknown past 4096 characters, the longest one could write). The
whole expression must be a condition. Nothing else exists: no attribute access, indexing,
other calls, imports; nothing of the text is ever handed to ``eval``.

Evaluation never raises. Missing data is *unknown* (SQL's NULL): a metric without a value,
an empty window, a division by zero and NaN make an arithmetic result None, a comparison
with None is unknown, ``not unknown`` is unknown, ``unknown and x`` is false if x is false
and unknown otherwise, ``unknown or x`` is true if x is true and unknown otherwise, and an
unknown condition does not hold. So ``evaluate`` is true only when the data says so: a
missing metric never makes a rule fire, not even under ``not``. In event expressions a
comparison between a string and a number is false for ``==`` (true for ``!=``), and
ordering anything but two numbers is unknown.

Every node becomes one small closure; literal sub-expressions are folded at compile time
(where a literal divisor is 0 or a folded constant overflows, that is a compile error).
Conditions compile to closures that answer "is it true?" and "is it false?" directly, so
the three-valued logic costs nothing on the common paths.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

from .context import Context, DictContext
from .lexer import MAX_LENGTH, ExprError
from .parser import parse
from .tree import FUNCTIONS, Arith, BoolOp, Call, Compare, Field, In, Metric, Neg, Node, Not, Num, Str, Window, walk
from .windows import WINDOW, quantile, total

__all__ = ["FUNCTIONS", "Compiled", "Context", "DictContext", "ExprError", "compile_expr"]

Fn = Callable[[Any, float], Any]
Cond = Callable[[Any, float], bool]
_CONST = object()
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
        "!=": operator.ne}
_INVERSE = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_NUMBERS = (int, float, bool)
_WINDOW = {**WINDOW, "p50": partial(quantile, q=0.50), "p95": partial(quantile, q=0.95),
           "p99": partial(quantile, q=0.99)}


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled expression.

    ``metrics`` are the metrics it reads; ``windows`` maps each of them to the longest
    window a function needs (0 if only its last value is read). ``evaluate(ctx, now)`` is
    the condition; ``value(ctx, now)`` the left-hand side of the top-level comparison (for
    ``and``/``or``/``not`` that of their first comparison; for a function such as
    ``startswith`` 1.0 or 0.0), as a float, or None. ``needs`` are the metrics without whose
    value the condition cannot hold (a missing value is unknown, and unknown never holds):
    a container that never had one of them need not be evaluated.
    """

    text: str
    kind: str
    metrics: frozenset[str]
    windows: Mapping[str, float] = field(hash=False)
    evaluate: Callable[[Context, float], bool] = field(repr=False, compare=False)
    value: Callable[[Context, float], float | None] = field(repr=False, compare=False)
    needs: frozenset[str] = field(default=frozenset(), compare=False)


def compile_expr(text: str, kind: str = "metric") -> Compiled:
    """Compile a ``metric`` (``expr:``) or ``event`` (``where:``) expression; raises ExprError.

    Examples:

    >>> c = compile_expr("avg(cpu.usage_cores, 1m) > 0.9 * cpu.limit_cores")
    >>> sorted(c.metrics), dict(c.windows)
    (['cpu.limit_cores', 'cpu.usage_cores'], {'cpu.usage_cores': 60.0, 'cpu.limit_cores': 0.0})
    >>> ctx = DictContext({"cpu.usage_cores": [(0.0, 0.9), (30.0, 1.0)], "cpu.limit_cores": 1.0})
    >>> c.evaluate(ctx, 30.0), c.value(ctx, 30.0)
    (True, 0.95)
    >>> c.evaluate(DictContext({"cpu.usage_cores": 0.95}), 30.0)    # no data: not true
    False
    >>> w = compile_expr('event.comm in ["sh", "bash"] and not startswith(container.image, "debug")', "event")
    >>> w.evaluate(DictContext(fields={"event.comm": "sh", "container.image": "nginx:1"}), 0.0)
    True
    >>> compile_expr("avgg(cpu.usage_cores, 5m) > 1")
    Traceback (most recent call last):
    ...
    cgwatch.rules.lexer.ExprError: unknown function 'avgg' (did you mean avg?)
    """
    tree = parse(text, kind)
    windows: dict[str, float] = {}
    for node, _ in walk(tree):
        if isinstance(node, Metric):
            windows.setdefault(node.name, 0.0)
        elif isinstance(node, Window):
            windows[node.metric] = max(windows.get(node.metric, 0.0), node.seconds)
    return Compiled(text, kind, frozenset(windows), MappingProxyType(windows), _cond(tree, True), _value(tree),
                    _needs(tree) if kind == "metric" else frozenset())


def _needs(node: Node, holds: bool = True) -> frozenset[str]:
    """The metrics a metric condition cannot be true without (``holds=False``: cannot be false
    without): every one a comparison reads (an unknown operand makes it unknown, neither true
    nor false). ``not`` swaps the two; ``and`` is true only when every part is, and false when
    one part is; ``or`` the other way round.

    >>> sorted(_needs(parse("cpu.usage_cores > 0.9 * cpu.limit_cores and not (avg(a.b, 1m) < 1)", "metric")))
    ['a.b', 'cpu.limit_cores', 'cpu.usage_cores']
    >>> sorted(_needs(parse("(a.x > 1 and b.y > 1) or (a.x > 2 and c.z > 0)", "metric")))
    ['a.x']
    >>> sorted(_needs(parse("not (1 > 2 and a.x > 1)", "metric")))     # true when 1 > 2 is false
    []
    """
    if isinstance(node, Not):
        return _needs(node.operand, not holds)
    if isinstance(node, BoolOp):
        parts = [_needs(i, holds) for i in node.items]
        every = (node.op == "and") == holds      # true and: every part true; false or: every part false
        return frozenset.union(*parts) if every else frozenset.intersection(*parts)
    if isinstance(node, Compare) and _is_numeric(node):
        return frozenset(n.name if isinstance(n, Metric) else n.metric
                         for n, _ in walk(node) if isinstance(n, (Metric, Window)))
    return frozenset()


# -- constants ----------------------------------------------------------------------------
def _const(node: Node) -> Any:
    """The value of a literal sub-expression, or _CONST if it reads data."""
    if isinstance(node, (Num, Str)):
        return node.value
    if isinstance(node, Neg):
        v = _const(node.operand)
        return v if v is _CONST else -v
    if isinstance(node, Call) and node.func == "abs":
        v = _const(node.args[0])
        return v if v is _CONST else abs(v)
    if isinstance(node, Arith):
        values = [_const(i) for i in node.items]
        if _CONST in values:
            return _CONST
        acc = values[0]
        for op, item, v in zip(node.ops, node.items[1:], values[1:]):
            if op == "/" and v == 0:
                raise ExprError("division by zero", item.pos, item.end - item.pos)
            acc = _ARITH[op](acc, v)
        if not math.isfinite(acc):
            raise ExprError("this constant is too large", node.pos, node.end - node.pos)
        return acc
    return _CONST


def _constant(v: Any) -> Fn:
    return lambda ctx, now: v


# -- values (numbers, strings, event fields); None is "no value" -------------------------
def _num(node: Node) -> Fn:
    c = _const(node)
    if c is not _CONST:
        return _constant(c)
    if isinstance(node, Metric):
        return partial(_read_metric, node.name)
    if isinstance(node, Field):
        return partial(_read_field, node.name)
    if isinstance(node, Window):
        if node.func == "total":
            return partial(_read_total, node.metric, node.seconds)
        return partial(_read_window, node.metric, node.seconds, _WINDOW[node.func])
    if isinstance(node, Neg):
        f = _num(node.operand)
        return lambda ctx, now: None if (v := f(ctx, now)) is None else -v
    if isinstance(node, Call) and node.func == "abs":
        f = _num(node.args[0])
        return lambda ctx, now: None if (v := f(ctx, now)) is None else abs(v)
    if isinstance(node, Arith):
        return _arith(node)
    raise AssertionError(f"not a value: {node!r}")


def _read_metric(name: str, ctx: Any, now: float) -> float | None:
    v = ctx.last(name)
    return v if v == v else None            # None == None; NaN != NaN


def _read_field(name: str, ctx: Any, now: float) -> object | None:
    v = ctx.field(name)
    return None if v.__class__ is float and v != v else v


def _read_window(metric: str, seconds: float, agg: Callable[[Any], float | None], ctx: Any, now: float) -> Any:
    points = ctx.window(metric, seconds, now)
    return agg(points) if points else None


def _read_total(metric: str, seconds: float, ctx: Any, now: float) -> float | None:
    """``total`` of the window: 0 when the context knows it holds only zeros (see
    :class:`~cgwatch.rules.context.Context`), else computed from its points."""
    if ctx.quiet(metric, seconds, now):
        return 0.0
    points = ctx.window(metric, seconds, now)
    return total(points) if points else None


def _arith(node: Arith) -> Fn:
    for op, item in zip(node.ops, node.items[1:]):
        if op == "/" and _const(item) == 0:
            raise ExprError("division by zero", item.pos, item.end - item.pos)
    fns = [_num(i) for i in node.items]
    ops = [_ARITH[o] for o in node.ops]
    if len(fns) == 2:
        return _arith2(ops[0], fns[0], fns[1], _const(node.items[0]), _const(node.items[1]))
    steps = list(zip(ops, fns[1:]))
    first = fns[0]
    div = operator.truediv

    def arith(ctx: Any, now: float) -> float | None:
        acc = first(ctx, now)
        if acc is None:
            return None
        for op, f in steps:
            b = f(ctx, now)
            if b is None or (op is div and b == 0):
                return None
            acc = op(acc, b)
        return acc if acc == acc else None
    return arith


def _arith2(op: Callable[[Any, Any], Any], fa: Fn, fb: Fn, ca: Any, cb: Any) -> Fn:
    """``a op b`` with one side possibly constant (a constant divisor is never 0)."""
    div = op is operator.truediv
    if cb is not _CONST:
        def arith_const(ctx: Any, now: float) -> float | None:
            a = fa(ctx, now)
            if a is None:
                return None
            r = op(a, cb)
            return r if r == r else None
        return arith_const
    if ca is not _CONST:
        def const_arith(ctx: Any, now: float) -> float | None:
            b = fb(ctx, now)
            if b is None or (div and b == 0):
                return None
            r = op(ca, b)
            return r if r == r else None
        return const_arith

    def arith2(ctx: Any, now: float) -> float | None:
        a = fa(ctx, now)
        if a is None:
            return None
        b = fb(ctx, now)
        if b is None or (div and b == 0):
            return None
        r = op(a, b)
        return r if r == r else None
    return arith2


# -- conditions: cond(node, True) answers "is it true?", cond(node, False) "is it false?" --
def _cond(node: Node, want: bool) -> Cond:
    if isinstance(node, Not):
        return _cond(node.operand, not want)
    if isinstance(node, BoolOp):
        parts = [_cond(i, want) for i in node.items]
        return _all(parts) if (node.op == "and") == want else _any(parts)
    if isinstance(node, Compare) and _is_numeric(node):
        return _compare(node, want)
    k = _kleene(node)
    if want:
        return lambda ctx, now: k(ctx, now) is True
    return lambda ctx, now: k(ctx, now) is False


def _all(parts: list[Cond]) -> Cond:
    if len(parts) == 2:
        a, b = parts
        return lambda ctx, now: a(ctx, now) and b(ctx, now)
    return lambda ctx, now: all(p(ctx, now) for p in parts)


def _any(parts: list[Cond]) -> Cond:
    if len(parts) == 2:
        a, b = parts
        return lambda ctx, now: a(ctx, now) or b(ctx, now)
    return lambda ctx, now: any(p(ctx, now) for p in parts)


def _is_numeric(node: Compare) -> bool:
    """Both sides are numbers for sure (always so in metric expressions)."""
    return not any(isinstance(n, (Field, Str)) for n, _ in walk(node))


def _compare(node: Compare, want: bool) -> Cond:
    symbol = node.op if want else _INVERSE[node.op]
    op = _OPS[symbol]
    ca, cb = _const(node.left), _const(node.right)
    if ca is not _CONST and cb is not _CONST:
        return _constant(bool(op(ca, cb)))
    if symbol == "!=" and cb is not _CONST and isinstance(node.left, Metric):
        name = node.left.name                # NaN != x is true: keep NaN out
        return lambda ctx, now: (v := ctx.last(name)) is not None and v == v and v != cb
    fa, fb = _num(node.left), _num(node.right)
    if isinstance(node.left, Metric):
        name = node.left.name
        if cb is not _CONST:
            return lambda ctx, now: (v := ctx.last(name)) is not None and op(v, cb)
        return lambda ctx, now: ((v := ctx.last(name)) is not None and v == v
                                 and (b := fb(ctx, now)) is not None and op(v, b))
    if cb is not _CONST:
        return lambda ctx, now: (a := fa(ctx, now)) is not None and op(a, cb)
    if ca is not _CONST:
        return lambda ctx, now: (b := fb(ctx, now)) is not None and op(ca, b)
    return lambda ctx, now: (a := fa(ctx, now)) is not None and (b := fb(ctx, now)) is not None and op(a, b)


# -- three-valued leaves of event expressions: True, False or None -----------------------
def _kleene(node: Node) -> Fn:
    if isinstance(node, Compare):
        fa, fb, op = _num(node.left), _num(node.right), _OPS[node.op]
        return lambda ctx, now: _compare_values(op, fa(ctx, now), fb(ctx, now))
    if isinstance(node, In):
        return _member(node)
    if isinstance(node, Call):
        return _string_call(node)
    raise AssertionError(f"not a condition: {node!r}")


def _compare_values(op: Callable[[Any, Any], bool], a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    ta, tb = a.__class__, b.__class__
    if ta in _NUMBERS and tb in _NUMBERS:
        return op(a, b)
    if op is operator.eq or op is operator.ne:
        same = ta is tb and ta in (str, bytes) and a == b
        return same if op is operator.eq else not same
    return None


def _member(node: In) -> Fn:
    f = _num(node.operand)
    strs = frozenset(v for v in node.values if isinstance(v, str))
    nums = frozenset(v for v in node.values if not isinstance(v, str))
    negated = node.negated

    def member(ctx: Any, now: float) -> bool | None:
        x = f(ctx, now)
        if x is None:
            return None
        cls = x.__class__
        found = (x in strs) if cls is str else (x in nums) if cls in _NUMBERS else False
        return found is not negated
    return member


def _string_call(node: Call) -> Fn:
    fs, fp = _num(node.args[0]), _num(node.args[1])
    pattern = _const(node.args[1])
    if node.func == "glob" and isinstance(pattern, str):
        match = re.compile(fnmatch.translate(pattern)).match
        test: Callable[[str, str], bool | None] = lambda s, p: match(s) is not None  # noqa: E731
    else:
        test = {"startswith": str.startswith, "endswith": str.endswith, "contains": operator.contains,
                "glob": _glob}[node.func]

    def string_call(ctx: Any, now: float) -> bool | None:
        s, p = fs(ctx, now), fp(ctx, now)
        if s.__class__ is not str or p.__class__ is not str:
            return None
        return test(s, p)
    return string_call


def _glob(s: str, pattern: str) -> bool | None:
    """``glob`` with a pattern read from data: compiled patterns are cached, a few
    hundred at most (fnmatch's own cache keeps 32768 of any length)."""
    if len(pattern) > MAX_LENGTH:
        return None
    return _glob_matcher(pattern)(s) is not None


@functools.lru_cache(maxsize=256)
def _glob_matcher(pattern: str) -> Callable[[str], Any]:
    return re.compile(fnmatch.translate(pattern)).match


# -- the alert's value --------------------------------------------------------------------
def _value(node: Node) -> Callable[[Any, float], float | None]:
    while isinstance(node, (Not, BoolOp)):
        node = node.operand if isinstance(node, Not) else node.items[0]
    if isinstance(node, Compare):
        f = _num(node.left)
    elif isinstance(node, In):
        f = _num(node.operand)
    else:
        f = _kleene(node)

    def value(ctx: Any, now: float) -> float | None:
        v = f(ctx, now)
        if v.__class__ is float:
            return v
        if v.__class__ in _NUMBERS:
            try:
                return float(v)
            except OverflowError:
                return None
        return None
    return value
