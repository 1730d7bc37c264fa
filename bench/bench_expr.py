#!/usr/bin/env python3
"""Rule expressions: cgwatch's own compiler next to CEL, on speed and on error messages.

Run from the project's venv::

    .venv/bin/python bench/bench_expr.py [--n 200000] [--repeat 5] [--quick]

CEL is the ``common-expression-language`` package (Rust ``cel`` crate with Python bindings,
``import cel``). It is not a dependency of cgwatch: install it into the venv to compare
(``.venv/bin/pip install common-expression-language``); without it only our figures print.

Method:

* The same representative conditions (thresholds, arithmetic, boolean logic, window
  functions, event filters) are written once in each language and evaluated ``--n`` times
  each against the same data: a :class:`~cgwatch.rules.context.DictContext` with 10 minutes
  of 5-second samples for the windowed metrics. Each figure is the best of ``--repeat``
  rounds; a round runs every variant of a condition once, in shuffled order, so the speed
  jumps of a VM hit all of them alike. Every variant must give the same answer, or the
  script stops. (CEL dict runs n/10 times: it is slow.)
* Rows: **python** is a hand-written function per condition (the same-run baseline: what a
  person would write without an expression language); **ours** is ``compile_expr(...).evaluate``;
  **CEL ctx** runs the compiled CEL program against a ``cel.Context`` built once (CEL's best
  case: in an engine the values change every interval, so a context would have to be rebuilt
  per container and tick); **CEL dict** passes a plain dict, which CEL converts per call.
  CEL has no window functions or units: windows are Python functions registered in the
  context (reading the same DictContext), units are written out as numbers.
* Ratios are of evaluations per second: ours / python (below 1: what the language costs
  over hand-written code) and ours / CEL ctx (above 1: ours is faster). Geometric means
  are printed over the metric conditions (the hot path: every rule, container and
  interval) and over all rows (CEL's ``matches()`` is slow in this binding, which
  dominates the event row).
* Then the error messages both give for the same mistakes, side by side. CEL programs that
  compile are executed against the same data to show what happens at run time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from collections.abc import Callable
from itertools import repeat
from typing import Any

from cgwatch.rules.expr import DictContext, ExprError, compile_expr
from cgwatch.rules.windows import avg, delta, quantile

try:
    import cel
except ImportError:  # pragma: no cover - CEL is optional
    cel = None

NOW = 600.0


def series(f: Callable[[int], float]) -> list[tuple[float, float]]:
    return [(float(t), f(t)) for t in range(5, 601, 5)]


METRICS: dict[str, Any] = {
    "cpu.usage_cores": series(lambda t: 0.55 + (t * 7 % 40) / 100),
    "cpu.runq_latency_p99_ms": series(lambda t: 4.0 + (t * 13 % 30)),
    "mem.usage_bytes": series(lambda t: 4.0e8 + t * 5e5),
    "cpu.limit_cores": 1.0, "mem.limit_bytes": 1e9, "mem.usage_ratio": 0.62,
    "psi.cpu_some": 12.0, "psi.memory_some": 3.5, "anomaly.score": 0.93,
}
FIELDS = {"event.comm": "bash", "event.filename": "/tmp/x.sh", "container.image": "nginx:1.25",
          "container.name": "web-1"}
CTX = DictContext(METRICS, FIELDS)


def _last(m: str) -> float | None:
    return CTX.last(m)


def _w(m: str, s: float) -> Any:
    return CTX.window(m, s, NOW)


# (label, kind, ours, CEL, hand-written Python)
CASES: list[tuple[str, str, str, str, Callable[[Any, float], bool]]] = [
    ("threshold", "metric", "mem.usage_ratio > 0.95", "mem.usage_ratio > 0.95",
     lambda c, n: (v := c.last("mem.usage_ratio")) is not None and v > 0.95),
    ("ratio to limit", "metric", "cpu.usage_cores > 0.9 * cpu.limit_cores", "cpu.usage_cores > 0.9 * cpu.limit_cores",
     lambda c, n: (a := c.last("cpu.usage_cores")) is not None and (b := c.last("cpu.limit_cores")) is not None
     and a > 0.9 * b),
    ("units + arithmetic", "metric", "mem.usage_bytes > 512MiB and mem.limit_bytes - mem.usage_bytes < 64MiB",
     "mem.usage_bytes > 536870912.0 && mem.limit_bytes - mem.usage_bytes < 67108864.0",
     lambda c, n: (a := c.last("mem.usage_bytes")) is not None and a > 536870912.0
     and (b := c.last("mem.limit_bytes")) is not None and b - a < 67108864.0),
    ("or", "metric", "psi.memory_some > 10 or psi.cpu_some > 50", "psi.memory_some > 10.0 || psi.cpu_some > 50.0",
     lambda c, n: ((v := c.last("psi.memory_some")) is not None and v > 10)
     or ((w := c.last("psi.cpu_some")) is not None and w > 50)),
    ("not + and", "metric", "not (anomaly.score < 0.9) and cpu.usage_cores > 0.5",
     "!(anomaly.score < 0.9) && cpu.usage_cores > 0.5",
     lambda c, n: (v := c.last("anomaly.score")) is not None and not v < 0.9
     and (w := c.last("cpu.usage_cores")) is not None and w > 0.5),
    ("avg 5m", "metric", "avg(cpu.usage_cores, 5m) > 0.7", 'avg("cpu.usage_cores", 300.0) > 0.7',
     lambda c, n: bool(w := c.window("cpu.usage_cores", 300.0, n)) and avg(w) > 0.7),  # type: ignore[operator]
    ("p95 10m", "metric", "p95(cpu.runq_latency_p99_ms, 10m) > 20", 'p95("cpu.runq_latency_p99_ms", 600.0) > 20.0',
     lambda c, n: bool(w := c.window("cpu.runq_latency_p99_ms", 600.0, n))
     and quantile(w, 0.95) > 20),  # type: ignore[operator]
    ("delta 10m", "metric", "delta(mem.usage_bytes, 10m) > 100MiB", 'delta("mem.usage_bytes", 600.0) > 104857600.0',
     lambda c, n: (d := delta(c.window("mem.usage_bytes", 600.0, n))) is not None and d > 104857600.0),
    ("event: in + startswith", "event", 'event.comm in ["sh", "bash", "dash"] and not startswith(container.image, "debug")',
     'event.comm in ["sh", "bash", "dash"] && !container.image.startsWith("debug")',
     lambda c, n: c.field("event.comm") in ("sh", "bash", "dash")
     and isinstance(i := c.field("container.image"), str) and not i.startswith("debug")),
    ("event: glob or contains", "event", 'glob(event.filename, "/tmp/*.sh") or contains(event.filename, "/.")',
     'event.filename.matches("^/tmp/.*\\\\.sh$") || event.filename.contains("/.")',
     lambda c, n: isinstance(f := c.field("event.filename"), str)
     and ((f.startswith("/tmp/") and f.endswith(".sh")) or "/." in f)),
]

# (mistake, kind, ours, CEL)
BAD: list[tuple[str, str, str, str]] = [
    ("typo in a function name", "metric", "avgg(cpu.usage_cores, 5m) > 0.8", 'avgg("cpu.usage_cores", 300.0) > 0.8'),
    ("wrong number of arguments", "metric", "avg(cpu.usage_cores) > 0.8", 'avg("cpu.usage_cores") > 0.8'),
    ("window without a unit", "metric", "avg(cpu.usage_cores, 300) > 0.8", 'avg("cpu.usage_cores", 300) > 0.8'),
    ("unknown unit", "metric", "mem.usage_bytes > 5mins", "mem.usage_bytes > 5mins"),
    ("unclosed parenthesis", "metric", "(cpu.usage_cores > 0.9 * cpu.limit_cores",
     "(cpu.usage_cores > 0.9 * cpu.limit_cores"),
    ("trailing garbage", "metric", "cpu.usage_cores > 0.9 0.8", "cpu.usage_cores > 0.9 0.8"),
    ("a string where a number belongs", "metric", 'cpu.usage_cores > "high"', 'cpu.usage_cores > "high"'),
    ("not a condition", "metric", "cpu.usage_cores + 1", "cpu.usage_cores + 1.0"),
    ("the other language's 'and'", "metric", "cpu.usage_cores > 1 && mem.usage_ratio > 0.9",
     "cpu.usage_cores > 1.0 and mem.usage_ratio > 0.9"),
    ("typo in a metric name", "metric", "cpu.usage_core > 0.9", "cpu.usage_core > 0.9"),
    ("typo in a container field", "event", 'container.nmae == "web-1"', 'container.nmae == "web-1"'),
]


def cel_vars() -> dict[str, Any]:
    """The same data as nested maps (CEL reads ``cpu.usage_cores`` as field access)."""
    out: dict[str, Any] = {}
    for name in METRICS:
        head, _, rest = name.partition(".")
        out.setdefault(head, {})[rest] = CTX.last(name)
    for name, v in FIELDS.items():
        head, _, rest = name.partition(".")
        out.setdefault(head, {})[rest] = v
    return out


def cel_functions() -> dict[str, Callable[..., Any]]:
    return {"avg": lambda m, s: avg(_w(m, s)), "p95": lambda m, s: quantile(_w(m, s), 0.95),
            "delta": lambda m, s: delta(_w(m, s))}


def best_rates(variants: dict[str, tuple[Callable[[int], None], int]], rounds: int) -> dict[str, float]:
    """Evaluations/s of each variant, best of ``rounds``; every round runs all variants in turn
    (shuffled), so a change of machine speed during the run hits them alike."""
    best = dict.fromkeys(variants, 0.0)
    names = list(variants)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            run, n = variants[name]
            t0 = time.perf_counter()
            run(n)
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def loop2(f: Callable[[Any, float], Any], a: Any, b: float) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in repeat(None, n):
            f(a, b)
    return run


def loop1(f: Callable[[Any], Any], a: Any) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in repeat(None, n):
            f(a)
    return run


def compile_us(f: Callable[[], Any], n: int = 200) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1e6


def speed(n: int, rounds: int) -> None:
    print(f"Evaluations per second, best of {rounds} x {n:,} (higher is better); "
          f"Python {sys.version.split()[0]}, CEL {'not installed' if cel is None else _cel_version()}\n")
    head = f"{'condition':26s} {'python':>9s} {'ours':>9s} {'CEL ctx':>9s} {'CEL dict':>9s}  " \
           f"{'ours/python':>11s} {'ours/CEL':>8s}  {'compile µs ours / CEL':>21s}"
    print(head)
    print("-" * len(head))
    ratios_py: dict[str, float] = {}
    ratios_cel: dict[str, float] = {}
    for label, kind, ours_text, cel_text, hand in CASES:
        ours = compile_expr(ours_text, kind).evaluate
        expected = hand(CTX, NOW)
        got = ours(CTX, NOW)
        if got != expected:
            raise SystemExit(f"{label}: ours gives {got}, hand-written {expected}")
        variants = {"python": (loop2(hand, CTX, NOW), n), "ours": (loop2(ours, CTX, NOW), n)}
        if cel is not None:
            program = cel.compile(cel_text)
            context = cel.Context(variables=cel_vars(), functions=cel_functions())
            as_dict = {**cel_vars(), **cel_functions()}
            for how, arg in (("ctx", context), ("dict", as_dict)):
                if program.execute(arg) != expected:
                    raise SystemExit(f"{label}: CEL ({how}) gives {program.execute(arg)}, expected {expected}")
            variants["cel ctx"] = (loop1(program.execute, context), n)
            variants["cel dict"] = (loop1(program.execute, as_dict), max(n // 10, 1))
        r = best_rates(variants, rounds)
        c_ours = compile_us(lambda t=ours_text, k=kind: compile_expr(t, k))
        row = f"{label:26s} {r['python']:9,.0f} {r['ours']:9,.0f} "
        ratios_py[kind + label] = r["ours"] / r["python"]
        if cel is None:
            print(row + f"{'-':>9s} {'-':>9s}  {r['ours'] / r['python']:10.2f}x {'-':>8s}  {c_ours:9.1f} / -")
            continue
        c_cel = compile_us(lambda t=cel_text: cel.compile(t))
        ratios_cel[kind + label] = r["ours"] / r["cel ctx"]
        print(row + f"{r['cel ctx']:9,.0f} {r['cel dict']:9,.0f}  {r['ours'] / r['python']:10.2f}x "
                    f"{r['ours'] / r['cel ctx']:7.2f}x  {c_ours:9.1f} / {c_cel:.1f}")
    print()
    for scope in ("metric", ""):
        py = [r for k, r in ratios_py.items() if k.startswith(scope)]
        cl = [r for k, r in ratios_cel.items() if k.startswith(scope)]
        line = f"geometric mean over {'metric conditions' if scope else 'all rows'}: ours / python = {_gmean(py):.2f}"
        print(line + (f", ours / CEL ctx = {_gmean(cl):.2f}" if cl else ""))


def errors() -> None:
    print("\nError messages for the same mistakes (ours: compile time, with the offending span; "
          "CEL: compile time, else what running it against the data does)\n")
    for i, (mistake, kind, ours_text, cel_text) in enumerate(BAD, 1):
        print(f"[{i}] {mistake}")
        print(f"  ours: {ours_text}")
        try:
            compile_expr(ours_text, kind)
            print("        compiles (no error)")
        except ExprError as e:
            pointer = e.pointer(ours_text).splitlines()[1]
            print(f"        {pointer} {e}  (offset {e.offset}, length {e.length})")
        if cel is not None:
            print(f"  CEL : {cel_text}")
            print("        " + _cel_outcome(cel_text).replace("\n", "\n        "))
        print()


def _cel_outcome(text: str) -> str:
    try:
        program = cel.compile(text)
    except Exception as e:  # noqa: BLE001 - we show whatever CEL raises
        return f"compile error: {type(e).__name__}: {e}"
    context = cel.Context(variables=cel_vars(), functions=cel_functions())
    try:
        with _quiet_stderr():
            result = program.execute(context)
    except Exception as e:  # noqa: BLE001
        return f"compiles; at run time: {type(e).__name__}: {e}"
    return f"compiles and runs without error; result: {result!r}"


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """CEL's Rust side prints failing Python callbacks to fd 2; the exception says it all."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _cel_version() -> str:
    from importlib.metadata import version
    return f"common-expression-language {version('common-expression-language')}"


def _gmean(xs: list[float]) -> float:
    prod = 1.0
    for x in xs:
        prod *= x
    return prod ** (1 / len(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="evaluations per condition and variant")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; each variant's best round counts")
    ap.add_argument("--quick", action="store_true", help="--n 20000 --repeat 1")
    args = ap.parse_args()
    n, rounds = (20_000, 1) if args.quick else (args.n, args.repeat)
    speed(n, rounds)
    errors()


if __name__ == "__main__":
    main()
