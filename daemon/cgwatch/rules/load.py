"""Rule files -> :class:`Rule` objects, or errors as good as a compiler's.

``load_rules(paths)`` reads files and directories (``*.yaml`` and ``*.yml``
in a directory, sorted, not recursive, skipping ``*.test.yaml``/``*.test.yml``
rule tests and hidden files) and returns every valid rule and *every* error,
in file and line order, each as ``FILE:LINE:COL: message`` plus the source
line and a caret line. A file is a mapping::

    macros:                       # optional: name -> expression text
      is_shell: event.comm in shells
      hot: cpu.usage_cores > 0.9 * cpu.limit_cores
    lists:                        # optional: name -> strings (or numbers)
      shells: [sh, bash, zsh]
    rules:
      - name: cpu-hog
        expr: hot                 # macros work in expr: and where:
        for: 30s
        severity: warning
      - name: shell-in-container
        event: exec
        where: is_shell and container.image != "debug"
        severity: critical

Reuse is textual and per file: a macro's name (a bare identifier) becomes its
text in parentheses, a list's name becomes a list literal, and both are seen
only by the rules of the file that defines them. Macros may use macros and
lists, 8 deep at most; a cycle is an error at the macro that closes it. A
compile error inside a macro points into the macro's definition and names
the rule that used it. A macro nobody uses is not compiled.

Nothing a user writes raises or hangs: YAML aliases are refused (no
billion laughs), nesting stops at 32, files at 1 MiB, errors at 100 a file.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as d:
...     _ = pathlib.Path(d, "a.yaml").write_text("rules:\\n  - {name: oom, event: oom_kill, severity: critical}\\n")
...     rules, errors = load_rules([d])
>>> [(r.name, r.event, r.severity, r.line) for r in rules], errors
([('oom', 'oom_kill', 'critical', 2)], [])
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..model import RUNTIMES, Container
from .document import RuleError, compose, read_source, rule_files
from .expr import Compiled, ExprError, compile_expr
from .fields import FileReader, TooManyErrors, glob_problem
from .macros import Expander, MacroError
from .template import Template, TemplateError, compile_template

SEVERITIES = ("info", "warning", "critical")
EVENTS = ("exec", "exit", "oom_kill", "signal", "container_start", "container_stop", "neighbours")
RULE_KEYS = ("name", "description", "severity", "select", "expr", "event", "anomaly", "where", "for",
             "summary", "notify", "repeat", "enabled", "labels", "profile")
MAX_FOR = 7 * 86400.0
MIN_REPEAT = 60.0
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Select:
    """Which containers a rule watches: globs on name, image and runtime, and
    labels that must all be equal. An empty select matches every container.

    >>> web = Container(id="c1", name="web-1", runtime="docker", image="nginx:1.27", labels={"env": "prod"})
    >>> Select().matches(web), Select(name="web-*", labels={"env": "prod"}).matches(web)
    (True, True)
    >>> Select(image="redis*").matches(web), Select(labels={"env": "dev"}).matches(web)
    (False, False)
    """

    name: str | None = None
    image: str | None = None
    runtime: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    def matches(self, c: Container) -> bool:
        """Whether container ``c`` is selected."""
        return ((self.name is None or fnmatchcase(c.name, self.name))
                and (self.image is None or fnmatchcase(c.image, self.image))
                and (self.runtime is None or fnmatchcase(c.runtime, self.runtime))
                and all(c.labels.get(k) == v for k, v in self.labels.items()))


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    """What an anomaly rule learns; None leaves a knob to the model's default."""

    metrics: tuple[str, ...]
    model: str = "auto"
    sensitivity: float | None = None
    warmup: int | None = None
    river: tuple[str, str] | None = None
    """With ``model: {river: NAME, params: {...}}``: the name and the parameters as JSON."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, checked and compiled. Exactly one of ``expr``, ``event`` and
    ``anomaly`` is set; ``file`` and ``line`` say where it was written."""

    name: str
    severity: str
    description: str = ""
    select: Select = field(default_factory=Select)
    expr: Compiled | None = None
    event: str | None = None
    where: Compiled | None = None
    anomaly: AnomalySpec | None = None
    for_s: float = 0.0
    summary: Template | None = None
    notify: tuple[str, ...] = ()
    repeat_s: float | None = None
    enabled: bool = True
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    file: str = ""
    line: int = 0
    profile_s: float = 0.0
    """Profile the container for this long when the alert fires (0: no profile)."""


