"""Rule files as YAML nodes that remember where they came from.

A rule file is read whole (at most :data:`MAX_BYTES`, UTF-8) and composed
into nodes, never constructed into Python objects: PyYAML's composer and
SafeLoader's resolver over libyaml's parser where PyYAML has it (five times
faster), else over PyYAML's own (``yaml.SafeLoader``). Composing refuses
aliases (so no billion laughs) and nesting deeper than :data:`MAX_DEPTH`.
The text is kept as a :class:`Source`, which turns a node, or an offset into
a scalar's value, into a :class:`RuleError` that prints like a compiler's::

    rules/web.yaml:7:11: severity must be one of info, warning, critical, got 'warn'
        severity: warn
                  ^~~~

Nothing here raises on bad input: every problem is a :class:`RuleError`.
"""

from __future__ import annotations

import os
import re
import stat
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

import yaml
from yaml.nodes import Node, ScalarNode

#: a rule file larger than this is refused unread
MAX_BYTES = 1 << 20
#: collections nested deeper than this are refused (rule files need about 6)
MAX_DEPTH = 32
#: source lines longer than this are shown as a window around the column
MAX_SHOWN = 160

# YAML 1.1's line breaks, as PyYAML counts them for its marks
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem in a rule file, at 1-based ``line`` and ``col``.

    ``source_line`` is the file's line there (None where there is no text to
    show, e.g. a missing file); ``length`` is how many characters the caret
    line underlines. A long line is kept as a window around the column, with
    ``...`` at the cut ends: ``shown_from`` is then the column (0-based) of
    the line that ``source_line[0]`` stands for.

    >>> e = RuleError("r.yaml", 3, 15, "unknown key 'exprs' (did you mean 'expr'?)", "  - {name: a, exprs: x}", 5)
    >>> print(e.format())
    r.yaml:3:15: unknown key 'exprs' (did you mean 'expr'?)
      - {name: a, exprs: x}
                  ^~~~~
    >>> print(RuleError("gone.yaml", 1, 1, "cannot read gone.yaml: No such file or directory").format())
    gone.yaml:1:1: cannot read gone.yaml: No such file or directory
    """

    file: str
    line: int
    col: int
    message: str
    source_line: str | None = None
    length: int = 1
    shown_from: int = 0

    def format(self) -> str:
        """``FILE:LINE:COL: message``, then the source line and a caret line under the culprit."""
        head = f"{self.file}:{self.line}:{self.col}: {self.message}"
        if self.source_line is None:
            return head
        line, start = self.source_line, self.col - 1 - self.shown_from
        length = max(1, min(self.length, len(line) - start))
        pad = "".join("\t" if ch == "\t" else " " for ch in line[:start]) + " " * max(0, start - len(line))
        return f"{head}\n{line}\n{pad}^{'~' * (length - 1)}"

    def __str__(self) -> str:
        return self.format()


class Source:
    """The text of one rule file, and errors placed in it.

    >>> src = Source("r.yaml", "rules:\\n  - name: x\\n")
    >>> src.position(17)
    (2, 11)
    >>> print(src.error(17, "here", 1).format())
    r.yaml:2:11: here
      - name: x
              ^
    """

    __slots__ = ("name", "text", "_starts")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self._starts = [0] + [m.end() for m in _BREAK.finditer(text)]

    def position(self, index: int) -> tuple[int, int]:
        """1-based (line, column) of a character index."""
        index = max(0, min(index, len(self.text)))
        row = bisect_right(self._starts, index) - 1
        return row + 1, index - self._starts[row] + 1

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its line break."""
        if not 1 <= line <= len(self._starts):
            return ""
        start = self._starts[line - 1]
        stop = self._starts[line] if line < len(self._starts) else len(self.text)
        return _CONTROL.sub("\ufffd", self.text[start:stop].rstrip("\r\n\x85\u2028\u2029"))

    def error(self, index: int, message: str, length: int = 1) -> RuleError:
        """A RuleError at a character index; a long line is cut to a window around it.

        >>> e = Source("r.yaml", "x" * 1000).error(500, "here", 3)
        >>> len(e.source_line), e.format().splitlines()[2].index("^")
        (166, 56)
        """
        line, col = self.position(index)
        text, shift = self.line_text(line), 0
        if len(text) > MAX_SHOWN:
            lo = max(0, min(col - 1 - MAX_SHOWN // 3, len(text) - MAX_SHOWN))
            hi = lo + MAX_SHOWN
            shift = lo - 3 if lo else 0
            text = ("..." if lo else "") + text[lo:hi] + ("..." if hi < len(text) else "")
        return RuleError(self.name, line, col, " ".join(message.split("\n")), text, max(1, length), shift)

    def at(self, node: Node, message: str, length: int | None = None) -> RuleError:
        """A RuleError at a node; by default a one-line scalar is underlined whole."""
        start, end = node.start_mark.index, node.end_mark.index
        if length is None:
            length = end - start if isinstance(node, ScalarNode) and "\n" not in self.text[start:end] else 1
        return self.error(start, message, length)

    def in_scalar(self, node: ScalarNode, offset: int, length: int, message: str) -> RuleError:
        """A RuleError at ``offset`` (0-based) into a scalar's *value*, mapped back to the file."""
        pos = scalar_map(node, self.text)
        offset = max(0, min(offset, len(pos) - 1))
        last = max(offset, min(offset + max(length, 1) - 1, len(pos) - 1))
        end = pos[last] + 1                 # past the last character, or past its escape sequence
        if last + 1 < len(pos) and pos[last + 1] > end and not _BREAK.search(self.text, end, pos[last + 1]):
            end = pos[last + 1]
        return self.error(pos[offset], message, max(1, end - pos[offset]))


def scalar_map(node: ScalarNode, text: str) -> list[int]:
    """For each character of a scalar's value, its index in ``text``; one more
    entry for the end. Exact for one-line scalars, right to the character for
    the non-blank text of multi-line and block (``|``, ``>``) scalars.

    >>> text = 'expr: "a > \\\\x31"'
    >>> node = yaml.compose(text, yaml.SafeLoader).value[0][1]
    >>> node.value, [text[i] for i in scalar_map(node, text)[:5]]
    ('a > 1', ['a', ' ', '>', ' ', '\\\\'])
    """
    value, start, end = node.value, node.start_mark.index, node.end_mark.index
    style = node.style
    if style in ("|", ">"):
        brk = _BREAK.search(text, start)
        j = brk.end() if brk else end
    else:
        j = start + 1 if style in ("'", '"') else start
    stop = end - 1 if style in ("'", '"') else end
    out: list[int] = []
    for ch in value:
        while True:
            if j >= stop:
                out.append(max(start, stop - 1) if out else start)
                break
            r = text[j]
            if style == '"' and r == "\\":
                nxt = text[j + 1] if j + 1 < stop else ""
                if nxt in "\r\n\x85\u2028\u2029":      # escaped line break: produces nothing
                    j += 2
                    while j < stop and text[j] in " \t\r\n":
                        j += 1
                    continue
                out.append(j)
                j += 2 + {"x": 2, "u": 4, "U": 8}.get(nxt, 0)
                break
            if ch in " \t\n":
                out.append(j)
                if r in " \t\r\n\x85\u2028\u2029":
                    j += 1
                break
            if r in " \t\r\n\x85\u2028\u2029":
                j += 1
                continue
            out.append(j)
            j += 2 if style == "'" and ch == "'" and text.startswith("''", j) else 1
            break
    out.append(out[-1] + 1 if out else (start + 1 if style in ("'", '"') else start))
    return out


def read_source(path: str) -> Source | RuleError:
    """Read a rule file as text, or say why not (missing, too large, not UTF-8).

    >>> print(read_source("/nonexistent/r.yaml").format())
    /nonexistent/r.yaml:1:1: cannot read /nonexistent/r.yaml: No such file or directory
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return RuleError(path, 1, 1, f"cannot read {path}: {e.strerror or e}")
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                return RuleError(path, 1, 1, f"cannot read {path}: Is a directory")
            if not stat.S_ISREG(st.st_mode):
                return RuleError(path, 1, 1, f"cannot read {path}: not a regular file")
            data = b"" if st.st_size > MAX_BYTES else f.read(MAX_BYTES + 1)
    except OSError as e:
        return RuleError(path, 1, 1, f"cannot read {path}: {e.strerror or e}")
    if st.st_size > MAX_BYTES or len(data) > MAX_BYTES:
        size = f"{st.st_size} bytes" if st.st_size > MAX_BYTES else "more than that"
        return RuleError(path, 1, 1, f"file too large ({size}, limit 1 MiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        src = Source(path, data[: e.start].decode("utf-8") + data[e.start:].decode("utf-8", "replace"))
        return src.error(len(data[: e.start].decode("utf-8")), f"file is not UTF-8 (byte 0x{data[e.start]:02x})")
    return Source(path, text[1:] if text.startswith("\ufeff") else text)


def rule_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[RuleError]]:
    """The rule files named by ``paths``: files as given, directories'
    ``*.yaml``/``*.yml`` sorted; each file once. An empty directory beside paths that
    do hold rule files is fine (a drop-in ``rules.d`` with nothing in it yet); when no
    path holds any, each empty directory is an error.

    >>> rule_files(["/nonexistent.yaml", "/nonexistent.yaml"])
    (['/nonexistent.yaml'], [])
    """
    files: list[str] = []
    errors: list[RuleError] = []
    empty: list[RuleError] = []
    seen: set[str] = set()
    for p in map(os.fspath, paths):
        found = [p]
        if os.path.isdir(p):
            try:
                names = sorted(os.listdir(p))
            except OSError as e:
                errors.append(RuleError(p, 1, 1, f"cannot read {p}: {e.strerror or e}"))
                continue
            found = [os.path.join(p, n) for n in names if _is_rule_file(n) and os.path.isfile(os.path.join(p, n))]
            if not found:
                empty.append(RuleError(p, 1, 1, f"no rule files (*.yaml, *.yml) in {p}"))
        for f in found:
            real = os.path.realpath(f)
            if real not in seen:
                seen.add(real)
                files.append(f)
    return files, errors if files else errors + empty


def _is_rule_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) and not name.endswith((".test.yaml", ".test.yml")) \
        and not name.startswith(".")


class _Limits:
    """Composing hooks: no aliases, bounded depth."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            mark = self.peek_event().start_mark  # type: ignore[attr-defined]
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in rule files", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[attr-defined]
                raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)  # type: ignore[misc, no-any-return]
        finally:
            self._depth -= 1


class _PyLoader(_Limits, yaml.SafeLoader):
    """PyYAML's own parser (always there)."""


_LOADERS: list[type] = [_PyLoader]
if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class _CLoader(_Limits, CParser, yaml.composer.Composer, yaml.resolver.Resolver):  # type: ignore[misc]
        """libyaml's parser (5x faster) under PyYAML's composer and resolver."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.resolver.Resolver.__init__(self)

        get_single_node = yaml.composer.Composer.get_single_node
        compose_document = yaml.composer.Composer.compose_document

    _LOADERS.insert(0, _CLoader)


def compose(src: Source, loader_class: type | None = None) -> Node | RuleError | None:
    """The file's single YAML document as a node tree (None if it is empty),
    or a RuleError at YAML's own problem mark.

    >>> compose(Source("r.yaml", "rules: []\\n")).value[0][0].value
    'rules'
    >>> print(compose(Source("r.yaml", "a: &x [1]\\nb: *x\\n")).format())
    r.yaml:2:4: YAML aliases (*name) are not allowed in rule files
    b: *x
       ^
    """
    bad = _NON_PRINTABLE.search(src.text)
    if bad:
        return src.error(bad.start(), f"character #x{ord(bad.group()):04x} is not allowed in YAML")
    loader = None
    try:
        loader = (loader_class or _LOADERS[0])(src.text)
        return loader.get_single_node()  # type: ignore[no-any-return]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = e.problem or e.context or "not valid YAML"
        if e.context == "expected a single document in the stream":
            e.context, message = None, "a rule file is one YAML document, but another begins here"
        if e.context and e.problem and e.context_mark is not None and e.context_mark.line != getattr(mark, "line", -1):
            message += f" ({e.context} at line {e.context_mark.line + 1})"
        return src.error(mark.index if mark else 0, message)
    except yaml.YAMLError as e:
        return src.error(0, f"not valid YAML: {e}")
    except RecursionError:
        return src.error(0, f"nesting deeper than {MAX_DEPTH} levels")
    finally:
        if loader is not None and hasattr(loader, "dispose"):
            loader.dispose()
