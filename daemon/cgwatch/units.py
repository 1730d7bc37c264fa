"""Durations and sizes as people write them: ``500ms``, ``30s``, ``5m``, ``512MiB``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``1s``, ``500ms``, ``5m``, ``2h`` or ``10``.

    >>> parse_duration("500ms"), parse_duration("5m"), parse_duration("10")
    (0.5, 300.0, 10.0)
    >>> parse_duration("5 parsecs")
    Traceback (most recent call last):
    ...
    ValueError: '5 parsecs' is not a duration (use e.g. 500ms, 30s, 5m, 1h)
    """
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 30s, 5m, 1h)")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def human_bytes(n: float) -> str:
    """A byte count in binary units, three significant digits.

    >>> human_bytes(512), human_bytes(1536), human_bytes(3 * 2**30)
    ('512B', '1.50KiB', '3.00GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.2f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")
