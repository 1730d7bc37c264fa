"""What evaluating an expression reads: the :class:`Context` protocol, and a dict-backed one.

The engine implements :class:`Context` over its per-container series and events;
:class:`DictContext` serves tests, documentation examples and benchmarks.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Protocol


class Context(Protocol):
    """The data one evaluation sees.

    - ``last(metric)``: the metric's current value, or None where it has none (absent,
      stale). NaN counts as no value.
    - ``window(metric, seconds, now)``: the ``(ts, value)`` points with
      ``now - seconds < ts <= now``, oldest first; empty where there are none.
    - ``quiet(metric, seconds, now)``: True only when that window has two or more
      points over some time, every one 0 (``total`` is then 0 without reading it);
      False whenever that is not known cheaply.
    - ``field(name)``: an event rule's field (``"event.comm"``, ``"container.name"``),
      or None where the event or container has no such field.
    """

    def last(self, metric: str) -> float | None: ...

    def window(self, metric: str, seconds: float, now: float) -> Sequence[tuple[float, float]]: ...

    def quiet(self, metric: str, seconds: float, now: float) -> bool: ...

    def field(self, name: str) -> object | None: ...


class DictContext:
    """A :class:`Context` over plain dicts.

    ``metrics`` maps a metric either to its current value or to its points
    ``[(ts, value), ...]`` in time order (the current value is then the last point's);
    ``fields`` maps event and container field names to values.

    Examples:

    >>> ctx = DictContext({"cpu.usage_cores": [(0.0, 0.5), (10.0, 0.7)], "mem.usage_ratio": 0.4},
    ...                   {"event.comm": "sh"})
    >>> ctx.last("cpu.usage_cores"), ctx.last("mem.usage_ratio"), ctx.last("psi.cpu_some")
    (0.7, 0.4, None)
    >>> ctx.window("cpu.usage_cores", 5.0, now=10.0), ctx.field("event.comm")
    ([(10.0, 0.7)], 'sh')
    """

    __slots__ = ("_last", "_points", "_times", "_fields")

    def __init__(self, metrics: Mapping[str, float | Sequence[tuple[float, float]]] | None = None,
                 fields: Mapping[str, object] | None = None) -> None:
        self._last: dict[str, float] = {}
        self._points: dict[str, list[tuple[float, float]]] = {}
        self._times: dict[str, list[float]] = {}
        for name, data in (metrics or {}).items():
            if isinstance(data, (int, float)):
                self._last[name] = float(data)
            elif data:
                points = [(float(t), float(v)) for t, v in data]
                self._points[name] = points
                self._times[name] = [t for t, _ in points]
                self._last[name] = points[-1][1]
        self._fields = dict(fields or {})

    def last(self, metric: str) -> float | None:
        """The metric's current value, or None.

        Examples:

        >>> DictContext({"a.b": 1.5}).last("a.b"), DictContext().last("a.b")
        (1.5, None)
        """
        return self._last.get(metric)

    def window(self, metric: str, seconds: float, now: float) -> Sequence[tuple[float, float]]:
        """Points with ``now - seconds < ts <= now``, oldest first.

        Examples:

        >>> DictContext({"a.b": [(0.0, 1.0), (5.0, 2.0), (9.0, 3.0)]}).window("a.b", 5.0, now=9.0)
        [(5.0, 2.0), (9.0, 3.0)]
        """
        times = self._times.get(metric)
        if not times:
            return ()
        return self._points[metric][bisect_right(times, now - seconds) : bisect_right(times, now)]

    def quiet(self, metric: str, seconds: float, now: float) -> bool:
        """Never known here without reading the window.

        >>> DictContext({"a.b": [(0.0, 0.0), (5.0, 0.0)]}).quiet("a.b", 10.0, now=5.0)
        False
        """
        return False

    def field(self, name: str) -> object | None:
        """An event or container field, or None.

        Examples:

        >>> DictContext(fields={"container.name": "web-1"}).field("container.name")
        'web-1'
        """
        return self._fields.get(name)
