"""Typed reading of positioned YAML nodes: every wrong type or value becomes
a :class:`~cgwatch.rules.document.RuleError` at the node, and reading goes on.

>>> r = FileReader(Source("r.yaml", "severity: warn\\nfor: 5 parsecs\\n"))
>>> f = r.fields(compose(r.src), ("severity", "for"), what="rule")
>>> r.choice(f["severity"][1], "severity", ("info", "warning", "critical")), r.duration(f["for"][1], "for")
(None, None)
>>> for e in r.errors: print(e.format())
r.yaml:1:11: severity must be one of info, warning, critical, got 'warn'
severity: warn
          ^~~~
r.yaml:2:6: for: '5 parsecs' is not a duration (use e.g. 500ms, 30s, 5m, 1h)
for: 5 parsecs
     ^~~~~~~~~
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..anomaly.joint import MAX_DIMS
from ..anomaly.models import SCALAR_KINDS
from ..anomaly.river_model import RiverModelError
from ..anomaly.river_model import make as make_river
from ..units import parse_duration
from .document import RuleError, Source, compose
from .expr import FUNCTIONS
from .macros import NAME, RESERVED

_TAG = "tag:yaml.org,2002:"
#: the scalar tags a rule file may hold (no !!python/..., no !custom)
_SCALARS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_CONSTRUCT = yaml.constructor.SafeConstructor()
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
PROFILE_KEYS = ("duration",)
PROFILE_DEFAULT_S = 10.0
PROFILE_MIN_S = 1.0
PROFILE_MAX_S = 300.0
ANOMALY_KEYS = ("metric", "metrics", "model", "sensitivity", "warmup")
#: errors reported for one file, at most
MAX_ERRORS = 100


class TooManyErrors(Exception):
    """Raised by :meth:`FileReader.add` past :data:`MAX_ERRORS`: stop reading the file."""

__all__ = ["ANOMALY_KEYS", "MAX_ERRORS", "FileReader", "TooManyErrors", "compose", "glob_problem"]


def glob_problem(glob: str) -> tuple[int, int, str] | None:
    """What is wrong with an fnmatch glob, as (offset, length, message), or None.

    >>> glob_problem("web-[0-9]*"), glob_problem("web-[12")
    (None, (4, 3, "'[' is never closed"))
    >>> glob_problem("[z-a]x"), glob_problem("")
    ((1, 3, "empty range 'z-a'"), (0, 1, 'must not be empty'))
    """
    if not glob:
        return 0, 1, "must not be empty"
    i, n = 0, len(glob)
    while i < n:
        if glob[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < n and glob[j] == "!":
            j += 1
        if j < n and glob[j] == "]":
            j += 1
        while j < n and glob[j] != "]":
            if j + 2 < n and glob[j + 1] == "-" and glob[j + 2] != "]" and glob[j] > glob[j + 2]:
                return j, 3, f"empty range '{glob[j:j + 3]}'"
            j += 1
        if j >= n:
            return i, n - i, "'[' is never closed"
        i = j + 1
    return None


class FileReader:
    """Reads nodes of one :class:`Source` into Python values, collecting errors."""

    def __init__(self, src: Source | None) -> None:
        self.src: Source = src  # type: ignore[assignment]
        self.errors: list[RuleError] = []
        #: the keys the last fields() call suggested for unknown ones
        self.suggested: set[str] = set()

    def error(self, node: Node, message: str, length: int | None = None) -> None:
        """Record an error at ``node``."""
        self.add(self.src.at(node, message, length))

    def add(self, e: RuleError) -> None:
        """Record an error; past :data:`MAX_ERRORS`, note that and raise :class:`TooManyErrors`."""
        if len(self.errors) >= MAX_ERRORS:
            self.errors.append(RuleError(e.file, e.line, e.col, f"too many errors (stopping after {MAX_ERRORS})",
                                         e.source_line, e.length, e.shown_from))
            raise TooManyErrors
        self.errors.append(e)

    @staticmethod
    def got(node: Node) -> str:
        """How an error message names what was found instead.

        >>> [FileReader.got(n) for _, n in compose(Source("x", "a: x\\nb: [1]\\nc:\\nd: 3\\n")).value]
        ["'x'", 'a list', 'nothing', '3']
        """
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        if node.tag not in _SCALARS:
            return f"a value tagged {node.tag.replace(_TAG, '!!')}"
        if node.tag == _TAG + "null":
            return "nothing"
        return repr(node.value) if node.tag == _TAG + "str" else str(node.value)

    def fields(self, node: Node, keys: Sequence[str], what: str = "top level") -> dict[str, tuple[ScalarNode, Node]] | None:
        """A mapping with known keys: key -> (key node, value node)."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping, got {self.got(node)}")
            return None
        out: dict[str, tuple[ScalarNode, Node]] = {}
        self.suggested = set()
        for name, key, value in self.pairs(node, what):
            if name not in keys:
                close = difflib.get_close_matches(name, keys, n=1)
                self.suggested.update(close)
                hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(keys)}"
                self.error(key, f"unknown key '{name}' ({hint})")
            else:
                out[name] = (key, value)
        return out

    def pairs(self, node: Node, what: str) -> list[tuple[str, ScalarNode, Node]]:
        """A mapping's (key, key node, value node), keys strings and unique."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping, got {self.got(node)}")
            return []
        out: list[tuple[str, ScalarNode, Node]] = []
        first: dict[str, ScalarNode] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _TAG + "null":
                self.error(key, f"keys of {what} must be strings, got {self.got(key)}")
            elif key.value in first:
                self.error(key, f"duplicate key '{key.value}' (first at line {first[key.value].start_mark.line + 1})")
            else:
                first[key.value] = key
                out.append((key.value, key, value))
        return out

    def text(self, node: Node, what: str) -> str | None:
        """A scalar's text as written (``name: 404`` is ``'404'``); not null, not a collection."""
        if not isinstance(node, ScalarNode) or node.tag == _TAG + "null" or node.tag not in _SCALARS:
            self.error(node, f"{what} must be a string, got {self.got(node)}")
            return None
        return str(node.value)

    def choice(self, node: Node, what: str, options: Sequence[str]) -> str | None:
        """One of ``options``."""
        if isinstance(node, ScalarNode) and node.value in options and node.tag in _SCALARS:
            return str(node.value)
        self.error(node, f"{what} must be one of {', '.join(options)}, got {self.got(node)}")
        return None

    def boolean(self, node: Node, what: str) -> bool | None:
        """``true`` or ``false`` (YAML 1.1's yes/no/on/off too)."""
        if isinstance(node, ScalarNode) and node.tag == _TAG + "bool":
            return bool(_CONSTRUCT.construct_yaml_bool(node))
        self.error(node, f"{what} must be true or false, got {self.got(node)}")
        return None

    def number(self, node: Node, what: str, whole: bool = False) -> float | int | None:
        """A finite number (an integer if ``whole``); None (and an error) otherwise."""
        tags = (_TAG + "int",) if whole else (_TAG + "int", _TAG + "float")
        if isinstance(node, ScalarNode) and node.tag in tags:
            try:
                value = _CONSTRUCT.construct_object(node)
            except (ValueError, OverflowError):
                value = math.inf
            if math.isfinite(value):
                return value  # type: ignore[no-any-return]
            self.error(node, f"{what} is too large")
            return None
        self.error(node, f"{what} must be {'a whole number' if whole else 'a number'}, got {self.got(node)}")
        return None

    def duration(self, node: Node, what: str, lo: float = 0.0, hi: float | None = None) -> float | None:
        """Seconds, written as units.parse_duration reads them, within [lo, hi]."""
        if not isinstance(node, ScalarNode) or node.tag not in (_TAG + "str", _TAG + "int", _TAG + "float"):
            self.error(node, f"{what} must be a duration such as 30s, got {self.got(node)}")
            return None
        try:
            seconds = parse_duration(node.value)
        except ValueError as e:
            self.error(node, f"{what}: {e}")
            return None
        if seconds < lo:
            self.error(node, f"{what} must be at least {_short(lo)}, got {node.value!r}")
        elif (hi is not None and seconds > hi) or not math.isfinite(seconds):
            self.error(node, f"{what} must be at most {_short(hi or 0.0)}, got {node.value!r}" if hi
                       else f"{what} is too long, got {node.value!r}")
        else:
            return seconds
        return None

    def names_list(self, node: Node, what: str, noun: str) -> tuple[str, ...] | None:
        """A list of distinct non-empty strings."""
        if not isinstance(node, SequenceNode):
            hint = f" (write [{node.value}])" if isinstance(node, ScalarNode) and node.tag == _TAG + "str" else ""
            self.error(node, f"{what} must be a list of {noun}, got {self.got(node)}{hint}")
            return None
        out: list[str] = []
        for item in node.value:
            text = self.text(item, f"each of {what}")
            if text is None:
                continue
            if not text:
                self.error(item, f"{what}: a name must not be empty")
            elif text in out:
                self.error(item, f"{what}: '{text}' is listed twice")
            else:
                out.append(text)
        return tuple(out)

    def list_items(self, node: Node, what: str) -> list[str | float] | None:
        """A non-empty list of strings and numbers (a ``lists:`` entry)."""
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list, got {self.got(node)}")
            return None
        before = len(self.errors)
        out: list[str | float] = []
        for item in node.value:
            if isinstance(item, ScalarNode) and item.tag == _TAG + "str":
                out.append(item.value)
            elif isinstance(item, ScalarNode) and item.tag in (_TAG + "int", _TAG + "float"):
                n = self.number(item, f"an item of {what}")
                if n is not None:
                    out.append(n)
            else:
                self.error(item, f"items of {what} must be strings or numbers, got {self.got(item)}")
        if not node.value:
            self.error(node, f"{what} is empty")
        return out if len(self.errors) == before else None

    def reuse(self, macros: Node | None, lists: Node | None) -> tuple[dict[str, ScalarNode], dict[str, list[str | float]], set[str]]:
        """A file's ``macros:`` (name -> node of its text) and ``lists:`` (name ->
        items), and the names of those with errors."""
        texts: dict[str, ScalarNode] = {}
        items: dict[str, list[str | float]] = {}
        broken: set[str] = set()
        for what, node in (("macro", macros), ("list", lists)):
            for name, key, value in self.pairs(node, what + "s") if node is not None else ():
                if not NAME.match(name) or name in RESERVED or name in FUNCTIONS:
                    why = "is a reserved word" if NAME.match(name) else "is not a name (letters, digits, _)"
                    self.error(key, f"{what} name '{name}' {why}")
                elif name in texts or name in items or name in broken:
                    self.error(key, f"'{name}' is both a macro and a list")
                elif what == "macro":
                    text = self.text(value, f"macro '{name}'")
                    if text is not None and not text.strip():
                        self.error(value, f"macro '{name}' is empty")
                    if text and text.strip() and isinstance(value, ScalarNode):
                        texts[name] = value
                    else:
                        broken.add(name)
                else:
                    got = self.list_items(value, f"list '{name}'")
                    if got is None:
                        broken.add(name)
                    else:
                        items[name] = got
        return texts, items, broken

    def profile(self, node: Node) -> float | None:
        """``profile: {duration: 10s}``, ``profile: true`` (10 s) or ``false``: seconds, 0 for off."""
        if isinstance(node, ScalarNode) and node.tag == _TAG + "bool":
            return PROFILE_DEFAULT_S if self.boolean(node, "profile") else 0.0
        f = self.fields(node, PROFILE_KEYS, what="profile")
        if f is None:
            return None
        if "duration" not in f:
            return PROFILE_DEFAULT_S
        return self.duration(f["duration"][1], "profile.duration", PROFILE_MIN_S, PROFILE_MAX_S)

    def anomaly(self, node: Node) -> dict[str, Any] | None:
        """The fields of an ``anomaly:`` mapping, checked (not yet meaningful to anyone)."""
        f = self.fields(node, ANOMALY_KEYS, what="anomaly")
        if f is None:
            return None
        before = len(self.errors)
        out: dict[str, Any] = {}
        given = [k for k in ("metric", "metrics") if k in f]
        if len(given) == 2:
            self.error(f["metrics"][0], "'metrics' cannot be combined with 'metric'")
        elif not given:
            self.error(node, "anomaly needs 'metric' (one) or 'metrics' (a list)")
        items: list[Node] = []
        if given == ["metric"]:
            items = [f["metric"][1]]
        elif given == ["metrics"]:
            seq = f["metrics"][1]
            if not isinstance(seq, SequenceNode) or not seq.value:
                self.error(seq, f"anomaly.metrics must be a list of metric names, got {self.got(seq)}"
                           if not isinstance(seq, SequenceNode) else "anomaly.metrics is empty")
            else:
                items = list(seq.value)
        names: list[str] = []
        for item in items:
            name = self.text(item, "anomaly.metric")
            if name is None:
                continue
            if not _METRIC.match(name) or name.startswith(("event.", "container.")):
                self.error(item, f"{name!r} is not a metric name (such as cpu.usage_cores)")
            elif name in names:
                self.error(item, f"anomaly.metrics: '{name}' is listed twice")
            else:
                names.append(name)
        if len(names) > MAX_DIMS:
            self.error(f["metrics"][1], f"a joint model learns at most {MAX_DIMS} metrics, not {len(names)} "
                                        "(write several rules)")
        out["metrics"] = tuple(names)
        if "model" in f:
            node_ = f["model"][1]
            if isinstance(node_, MappingNode):
                out["model"], out["river"] = "river", self.river_model(node_)
            else:
                model = self.text(node_, "anomaly.model")
                kinds = ["auto", *SCALAR_KINDS, "joint"]
                if model is not None and model not in kinds:
                    close = difflib.get_close_matches(model, kinds, n=1)
                    hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(kinds)}"
                    self.error(node_, f"unknown anomaly.model '{model}' ({hint}; a River detector is written "
                                      "{river: anomaly.NAME, params: {...}})")
                out["model"] = model
        if "sensitivity" in f:
            s = self.number(f["sensitivity"][1], "anomaly.sensitivity")
            if s is not None and not 0 < s <= 1:
                self.error(f["sensitivity"][1], f"anomaly.sensitivity must be in (0, 1], got {s}")
            out["sensitivity"] = None if s is None else float(s)
        if "warmup" in f:
            w = self.number(f["warmup"][1], "anomaly.warmup (samples)", whole=True)
            if w is not None and w < 1:
                self.error(f["warmup"][1], f"anomaly.warmup must be a positive number of samples, got {w}")
            out["warmup"] = w
        return out if len(self.errors) == before else None


    def river_model(self, node: MappingNode) -> tuple[str, str] | None:
        """``{river: anomaly.NAME, params: {...}}``, built once to check it: (name, params as JSON)."""
        f = self.fields(node, ("river", "params"), what="anomaly.model")
        if f is None:
            return None
        if "river" not in f:
            self.error(node, "anomaly.model needs 'river': the name of a River detector such as "
                             "anomaly.GaussianScorer")
            return None
        name = self.text(f["river"][1], "anomaly.model.river")
        params: Any = {}
        text = "{}"
        if "params" in f:
            pnode = f["params"][1]
            if not isinstance(pnode, MappingNode):
                self.error(pnode, f"anomaly.model.params must be a mapping, got {self.got(pnode)}")
                return None
            try:
                params = yaml.safe_load(yaml.serialize(pnode))
                text = json.dumps(params, sort_keys=True, allow_nan=False)
            except (yaml.YAMLError, TypeError, ValueError) as exc:
                self.error(pnode, f"anomaly.model.params must be plain numbers, strings, lists and "
                                  f"mappings ({exc})")
                return None
        if name is None:
            return None
        try:
            make_river(name, params)          # built once, so River itself checks names and values
        except RiverModelError as exc:
            self.error(_at(f, exc.path), str(exc))
            return None
        return name, text


def _at(f: dict[str, tuple[ScalarNode, Node]], path: tuple[str, ...]) -> Node:
    """The node a River parameter path points at: the deepest key written, else ``river:``'s value."""
    if not path or "params" not in f:
        return f["river"][1]
    node: Node = f["params"][1]
    at: Node = node
    for key in path:
        hit = None
        if isinstance(node, MappingNode):
            hit = next(((k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == key), None)
        if hit is None:
            break
        at, node = hit
        if isinstance(node, MappingNode):   # a nested {river: ..., params: {...}}: its params next
            inner = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == "params"), None)
            if inner is not None:
                node = inner
    return at


def _short(seconds: float) -> str:
    """7d, 1m, 30s: a limit as people write it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
