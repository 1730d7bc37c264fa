"""``cgwatch rules check FILE|DIR...``: validate rule files like a compiler would.

Every error goes to ``err`` as ``FILE:LINE:COL: message``, the source line and
a caret line, then a count; each file without errors gets one line on
``out``. The exit code is 1 if anything was wrong, 0 otherwise.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import IO

from ..forecast import METRICS as FORECASTS
from .load import Rule, load

#: metrics that come from cgwatch itself rather than a source
DERIVED_METRICS = frozenset({"anomaly.score", *FORECASTS})


def unknown_metric_warnings(rules: Sequence[Rule]) -> list[str]:
    """Warnings for metrics that no source collects: a typo reads as "no
    data" forever, and a rule that can never fire is worse than an error.

    >>> from cgwatch.rules.expr import compile_expr
    >>> r = Rule("hot", "warning", expr=compile_expr("cpu.usage_core > 1"), file="r.yaml", line=3)
    >>> unknown_metric_warnings([r])
    ["r.yaml:3: warning: rule 'hot' reads cpu.usage_core, which no source collects (did you mean cpu.usage_cores?)"]
    """
    from difflib import get_close_matches

    from ..collect import all_metrics

    known = set(all_metrics()) | DERIVED_METRICS
    out = []
    for r in rules:
        for m in sorted(r.expr.metrics if r.expr is not None else ()):
            if m not in known:
                near = get_close_matches(m, sorted(known), n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                out.append(f"{r.file}:{r.line}: warning: rule '{r.name}' reads {m}, which no source collects{hint}")
    return out


def check(paths: Sequence[str | os.PathLike[str]], out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Check rule files and directories; 0 if all are valid, 1 otherwise.

    ``out`` and ``err`` default to sys.stdout and sys.stderr as they are at
    the call (so redirections made after import are honoured).

    Examples:

    >>> import io, pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     ok, bad = pathlib.Path(d, "ok.yaml"), pathlib.Path(d, "bad.yaml")
    ...     _ = ok.write_text("rules:\\n  - {name: oom, event: oom_kill, severity: critical}\\n")
    ...     _ = bad.write_text("rules:\\n  - {name: oom, event: oom, severity: critical}\\n")
    ...     out = io.StringIO()
    ...     codes = check([ok], out), check([bad], out, out)
    ...     text = out.getvalue().replace(d + "/", "")
    >>> codes
    (0, 1)
    >>> print(text)
    ok.yaml: 1 rule OK
    bad.yaml:2:24: event must be one of exec, exit, oom_kill, signal, container_start, container_stop, neighbours, got 'oom'
      - {name: oom, event: oom, severity: critical}
                           ^~~
    1 error in 1 file
    <BLANKLINE>
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if not paths:
        print("no rule files or directories given", file=err)
        return 1
    got = load(paths)
    for e in got.errors:
        print(e.format(), file=err)
    for line in unknown_metric_warnings(got.rules):
        print(line, file=err)
    bad = {e.file for e in got.errors}
    rules = Counter(r.file for r in got.rules)
    disabled = Counter(r.file for r in got.rules if not r.enabled)
    for f in got.files:
        if f not in bad:
            n, off = rules[f], disabled[f]
            print(f"{f}: {n} rule{'' if n == 1 else 's'} OK" + (f" ({off} disabled)" if off else ""), file=out)
    if got.errors:
        n, m = len(got.errors), len(bad)
        print(f"{n} error{'' if n == 1 else 's'} in {m} file{'' if m == 1 else 's'}", file=err)
        return 1
    return 0