@dataclass(slots=True)
class Loaded:
    """What :func:`load` found: the valid rules, every error, and the files read."""

    rules: list[Rule]
    errors: list[RuleError]
    files: list[str]


def load(paths: Iterable[str | os.PathLike[str]]) -> Loaded:
    """Read and check rule files; see :func:`load_rules`.

    >>> load(["/nonexistent.yaml"]).errors[0].message
    'cannot read /nonexistent.yaml: No such file or directory'
    """
    files, errors = rule_files(paths)
    rules: list[Rule] = []
    names: dict[str, tuple[str, int, int]] = {}
    for path in files:
        got, errs = _FileLoader(path, names).load()
        rules += got
        errors += sorted(errs, key=lambda e: (e.message.startswith("too many errors"), e.line, e.col))
    return Loaded(rules, errors, files)


def load_rules(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Rule], list[RuleError]]:
    """Every valid rule in ``paths`` and every error, in file and line order.

    Rules come back even when other rules have errors; a daemon reloading
    should keep its previous rules whenever the error list is not empty.

    >>> rules, errors = load_rules(["/nonexistent.yaml"])
    >>> rules, [e.format() for e in errors]
    ([], ['/nonexistent.yaml:1:1: cannot read /nonexistent.yaml: No such file or directory'])
    """
    got = load(paths)
    return got.rules, got.errors


