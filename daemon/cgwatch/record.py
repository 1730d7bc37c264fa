"""Recordings: the JSON Lines of DESIGN.md, one Sample or Event a line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from .model import Alert, Container, Event, Sample


def record_line(item: Sample | Event | Alert) -> str:
    """One JSON line (no newline) of a recording or of alerts, compact, keys in DESIGN.md order.

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


class RecordingError(ValueError):
    """A recording line that cannot be read; the message names FILE:LINE."""


def _container(obj: dict[str, Any], cache: dict[tuple[Any, ...], Container]) -> Container:
    name = obj["container"]
    labels = obj.get("labels") or {}
    key = (name, obj.get("id"), obj.get("image"), obj.get("runtime"), tuple(sorted(labels.items())),
           obj.get("pod"), obj.get("qos"))
    c = cache.get(key)
    if c is None:
        c = cache[key] = Container(
            id=str(obj.get("id") or name), name=name, runtime=str(obj.get("runtime") or ""),
            image=str(obj.get("image") or ""), labels={str(k): str(v) for k, v in labels.items()},
            pod=str(obj.get("pod") or ""), qos=str(obj.get("qos") or ""),
        )
    return c


def parse_line(text: str, cache: dict[tuple[Any, ...], Container]) -> Sample | Event:
    """One recording line as a Sample or an Event; ValueError says what is wrong.

    >>> parse_line('{"ts": 1.0, "container": "web", "metric": "cpu.usage_cores", "value": 0.5}', {})
    Sample(ts=1.0, container=Container(id='web', name='web', runtime='', image='', labels={}, cgroup='', pod='', qos=''), metric='cpu.usage_cores', value=0.5)
    >>> parse_line('{"ts": 1.0, "container": "web", "metric": "m"}', {})
    Traceback (most recent call last):
    ...
    ValueError: a sample needs a numeric "value"
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts != ts:
        raise ValueError('"ts" must be a number (Unix seconds)')
    if not isinstance(obj.get("container"), str) or not obj["container"]:
        raise ValueError('"container" must be a non-empty string')
    labels = obj.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise ValueError('"labels" must be an object')
    c = _container(obj, cache)
    if "metric" in obj:
        value = obj.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError('a sample needs a numeric "value"')
        if not isinstance(obj["metric"], str) or not obj["metric"]:
            raise ValueError('"metric" must be a non-empty string')
        return Sample(float(ts), c, obj["metric"], float(value))
    if "event" in obj:
        fields = obj.get("fields") or {}
        if not isinstance(obj["event"], str) or not isinstance(fields, dict):
            raise ValueError('an event needs a string "event" and an object "fields"')
        return Event(float(ts), c, obj["event"], fields)
    raise ValueError('a line needs "metric" (a sample) or "event" (an event)')


def read_recording(path: str, out_of_order_slack: float = 0.0,
                   on_error: Callable[[int, str], None] | None = None) -> Iterator[Sample | Event]:
    """The Samples and Events of a JSONL recording, in order.

    Raises RecordingError("FILE:LINE: problem") at the first bad line: a
    replay of a damaged file would give alerts nobody could trust. With
    ``on_error``, a bad line (not JSON, not a Sample or Event, not UTF-8, out
    of order) is instead passed to ``on_error(line_number, reason)`` and
    skipped; a file that cannot be opened still raises.

    >>> import os, tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write('{"ts": 1, "container": "a", "metric": "m", "value": 1}\\ngarbage\\n')
    >>> bad = []
    >>> [x.value for x in read_recording(f.name, on_error=lambda n, why: bad.append((n, why)))]
    [1.0]
    >>> bad
    [(2, 'not JSON (Expecting value at column 1)')]
    >>> os.unlink(f.name)
    """
    cache: dict[tuple[Any, ...], Container] = {}
    last = float("-inf")
    try:
        # tolerant: undecodable bytes become surrogates, found per line below
        f = open(path, encoding="utf-8", errors="surrogateescape" if on_error else "strict")
    except OSError as e:
        raise RecordingError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        n = 0
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    if on_error is not None and not line.isascii():
                        try:
                            line.encode("utf-8")
                        except UnicodeEncodeError:
                            raise ValueError("not UTF-8 text") from None
                    item = parse_line(line, cache)
                    if item.ts < last - out_of_order_slack:
                        raise ValueError(f"ts {item.ts} is before the previous line's {last}; "
                                         "a recording must be ordered by ts")
                except ValueError as e:
                    if on_error is None:
                        raise RecordingError(f"{path}:{n}: {e}") from None
                    on_error(n, str(e))
                    continue
                last = max(last, item.ts)
                yield item
        except UnicodeDecodeError:
            raise RecordingError(f"{path}:{n + 1}: not UTF-8 text") from None
