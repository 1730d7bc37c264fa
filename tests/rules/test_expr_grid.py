"""Every small comparison shape against every edge value (missing, 0, NaN, inf, odd event
fields), as ``L`` and as ``not L``, checked against the reference evaluator of
test_expr_props.py. Random search finds these corners only by luck; a grid finds them always."""

from __future__ import annotations

import itertools
import math

from cgwatch.rules.expr import DictContext, ExprError, compile_expr
from tests.rules.test_expr_props import CMP, NOW, ref_event, ref_metric, same, show, string_literal, top_value


def _m(name: str) -> tuple:
    return ("metric", name)


def _n(v: float) -> tuple:
    return ("num", v, repr(v) if v != int(v) else str(int(v)))


GRID_VALUES = [
    _m("a.x"), _n(2.0), _n(0.0), ("arith", "/", _m("a.x"), _m("a.y")), ("arith", "/", _n(2.0), _m("a.x")),
    ("arith", "/", _m("a.x"), _n(2.0)), ("arith", "-", _m("a.x"), _m("a.y")),
    ("arith", "/", ("arith", "*", _m("a.x"), _n(3.0)), _m("a.y")),                   # n-ary: a.x * 3 / a.y
    ("arith", "-", ("arith", "+", _m("a.x"), _n(1.0)), _m("a.y")),
    ("neg", _m("a.x")), ("abs", _m("a.y")), ("win", "delta", "a.x", "5m"), ("win", "rate", "a.y", "5m"),
]
GRID_DATA = [None, 0.0, 1.0, -1.0, math.nan, math.inf, [(100.0, 3.0), (200.0, 1.0)], [(250.0, math.nan)]]


def test_metric_leaf_grid() -> None:
    cases = 0
    for left, right, op in itertools.product(GRID_VALUES, GRID_VALUES, CMP):
        tree = ("cmp", op, left, right)
        text = show(tree)[0]
        try:
            yes, no = compile_expr(text), compile_expr(f"not ({text})")
        except ExprError as e:
            assert e.message == "division by zero" and "/ 0" in text, text
            continue
        for x, y in itertools.product(GRID_DATA, repeat=2):
            data = {k: v for k, v in (("a.x", x), ("a.y", y)) if v is not None}
            ctx, expected = DictContext(data), ref_metric(tree, data)
            assert yes.evaluate(ctx, NOW) is (expected is True), (text, data)
            assert no.evaluate(ctx, NOW) is (expected is False), (text, data)
            assert same(yes.value(ctx, NOW), top_value(tree, data, ref_metric)), (text, data)
            cases += 1
    assert cases > 50_000


EVENT_GRID_VALUES = [("field", "event.comm"), ("field", "event.code"), string_literal("sh", '"'), _n(1.0),
                     ("num", -1.0, "-1")]
EVENT_GRID_DATA = [None, "sh", "", "shell", 1, 0, -1, 2.5, True, math.nan, 10**400, b"sh", ["sh"]]
EVENT_GRID_LEAVES = [
    *(("cmp", op, a, b) for op in CMP for a in EVENT_GRID_VALUES for b in EVENT_GRID_VALUES
      if op in ("==", "!=") or "str" not in (a[0], b[0])),
    *(("in", a, [("sh", '"sh"'), (1.0, "1")], neg) for a in EVENT_GRID_VALUES for neg in (False, True)),
    *(("call", f, ("field", "event.comm"), b) for f in ("startswith", "endswith", "contains", "glob")
      for b in (string_literal("s*", '"'), ("field", "event.code"))),
]


def test_event_leaf_grid() -> None:
    for leaf in EVENT_GRID_LEAVES:
        text = show(leaf)[0]
        yes, no = compile_expr(text, "event"), compile_expr(f"not ({text})", "event")
        for x, y in itertools.product(EVENT_GRID_DATA, repeat=2):
            data = {k: v for k, v in (("event.comm", x), ("event.code", y)) if v is not None}
            ctx, expected = DictContext(fields=data), ref_event(leaf, data)
            assert yes.evaluate(ctx, 0.0) is (expected is True), (text, data)
            assert no.evaluate(ctx, 0.0) is (expected is False), (text, data)
