"""The syntax tree of a rule expression: node classes, their types, and printing them back.

Every node carries ``pos``/``end`` (character offsets into the source) for error messages;
they take no part in equality, so ``parse(unparse(t)) == t``. Chains of the same operator
(``a + b - c``, ``x and y and z``) are one n-ary node, so a long flat chain is not deep.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Union

WINDOW_FUNCTIONS = ("avg", "min", "max", "p50", "p95", "p99", "rate", "delta", "total")
STRING_FUNCTIONS = ("startswith", "endswith", "contains", "glob")
PARAMS: dict[str, tuple[str, ...]] = {
    **{f: ("metric", "duration") for f in WINDOW_FUNCTIONS},
    "abs": ("number",),
    "startswith": ("string", "prefix"), "endswith": ("string", "suffix"),
    "contains": ("string", "substring"), "glob": ("string", "pattern"),
}
FUNCTIONS = MappingProxyType({name: len(params) for name, params in PARAMS.items()})
KIND_OF_FUNCTION = {f: ("event" if f in STRING_FUNCTIONS else "metric") for f in PARAMS}
CONTAINER_FIELDS = ("name", "image", "runtime", "id")

def _pos() -> int:
    return field(default=0, compare=False, repr=False)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Num:
    """A number literal; ``unit`` says whether it was written as a duration (``5m``) or a size (``1KiB``)."""

    value: float
    text: str = field(default="", compare=False)   # as written, e.g. "5m"; "" if built in code
    unit: str | None = field(default=None, compare=False, repr=False)   # "duration", "bytes" or None
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Str:
    """A string literal (event expressions only)."""

    value: str
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric's current value: ``cpu.usage_cores``."""

    name: str
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Field:
    """An event or container field: ``event.comm``, ``container.image``."""

    name: str                                      # "event.comm", "container.image"
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Window:
    """A window function over one metric: ``avg(cpu.usage_cores, 5m)``."""

    func: str
    metric: str
    seconds: float
    text: str = field(default="", compare=False)   # the duration as written
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Call:
    """``abs(x)`` or a string function such as ``startswith(s, prefix)``."""

    func: str                                      # abs or a string function
    args: tuple[Node, ...]
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Neg:
    """Unary minus."""

    operand: Node
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Arith:
    """``a + b - c`` or ``a * b / c``: one chain of operators of the same precedence."""

    ops: tuple[str, ...]                           # len(items) - 1 of "+-" or of "*/"
    items: tuple[Node, ...]
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right`` with op one of ``> >= < <= == !=``."""

    op: str
    left: Node
    right: Node
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class In:
    """``operand in [...]`` (or ``not in``) over literal strings and numbers."""

    operand: Node
    values: tuple[str | float, ...]
    negated: bool = False
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class Not:
    """``not operand``."""

    operand: Node
    pos: int = _pos()
    end: int = _pos()


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``a and b and c`` or ``a or b or c``."""

    op: str                                        # "and" | "or"
    items: tuple[Node, ...]
    pos: int = _pos()
    end: int = _pos()


Node = Union[Num, Str, Metric, Field, Window, Call, Neg, Arith, Compare, In, Not, BoolOp]


