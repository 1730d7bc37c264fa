"""The docs describe what the code does: every metric a source (or the forecast) declares
is in docs/metrics.md's catalogue, and nothing there is undeclared."""

from __future__ import annotations

import re
from pathlib import Path

from cgwatch.collect import all_metrics
from cgwatch.forecast import METRICS as FORECASTS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def documented_metrics() -> set[str]:
    text = (DOCS / "metrics.md").read_text()
    table = text.split("## Metric catalogue", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names.update(re.findall(r"`([a-z0-9_.]+)`", first))
    return names


def test_every_declared_metric_is_documented_and_back():
    declared = set(all_metrics()) | set(FORECASTS)
    documented = documented_metrics()
    assert declared - documented == set(), "declared but not in docs/metrics.md"
    assert documented - declared == set(), "in docs/metrics.md but no source declares it"


def test_readme_names_the_two_commands():
    readme = (DOCS.parent / "README.md").read_text()
    assert "sudo make run" in readme and "sudo make test" in readme
