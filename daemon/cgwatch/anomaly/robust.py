"""Robust running statistics: a bounded rolling median/MAD and the score squash.

:class:`RollingMedian` keeps the last ``n`` values (and their absolute
deviations from the median at the time each arrived) in a ring and a sorted
list, so median and MAD are exact over the window and memory is bounded. A
window in samples is the same "memory" at 1 s live and at minutes in a
recording; only the wall-clock span differs.

Examples
--------
>>> r = RollingMedian(5)
>>> for x in [1, 2, 3, 4, 100]:
...     r.add(x)
>>> r.median(), round(r.scale(), 3)
(3.0, 1.483)
>>> round(squash(3.0), 2), round(squash(10.0), 4)
(0.5, 0.9995)
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
from typing import Any

from cgwatch.anomaly.base import _finite, finite_list

_LN2 = math.log(2.0)

#: 1.4826 * MAD estimates a normal distribution's standard deviation.
MAD_TO_SIGMA = 1.4826
#: sqrt(pi / 2) * mean absolute deviation estimates it too (the fallback when MAD is 0).
MEANAD_TO_SIGMA = 1.2533


def squash(z: float, half: float = 3.0) -> float:
    """Map a distance ``z >= 0`` in robust sigmas to a score in ``[0, 1)``.

    ``1 - 2 ** -((z / half) ** 2)``: ``z = half`` scores 0.5, ``2 * half`` 0.94,
    10 sigma 0.9995; monotone, and ``inf`` scores 1.

    >>> squash(0.0), squash(3.0), squash(float("inf"))
    (0.0, 0.5, 1.0)
    """
    q = z / half
    return 1.0 - math.exp(-_LN2 * q * q)


def robust_eps(reference: float) -> float:
    """The smallest scale worth dividing by near ``reference`` (float noise is not signal).

    >>> robust_eps(0.0), robust_eps(1e6)
    (1e-09, 1.000000001)
    """
    return 1e-9 + 1e-6 * abs(reference)


class LogScale:
    """``log(x + c)``, ``c`` 1 % of the series' long-run mean, while the series has never been negative.

    Container metrics are rates, bytes and latencies: non-negative and multiplicative, so on
    this scale a doubling means the same at any level. The long-run mean is a plain average
    for the first 500 values, then exponential. A negative value means the series is not of
    that kind: the caller sets ``on`` to False (and starts its windows over) before passing it.

    >>> sc = LogScale()
    >>> round(sc(100.0, 0), 3), round(sc.back(sc(100.0, 1)), 3)
    (4.615, 100.0)
    >>> sc.on = False; sc(-5.0, 2)
    -5.0
    """

    __slots__ = ("on", "mean")

    OFFSET = 0.01
    MEAN_SAMPLES = 500.0

    def __init__(self, on: bool = True) -> None:
        self.on = on
        self.mean: float | None = None

    def __call__(self, x: float, seen: int) -> float:
        """``x`` on this scale; ``seen`` is how many values came before it."""
        if not self.on:
            return x
        m = self.mean
        m = self.mean = x if m is None else m + (x - m) * (1.0 / min(seen + 1, self.MEAN_SAMPLES))
        return math.log(x + self.OFFSET * m + 1e-12)

    def back(self, y: float) -> float:
        """A value on this scale back on the series' own (never below 0 while ``on``)."""
        if not self.on:
            return y
        return max(0.0, math.exp(y) - self.OFFSET * (self.mean or 0.0) - 1e-12)