class _FileLoader(FileReader):
    """Checks one file; rule names are shared across files through ``names``."""

    def __init__(self, path: str, names: dict[str, tuple[str, int, int]]) -> None:
        super().__init__(None)
        self.path, self.names = path, names
        self.macro_nodes: dict[str, ScalarNode] = {}
        self.expander = Expander({}, {})
        self.reported: set[object] = set()
        self.failures = 0        # problems already reported elsewhere (a broken macro)

    def load(self) -> tuple[list[Rule], list[RuleError]]:
        src = read_source(self.path)
        if isinstance(src, RuleError):
            return [], [src]
        self.src = src
        root = compose(src)
        if isinstance(root, RuleError):
            return [], [root]
        if root is None:
            return [], [src.error(0, "empty file (a rule file is a mapping with a 'rules' list; "
                                     "write 'rules: []' for none)")]
        if not isinstance(root, MappingNode):
            return [], [src.at(root, f"top level must be a mapping with a 'rules' list, got {self.got(root)}")]
        try:
            top = self.fields(root, ("rules", "macros", "lists"))
            assert top is not None
            self._reuse(top.get("macros"), top.get("lists"))
        except TooManyErrors:
            return [], self.errors
        if "rules" not in top:
            if "rules" not in self.suggested:
                self.error(root, "missing 'rules' (a list of rules)", _head(root))
            return [], self.errors
        rules_node = top["rules"][1]
        if not isinstance(rules_node, SequenceNode):
            self.error(rules_node, f"rules must be a list, got {self.got(rules_node)}")
            return [], self.errors
        out: list[Rule] = []
        try:
            out += (r for r in map(self._rule, rules_node.value) if r is not None)
        except TooManyErrors:
            return out, self.errors
        return out, self.errors

    # -- macros and lists ---------------------------------------------------------
    def _reuse(self, macros: tuple[ScalarNode, Node] | None, lists: tuple[ScalarNode, Node] | None) -> None:
        self.macro_nodes, items, broken = self.reuse(macros and macros[1], lists and lists[1])
        texts = {name: node.value for name, node in self.macro_nodes.items()}
        self.expander = Expander(texts, items, broken)
        for name in texts:             # cycles, depth, length: once, at the macro
            try:
                self.expander.expand(texts[name], name)
            except MacroError as e:
                self._macro_error(e, None)
                broken.add(name)
        self.expander = Expander(texts, items, broken)
        self.reported.update(("broken", b) for b in broken)

    def _macro_error(self, e: MacroError, node: ScalarNode | None) -> None:
        self.failures += 1
        key = e.key if e.macro is not None or e.key in self.reported else (id(node), e.key)
        if key in self.reported:
            return
        self.reported.add(key)
        target = node if e.macro is None else self.macro_nodes[e.macro]
        if target is not None:
            self.add(self.src.in_scalar(target, e.offset, e.length, e.message))

    def _compile(self, node: Node, key: str, kind: str, rule: str) -> Compiled | None:
        text = self.text(node, key)
        if text is None:
            return None
        if not text.strip():
            self.error(node, f"{key} must not be empty")
            return None
        assert isinstance(node, ScalarNode)
        try:
            expanded = self.expander.expand(text)
        except MacroError as e:
            self._macro_error(e, node)
            return None
        try:
            return compile_expr(expanded.text, kind)
        except ExprError as e:
            macro, offset, length = expanded.origin(e.offset, e.length)
            message = getattr(e, "message", str(e))
            if macro is None:
                self.add(self.src.in_scalar(node, offset, length, message))
            else:
                line = node.start_mark.line + 1
                self.add(self.src.in_scalar(self.macro_nodes[macro], offset, length,
                                                      f"{message} (in macro '{macro}', used by rule '{rule}' "
                                                      f"at line {line})"))
        except Exception as e:   # noqa: BLE001 - a compiler bug must not cost the whole check
            self.error(node, f"cannot compile {key}: {type(e).__name__}: {e}")
        return None

    # -- one rule -------------------------------------------------------------------
    def _rule(self, node: Node) -> Rule | None:
        before = (len(self.errors), self.failures)
        f = self.fields(node, RULE_KEYS, what="rule")
        if f is None:
            return None
        misspelled = self.suggested   # a misspelled key is reported once, not also as missing
        assert isinstance(node, MappingNode)
        head = _head(node)
        name = self._name(f, node, head, misspelled)
        label = f"rule '{name}'" if name else "rule"
        severity = None
        if "severity" in f:
            severity = self.choice(f["severity"][1], "severity", SEVERITIES)
        elif "severity" not in misspelled:
            self.error(node, f"{label} has no 'severity' (one of {', '.join(SEVERITIES)})", head)
        kinds = sorted((k for k in ("expr", "event", "anomaly") if k in f), key=lambda k: f[k][0].start_mark.index)
        for k in kinds[1:]:
            self.error(f[k][0], f"'{k}' cannot be combined with '{kinds[0]}' "
                                "(a rule has exactly one of expr, event, anomaly)")
        if not kinds and not misspelled & {"expr", "event", "anomaly"}:
            self.error(node, f"{label} needs one of expr, event, anomaly", head)
        kind = kinds[0] if kinds else None
        expr = event = where = anomaly = None
        if kind == "expr":
            expr = self._compile(f["expr"][1], "expr", "metric", name or "?")
        elif kind == "event":
            event = self.choice(f["event"][1], "event", EVENTS)
        elif kind == "anomaly":
            spec = self.anomaly(f["anomaly"][1])
            anomaly = AnomalySpec(**spec) if spec is not None else None
        if "where" in f:
            if kind == "event":
                where = self._compile(f["where"][1], "where", "event", name or "?")
            elif kind is not None:
                self.error(f["where"][0], "'where' only applies to event rules")
        for_s = 0.0
        if "for" in f:
            if kind == "event":
                self.error(f["for"][0], "'for' does not apply to event rules (an event fires once)")
            got = self.duration(f["for"][1], "for", 0.0, MAX_FOR)
            for_s = got if got is not None else 0.0
        repeat_s = self.duration(f["repeat"][1], "repeat", MIN_REPEAT, None) if "repeat" in f else None
        select = self._select(f["select"][1]) if "select" in f else Select()
        summary = self._summary(f["summary"][1], name) if "summary" in f else None
        description = self.text(f["description"][1], "description") if "description" in f else ""
        enabled = self.boolean(f["enabled"][1], "enabled") if "enabled" in f else True
        notify = self.names_list(f["notify"][1], "notify", "receiver names") if "notify" in f else ()
        labels = self._labels(f["labels"][1], "labels") if "labels" in f else {}
        profile_s = 0.0
        if "profile" in f:
            if kind == "event":
                self.error(f["profile"][0], "'profile' does not apply to event rules (the event is over)")
            profile_s = self.profile(f["profile"][1]) or 0.0
        if (len(self.errors), self.failures) != before or name is None or severity is None:
            return None
        return Rule(name, severity, description or "", select or Select(), expr, event, where, anomaly, for_s,
                    summary, tuple(notify or ()), repeat_s, bool(enabled), MappingProxyType(dict(labels or {})),
                    self.path, node.start_mark.line + 1, profile_s)

    def _name(self, f: dict[str, tuple[ScalarNode, Node]], node: Node, head: int, misspelled: set[str]) -> str | None:
        if "name" not in f:
            if "name" not in misspelled:
                self.error(node, "rule has no 'name'", head)
            return None
        value = f["name"][1]
        name = self.text(value, "name")
        if name is None:
            return None
        if not _RULE_NAME.match(name):
            self.error(value, f"rule name {name!r} may hold only letters, digits and - _ . : "
                              "(at most 128, the first a letter or digit)")
            return None
        where = (self.path, value.start_mark.line + 1, value.start_mark.column)
        first = self.names.setdefault(name, where)
        if first != where:
            at = f"line {first[1]}" if first[0] == self.path else f"{first[0]}:{first[1]}"
            self.error(value, f"duplicate rule name '{name}' (first defined at {at})")
            return None
        return name

    def _select(self, node: Node) -> Select | None:
        f = self.fields(node, ("name", "image", "runtime", "labels"), what="select")
        if f is None:
            return None
        globs: dict[str, str | None] = {}
        for key in ("name", "image", "runtime"):
            globs[key] = None
            if key not in f:
                continue
            value = f[key][1]
            text = self.text(value, f"select.{key}")
            if text is None:
                continue
            problem = glob_problem(text)
            if problem:
                assert isinstance(value, ScalarNode)
                self.add(self.src.in_scalar(value, problem[0], problem[1], f"select.{key}: {problem[2]}"))
            elif key == "runtime" and not any(fnmatchcase(r, text) for r in RUNTIMES):
                self.error(value, f"select.runtime {text!r} matches no runtime (known: {', '.join(RUNTIMES)})")
            else:
                globs[key] = text
        labels = self._labels(f["labels"][1], "select.labels") if "labels" in f else {}
        return Select(globs["name"], globs["image"], globs["runtime"], MappingProxyType(dict(labels or {})))

    def _labels(self, node: Node, what: str) -> dict[str, str] | None:
        out: dict[str, str] = {}
        for name, key, value in self.pairs(node, what):
            if not _LABEL_NAME.match(name) and what == "labels":
                self.error(key, f"label name {name!r} may hold only letters, digits and _ (not first)")
                continue
            text = self.text(value, f"{what}.{name}")
            if text is not None:
                out[name] = text
        return out

    def _summary(self, node: Node, rule: str | None) -> Template | None:
        text = self.text(node, "summary")
        if text is None:
            return None
        try:
            return compile_template(text)
        except TemplateError as e:
            assert isinstance(node, ScalarNode)
            lines = text.split("\n")
            line = max(1, min(e.line, len(lines)))
            offset = sum(len(x) + 1 for x in lines[: line - 1])
            message = f"summary: {e.message}"
            if e.bound:       # a bomb: say whose, as rules check's one line is all some will read
                message += f" (rule '{rule or '?'}')"
            self.add(self.src.in_scalar(node, offset, max(1, len(lines[line - 1])), message))
            return None


def _head(node: MappingNode) -> int:
    """How much of a mapping's first line to underline: its first key."""
    first = node.value[0][0] if node.value else None
    return len(first.value) if isinstance(first, ScalarNode) else 1
