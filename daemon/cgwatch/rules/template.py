"""Alert summaries: Jinja2 templates, sandboxed, compiled once when rules load.

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

The sandbox (``ImmutableSandboxedEnvironment``, no globals such as
``range``, ``*`` and ``**`` bounded, output cut at :data:`MAX_OUTPUT`) keeps
templates away from Python's internals and from the obvious ways to burn
memory; templates are operator configuration, not untrusted input.

>>> t = compile_template("{{ container }} used {{ value | round(2) }} cores")
>>> t.render({"container": "web-1", "value": 0.9731})
'web-1 used 0.97 cores'
"""

from __future__ import annotations

import difflib
import logging
import math
import operator
import re
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..units import human_bytes

log = logging.getLogger("cgwatch.rules")

#: the variables a summary may use
VARIABLES = ("container", "value", "rule", "labels", "event", "id", "image", "runtime", "severity")
#: a rendered summary is cut to this many characters
MAX_OUTPUT = 4096
#: ``*`` and ``**`` may not build anything bigger than this (characters, items, bits)
MAX_PRODUCT = 65536
#: distinct render errors logged per template, at most
MAX_LOGGED = 8

_FORBIDDEN = {nodes.Extends: "extends", nodes.Include: "include", nodes.Import: "import",
              nodes.FromImport: "from ... import"}


class TemplateError(ValueError):
    """A summary that cannot compile; ``line`` is 1-based within the template."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


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


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_PRODUCT:
                    raise SecurityError(f"'*' would build more than {MAX_PRODUCT} items")
            return operator.mul(left, right)
        if isinstance(left, int) and isinstance(right, int) and right > 0 \
                and max(left.bit_length(), 1) * right > MAX_PRODUCT:
            raise SecurityError(f"'**' would build a number over {MAX_PRODUCT} bits")
        return operator.pow(left, right)


_ENV = _Env(autoescape=False, undefined=StrictUndefined)
_REMOVED = frozenset(_ENV.globals)   # range, dict, lipsum, cycler, joiner, namespace
_ENV.globals.clear()
_ENV.filters["bytes"] = _bytes
_ENV.filters["duration"] = human_duration


class Template:
    """A compiled summary. ``render`` never raises.

    >>> t = compile_template("{{ event.comm }} in {{ container }}")
    >>> t.render({"container": "web-1", "event": {"comm": "sh"}})
    'sh in web-1'
    >>> t.render({"container": "web-1", "event": {}})   # the source, and a log line
    '{{ event.comm }} in {{ container }}'
    """

    __slots__ = ("source", "_tmpl", "_logged")

    def __init__(self, source: str, tmpl: Any) -> None:
        self.source = source
        self._tmpl = tmpl
        self._logged: set[str] = set()

    def render(self, variables: Mapping[str, Any] | None = None, /, **more: Any) -> str:
        """The summary for these variables; on any error, the template's source."""
        ctx = dict.fromkeys(VARIABLES)
        ctx["event"] = {}
        ctx["labels"] = {}
        if variables:
            ctx.update(variables)
        ctx.update(more)
        try:
            parts: list[str] = []
            size = 0
            for piece in self._tmpl.generate(ctx):
                parts.append(piece)
                size += len(piece)
                if size > MAX_OUTPUT:
                    return "".join(parts)[: MAX_OUTPUT - 1] + "…"
            return "".join(parts)
        except Exception as e:   # noqa: BLE001 - a summary must never cost an alert
            why = f"{type(e).__name__}: {e}"
            if why not in self._logged and len(self._logged) < MAX_LOGGED:
                self._logged.add(why)
                log.warning("summary template %r failed (%s); using its source instead", self.source, why)
            return self.source

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(src: str) -> Template:
    """Compile a summary template, or raise :class:`TemplateError` with its line.

    Compiling costs about 0.3 ms, so templates are cached by source.

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
    """
    if src in _CACHE:
        return _CACHE[src]
    try:
        ast = _ENV.parse(src)
        for node_type, what in _FORBIDDEN.items():
            for node in ast.find_all(node_type):
                raise TemplateError(f"'{what}' is not available in summaries", node.lineno)
        unknown = meta.find_undeclared_variables(ast) - set(VARIABLES)
        if unknown:
            name = min(unknown)
            line = min((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), default=1)
            if name in _REMOVED:
                raise TemplateError(f"'{name}' is not available in summaries", line)
            raise TemplateError(f"unknown variable '{name}'{_suggest(name, VARIABLES)}", line)
        return _compiled(src, ast)
    except TemplateSyntaxError as e:
        message = e.message or "syntax error"
        m = re.match(r"No (filter|test) named '([^']*)'", message)
        if m:
            known = _ENV.filters if m[1] == "filter" else _ENV.tests
            message = f"unknown {m[1]} '{m[2]}'{_suggest(m[2], known)}"
        raise TemplateError(message, e.lineno or 1) from None
    except (RecursionError, MemoryError):
        raise TemplateError("template nested too deeply") from None


_CACHE: dict[str, Template] = {}


def _compiled(src: str, ast: nodes.Template) -> Template:
    t = _CACHE.get(src)
    if t is None:
        if len(_CACHE) >= 4096:
            _CACHE.clear()
        t = _CACHE[src] = Template(src, _ENV.from_string(ast))
    return t


def _suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""
