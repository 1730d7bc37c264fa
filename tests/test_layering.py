"""The flow goes one way: a stage imports earlier stages, never a later one
(STYLE.md, "cgwatch in one picture"). Only cli.py sees everything."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "daemon" / "cgwatch"

# earlier first; a module's stage is its first path component under cgwatch/
STAGES = ["model", "units", "sources", "identity", "collect", "profile", "record", "top", "forecast", "anomaly", "rules",
          "alerts", "sinks", "config", "web", "report", "daemon", "cli_notify", "cli_profile", "cli", "__main__"]


def stage_of(module: str) -> int:
    first = module.split(".")[0]
    return STAGES.index(first)


def imports(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    pkg = module.rpartition(".")[0] if path.name != "__init__.py" else module
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(p for p in [*base, node.module or ""] if p)
                names = [target] if node.module else [f"{target}.{a.name}" if target else a.name for a in node.names]
            elif (node.module or "").startswith("cgwatch."):
                names = [node.module[len("cgwatch."):]]
            else:
                continue
            out += [n.removeprefix(".") for n in names]
        elif isinstance(node, ast.Import):
            out += [a.name[len("cgwatch."):] for a in node.names if a.name.startswith("cgwatch.")]
    return [n for n in out if n]


def test_no_stage_imports_a_later_one():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if not module:
            continue
        for target in imports(path, module):
            if target.split(".")[0] in STAGES and stage_of(target) > stage_of(module):
                bad.append(f"{module} imports {target}")
    assert bad == []


def test_the_rules_engine_reads_anomaly_verdicts_not_models():
    """The anomaly stage scores the models before the engine (issue 16): the engine and the rule
    tests get verdicts (cgwatch.model.Verdict), never a model. Only the rule loader reads the
    anomaly package, to check at load what model a rule names."""
    for name in ("engine", "testing"):
        path = PKG / "rules" / f"{name}.py"
        assert [t for t in imports(path, f"rules.{name}") if t.startswith("anomaly")] == [], name
