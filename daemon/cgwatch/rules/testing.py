"""``cgwatch rules test``: rule unit tests, in the spirit of ``promtool test rules``.

A test file (``*.test.yaml``) names the rule files it tests and a list of
tests; each gives input series in a compact notation, optional events, and
the alerts expected to be firing at given times (time starts at 0)::

    rule_files: [../default.yaml]
    tests:
      - name: a busy container fires after 30s
        interval: 1s                        # step between values (default 1s)
        containers:                         # identity, for rules with select:
          web-1: {image: "nginx:1.27", runtime: docker, labels: {env: prod}}
        input:
          - {container: web-1, metric: cpu.usage_cores, values: "0.5x10 0.95x40"}
          - {container: web-1, metric: cpu.limit_cores, values: "1x50"}
        events:
          - {at: 12s, container: web-1, event: oom_kill, fields: {pid: 42, comm: java}}
        expect:
          - at: 45s
            firing: [{rule: cpu-hog, container: web-1}]
          - at: 5s
            firing: []                      # nothing may be firing

Values: ``V`` one value; ``VxN`` V, N times; ``A+BxN`` / ``A-BxN`` N values
from A in steps of B; ``_`` no sample at that step; ``_xN`` N steps without
samples. (Unlike promtool, ``xN`` means N values, not N+1: counts are counts.)

An event rule's alert counts as firing at exactly its event's time. Expected
alerts may also give ``severity``, ``summary`` and ``value`` (compared to 6
significant digits); the firing set must match exactly.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from ..model import Container, Event, Sample
from ..units import parse_duration
from .engine import Engine

_TERM = re.compile(r"^(?P<a>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|_)"
                   r"(?:(?P<op>[-+])(?P<b>\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)?(?:x(?P<n>\d+))?$")
MAX_POINTS = 1_000_000


class TestFileError(ValueError):
    """A test file that cannot be run; the message names the file and test."""


def expand(values: str) -> list[float | None]:
    """Expand the compact series notation (None: no sample at that step).

    >>> expand("1 2 _ 3")
    [1.0, 2.0, None, 3.0]
    >>> expand("0.5x3 1+1x3")
    [0.5, 0.5, 0.5, 1.0, 2.0, 3.0]
    >>> expand("10-2x3 _x2")
    [10.0, 8.0, 6.0, None, None]
    >>> expand("1 two")
    Traceback (most recent call last):
    ...
    ValueError: 'two' is not a value (use V, VxN, A+BxN, A-BxN, _ or _xN)
    """
    out: list[float | None] = []
    for term in str(values).split():
        m = _TERM.match(term)
        if not m:
            raise ValueError(f"{term!r} is not a value (use V, VxN, A+BxN, A-BxN, _ or _xN)")
        n = int(m["n"]) if m["n"] else 1
        if len(out) + n > MAX_POINTS:
            raise ValueError(f"more than {MAX_POINTS} values in one series")
        if m["a"] == "_":
            if m["op"]:
                raise ValueError(f"{term!r}: '_' takes no step")
            out += [None] * n
            continue
        a = float(m["a"])
        b = float(m["b"]) if m["b"] else 0.0
        if m["op"] == "-":
            b = -b
        out += [a + b * k for k in range(n)]
    return out


@dataclass
class Outcome:
    name: str
    failures: list[str] = field(default_factory=list)


def _seconds(v: Any, what: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    try:
        return parse_duration(str(v))
    except ValueError as e:
        raise TestFileError(f"{what}: {e}") from None


def _containers(spec: Any) -> dict[str, Container]:
    out = {}
    for name, meta in (spec or {}).items():
        meta = meta or {}
        out[str(name)] = Container(
            id=str(meta.get("id", name)), name=str(name), runtime=str(meta.get("runtime", "docker")),
            image=str(meta.get("image", "")), labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        )
    return out


def _stream(test: dict[str, Any], where: str) -> list[Sample | Event]:
    step = _seconds(test.get("interval", "1s"), f"{where}: interval")
    if step <= 0:
        raise TestFileError(f"{where}: interval must be more than zero")
    known = _containers(test.get("containers"))

    def container(name: Any) -> Container:
        name = str(name)
        if name not in known:
            known[name] = Container(id=name, name=name, runtime="docker")
        return known[name]

    items: list[Sample | Event] = []
    for n, series in enumerate(test.get("input") or [], 1):
        if not isinstance(series, dict) or not {"container", "metric", "values"} <= set(series):
            raise TestFileError(f"{where}: input {n} needs container, metric and values")
        try:
            values = expand(series["values"])
        except ValueError as e:
            raise TestFileError(f"{where}: input {n}: {e}") from None
        c = container(series["container"])
        items += [Sample(k * step, c, str(series["metric"]), v) for k, v in enumerate(values) if v is not None]
    for n, ev in enumerate(test.get("events") or [], 1):
        if not isinstance(ev, dict) or not {"at", "container", "event"} <= set(ev):
            raise TestFileError(f"{where}: event {n} needs at, container and event")
        items.append(Event(_seconds(ev["at"], f"{where}: event {n}"), container(ev["container"]),
                           str(ev["event"]), dict(ev.get("fields") or {})))
    items.sort(key=lambda x: (x.ts, isinstance(x, Event)))
    return items


def _describe(a: dict[str, Any]) -> str:
    extra = ", ".join(f"{k}={a[k]!r}" for k in ("severity", "summary", "value") if k in a)
    return f"{a['rule']} on {a['container']}" + (f" ({extra})" if extra else "")


def _matches(want: dict[str, Any], got: dict[str, Any]) -> bool:
    for k, v in want.items():
        if k == "value":
            g = got.get("value")
            if g is None or v is None:
                if g is not v:
                    return False
            elif not math.isclose(float(v), float(g), rel_tol=1e-6, abs_tol=1e-12):
                return False
        elif str(got.get(k)) != str(v):
            return False
    return True


def run_test(rules: Sequence[Any], test: dict[str, Any], where: str, anomaly: Any = None) -> Outcome:
    """Run one test against ``rules``; the outcome lists what did not match. ``anomaly`` makes
    the anomaly stage for the rules (the daemon's: ``AnomalyStage.for_rules``); without it
    anomaly rules never fire."""
    out = Outcome(str(test.get("name", where)))
    items = _stream(test, where)
    checks = sorted(
        ((_seconds(e.get("at"), f"{where}: expect"), e.get("firing") or []) for e in test.get("expect") or []),
        key=lambda c: c[0],
    )
    engine = Engine(rules)
    stage = anomaly(rules) if anomaly is not None else None
    event_rules = {r.name for r in rules if r.event is not None}
    events_fired: list[Any] = []
    i = 0
    for at, wanted in checks:
        while i < len(items) and items[i].ts <= at:
            batch_ts = items[i].ts
            samples, events = [], []
            while i < len(items) and items[i].ts == batch_ts:
                (samples if isinstance(items[i], Sample) else events).append(items[i])
                i += 1
            # one interval, as the daemon and replay run it (Engine.step)
            verdicts = stage.step(batch_ts, samples) if stage is not None else ()
            events_fired += [a for a in engine.step(batch_ts, samples, events, verdicts) if a.rule in event_rules]
        engine.flush(at)
        got = [{"rule": r, "container": c.name, "severity": sev, "summary": s, "value": v}
               for r, c, sev, s, v in engine.firing()]
        got += [{"rule": a.rule, "container": a.container.name, "severity": a.severity,
                 "summary": a.summary, "value": a.value} for a in events_fired if a.ts == at]
        unmatched = list(got)
        missing = []
        for w in wanted:
            hit = next((g for g in unmatched if _matches(w, g)), None)
            if hit is None:
                missing.append(w)
            else:
                unmatched.remove(hit)
        if missing or unmatched:
            lines = [f"at {at:g}s:"]
            lines += [f"  expected, not firing: {_describe(w)}" for w in missing]
            lines += [f"  firing, not expected: {_describe(g)}" for g in unmatched]
            out.failures.append("\n".join(lines))
    return out


def run_file(path: str, out: IO[str] = sys.stdout, anomaly: Any = None) -> tuple[int, int]:
    """Run one test file; returns (tests, failed). Raises TestFileError."""
    from .load import load_rules

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise TestFileError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise TestFileError(f"{path}{at}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list):
        raise TestFileError(f"{path}: a test file is a mapping with rule_files: and tests:")
    files = [str((p.parent / f).resolve()) for f in doc.get("rule_files") or []]
    if not files:
        raise TestFileError(f"{path}: rule_files: names no rule file")
    rules, errors = load_rules(files)
    if errors:
        raise TestFileError("\n".join(e.format() for e in errors))
    failed = 0
    tests = doc["tests"]
    for n, test in enumerate(tests, 1):
        if not isinstance(test, dict):
            raise TestFileError(f"{path}: test {n} is not a mapping")
        where = f"{path}: test {test.get('name', n)!r}"
        result = run_test(rules, test, where, anomaly)
        if result.failures:
            failed += 1
            print(f"FAIL {where}", file=out)
            for f in result.failures:
                print("  " + f.replace("\n", "\n  "), file=out)
    return len(tests), failed


def run_test_files(paths: Iterable[str], out: IO[str] = sys.stdout, err: IO[str] = sys.stderr,
                   anomaly: Any = None) -> int:
    """``cgwatch rules test``: 0 when every test passed, 1 otherwise; ``anomaly`` as for :func:`run_test`."""
    total = failed = 0
    broken = False
    for path in paths:
        try:
            t, f = run_file(path, out, anomaly)
        except TestFileError as e:
            print(str(e), file=err)
            broken = True
            continue
        total += t
        failed += f
    print(f"{total - failed} passed, {failed} failed", file=out)
    return 1 if failed or broken else 0