class RollingMedian:
    """Exact median and MAD over the last ``n`` values.

    The MAD is taken over each value's distance from the median when it
    arrived, which is what a streaming MAD can know; where more than half the
    window is one value (MAD 0) the scale falls back to the mean absolute
    deviation, so a mostly-flat series with blips still has a usable scale.

    >>> r = RollingMedian(3)
    >>> for x in [5.0, 5.0, 5.0, 9.0]:
    ...     r.add(x)
    >>> r.median(), round(r.scale(), 3)
    (5.0, 1.671)
    """

    __slots__ = ("n", "trim", "_ring", "_sorted", "_devs", "_devs_sorted", "_sq", "_pushes")

    def __init__(self, n: int = 256, trim: float | None = None) -> None:
        if int(n) < 1:
            raise ValueError(f"window must be at least 1, not {n}")
        if trim is not None and not 0.0 <= float(trim) < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), not {trim}")
        self.n = int(n)
        self.trim = None if trim is None else float(trim)
        self._sq = 0.0       # sum of the squared deviations in the window
        self._pushes = 0
        # unboxed doubles: a window of 256 costs 2 KB per array, not 8 KB of float objects
        self._ring = _Ring(self.n)
        self._sorted = array("d")
        self._devs = _Ring(self.n)
        self._devs_sorted = array("d")

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, x: float) -> None:
        """Add one value, dropping the oldest past ``n``.

        >>> r = RollingMedian(2)
        >>> r.add(1.0); r.add(2.0); r.add(3.0)
        >>> len(r), r.median()
        (2, 3.0)
        """
        dev = abs(x - self.median()) if self._ring else 0.0
        _push(self._ring, self._sorted, x, self.n)
        old = _push(self._devs, self._devs_sorted, dev, self.n)
        if self.trim is not None:
            self._pushes += 1
            if self._pushes % self.n == 0:   # recount now and then: no drift from float rounding
                self._sq = math.fsum(d * d for d in self._devs.buf)
            else:
                self._sq += dev * dev - (0.0 if old is None else old * old)

    def median(self) -> float:
        """The upper median of the window (0.0 when empty).

        >>> RollingMedian().median()
        0.0
        """
        s = self._sorted
        return s[len(s) // 2] if s else 0.0

    def scale(self) -> float:
        """A robust standard deviation: 1.4826 x MAD, else 1.2533 x mean absolute deviation.

        With ``trim``, never less than the root mean square of the deviations
        once the largest ``trim`` share of them is left out: where the tails
        are heavier than a normal's, the scale widens to what the series
        really does, so its everyday excursions are not news, while the few
        most extreme values (the anomalies) still cannot inflate it.

        >>> RollingMedian().scale()
        0.0
        >>> r, t = RollingMedian(100), RollingMedian(100, trim=0.01)
        >>> for i in range(100):
        ...     x = 50.0 if i % 10 == 0 else float(i % 3)   # every tenth value far out
        ...     r.add(x); t.add(x)
        >>> round(r.scale(), 2), round(t.scale(), 2)
        (1.48, 15.56)
        """
        d = self._devs_sorted
        if not d:
            return 0.0
        mad = d[len(d) // 2]
        base = MAD_TO_SIGMA * mad if mad > 0.0 else MEANAD_TO_SIGMA * math.fsum(d) / len(d)
        if self.trim is None:
            return base
        cut = int(self.trim * len(d))
        sq = self._sq - math.fsum(x * x for x in d[len(d) - cut:]) if cut else self._sq
        return max(base, math.sqrt(max(sq, 0.0) / (len(d) - cut)))

    def z(self, x: float) -> float:
        """Signed distance of ``x`` from the median in robust sigmas (scale floored by :func:`robust_eps`).

        >>> r = RollingMedian()
        >>> for x in [1.0, 2.0, 3.0]:
        ...     r.add(x)
        >>> round(r.z(5.0), 2)
        2.02
        """
        med = self.median()
        return (x - med) / max(self.scale(), robust_eps(med))

    def state(self) -> dict[str, Any]:
        """JSON-serialisable window contents.

        >>> r = RollingMedian(4); r.add(1.0)
        >>> r.state()
        {'n': 4, 'trim': None, 'values': [1.0], 'devs': [0.0]}
        """
        out: dict[str, Any] = {"n": self.n, "trim": self.trim, "values": self._ring.ordered(),
                               "devs": self._devs.ordered()}
        if self.trim is not None:
            out["sq"], out["pushes"] = self._sq, self._pushes
        return out

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> RollingMedian:
        """Rebuild from :meth:`state`; ValueError on a bad state.

        >>> RollingMedian.from_state({"n": 4, "values": [1.0], "devs": [0.0]}).median()
        1.0
        """
        n = d["n"]
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"window must be an int, not {n!r}")
        trim = d.get("trim")
        r = cls(n, None if trim is None else _finite(trim))
        values = finite_list(d["values"], r.n)
        devs = finite_list(d["devs"], r.n)
        if len(values) != len(devs) or any(x < 0 for x in devs):
            raise ValueError("window values and deviations do not match")
        for x in values:
            r._ring.push(x)
        r._sorted = array("d", sorted(values))
        for x in devs:
            r._devs.push(x)
        r._devs_sorted = array("d", sorted(devs))
        if r.trim is not None:
            r._sq = _finite(d["sq"])
            r._pushes = d["pushes"]
            if r._sq < 0 or isinstance(r._pushes, bool) or not isinstance(r._pushes, int) or r._pushes < 0:
                raise ValueError("bad window sums")
        return r


class _Ring:
    """The last ``n`` values in arrival order, in a fixed array of doubles.

    >>> r = _Ring(2)
    >>> [r.push(x) for x in (1.0, 2.0, 3.0)], r.ordered(), len(r)
    ([None, None, 1.0], [2.0, 3.0], 2)
    """

    __slots__ = ("n", "buf", "head")

    def __init__(self, n: int) -> None:
        self.n = n
        self.buf = array("d")
        self.head = 0

    def __len__(self) -> int:
        return len(self.buf)

    def push(self, x: float) -> float | None:
        """Add ``x``; return the value it pushed out, if the ring was full."""
        buf = self.buf
        if len(buf) < self.n:
            buf.append(x)
            return None
        old = buf[self.head]
        buf[self.head] = x
        self.head = (self.head + 1) % self.n
        return old

    def ordered(self) -> list[float]:
        """Oldest first."""
        b = self.buf.tolist()
        return b[self.head:] + b[:self.head]


def _push(ring: _Ring, ordered: array[float], x: float, n: int) -> float | None:
    """Add ``x`` to the window and its sorted copy; return the value that fell out, if one did."""
    old = ring.push(x)
    insort(ordered, x)
    if old is not None:
        del ordered[bisect_left(ordered, old)]
    return old
