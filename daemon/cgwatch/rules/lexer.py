"""Tokens of rule expressions, and the one error every stage of the compiler raises.

The lexer knows numbers with units (``5m`` is 300 seconds, ``512MiB`` is 536870912 bytes),
dotted names (``cpu.usage_cores``), strings in single or double quotes, the keywords
``and or not in`` and the operators ``+ - * / > >= < <= == != ( ) [ ] ,``. Everything else
is an :class:`ExprError` naming the offending characters, with a hint where the likely intent
is plain (``&&`` -> ``and``, ``5mins`` -> ``5m``).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

MAX_LENGTH = 4096

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SIZE_UNITS = {
    "B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
    "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30, "TiB": 2.0**40,
}
_ALIASES = {
    "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "hr": "h", "hrs": "h", "hour": "h", "hours": "h", "day": "d", "days": "d",
    "msec": "ms", "msecs": "ms", "millis": "ms",
}
KEYWORDS = frozenset({"and", "or", "not", "in"})

_SPACE = re.compile(r"[ \t\r\n]+")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_OPS2 = frozenset({">=", "<=", "==", "!="})
_OPS1 = frozenset("+-*/()[],<>")
_HINTS = {
    "&&": "use 'and' instead of '&&'", "||": "use 'or' instead of '||'",
    "&": "use 'and' instead of '&'", "|": "use 'or' instead of '|'",
    "!": "use 'not' instead of '!'", "=": "use '==' to compare",
    "=>": "did you mean '>='?", "=<": "did you mean '<='?", "<>": "use '!=' instead of '<>'",
    "**": "'**' (power) is not supported; operators are + - * /",
    "%": "'%' is not supported; operators are + - * /", "^": "'^' is not supported; operators are + - * /",
    "≥": "use '>=' instead of '≥'", "≤": "use '<=' instead of '≤'", "≠": "use '!=' instead of '≠'",
    ".": "unexpected '.': attribute access is not supported (write metric names whole: cpu.usage_cores)",
}
_COMPOUND = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d)){2,}")
_COMPOUND_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\"}


class ExprError(ValueError):
    """An expression that does not compile: what is wrong, and where.

    ``offset`` is the 0-based character offset of the offending text in the expression
    (it may equal ``len(text)`` for "unexpected end"), ``length`` (>= 1) how many
    characters it spans. ``str(e)`` is the message alone, so callers can prefix
    ``FILE:LINE:COL:``.

    Examples:

    >>> e = ExprError("unknown unit 'mins' (did you mean 5m?)", 18, 4)
    >>> str(e), e.offset, e.length
    ("unknown unit 'mins' (did you mean 5m?)", 18, 4)
    """

    def __init__(self, message: str, offset: int, length: int = 1) -> None:
        super().__init__(message, offset, length)
        self.message = message
        self.offset = max(0, offset)
        self.length = max(1, length)

    def __str__(self) -> str:
        return self.message

    def pointer(self, text: str) -> str:
        """The line of ``text`` holding the error, with carets under the offending characters.

        Examples:

        >>> text = "avg(cpu.usage_cores, 5mins) > 1"
        >>> print(ExprError("unknown unit 'mins' (did you mean 5m?)", 22, 4).pointer(text))
        avg(cpu.usage_cores, 5mins) > 1
                              ^^^^
        """
        start = text.rfind("\n", 0, self.offset) + 1
        stop = text.find("\n", self.offset)
        line = text[start:] if stop < 0 else text[start:stop]
        pad = "".join("\t" if c == "\t" else " " for c in line[: self.offset - start])
        width = max(1, min(self.length, len(line) - (self.offset - start)))
        return f"{line}\n{pad}{'^' * width}"


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``kind`` is "num", "str", "name", "kw", "op" or "eof"."""

    kind: str
    text: str                       # the source text, e.g. "5m", '"sh"', "cpu.usage_cores", ">="
    pos: int
    value: float | str | None = None
    unit: str | None = None         # for numbers: "duration", "bytes" or None

    @property
    def end(self) -> int:
        """Offset just past the token.

        Examples:

        >>> Token("num", "5m", 10, 300.0, "duration").end
        12
        """
        return self.pos + len(self.text)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with one "eof" token; raises ExprError.

    Examples:

    >>> [(t.kind, t.text, t.value) for t in tokenize("avg(cpu.usage_cores, 5m) > 1.5")]
    [('name', 'avg', None), ('op', '(', None), ('name', 'cpu.usage_cores', None), ('op', ',', None),
     ('num', '5m', 300.0), ('op', ')', None), ('op', '>', None), ('num', '1.5', 1.5), ('eof', '', None)]
    >>> tokenize("mem.usage_bytes > 5 && x")
    Traceback (most recent call last):
    ...
    cgwatch.rules.lexer.ExprError: use 'and' instead of '&&'
    """
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}",
                        MAX_LENGTH, len(text) - MAX_LENGTH)
    tokens: list[Token] = []
    i, n = 0, len(text)
    while True:
        m = _SPACE.match(text, i)
        if m:
            i = m.end()
        if i >= n:
            break
        c = text[i]
        if "0" <= c <= "9":
            tok = _number(text, i)
        elif c == '"' or c == "'":
            tok = _string(text, i)
        elif c == "_" or "a" <= c <= "z" or "A" <= c <= "Z":
            word = _NAME.match(text, i).group()  # type: ignore[union-attr]
            tok = Token("kw" if word in KEYWORDS else "name", word, i)
        elif text.startswith(("**", "&&", "||", "=>", "=<", "<>"), i):
            raise ExprError(_HINTS[text[i : i + 2]], i, 2)
        elif text[i : i + 2] in _OPS2:
            tok = Token("op", text[i : i + 2], i)
        elif c in _OPS1:
            tok = Token("op", c, i)
        elif c == "." and text[i + 1 : i + 2].isdigit():
            raise ExprError(f"write 0{text[i : i + 2]} rather than {text[i : i + 2]}", i, 1)
        elif c == "." and text[i - 1 : i].isdigit():
            raise ExprError("a number cannot end with '.'", i, 1)
        elif c in _HINTS:
            raise ExprError(_HINTS[c], i, 1)
        else:
            shown = c if c.isprintable() else repr(c)[1:-1]
            raise ExprError(f"unexpected character '{shown}'", i, 1)
        tokens.append(tok)
        i = tok.end
    tokens.append(Token("eof", "", tokens[-1].end if tokens else 0))
    return tokens


def _number(text: str, i: int) -> Token:
    digits = _NUMBER.match(text, i).group()  # type: ignore[union-attr]
    unit_m = _WORD.match(text, i + len(digits))
    unit = unit_m.group() if unit_m else ""
    value = float(digits)
    if unit in DURATION_UNITS:
        value, kind = value * DURATION_UNITS[unit], "duration"
    elif unit in SIZE_UNITS:
        value, kind = value * SIZE_UNITS[unit], "bytes"
    elif unit:
        raise ExprError(_unknown_unit(digits, unit), i + len(digits), len(unit))
    else:
        kind = None
    if not math.isfinite(value):
        raise ExprError(f"number {digits + unit} is too large", i, len(digits) + len(unit))
    return Token("num", digits + unit, i, value, kind)


def _unknown_unit(digits: str, unit: str) -> str:
    """The message for ``5mins``-style literals, suggesting the closest real unit."""
    units = [*DURATION_UNITS, *SIZE_UNITS]
    compound = _COMPOUND.fullmatch(digits + unit)
    if compound and "." not in digits:
        total = sum(float(n) * DURATION_UNITS[u] for n, u in _COMPOUND_PART.findall(digits + unit))
        best = next(u for u in ("d", "h", "m", "s", "ms") if total % DURATION_UNITS[u] < 1e-9 or u == "ms")
        return (f"unknown unit '{unit}': write a single unit, e.g. "
                f"{total / DURATION_UNITS[best]:g}{best} for {digits + unit}")
    if unit.lower() in _ALIASES:
        guess = [_ALIASES[unit.lower()]]
    elif unit in ("k", "K", "M", "g", "G", "t", "T"):
        guess = [f"{unit.upper()}B", f"{unit.upper()}iB"]
    else:
        folded = [u for u in units if u.lower() == unit.lower()]
        guess = folded or difflib.get_close_matches(unit, units, n=1, cutoff=0.6)
    if guess:
        return f"unknown unit '{unit}' (did you mean {' or '.join(digits + g for g in guess)}?)"
    return (f"unknown unit '{unit}' (durations: {' '.join(DURATION_UNITS)}; "
            f"sizes: {' '.join(SIZE_UNITS)})")


def _string(text: str, i: int) -> Token:
    quote, j, out = text[i], i + 1, []
    while j < len(text):
        c = text[j]
        if c == quote:
            return Token("str", text[i : j + 1], i, "".join(out))
        if c == "\\":
            nxt = text[j + 1 : j + 2]
            if nxt not in _ESCAPES:
                raise ExprError(f"unknown escape '\\{nxt}' in a string (use \\\", \\' or \\\\)", j, 1 + len(nxt))
            out.append(_ESCAPES[nxt])
            j += 2
            continue
        out.append(c)
        j += 1
    raise ExprError(f"unterminated string (no closing {quote})", i, len(text) - i)
