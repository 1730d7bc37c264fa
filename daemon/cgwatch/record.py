"""Recordings: the JSON Lines of DESIGN.md, one Sample or Event a line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO

from .model import Event, Sample


def record_line(item: Sample | Event) -> str:
    """One recording line (no newline), compact and with keys in DESIGN.md order.

    >>> from cgwatch.model import HOST
    >>> record_line(Sample(1.5, HOST, "cpu.usage_cores", 0.25))
    '{"ts":1.5,"container":"host","metric":"cpu.usage_cores","value":0.25,"id":"host","runtime":"host"}'
    """
    return json.dumps(item.to_json(), separators=(",", ":"), ensure_ascii=False)


def merge(samples: Iterable[Sample], events: Iterable[Event]) -> list[Sample | Event]:
    """Samples and events of one interval in ``ts`` order (events first on ties).

    >>> from cgwatch.model import HOST
    >>> [type(x).__name__ for x in merge([Sample(2.0, HOST, "m", 1)], [Event(1.0, HOST, "exec")])]
    ['Event', 'Sample']
    """
    items: list[Sample | Event] = [*events, *samples]
    items.sort(key=lambda x: x.ts)   # stable: an event stays before a sample of equal ts
    return items


def write_interval(out: IO[str], samples: Iterable[Sample], events: Iterable[Event]) -> int:
    """Write one interval's lines; returns how many were written."""
    n = 0
    for item in merge(samples, events):
        out.write(record_line(item))
        out.write("\n")
        n += 1
    out.flush()
    return n
