"""Rule expression text -> checked syntax tree (:mod:`cgwatch.rules.tree`).

A recursive-descent parser over :func:`~cgwatch.rules.lexer.tokenize`. Precedence, loosest
first: ``or``, ``and``, ``not``, comparisons and ``in`` (not chainable), ``+ -``, ``* /``,
unary ``-``. It also checks what the language allows where, so every mistake is an
:class:`ExprError` with the offset of the offending text: names and functions of the wrong
kind, arity, window arguments, conditions where values belong and values where conditions
belong, and the limits (:data:`MAX_DEPTH` levels, windows up to 7d, at most
:data:`MAX_WINDOWS` window functions: each reads up to a window's samples, so
they bound what one evaluation costs).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from .lexer import ExprError, Token, tokenize
from .tree import (
    CONTAINER_FIELDS,
    KIND_OF_FUNCTION,
    PARAMS,
    WINDOW_FUNCTIONS,
    Arith,
    BoolOp,
    Call,
    Compare,
    Field,
    In,
    Metric,
    Neg,
    Node,
    Not,
    Num,
    Str,
    Window,
    type_of,
    walk,
)

MAX_DEPTH = 64
MAX_WINDOW = 7 * 86400.0
MAX_WINDOWS = 16
KINDS = ("metric", "event")
_COMPARISONS = frozenset({">", ">=", "<", "<=", "==", "!="})
_ORDERING = frozenset({">", ">=", "<", "<="})
_TYPE_NAMES = {"num": "a number", "str": "a string", "bool": "a condition", "any": "a field"}
_EVENT_NAMES = "event.<field> or container.name|image|runtime|id"
_CLOSING = {"(": ")", "[": "]"}
_METRIC = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")


def parse(text: str, kind: str = "metric") -> Node:
    """The checked syntax tree of a condition; raises ExprError.

    ``kind`` is "metric" (a rule's ``expr:``) or "event" (an event rule's ``where:``).

    Examples:

    >>> parse("avg(cpu.usage_cores, 5m) > 0.9")
    Compare(op='>', left=Window(func='avg', metric='cpu.usage_cores', seconds=300.0, text='5m'),
            right=Num(value=0.9, text='0.9'))
    >>> parse("avg(cpu.usage_cores) > 0.9")
    Traceback (most recent call last):
    ...
    cgwatch.rules.lexer.ExprError: avg takes 2 arguments (metric, duration), got 1
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'metric' or 'event', not {kind!r}")
    return _Parser(text, kind).parse()