def type_of(node: Node) -> str:
    """"num", "str", "bool", or "any" (an event field: string or number, known at run time).

    Examples:

    >>> type_of(Metric("cpu.usage_cores")), type_of(Compare(">", Num(1.0), Num(2.0))), type_of(Field("event.comm"))
    ('num', 'bool', 'any')
    """
    if isinstance(node, (Num, Metric, Window, Neg, Arith)):
        return "num"
    if isinstance(node, Str):
        return "str"
    if isinstance(node, Field):
        return "any"
    if isinstance(node, Call):
        return "num" if node.func == "abs" else "bool"
    return "bool"


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``.

    Examples:

    >>> children(Compare(">", Metric("a.b"), Num(1.0)))
    (Metric(name='a.b'), Num(value=1.0, text=''))
    """
    if isinstance(node, (Arith, BoolOp)):
        return node.items
    if isinstance(node, Compare):
        return (node.left, node.right)
    if isinstance(node, (Neg, Not, In)):
        return (node.operand,)
    if isinstance(node, Call):
        return node.args
    return ()


def walk(node: Node) -> Iterator[tuple[Node, int]]:
    """Every node under ``node`` (itself included) with its depth (1 at the top), without recursion.

    Examples:

    >>> [(type(n).__name__, d) for n, d in walk(Not(Compare("<", Metric("a.b"), Num(1.0))))]
    [('Not', 1), ('Compare', 2), ('Metric', 3), ('Num', 3)]
    """
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        yield n, d
        stack.extend((c, d + 1) for c in reversed(children(n)))


_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "*": 6, "neg": 7, "atom": 8}


def _prec(node: Node) -> int:
    if isinstance(node, BoolOp):
        return _PREC[node.op]
    if isinstance(node, Not):
        return _PREC["not"]
    if isinstance(node, (Compare, In)):
        return _PREC["cmp"]
    if isinstance(node, Arith):
        return _PREC["+"] if node.ops[0] in "+-" else _PREC["*"]
    if isinstance(node, Neg) or (isinstance(node, Num) and node.value < 0):
        return _PREC["neg"]
    return _PREC["atom"]


def unparse(node: Node) -> str:
    """Expression text for ``node``, with only the parentheses it needs.

    Examples:

    >>> unparse(BoolOp("and", (Compare(">", Metric("cpu.usage_cores"),
    ...     Arith(("*",), (Num(0.9), Metric("cpu.limit_cores")))), Not(In(Field("event.comm"), ("sh",))))))
    'cpu.usage_cores > 0.9 * cpu.limit_cores and not event.comm in ["sh"]'
    >>> unparse(Arith(("-",), (Metric("a.b"), Arith(("-",), (Metric("c.d"), Num(1.0))))))
    'a.b - (c.d - 1)'
    """
    def sub(child: Node, at_least: int) -> str:
        s = unparse(child)
        return f"({s})" if _prec(child) < at_least else s

    if isinstance(node, Num):
        return node.text or format_number(node.value)
    if isinstance(node, Str):
        return quote(node.value)
    if isinstance(node, (Metric, Field)):
        return node.name
    if isinstance(node, Window):
        return f"{node.func}({node.metric}, {node.text or format_duration(node.seconds)})"
    if isinstance(node, Call):
        return f"{node.func}({', '.join(unparse(a) for a in node.args)})"
    if isinstance(node, Neg):
        return "-" + sub(node.operand, _PREC["neg"])
    if isinstance(node, Arith):
        p = _prec(node)
        first = node.items[0]    # (a + b) + c keeps its parentheses: the parser flattens a + b + c
        parts = [sub(first, p + 1 if isinstance(first, Arith) else p)]
        for op, item in zip(node.ops, node.items[1:]):
            parts.append(f" {op} {sub(item, p + 1)}")
        return "".join(parts)
    if isinstance(node, Compare):
        return f"{sub(node.left, _PREC['+'])} {node.op} {sub(node.right, _PREC['+'])}"
    if isinstance(node, In):
        values = ", ".join(quote(v) if isinstance(v, str) else format_number(v) for v in node.values)
        return f"{sub(node.operand, _PREC['+'])} {'not in' if node.negated else 'in'} [{values}]"
    if isinstance(node, Not):
        return "not " + sub(node.operand, _PREC["not"])
    p = _prec(node)
    return f" {node.op} ".join(sub(item, p + 1) for item in node.items)


def format_number(value: float) -> str:
    """A number as the lexer reads it back: ``1`` rather than ``1.0``, exponents kept.

    Examples:

    >>> format_number(1.0), format_number(0.25), format_number(1e-07), format_number(-3.0)
    ('1', '0.25', '1e-07', '-3')
    """
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_duration(seconds: float) -> str:
    """Seconds in the largest unit that divides them evenly.

    Examples:

    >>> format_duration(300.0), format_duration(0.5), format_duration(90.0), format_duration(86400.0)
    ('5m', '500ms', '90s', '1d')
    """
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001)):
        q = seconds / size
        if q >= 1 and abs(q - round(q)) < 1e-9:
            return f"{round(q)}{unit}"
    return f"{format_number(seconds)}s"


def quote(value: str) -> str:
    r"""A double-quoted string literal for ``value``.

    Examples:

    >>> print(quote('say "hi" \\ bye'))
    "say \"hi\" \\ bye"
    """
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
