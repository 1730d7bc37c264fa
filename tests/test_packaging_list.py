"""Every package in daemon/cgwatch is in pyproject's list, so a non-editable
install (`make install`) ships all of it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"cgwatch." + ".".join(p.parent.relative_to(ROOT / "daemon" / "cgwatch").parts)
             for p in (ROOT / "daemon" / "cgwatch").rglob("__init__.py")}
    found = {f.rstrip(".") for f in found}
    assert found - listed == set()