class _Parser:
    def __init__(self, text: str, kind: str) -> None:
        self.text, self.kind = text, kind
        self.toks = tokenize(text)
        self.i = 0
        self.nesting = 0
        self.windows = 0

    # -- tokens ---------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, text: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.text == text and tok.kind in ("op", "kw")

    def close(self, opening: Token, expected: str) -> Token:
        """The token closing ``opening``, or an error naming what was ``expected`` instead."""
        if self.at(_CLOSING[opening.text]):
            return self.next()
        tok = self.peek()
        if tok.kind == "eof":
            raise ExprError(f"'{opening.text}' is never closed", opening.pos, 1)
        raise ExprError(f"expected {expected}, got {_describe(tok)}", tok.pos, len(tok.text))

    @contextmanager
    def nested(self, tok: Token) -> Iterator[None]:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise ExprError(f"expression is nested too deeply (the limit is {MAX_DEPTH} levels)", tok.pos, 1)
        yield
        self.nesting -= 1

    # -- checks ---------------------------------------------------------------------------
    def fail(self, message: str, node: Node) -> ExprError:
        return ExprError(message, node.pos, node.end - node.pos)

    def source(self, node: Node) -> str:
        return self.text[node.pos : node.end]

    def need(self, node: Node, types: str, where: str) -> Node:
        t = type_of(node)
        if t in types.split():
            return node
        if "bool" in types:
            raise self.fail(f"{where} must be a comparison or boolean, got {_TYPE_NAMES[t]}", node)
        raise self.fail(f"{where} must be a value, got {_TYPE_NAMES[t]}", node)

    # -- grammar (one method per precedence level, loosest first) -------------------------
    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise ExprError("empty expression", 0, len(self.text))
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "eof":
            if tok.text == ")":
                raise ExprError("unmatched ')'", tok.pos, 1)
            if tok.text.lower() in ("and", "or", "not", "in"):
                raise ExprError(f"write '{tok.text.lower()}' in lower case", tok.pos, len(tok.text))
            raise ExprError(f"unexpected '{tok.text}' after a complete expression", tok.pos, len(tok.text))
        if type_of(node) != "bool":
            raise self.fail("expression must be a comparison or boolean", node)
        for sub, depth in walk(node):
            if depth > MAX_DEPTH:
                raise self.fail(f"expression is nested too deeply (the limit is {MAX_DEPTH} levels)", sub)
        return node

    def or_expr(self) -> Node:
        return self.boolop("or", [self.and_expr()], self.and_expr)

    def and_expr(self) -> Node:
        return self.boolop("and", [self.negation()], self.negation)

    def boolop(self, op: str, items: list[Node], parse_item: Callable[[], Node]) -> Node:
        while self.at(op):
            self.next()
            items.append(parse_item())
        if len(items) == 1:
            return items[0]
        for item in items:
            self.need(item, "bool", f"each side of '{op}'")
        return BoolOp(op, tuple(items), items[0].pos, items[-1].end)

    def negation(self) -> Node:
        if not self.at("not"):
            return self.comparison()
        tok = self.next()
        with self.nested(tok):
            operand = self.negation()
        self.need(operand, "bool", "the operand of 'not'")
        return Not(operand, tok.pos, operand.end)

    def comparison(self) -> Node:
        left = self.arith(0)
        tok = self.peek()
        if tok.kind == "op" and tok.text in _COMPARISONS:
            self.next()
            right = self.arith(0)
            for side in (left, right):
                self.need(side, "num str any", f"each side of '{tok.text}'")
                if tok.text in _ORDERING and type_of(side) == "str":
                    raise self.fail(f"strings can only be compared with == or !=, not '{tok.text}'", side)
            after = self.peek()
            if after.kind == "op" and after.text in _COMPARISONS:
                raise ExprError("comparisons cannot be chained: write 'a < b and b < c'", after.pos, len(after.text))
            return Compare(tok.text, left, right, left.pos, right.end)
        negated = self.at("not") and self.at("in", 1)
        if self.at("in") or negated:
            if self.kind != "event":
                raise ExprError("'in' lists are only available in event expressions", tok.pos, len(tok.text))
            self.i += 2 if negated else 1
            self.need(left, "num str any", f"the left side of '{'not in' if negated else 'in'}'")
            values, end = self.literal_list()
            return In(left, values, negated, left.pos, end)
        return left

    def literal_list(self) -> tuple[tuple[str | float, ...], int]:
        opening = self.peek()
        if not self.at("["):
            raise ExprError(f"expected a list such as [\"sh\", \"bash\"] after 'in', got {_describe(opening)}",
                            opening.pos, max(1, len(opening.text)))
        self.next()
        values: list[str | float] = []
        while not self.at("]"):
            values.append(self.literal(opening))
            if self.at(","):
                self.next()
            elif not self.at("]"):
                self.close(opening, "',' or ']'")
        end = self.next().end
        if not values:
            raise ExprError("an empty list never matches", opening.pos, end - opening.pos)
        return tuple(values), end

    def literal(self, opening: Token) -> str | float:
        minus = self.at("-")
        tok = self.peek(1 if minus else 0)
        if tok.kind == "eof":
            raise ExprError("'[' is never closed", opening.pos, 1)
        if not (tok.kind == "num" or (tok.kind == "str" and not minus)):
            raise ExprError(f"list items must be string or number literals, got {_describe(tok)}",
                            tok.pos, len(tok.text))
        self.i += 2 if minus else 1
        return str(tok.value) if tok.kind == "str" else (-1.0 if minus else 1.0) * float(tok.value)  # type: ignore

    def arith(self, level: int) -> Node:
        """``+ -`` at level 0, ``* /`` at level 1; a chain of one level is one n-ary node."""
        ops = "+-" if level == 0 else "*/"
        item = (lambda: self.arith(1)) if level == 0 else self.unary
        items = [item()]
        found: list[str] = []
        while self.peek().kind == "op" and self.peek().text in ops:
            tok = self.next()
            if self.kind == "event":
                raise ExprError("arithmetic is only available in metric expressions", tok.pos, 1)
            found.append(tok.text)
            items.append(item())
        if not found:
            return items[0]
        for node in items:
            self.need(node, "num", f"each side of '{found[0]}'")
        return Arith(tuple(found), tuple(items), items[0].pos, items[-1].end)

    def unary(self) -> Node:
        if not self.at("-"):
            return self.postfix(self.primary())
        tok = self.next()
        with self.nested(tok):
            operand = self.unary()
        if self.kind == "event" and not isinstance(operand, Num):
            raise self.fail("unary minus applies only to numbers in event expressions", operand)
        self.need(operand, "num", "the operand of '-'")
        return Neg(operand, tok.pos, operand.end)

    def postfix(self, node: Node) -> Node:
        if self.at("["):
            raise ExprError("indexing is not supported", self.peek().pos, 1)
        if self.at("("):
            raise ExprError("only functions can be called", node.pos, self.peek().end - node.pos)
        return node

    def primary(self) -> Node:
        tok = self.next()
        if tok.kind == "num":
            return Num(float(tok.value), tok.text, tok.unit, tok.pos, tok.end)  # type: ignore[arg-type]
        if tok.kind == "str":
            if self.kind == "metric":
                raise ExprError("strings are not allowed in metric expressions", tok.pos, len(tok.text))
            return Str(str(tok.value), tok.pos, tok.end)
        if tok.kind == "name":
            return self.call(tok) if self.at("(") else self.name(tok)
        if tok.text == "(" and tok.kind == "op":
            if self.at(")"):
                raise ExprError("empty parentheses", tok.pos, 2)
            with self.nested(tok):
                node = self.or_expr()
            close = self.close(tok, "')'")
            return replace(node, pos=tok.pos, end=close.end)
        if tok.text == "[" and tok.kind == "op":
            raise ExprError("a list is only allowed after 'in'", tok.pos, 1)
        if tok.kind == "eof":
            raise ExprError("unexpected end of expression: expected a value", tok.pos, 1)
        raise ExprError(f"expected a value, got {_describe(tok)}", tok.pos, len(tok.text))

    def name(self, tok: Token) -> Node:
        name, kind = tok.text, self.kind
        if name.lower() in ("and", "or", "not", "in"):
            raise ExprError(f"write '{name.lower()}' in lower case", tok.pos, len(name))
        if name in PARAMS:
            raise ExprError(f"{name} is a function: write {name}({', '.join(PARAMS[name])})", tok.pos, len(name))
        head, _, rest = name.partition(".")
        if kind == "metric":
            if head in ("event", "container"):
                raise ExprError(f"{name} is an event field: only an event rule's where: can use it"
                                + ("; choose containers with select:" if head == "container" else ""),
                                tok.pos, len(name))
            if not rest:
                raise ExprError(f"unknown name '{name}' (metric names are dotted, e.g. cpu.usage_cores)",
                                tok.pos, len(name))
            if name != name.lower():
                raise ExprError(f"metric names are lower case: did you mean {name.lower()}?", tok.pos, len(name))
            if not _METRIC.fullmatch(name):
                raise ExprError(f"'{name}' is not a metric name: metric names are dotted words that start with a "
                                "letter, e.g. cpu.usage_cores", tok.pos, len(name))
            return Metric(name, tok.pos, tok.end)
        if head == "event" and rest and "." not in rest:
            return Field(name, tok.pos, tok.end)
        if head == "container" and rest in CONTAINER_FIELDS:
            return Field(name, tok.pos, tok.end)
        if head == "container" and rest:
            guess = difflib.get_close_matches(rest, CONTAINER_FIELDS, n=1)
            hint = f"did you mean container.{guess[0]}?" if guess else f"use {_EVENT_NAMES}"
            raise ExprError(f"unknown container field '{rest}' ({hint})", tok.pos, len(name))
        what = "metric names are not available" if rest and head != "event" else f"unknown name '{name}'"
        raise ExprError(f"{what} in event expressions: use {_EVENT_NAMES}", tok.pos, len(name))

    def call(self, tok: Token) -> Node:
        func = tok.text
        opening = self.next()
        if func not in PARAMS:
            mine = [f for f, k in KIND_OF_FUNCTION.items() if k == self.kind]
            guess = difflib.get_close_matches(func.lower(), mine, n=1, cutoff=0.5)
            hint = f"did you mean {guess[0]}?" if guess else f"functions: {', '.join(mine)}"
            raise ExprError(f"unknown function '{func}' ({hint})", tok.pos, len(func))
        if KIND_OF_FUNCTION[func] != self.kind:
            raise ExprError(f"{func}() is only available in {KIND_OF_FUNCTION[func]} expressions", tok.pos, len(func))
        args: list[Node] = []
        with self.nested(opening):
            if not self.at(")"):
                args.append(self.or_expr())
            while self.at(","):
                self.next()
                args.append(self.or_expr())
        end = self.close(opening, "',' or ')'").end
        params = PARAMS[func]
        if len(args) != len(params):
            n = len(params)
            raise ExprError(f"{func} takes {n} argument{'s' * (n > 1)} ({', '.join(params)}), got {len(args)}",
                            tok.pos, end - tok.pos)
        if func in WINDOW_FUNCTIONS:
            return self.window(func, args[0], args[1], tok.pos, end)
        for arg, param in zip(args, params):
            if func == "abs":
                self.need(arg, "num", f"the argument of {func}")
            elif type_of(arg) not in ("str", "any"):
                raise self.fail(f"the {param} of {func} must be a string, got {_TYPE_NAMES[type_of(arg)]}", arg)
        return Call(func, tuple(args), tok.pos, end)

    def window(self, func: str, metric: Node, duration: Node, pos: int, end: int) -> Node:
        self.windows += 1
        if self.windows > MAX_WINDOWS:
            raise ExprError(f"an expression may use at most {MAX_WINDOWS} window functions", pos, end - pos)
        if isinstance(metric, Num) and metric.unit == "duration":
            raise self.fail(f"expected a metric name, got the duration {metric.text} "
                            f"(the arguments are {func}(metric, duration))", metric)
        if not isinstance(metric, Metric):
            raise self.fail(f"the first argument of {func} must be a metric name, e.g. {func}(cpu.usage_cores, 5m)",
                            metric)
        if not (isinstance(duration, Num) and duration.unit == "duration"):
            raise self.fail(f"the second argument of {func} must be a duration such as 30s, 5m or 1h, "
                            f"got {self.source(duration)}", duration)
        if duration.value <= 0:
            raise self.fail(f"the window of {func} must be longer than 0", duration)
        if duration.value > MAX_WINDOW:
            raise self.fail(f"the window of {func} must be at most 7d, got {duration.text}", duration)
        return Window(func, metric.name, duration.value, duration.text, pos, end)


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "the end of the expression"
    if tok.kind == "num":
        return f"the number {tok.text}"
    if tok.kind == "str":
        return f"the string {tok.text}"
    return f"'{tok.text}'"
