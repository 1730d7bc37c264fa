"""Alert summaries: Jinja2 templates, sandboxed and bounded, compiled once when rules load.

A summary sees these variables (the engine fills them in):

``container`` (display name), ``id``, ``image``, ``runtime``, ``labels``
(the container's labels), ``value`` (the rule's value, None for events),
``rule``, ``severity`` and ``event`` (an event's fields, ``{}`` otherwise).

Beyond Jinja's built-in filters (``round``, ``default``, ``upper``, ...)
there are ``bytes`` (``1536 | bytes`` is ``1.50KiB``) and ``duration``
(``90 | duration`` is ``1m30s``). Mistakes are caught at load where they can
be: syntax, unknown filters, unknown variables, ``include`` and friends. What
can only fail at render time (a missing event field, ``None | round``) makes
:meth:`Template.render` return the template's source instead, and logs why,
once: a summary never costs an alert.

Summaries render inside the daemon's event loop, so what a template may
build and do is bounded, by counting, never by a clock alone:

- a rendered summary is at most :data:`MAX_OUTPUT` characters; a longer one
  is cut and ends in :data:`TRUNCATED`;
- no string, list or number a template builds may exceed :data:`MAX_VALUE`
  characters, items or bits (``'x' * n``, ``+``, ``~``, ``join``,
  ``replace``, ``'%s' %``, ``format`` ...), checked *before* it is built;
- widths, padding and precision (``center``, ``indent``, ``'%10d'``,
  ``'{:>10}'``, ``ljust``, ``round`` ...) are at most :data:`MAX_WIDTH`;
- one render does at most :data:`MAX_OPS` operations: each loop iteration
  and macro call (weighted by the size of its body), call, filter, test,
  operator, comparison and attribute lookup counts, and so does every
  :data:`PER_OP` characters or items built or read (long division, by the
  product of its numbers' lengths); :data:`MAX_SECONDS` is a backstop for
  work the count cannot see.

What can be seen at load is refused at load with a one-line
:class:`TemplateError`: constant expressions that would break a bound
(``'%0999999999d' % 1``, ``'x' | indent(2000000000)``, ``'x' * 10**9``),
constant widths over the bound even on a variable (``container | center(10**6)``),
loops over constants that would run too long, and sources over
:data:`MAX_SOURCE` characters. What only shows at render time stops the
render: the summary is what was rendered so far, ending in
:data:`TRUNCATED`, and the reason is logged once.

>>> t = compile_template("{{ container }} used {{ value | round(2) }} cores")
>>> t.render({"container": "web-1", "value": 0.9731})
'web-1 used 0.97 cores'
>>> compile_template("{{ rule }}: {{ container * 100000 }}").render(rule="cpu-hog", container="web-1")
'cpu-hog: …[truncated]'
>>> compile_template("{{ '%0999999999d' % 1 }}")
Traceback (most recent call last):
...
cgwatch.rules.template.TemplateError: '%' width 999999999 is over 2000, the most a summary allows
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import time
import types
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from string import Formatter
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes, pass_context, pass_eval_context
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, SecurityError
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup

from ..units import human_bytes

log = logging.getLogger("cgwatch.rules")

#: the variables a summary may use
#: what an anomaly rule's model says (None in other rules): see ``engine.anomaly_context``
ANOMALY_VARIABLES = ("metric", "score", "low", "high", "normal", "over", "why")
VARIABLES = ("container", "value", "values", "neighbours", "rule", "labels", "event", "id", "image", "runtime",
             "severity", *ANOMALY_VARIABLES)
#: a rendered summary is at most this many characters, TRUNCATED included
MAX_OUTPUT = 2000
#: how a summary that was cut (or stopped by a bound) ends
TRUNCATED = "…[truncated]"
#: no string, list or number a template builds may be larger (characters, items, bits)
MAX_VALUE = 65536
#: widths, padding and precision may be at most this
MAX_WIDTH = MAX_OUTPUT
#: the operations one render may do (and constant parts may cost at load)
MAX_OPS = 20000
#: building or reading this many characters or items costs one operation more
PER_OP = 16
#: a backstop in time for one render, for work the operation count cannot see
MAX_SECONDS = 0.25
#: a summary template's source may be at most this long
MAX_SOURCE = 8192
#: distinct render errors logged per template, at most
MAX_LOGGED = 8

_FORBIDDEN = {nodes.Extends: "extends", nodes.Include: "include", nodes.Import: "import",
              nodes.FromImport: "from ... import"}
_REMOVED_FILTERS = frozenset({"pprint"})     # its indentation grows with nesting


class TemplateError(ValueError):
    """A summary that cannot compile; ``line`` is 1-based within the template.
    ``bound`` is true when the template breaks one of the bounds."""

    def __init__(self, message: str, line: int = 1, bound: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.bound = bound


class BoundsError(SecurityError):
    """A template would build or do more than the bounds allow."""


def human_duration(seconds: float) -> str:
    """Seconds as people read them: the two largest units.

    >>> human_duration(0.25), human_duration(1.5), human_duration(90), human_duration(3600), human_duration(93784)
    ('250ms', '1.5s', '1m30s', '1h', '1d2h')
    """
    s = float(seconds)
    if not math.isfinite(s):
        return str(s)
    sign, s = ("-" if s < 0 else ""), abs(s)
    if s < 1:
        return f"{sign}{s * 1000:.0f}ms"
    if s < 60:
        return f"{sign}{round(s, 1):g}s"
    rest, parts = round(s), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n}{unit}")
    return sign + "".join(parts[:2])


def _bytes(n: Any) -> str:
    return human_bytes(float(n))


# -- the budget ---------------------------------------------------------------------------
class _Budget:
    """Operations left for one render (or one compile); the clock is read every 256."""

    __slots__ = ("left", "clock_at", "deadline")

    def __init__(self) -> None:
        self.left = MAX_OPS
        self.clock_at = MAX_OPS - 256
        self.deadline = time.monotonic() + MAX_SECONDS

    def charge(self, n: int) -> None:
        self.left -= n
        if self.left < self.clock_at:
            if self.left < 0:
                raise BoundsError(f"the summary needs more than {MAX_OPS} operations")
            self.clock_at = self.left - 256
            if time.monotonic() > self.deadline:
                raise BoundsError(f"the summary took more than {MAX_SECONDS}s")


_BUDGET: ContextVar[_Budget | None] = ContextVar("cgwatch_template_budget", default=None)


def _charge(n: int = 1) -> None:
    b = _BUDGET.get()
    if b is not None:
        b.charge(n)


_UNKNOWN: Any = object()      # a value the load-time checks cannot know
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)


def _unit(v: Any) -> str:
    return ("characters" if isinstance(v, str) else "bytes" if isinstance(v, bytes)
            else "bits" if isinstance(v, int) else "items")


def _length(v: Any) -> int:
    """Characters, bytes or items of a value; bits of an integer; 0 for anything else."""
    if isinstance(v, _SIZED):
        return len(v)
    if isinstance(v, int):
        return v.bit_length()
    return 0


def _text_size(v: Any, limit: int = 4 * MAX_VALUE) -> int:
    """About how long ``str(v)`` is, walking containers without building the text;
    it stops counting once past ``limit``, so it never walks much."""
    if isinstance(v, str):
        return len(v)
    total, stack = 0, [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            total += len(x) + 2
        elif isinstance(x, bytes):
            total += 4 * len(x) + 3
        elif x is None or isinstance(x, (bool, float)):
            total += 24
        elif isinstance(x, int):
            total += x.bit_length() // 3 + 2
        elif isinstance(x, Undefined):
            continue
        elif isinstance(x, Collection):      # lists, tuples, dicts, and their views (d.items())
            total += 16 + 4 * len(x)
            if total > limit:
                return total
            if isinstance(x, Mapping):
                stack.extend(x.keys())
                stack.extend(x.values())
            else:
                stack.extend(x)
        else:
            total += 64
        if total > limit:
            return total
    return total


def _size(v: Any) -> int:
    """How much reading a value reads: characters of a string, bytes of a
    number, the text of a container (refused past 4 * MAX_VALUE)."""
    if v is None or isinstance(v, (bool, float)):
        return 0
    if isinstance(v, (str, bytes)):
        return len(v)
    if isinstance(v, int):
        return v.bit_length() // 8
    if isinstance(v, Collection) and not isinstance(v, Undefined):
        n = _text_size(v)
        if n > 4 * MAX_VALUE:
            raise BoundsError(f"a value of more than {4 * MAX_VALUE} characters as text is too large for a summary")
        return n
    return 0


def _cost(v: Any) -> int:
    """What reading a value costs: one operation, one more per PER_OP characters or items."""
    return 1 + _size(v) // PER_OP


def _value(n: int, what: str, unit: str = "characters") -> None:
    if n > MAX_VALUE:
        raise BoundsError(f"{what} would build {n} {unit}, more than the {MAX_VALUE} a summary allows")


def _width(n: Any, what: str) -> None:
    if isinstance(n, int) and not isinstance(n, bool) and abs(n) > MAX_WIDTH:
        raise BoundsError(f"{what} {n} is over {MAX_WIDTH}, the most a summary allows")


def _built(v: Any, what: str, given: int = 0) -> Any:
    """Check and pay for a value an operation built: at most MAX_VALUE, or no
    bigger than the biggest value it was ``given`` (a filter may pass on, or
    change, a long event field)."""
    n = _length(v)
    if n > MAX_VALUE and n > given:
        raise BoundsError(f"{what} built {n} {_unit(v)}, more than the {MAX_VALUE} a summary allows")
    _charge(1 + n // PER_OP)
    return v


def _counted(it: Iterator[Any]) -> Iterator[Any]:
    for x in it:
        _charge(1 + _length(x) // PER_OP)
        yield x


def _result(v: Any, what: str, inputs: tuple[Any, ...] = (), given: int = 0) -> Any:
    """An operation's result: iterators pay per item, values passed through
    cost nothing more, anything built is checked."""
    if isinstance(v, Iterator) and not isinstance(v, _SIZED):
        return _counted(v)
    for x in inputs:
        if v is x:
            return v
    return _built(v, what, given)


def _pay(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """Pay for reading a call's arguments; the size of the biggest."""
    sizes = [_size(v) for v in args]
    sizes += [_size(v) for v in kwargs.values()]
    _charge(len(sizes) + sum(sizes) // PER_OP)
    return max(sizes, default=0)


def _take(iterable: Any, what: str) -> list[Any]:
    """An iterable as a list, paying per item and stopping past MAX_VALUE items."""
    if isinstance(iterable, (list, tuple)):
        if len(iterable) > MAX_VALUE:
            raise BoundsError(f"{what} would read {len(iterable)} items, more than the {MAX_VALUE} a summary allows")
        _charge(1 + len(iterable) // PER_OP)
        return list(iterable)
    out = []
    for x in iterable:
        out.append(x)
        _charge(1)
        if len(out) > MAX_VALUE:
            raise BoundsError(f"{what} would read more than {MAX_VALUE} items")
    return out


# -- '%' and str.format -------------------------------------------------------------------
_PERCENT = re.compile(r"%(?:\(([^()]*)\))?([-#0 +]*)(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.S)
_DIGITS = re.compile(r"\d+")


def _number(spec: str) -> int:
    return int(spec) if len(spec) <= 9 else 10**9


def _check_percent(fmt: str, args: Any, what: str) -> None:
    """``fmt % args`` stays within the bounds: widths, precision, and the text
    it would make. ``args`` may be _UNKNOWN (at load): then only widths."""
    known = args is not _UNKNOWN
    mapping = args if isinstance(args, Mapping) else None
    positional = list(args) if isinstance(args, tuple) else [args]
    total, pos = len(fmt), 0
    while (j := fmt.find("%", pos)) >= 0:
        m = _PERCENT.match(fmt, j)
        if m is None:
            raise ValueError(f"unsupported format at index {j}")
        key, _flags, width_spec, prec_spec, kind = m.groups()
        pos = m.end()
        if kind == "%":
            continue
        sizes = []
        for spec, name in ((width_spec, "width"), (prec_spec, "precision")):
            if spec == "*":
                n = positional.pop(0) if known and positional else 0
            else:
                n = _number(spec) if spec else 0
            _width(n, f"{what} {name}")
            sizes.append(n if isinstance(n, int) else 0)
        if not known:
            continue
        if key is not None:
            value = mapping.get(key) if mapping is not None else None
        else:
            value = positional.pop(0) if positional else None
        if kind in "sra":
            size = _text_size(value)
        elif kind in "eEfFgG":
            size = 330 + sizes[1]
        elif isinstance(value, int):
            size = value.bit_length() // 3 + 2 + sizes[1]
        else:
            size = 330 + sizes[1]
        total += max(abs(sizes[0]), size)
        _value(total, what)


def _check_format_string(fmt: str, what: str) -> None:
    """The literal widths and precisions in a ``str.format`` string."""
    try:
        fields = list(Formatter().parse(fmt))
    except ValueError:
        return
    for _, _, spec, _ in fields:
        for n in _DIGITS.findall(spec or ""):
            _width(_number(n), f"{what} width or precision")


class _Formatter(SandboxedFormatter):
    """``str.format`` in the sandbox, counting what it builds."""

    def __init__(self, env: Any, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.built = 0

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            _value(_text_size(value), "'format'")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        for n in _DIGITS.findall(format_spec):
            _width(_number(n), "'format' width or precision")
        _value(_text_size(value), "'format'")
        out = super().format_field(value, format_spec)
        self.built += len(out)
        _value(self.built, "'format'")
        _charge(1 + len(out) // PER_OP)
        return out


class _EscapeFormatter(_Formatter, EscapeFormatter):
    pass


# -- methods of strings and numbers -------------------------------------------------------
_PADDING = frozenset({"center", "ljust", "rjust", "zfill"})


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _replaced(s: Any, old: Any, new: Any, count: Any, what: str) -> None:
    kind = str if isinstance(s, str) else bytes if isinstance(s, bytes) else None
    if kind is None or not isinstance(old, kind) or not isinstance(new, kind):
        return
    found = len(s) + 1 if not old else s.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    _value(len(s) + found * (len(new) - len(old)), what, _unit(s))


def _check_method(owner: Any, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Bounds on the methods of strings and numbers that build by a size argument.
    ``owner`` may be _UNKNOWN (at load): then only the arguments are checked."""
    what = f"'{name}'"
    if owner is _UNKNOWN or isinstance(owner, (str, bytes)):
        if name in _PADDING:
            _width(_arg(args, kwargs, 0, "width", 0), f"{what} width")
        elif name == "expandtabs":
            size = _arg(args, kwargs, 0, "tabsize", 8)
            _width(size, f"{what} tab size")
            if owner is not _UNKNOWN and isinstance(size, int):
                _value(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(size, 0), what)
        elif owner is _UNKNOWN:
            return
        elif name == "replace" and len(args) >= 2:
            _replaced(owner, args[0], args[1], _arg(args, kwargs, 2, "count", -1), what)
        elif name == "translate" and args:
            table = args[0]
            values = table.values() if isinstance(table, Mapping) else table if isinstance(table, (list, tuple)) else ()
            longest = max((len(v) for v in values if isinstance(v, (str, bytes))), default=1)
            _value(len(owner) * max(longest, 1), what, _unit(owner))
    if (owner is _UNKNOWN or isinstance(owner, int)) and name == "to_bytes":
        length = _arg(args, kwargs, 0, "length", 1)
        if isinstance(length, int):
            _value(length, what, "bytes")


def _join_method(owner: str | bytes, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``sep.join(items)``: read the items (paying for them), then check the size."""
    if len(args) != 1:
        return args
    items = _take(args[0], "'join'")
    total = len(owner) * max(len(items) - 1, 0)
    for x in items:
        total += len(x) if isinstance(x, (str, bytes)) else 0
        _value(total, "'join'", _unit(owner))
    return (items,)


# -- filters and tests --------------------------------------------------------------------
def _check_center(value: Any, width: Any = 80) -> None:
    _width(width, "'center' width")


def _check_indent(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> None:
    w = len(width) if isinstance(width, str) else width
    _width(w, "'indent' width")
    if s is not _UNKNOWN and isinstance(w, int):
        lines = s.count("\n") + 1 if isinstance(s, str) else _text_size(s)
        _value(_text_size(s) + lines * max(w, 0), "'indent'")


def _check_wordwrap(s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                    break_on_hyphens: Any = True) -> None:
    if isinstance(wrapstring, str):
        _width(len(wrapstring), "'wordwrap' wrapstring length")
    if s is _UNKNOWN or not isinstance(width, int) or width < 1:
        return
    text = s if isinstance(s, str) else str(s)
    lines = len(text) // width + len(text.split()) + 1
    _value(len(text) + lines * (len(wrapstring) if isinstance(wrapstring, str) else 1), "'wordwrap'")


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _check_percent(value, kwargs or args, "'format'")


def _check_replace(s: Any, old: Any = None, new: Any = None, count: Any = None) -> None:
    if s is _UNKNOWN:
        return
    _replaced(s if isinstance(s, str) else str(s), str(old), str(new), -1 if count is None else count, "'replace'")


def _check_batch(value: Any, linecount: Any = 1, fill_with: Any = None) -> None:
    if isinstance(linecount, int):
        _value(linecount, "'batch'", "items")


def _check_slice(value: Any, slices: Any = 1, fill_with: Any = None) -> None:
    if isinstance(slices, int):
        _value(slices, "'slice'", "slices")
        _charge(1 + max(slices, 0) // PER_OP)


def _check_sum(iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if start is not _UNKNOWN and not isinstance(start, (int, float)):
        raise BoundsError("'sum' adds numbers only in a summary (its start must be a number)")


def _check_round(value: Any, precision: Any = 0, method: Any = "common") -> None:
    _width(precision, "'round' precision")


def _check_tojson(value: Any, indent: Any = None) -> None:
    if indent is not None and indent is not _UNKNOWN:
        raise BoundsError("'tojson' indent is not available in summaries (a summary is one line)")


_CHECKS: dict[str, Callable[..., None]] = {
    "center": _check_center, "indent": _check_indent, "wordwrap": _check_wordwrap, "format": _check_format,
    "replace": _check_replace, "batch": _check_batch, "slice": _check_slice, "sum": _check_sum,
    "round": _check_round, "tojson": _check_tojson,
}


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    lead = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    check = _CHECKS.get(name)
    what = f"'{name}'"

    def bounded(*args: Any, **kwargs: Any) -> Any:
        values = args[lead:]
        given = _pay(values, kwargs)
        if check is not None:
            check(*values, **kwargs)
        return _result(func(*args, **kwargs), what, values, given)

    if lead:
        bounded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    bounded.__name__ = getattr(func, "__name__", name)
    bounded.__doc__ = func.__doc__
    return bounded


def _bounded_test(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    lead = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    modulo = name in ("divisibleby", "odd", "even")      # value % n: a string formats

    def bounded(*args: Any, **kwargs: Any) -> Any:
        values = args[lead:]
        _pay(values, kwargs)
        if modulo and values and isinstance(values[0], str):
            n = _arg(values[1:], kwargs, 0, "num", None) if name == "divisibleby" else 2
            _check_percent(values[0], n, f"'{name}'")
        return func(*args, **kwargs)

    if lead:
        bounded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    bounded.__name__ = getattr(func, "__name__", "test")
    return bounded


def _join_filter(jinja_join: Callable[..., Any]) -> Callable[..., Any]:
    @pass_eval_context
    def join(eval_ctx: EvalContext, value: Any, d: Any = "", attribute: Any = None) -> Any:
        items = _take(value, "'join'")
        if attribute is not None:
            getter = make_attrgetter(eval_ctx.environment, attribute)
            items = [getter(x) for x in items]
        total = _text_size(d) * max(len(items) - 1, 0)
        _value(total, "'join'")
        for x in items:
            total += _text_size(x, MAX_VALUE - total + 1)
            _value(total, "'join'")
        _charge(1 + total // PER_OP)
        return jinja_join(eval_ctx, items, d)
    return join


# the hooks that the bounding rewrite of a template's tree calls
@pass_context
def _loop_filter(context: Any, iterable: Any, weight: int) -> Iterator[Any]:
    for item in iterable:
        _charge(weight)
        yield item


def _concat_filter(items: list[Any]) -> str:
    total = 0
    for x in items:
        total += _text_size(x, MAX_VALUE - total + 1)
        _value(total, "'~'")
    _charge(1 + total // PER_OP)
    return "".join([str(x) for x in items])


def _sized_filter(value: Any) -> Any:
    _charge(_cost(value))
    return value


@pass_context
def _charge_filter(context: Any, n: int) -> str:
    _charge(n)
    return ""


@pass_context
def _finalize(context: Any, value: Any) -> Any:
    """Every ``{{ ... }}`` passes here before it becomes text: pay for the text."""
    if value.__class__ is str:
        _charge(1 + len(value) // PER_OP)
        return value
    size = _text_size(value)
    _value(size, "the output")
    _charge(1 + size // PER_OP)
    return value


_INTERNAL = {"_cgw_loop": _loop_filter, "_cgw_concat": _concat_filter, "_cgw_sized": _sized_filter,
             "_cgw_charge": _charge_filter}


# -- the environment ----------------------------------------------------------------------
class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        _charge(_cost(left) + _cost(right))
        what = f"'{op}'"
        if op in ("/", "//", "%") and isinstance(left, int) and isinstance(right, int):
            # long division of big numbers costs the product of their lengths (65536 by
            # 32768 bits: 1.4 ms, about what 1,000 operations cost)
            _charge((left.bit_length() >> 6) * (right.bit_length() >> 6) // 512)
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                    _value(len(seq) * max(n, 0), what, _unit(seq))
            if isinstance(left, int) and isinstance(right, int):
                _value(left.bit_length() + right.bit_length(), what, "bits")
        elif op == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                _value(int(math.log2(abs(left)) * right) + 1, what, "bits")
        elif op == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                _value(len(left) + len(right), what, _unit(left))
        elif op == "%" and isinstance(left, str):
            _check_percent(left, right, what)
        return _built(self.binop_table[op](left, right), what)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _charge(1)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _charge(1)
        got = super().getitem(obj, argument)
        if isinstance(argument, slice) and got is not obj:
            _charge(_length(got) // PER_OP)
        return got

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``format_map``, sandboxed (as Jinja does) and bounded."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) \
                or value.__name__ not in ("format", "format_map"):
            return None
        f_self = value.__self__
        if not isinstance(f_self, str):
            return None
        str_type, is_map = type(f_self), value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            fmt: _Formatter
            if isinstance(f_self, Markup):
                fmt = _EscapeFormatter(self, escape=f_self.escape)
            else:
                fmt = _Formatter(self)
            _charge(1 + len(f_self) // PER_OP)
            return str_type(fmt.vformat(f_self, args, kwargs))
        return wrapper

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        given = _pay((owner, *args), kwargs)
        args = __self.checked_call_args(__obj, args, kwargs)
        fmt = __self.wrap_str_format(__obj)
        if fmt is not None:
            __obj = fmt
        got = super().call(__context, __obj, *args, **kwargs)
        return _result(got, f"'{getattr(__obj, '__name__', 'call')}'", (owner, *args), given)

    def checked_call_args(self, obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
        """Check a call's size arguments; ``str.join`` gets its items read first."""
        name = getattr(obj, "__name__", None)
        owner = getattr(obj, "__self__", None)
        if not isinstance(name, str) or isinstance(owner, types.ModuleType) or owner is None:
            return args
        if name == "join" and isinstance(owner, (str, bytes)):
            return _join_method(owner, args)
        _check_method(owner, name, args, kwargs)
        return args


_ENV = _Env(autoescape=False, undefined=StrictUndefined, optimized=False, finalize=_finalize)
_REMOVED = frozenset(_ENV.globals)   # range, dict, lipsum, cycler, joiner, namespace
_ENV.globals.clear()
_ENV.filters["bytes"] = _bytes
_ENV.filters["duration"] = human_duration
for _name in _REMOVED_FILTERS:
    del _ENV.filters[_name]
_ENV.filters["join"] = _join_filter(_ENV.filters["join"])
for _name, _func in list(_ENV.filters.items()):
    _ENV.filters[_name] = _bounded_filter(_name, _func)
for _name, _func in list(_ENV.tests.items()):
    _ENV.tests[_name] = _bounded_test(_name, _func)
_ENV.filters.update(_INTERNAL)


# -- load time: what can be seen is refused -----------------------------------------------
class _Probe:
    """Evaluates the constant parts of a template under the bounds, with a
    budget of its own; unknowable parts are _UNKNOWN and checked where their
    constant arguments allow (a constant width on a variable)."""

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}

    def value(self, node: nodes.Node) -> Any:
        key = id(node)
        if key not in self.memo:
            try:
                self.memo[key] = self._value(node)
            except BoundsError as e:
                if not hasattr(e, "lineno"):
                    e.lineno = node.lineno  # type: ignore[attr-defined]
                raise
        return self.memo[key]

    def known(self, items: list[nodes.Node]) -> list[Any] | None:
        got = [self.value(i) for i in items]
        return None if any(v is _UNKNOWN for v in got) else got

    def _value(self, node: nodes.Node) -> Any:
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, (nodes.List, nodes.Tuple)):
            got = self.known(node.items)
            if got is None:
                return _UNKNOWN
            return self.attempt(lambda: _built(got if isinstance(node, nodes.List) else tuple(got), "a literal"))
        if isinstance(node, nodes.Dict):
            keys, values = self.known([p.key for p in node.items]), self.known([p.value for p in node.items])
            if keys is None or values is None:
                return _UNKNOWN
            return self.attempt(lambda: _built(dict(zip(keys, values)), "a literal"))
        if isinstance(node, nodes.BinExpr):
            got = self.known([node.left, node.right])
            if got is None:
                fmt = self.value(node.left)
                if node.operator == "%" and isinstance(fmt, str):
                    self.attempt(lambda: _check_percent(fmt, _UNKNOWN, "'%'"))
                return _UNKNOWN
            return self.attempt(lambda: _ENV.call_binop(None, node.operator, got[0], got[1]))
        if isinstance(node, nodes.UnaryExpr):
            v = self.value(node.node)
            if v is _UNKNOWN:
                return _UNKNOWN
            return self.attempt(lambda: _ENV.unop_table[node.operator](v))
        if isinstance(node, nodes.Concat):
            got = self.known(node.nodes)
            return _UNKNOWN if got is None else self.attempt(lambda: _concat_filter(got))
        if isinstance(node, nodes.Filter):
            return self.filter(node)
        if isinstance(node, nodes.Test):
            return self.test(node)
        if isinstance(node, nodes.Getattr):
            obj = self.value(node.node)
            return _UNKNOWN if obj is _UNKNOWN else self.attempt(lambda: _ENV.getattr(obj, node.attr))
        if isinstance(node, nodes.Getitem):
            obj, arg = self.value(node.node), self.value(node.arg)
            if obj is _UNKNOWN or arg is _UNKNOWN:
                return _UNKNOWN
            return self.attempt(lambda: _ENV.getitem(obj, arg))
        if isinstance(node, nodes.Slice):
            parts = [None if p is None else self.value(p) for p in (node.start, node.stop, node.step)]
            return _UNKNOWN if _UNKNOWN in parts else slice(*parts)
        if isinstance(node, nodes.Call):
            return self.call(node)
        if isinstance(node, nodes.CondExpr):
            test = self.value(node.test)
            branch = node.expr1 if test else node.expr2
            return _UNKNOWN if test is _UNKNOWN or branch is None else self.value(branch)
        return _UNKNOWN

    def attempt(self, f: Callable[[], Any]) -> Any:
        """A constant's value, or _UNKNOWN where evaluating it fails otherwise than on a bound
        (that is for render time to report, as ever)."""
        try:
            v = f()
        except BoundsError:
            raise
        except Exception:   # noqa: BLE001
            return _UNKNOWN
        return _UNKNOWN if isinstance(v, (Undefined, Iterator)) else v

    def arguments(self, node: nodes.Filter | nodes.Test | nodes.Call) -> tuple[list[Any], dict[str, Any], bool]:
        """A call's arguments, _UNKNOWN where unknown; and whether all are known."""
        args = [self.value(a) for a in node.args]
        named = {k.key: self.value(k.value) for k in node.kwargs}
        known = (node.dyn_args is None and node.dyn_kwargs is None
                 and all(v is not _UNKNOWN for v in (*args, *named.values())))
        return args, named, known

    def filter(self, node: nodes.Filter) -> Any:
        value = self.value(node.node) if node.node is not None else _UNKNOWN
        args, named, known = self.arguments(node)
        func = _ENV.filters.get(node.name)
        check = _CHECKS.get(node.name)
        if node.name == "format" and isinstance(value, str) and not known:
            self.attempt(lambda: _check_percent(value, _UNKNOWN, "'format'"))
        if value is _UNKNOWN or not known or func is None:
            if check is not None:
                self.attempt(lambda: check(_UNKNOWN, *args, **named))
            return _UNKNOWN
        pass_arg = getattr(func, "jinja_pass_arg", None)
        if pass_arg is None:
            lead: tuple[Any, ...] = ()
        elif pass_arg.name == "eval_context":
            lead = (EvalContext(_ENV),)
        elif pass_arg.name == "environment":
            lead = (_ENV,)
        else:
            return _UNKNOWN
        return self.attempt(lambda: func(*lead, value, *args, **named))

    def test(self, node: nodes.Test) -> Any:
        value = self.value(node.node)
        args, named, known = self.arguments(node)
        func = _ENV.tests.get(node.name)
        if value is _UNKNOWN or not known or func is None:
            return _UNKNOWN
        pass_arg = getattr(func, "jinja_pass_arg", None)
        lead: tuple[Any, ...] = () if pass_arg is None else (_ENV,) if pass_arg.name == "environment" else None
        if lead is None:
            return _UNKNOWN
        return self.attempt(lambda: func(*lead, value, *args, **named))

    def call(self, node: nodes.Call) -> Any:
        args, named, known = self.arguments(node)
        callee = self.value(node.node)
        if isinstance(node.node, nodes.Getattr):
            attr, owner = node.node.attr, self.value(node.node.node)
            if isinstance(owner, str) and attr in ("format", "format_map"):
                self.attempt(lambda: _check_format_string(owner, f"'{attr}'"))
            if callee is _UNKNOWN or not known:
                self.attempt(lambda: _check_method(_UNKNOWN, attr, tuple(args), named))
        if callee is _UNKNOWN or not known:
            return _UNKNOWN
        if not _ENV.is_safe_callable(callee):
            return _UNKNOWN

        def run() -> Any:
            owner = getattr(callee, "__self__", None)
            given = _pay((owner, *args), named)
            fmt = _ENV.wrap_str_format(callee)
            f = fmt if fmt is not None else callee
            call_args = _ENV.checked_call_args(callee, tuple(args), named)
            return _result(f(*call_args, **named), "a call", (owner, *call_args), given)
        return self.attempt(run)


def _weight(body: list[nodes.Node]) -> int:
    """What one iteration of a loop over ``body`` costs: its nodes, and its text."""
    w = 1
    for top in body:
        for n in (top, *top.find_all(nodes.Node)):
            w += 1
            if isinstance(n, nodes.TemplateData):
                w += len(n.data) // PER_OP
    return w


def _loop_parts(node: nodes.For) -> list[nodes.Node]:
    return [*node.body, *node.else_, *([node.test] if node.test is not None else [])]


def _check_loops(node: nodes.Node, probe: _Probe, times: int = 1) -> None:
    """Loops over constants that would run past the budget, nested ones multiplied."""
    for child in node.iter_child_nodes():
        inner = times
        if isinstance(child, nodes.For):
            it = probe.value(child.iter)
            if isinstance(it, _SIZED):
                inner = times * len(it)
                cost = inner * _weight(_loop_parts(child))
                if cost > MAX_OPS:
                    raise TemplateError(f"loops would run {inner} times, more than the {MAX_OPS} operations "
                                        "a summary allows", child.lineno, bound=True)
        _check_loops(child, probe, inner)


def _probe(ast: nodes.Template) -> None:
    probe = _Probe()
    token = _BUDGET.set(_Budget())
    try:
        for node in ast.find_all(nodes.Expr):
            probe.value(node)
        _check_loops(ast, probe)
    except BoundsError as e:
        raise TemplateError(str(e), getattr(e, "lineno", None) or 1, bound=True) from None
    finally:
        _BUDGET.reset(token)


class _Bound(NodeTransformer):
    """Rewrites a template's tree so that every loop pays per iteration and
    every macro per call (by the size of their bodies), ``~`` checks what it
    builds, and every comparison pays for its operands."""

    def charge_per_call(self, node: nodes.Macro | nodes.CallBlock) -> nodes.Node:
        self.generic_visit(node)
        weight = nodes.Const(_weight(node.body), lineno=node.lineno)
        charge = nodes.Filter(weight, "_cgw_charge", [], [], None, None, lineno=node.lineno)
        node.body.insert(0, nodes.ExprStmt(charge, lineno=node.lineno))
        return node

    visit_Macro = visit_CallBlock = charge_per_call

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        weight = nodes.Const(_weight(_loop_parts(node)), lineno=node.lineno)
        node.iter = nodes.Filter(node.iter, "_cgw_loop", [weight], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(items, "_cgw_concat", [], [], None, None, lineno=node.lineno)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        node.expr = nodes.Filter(node.expr, "_cgw_sized", [], [], None, None, lineno=node.lineno)
        for op in node.ops:
            op.expr = nodes.Filter(op.expr, "_cgw_sized", [], [], None, None, lineno=node.lineno)
        return node


# -- templates ----------------------------------------------------------------------------
def _cut(text: str, stopped: bool = False) -> str:
    if not stopped and len(text) <= MAX_OUTPUT:
        return text
    return text[: MAX_OUTPUT - len(TRUNCATED)] + TRUNCATED


class Template:
    """A compiled summary. ``render`` never raises, and never passes the bounds.

    >>> t = compile_template("{{ event.comm }} in {{ container }}")
    >>> t.render({"container": "web-1", "event": {"comm": "sh"}})
    'sh in web-1'
    >>> t.render({"container": "web-1", "event": {}})   # the source, and a log line
    '{{ event.comm }} in {{ container }}'
    >>> compile_template("{{ container }}: {{ event.comm * 100000 }}").render(container="a", event={"comm": "sh"})
    'a: …[truncated]'
    """

    __slots__ = ("source", "_tmpl", "_logged")

    def __init__(self, source: str, tmpl: Any) -> None:
        self.source = source
        self._tmpl = tmpl
        self._logged: set[str] = set()

    def render(self, variables: Mapping[str, Any] | None = None, /, **more: Any) -> str:
        """The summary for these variables: cut at MAX_OUTPUT, or what was rendered
        before a bound stopped it, each ending in TRUNCATED; on any other error,
        the template's source (cut the same way)."""
        ctx = dict.fromkeys(VARIABLES)
        ctx["event"] = {}
        ctx["labels"] = {}
        if variables:
            ctx.update(variables)
        ctx.update(more)
        parts: list[str] = []
        token = _BUDGET.set(_Budget())
        gen = self._tmpl.generate(ctx)
        try:
            size = 0
            for piece in gen:
                parts.append(piece)
                size += len(piece)
                if size > MAX_OUTPUT:
                    return _cut("".join(parts))
            return "".join(parts)
        except BoundsError as e:
            self._log(e, "rendered it cut short")
            return _cut("".join(parts), stopped=True)
        except Exception as e:   # noqa: BLE001 - a summary must never cost an alert
            self._log(e, "using its source instead")
            return _cut(self.source)
        finally:
            gen.close()
            _BUDGET.reset(token)

    def _log(self, e: BaseException, then: str) -> None:
        why = f"{type(e).__name__}: {e}"
        if why not in self._logged and len(self._logged) < MAX_LOGGED:
            self._logged.add(why)
            src = self.source if len(self.source) <= 200 else self.source[:200] + "…"
            log.warning("summary template %r failed (%s); %s", src, why, then)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(src: str) -> Template:
    """Compile a summary template, or raise :class:`TemplateError` with its line.

    Compiling costs well under a millisecond for a summary, so templates are
    cached by source; it is bounded like a render.

    >>> compile_template("{{ value | bytes }} of {{ labels.env | default('?') }}").render(value=3 * 2**20)
    '3.00MiB of ?'
    >>> compile_template("{{ contianer }} is hot")
    Traceback (most recent call last):
    ...
    cgwatch.rules.template.TemplateError: unknown variable 'contianer' (did you mean 'container'?)
    >>> compile_template("ok\\n{{ value | byts }}").line
    Traceback (most recent call last):
    ...
    cgwatch.rules.template.TemplateError: unknown filter 'byts' (did you mean 'bytes'?)
    >>> compile_template("{{ container | indent(2000000000, true) }}")
    Traceback (most recent call last):
    ...
    cgwatch.rules.template.TemplateError: 'indent' width 2000000000 is over 2000, the most a summary allows
    """
    got = _CACHE.get(src)
    if got is not None:
        return got
    if len(src) > MAX_SOURCE:
        raise TemplateError(f"the summary is {len(src)} characters long; the limit is {MAX_SOURCE}", bound=True)
    token = _BUDGET.set(_Budget())
    try:
        ast = _ENV.parse(src)
        for node_type, what in _FORBIDDEN.items():
            for node in ast.find_all(node_type):
                raise TemplateError(f"'{what}' is not available in summaries", node.lineno)
        for loop in ast.find_all(nodes.For):
            if loop.recursive:
                raise TemplateError("recursive loops are not available in summaries", loop.lineno)
        unknown = meta.find_undeclared_variables(ast) - set(VARIABLES)
        if unknown:
            name = min(unknown)
            line = min((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), default=1)
            if name in _REMOVED:
                raise TemplateError(f"'{name}' is not available in summaries", line)
            raise TemplateError(f"unknown variable '{name}'{_suggest(name, VARIABLES)}", line)
        _probe(ast)
        _Bound().visit(ast)
        ast.set_environment(_ENV)
        return _compiled(src, ast)
    except TemplateSyntaxError as e:
        message = e.message or "syntax error"
        m = re.match(r"No (filter|test) named '([^']*)'", message)
        if m and m[1] == "filter" and m[2] in _REMOVED_FILTERS:
            message = f"'{m[2]}' is not available in summaries"
        elif m:
            known = [k for k in (_ENV.filters if m[1] == "filter" else _ENV.tests) if not k.startswith("_")]
            message = f"unknown {m[1]} '{m[2]}'{_suggest(m[2], known)}"
        raise TemplateError(message.splitlines()[0] if message else "syntax error", e.lineno or 1) from None
    except TemplateError:
        raise
    except (RecursionError, MemoryError):
        raise TemplateError("template nested too deeply") from None
    except BoundsError as e:
        raise TemplateError(str(e), bound=True) from None
    except Exception as e:   # noqa: BLE001 - Jinja or Python's compiler giving up on odd input
        why = (str(e).splitlines() or [""])[0][:200]
        raise TemplateError(f"cannot compile the summary: {type(e).__name__}: {why}") from None
    finally:
        _BUDGET.reset(token)


_CACHE: dict[str, Template] = {}


def _compiled(src: str, ast: nodes.Template) -> Template:
    t = _CACHE.get(src)
    if t is None:
        if len(_CACHE) >= 4096:
            _CACHE.clear()
        with warnings.catch_warnings():     # Python's compiler on odd constants: "perhaps you missed a comma?"
            warnings.simplefilter("ignore", SyntaxWarning)
            t = _CACHE[src] = Template(src, _ENV.from_string(ast))
    return t


def _suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""
