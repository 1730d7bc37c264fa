"""Macros and lists: named pieces of rule expressions, expanded as text.

A macro's name, written as a bare identifier in ``expr:`` or ``where:``,
becomes its text in parentheses; a list's name becomes a list literal of its
items (``["sh", "bash"]``), for ``event.comm in shells``. Strings and dotted
names are left alone. Expansion keeps, for every character it produces, the
place it came from, so the compiler's errors point into the right file text:
the rule's own expression, or a macro's definition.

>>> x = Expander({"is_shell": "event.comm in shells"}, {"shells": ["sh", "bash"]})
>>> x.expand("is_shell and event.uid == 0").text
'(event.comm in ["sh", "bash"]) and event.uid == 0'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .lexer import MAX_LENGTH

#: a macro may use macros this deep, and no deeper
MAX_DEPTH = 8
#: an expression may not grow past the compiler's limit by expansion
MAX_EXPANDED = MAX_LENGTH
#: all the expansions of one file together (checking its macros, then its
#: rules) may not grow past what a rule file may hold: macros shorten what
#: one writes, they do not multiply what the compiler reads
MAX_TOTAL = 1 << 20
#: words of the expression language a macro or list may not be named
RESERVED = frozenset({"and", "or", "not", "in", "true", "false", "null", "none", "True", "False", "None"})
#: what a macro or list name looks like
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# string literals are skipped whole; numbers (with units: 5m) are not names;
# dotted names (event.comm, cpu.usage_cores) are never macros
_TOKEN = re.compile(r"""(?P<str>"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?)|(?P<num>\d[\w.]*)|"""
                    r"(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", re.S)

#: where one character of an expanded text came from: (macro name, or None
#: for the text being expanded; offset into that text; how many characters)
Origin = tuple["str | None", int, int]


@dataclass(frozen=True, slots=True)
class Expanded:
    """An expanded expression and the origin of each of its characters."""

    text: str
    origins: tuple[Origin, ...]

    def origin(self, offset: int, length: int) -> tuple[str | None, int, int]:
        """Where ``length`` characters at ``offset`` of the expanded text came
        from: (macro or None, offset, length) in that text.

        >>> e = Expander({"hot": "cpu.usage_cores > 0.9"}, {}).expand("hot and x")
        >>> e.origin(1, 3), e.origin(0, 1), e.origin(24, 1)
        (('hot', 0, 3), (None, 0, 3), (None, 4, 1))
        """
        if not self.origins:
            return None, 0, max(length, 1)
        if offset >= len(self.origins):      # at the end of the text
            src, off, span = self.origins[-1]
            return src, off + span, 1
        src, off, span = self.origins[max(0, offset)]
        last = self.origins[max(0, min(offset + max(length, 1) - 1, len(self.origins) - 1))]
        if last[0] == src and last[1] >= off:
            span = max(span, last[1] + last[2] - off)
        return src, off, span


class MacroError(ValueError):
    """A macro cycle, macros nested too deep, or an expansion too long;
    ``macro`` is None when the offset is into the rule's own text."""

    def __init__(self, macro: str | None, offset: int, length: int, message: str, key: object = None) -> None:
        super().__init__(message)
        self.macro, self.offset, self.length, self.message = macro, offset, length, message
        self.key = key if key is not None else (macro, offset, message)


class _TooLong(Exception):
    pass


class _TooMuch(Exception):
    pass


class Expander:
    """Expands the macros and lists of one rule file.

    >>> Expander({"a": "b"}, {}).expand("a").text
    '(b)'
    >>> Expander({"a": "b > 1", "b": "a"}, {}).expand("a")
    Traceback (most recent call last):
    ...
    cgwatch.rules.macros.MacroError: macro cycle: a -> b -> a
    """

    __slots__ = ("macros", "lists", "broken", "spent")

    def __init__(self, macros: Mapping[str, str], lists: Mapping[str, Sequence[str | float]],
                 broken: Iterable[str] = ()) -> None:
        self.macros = dict(macros)
        self.lists = {k: _literal(v) for k, v in lists.items()}
        self.broken = frozenset(broken)
        #: characters expanded so far, failed expansions included (at most MAX_TOTAL)
        self.spent = 0

    def expand(self, text: str, macro: str | None = None) -> Expanded:
        """Expand ``text`` (the rule's own, or macro ``macro``'s definition).

        >>> x = Expander({"z": " + ".join(["cpu.usage_cores"] * 200)}, {})
        >>> for i in range(400):
        ...     _ = x.expand("z > 1")
        Traceback (most recent call last):
        ...
        cgwatch.rules.macros.MacroError: macros expand this file's expressions to more than 1048576 characters in all
        """
        chars: list[str] = []
        origins: list[Origin] = []
        try:
            self._expand(text, macro, () if macro is None else (macro,), chars, origins)
        except _TooLong:
            raise MacroError(macro, 0, len(text),
                             f"expression longer than {MAX_EXPANDED} characters after expanding macros") from None
        except _TooMuch:
            raise MacroError(macro, 0, len(text), f"macros expand this file's expressions to more than "
                             f"{MAX_TOTAL} characters in all", key=("total",)) from None
        finally:
            self.spent += len(origins)
        return Expanded("".join(chars), tuple(origins))

    def _expand(self, text: str, src: str | None, stack: tuple[str, ...],
                chars: list[str], origins: list[Origin]) -> None:
        if self.spent + len(origins) > MAX_TOTAL:
            raise _TooMuch
        pos = 0
        for m in _TOKEN.finditer(text):
            name = m["name"]
            if name in self.broken:
                raise MacroError(src, m.start(), len(name), f"'{name}' has errors", key=("broken", name))
            if not name or (name not in self.macros and name not in self.lists):
                continue
            if m.start() > pos:
                chars.append(text[pos:m.start()])
                origins.extend((src, i, 1) for i in range(pos, m.start()))
            here: Origin = (src, m.start(), len(name))
            if name in self.lists:
                lit = self.lists[name]
                chars.append(lit)
                origins.extend([here] * len(lit))
            else:
                if name in stack:
                    cycle = stack[stack.index(name):] + (name,)
                    raise MacroError(src, m.start(), len(name), "macro cycle: " + " -> ".join(cycle),
                                     key=("cycle", frozenset(cycle)))
                if len(stack) >= MAX_DEPTH:
                    raise MacroError(src, m.start(), len(name),
                                     f"macros nested deeper than {MAX_DEPTH}: {' -> '.join(stack + (name,))}",
                                     key=("depth", src, m.start()))
                chars.append("(")
                origins.append(here)
                self._expand(self.macros[name], name, stack + (name,), chars, origins)
                chars.append(")")
                origins.append(here)
            pos = m.end()
            if len(origins) > MAX_EXPANDED:
                raise _TooLong
            if self.spent + len(origins) > MAX_TOTAL:
                raise _TooMuch
        if pos < len(text):
            chars.append(text[pos:])
            origins.extend((src, i, 1) for i in range(pos, len(text)))


def _literal(items: Sequence[str | float]) -> str:
    """A list as an expression literal: strings quoted, numbers as they are.

    >>> print(_literal(["sh", 'say "hi"']), _literal([137, -1.5]))
    ["sh", "say \\"hi\\""] [137, -1.5]
    """
    out = []
    for item in items:
        if isinstance(item, str):
            out.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            out.append(repr(item))
    return "[" + ", ".join(out) + "]"
