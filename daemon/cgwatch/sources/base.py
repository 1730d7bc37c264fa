"""What every source offers, and the counter arithmetic they share.

A source is polled once per interval: ``collect(now, containers)`` returns the
Samples for that interval, as a :class:`~cgwatch.model.Frame` (one row per container). Kernel and cgroupfs counters only grow, so sources
keep the previous reading and report the difference as a per-second rate
(read-then-clear would lose what lands between the read and the clear).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Protocol

from ..model import Container, Event, Frame


class Source(Protocol):
    """One collector, polled every interval."""

    #: short name, used in logs and ``--sources``
    name: str
    #: every metric this source may produce (docs/metrics.md is tested against it)
    metrics: tuple[str, ...]

    def collect(self, now: float, containers: Iterable[Container]) -> Frame:
        """Samples for the interval that ends at ``now`` (Unix seconds)."""
        ...

    def events(self) -> list[Event]:
        """Discrete events that arrived since the last call (may be empty)."""
        ...

    def close(self) -> None:
        """Release kernel objects, file handles; called once."""
        ...


class Rates:
    """Per-second rates from cumulative counters, keyed by anything hashable.

    The first reading of a key gives no rate (there is no interval yet); a
    counter that went backwards (a recreated cgroup, a wrapped counter)
    restarts from the new value instead of reporting a negative rate.

    >>> r = Rates()
    >>> r.rate(("web", "io.read_bytes"), 10.0, 1000) is None
    True
    >>> r.rate(("web", "io.read_bytes"), 12.0, 5000)
    2000.0
    >>> r.rate(("web", "io.read_bytes"), 13.0, 10) is None   # went backwards
    True
    >>> r.forget_except({"db"})      # keys start with the container id
    >>> len(r)
    0
    """

    __slots__ = ("_prev",)

    def __init__(self) -> None:
        self._prev: dict[Hashable, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._prev)

    def rate(self, key: Hashable, now: float, value: float) -> float | None:
        prev = self._prev.get(key)
        self._prev[key] = (now, value)
        if prev is None:
            return None
        dt = now - prev[0]
        dv = value - prev[1]
        if dt <= 0 or dv < 0:
            return None
        return dv / dt

    def delta(self, key: Hashable, value: float) -> float | None:
        """The plain difference from the previous reading (no time base).

        >>> r = Rates()
        >>> r.delta("k", 5), r.delta("k", 8)
        (None, 3.0)
        """
        prev = self._prev.get(key)
        self._prev[key] = (0.0, value)
        if prev is None or value < prev[1]:
            return None
        return float(value - prev[1])

    def forget_except(self, alive: set[str]) -> None:
        """Drop the state of containers that are gone.

        Keys are tuples whose first item is the container id.
        """
        for k in [k for k in self._prev if k[0] not in alive]:  # type: ignore[index]
            del self._prev[k]
