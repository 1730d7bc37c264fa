"""Recordings: the JSON Lines of DESIGN.md, one Sample or Event a line.

A line is refused (:class:`RecordingError` for ``replay``, skipped and counted for
``report``) when it is not what DESIGN.md says: not JSON, a ``ts`` that is not Unix
seconds between 0 and the year 9999 (``1e20``, ``Infinity`` and ``NaN`` are not), a
list or an object where ``id``, ``image``, ``runtime``, ``pod``, ``qos`` or a label's
value should be a string, and so on. A reader keeps at most :data:`MAX_CONTAINERS`
distinct containers (workloads): lines of containers beyond the first that many are
dropped, said in one line, so that a file of a million containers cannot take the
machine's memory.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from .model import Alert, Container, Event, Sample

log = logging.getLogger("cgwatch")

#: the latest ``ts`` a recording may hold: 9999-12-31T23:59:59Z (later ones are typing
#: mistakes, and from 2**53 on a second is no longer a float's step: windows would break)
MAX_TS = 253_402_300_799.0
#: distinct containers (workloads) a replay or report keeps; lines of further ones are dropped
MAX_CONTAINERS = 10_000
#: Container objects shared between lines; forgotten (and made again) past this many
_CACHE_MAX = 4096
#: identity keys of a line that are strings (a number is taken as its text)
_IDENTITY = ("id", "image", "runtime", "pod", "qos")


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
    for key in _IDENTITY:
        if isinstance(obj.get(key), (list, dict)):
            raise ValueError(f'"{key}" must be a string, not {"a list" if isinstance(obj[key], list) else "an object"}')
    labels = obj.get("labels") or {}
    for k, v in labels.items():
        if isinstance(v, (list, dict)):
            raise ValueError(f'"labels" values must be strings ("{k[:64]}" is {"a list" if isinstance(v, list) else "an object"})')
    key = (name, obj.get("id"), obj.get("image"), obj.get("runtime"), tuple(sorted(labels.items())),
           obj.get("pod"), obj.get("qos"))
    c = cache.get(key)
    if c is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
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
    except (ValueError, RecursionError):     # an integer of thousands of digits; nesting too deep
        raise ValueError("not JSON that can be read (a number too long or nesting too deep)") from None
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts != ts:
        raise ValueError('"ts" must be a number (Unix seconds)')
    if not 0 <= ts <= MAX_TS:      # a compare, not float(): an int of 400 digits does not fit one
        shown = f"{ts:g}" if isinstance(ts, float) else (str(ts) if ts.bit_length() < 64 else "(a huge integer)")
        raise ValueError(f'"ts" {shown} is not Unix seconds between 0 and {MAX_TS:.0f} (the year 9999)')
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
        if isinstance(value, int) and abs(value) > 1e308:
            raise ValueError('"value" is too large for a float')
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
                   on_error: Callable[[int, str], None] | None = None,
                   max_containers: int = MAX_CONTAINERS) -> Iterator[Sample | Event]:
    """The Samples and Events of a JSONL recording, in order (gzip-compressed when the
    name ends in ``.gz``).

    Raises RecordingError("FILE:LINE: problem") at the first bad line: a
    replay of a damaged file would give alerts nobody could trust. With
    ``on_error``, a bad line (not JSON, not a Sample or Event, not UTF-8, out
    of order) is instead passed to ``on_error(line_number, reason)`` and
    skipped, and a compressed file cut short ends there, said the same way;
    a file that cannot be opened still raises.

    Only the first ``max_containers`` distinct containers (workloads) are kept:
    a line of any further one is dropped, and passed to ``on_error`` if given;
    without it, one warning says so when it first happens and one at the end
    says how many lines were dropped.

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
    kept: set[str] = set()
    dropped = 0
    last = float("-inf")
    try:
        # tolerant: undecodable bytes become surrogates, found per line below
        f = (gzip.open if str(path).endswith(".gz") else open)(
            path, "rt", encoding="utf-8", errors="surrogateescape" if on_error else "strict")
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
                w = item.container.workload
                if w not in kept:
                    if len(kept) >= max_containers:
                        dropped += 1
                        why = f"container '{item.container.name[:200]}' dropped: beyond the first {max_containers}"
                        if on_error is not None:
                            on_error(n, why)
                        elif dropped == 1:
                            log.warning("%s:%d: %s containers; only the first %d containers of a recording are "
                                        "kept, lines of any further one are dropped", path, n, why, max_containers)
                        continue
                    kept.add(w)
                yield item
        except UnicodeDecodeError:
            raise RecordingError(f"{path}:{n + 1}: not UTF-8 text") from None
        except (EOFError, OSError, zlib.error) as e:      # a gzip file cut short or damaged
            if on_error is None:
                raise RecordingError(f"{path}:{n + 1}: cannot read: {e}") from None
            on_error(n + 1, f"cannot read this line or any after it: {e}")
        if dropped and on_error is None:
            log.warning("%s: %d lines of containers beyond the first %d were dropped", path, dropped,
                        max_containers)
