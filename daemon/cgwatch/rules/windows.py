"""The window functions of rule expressions: ``avg min max p50 p95 p99 rate delta total``.

Each takes the ``(ts, value)`` points of one metric inside the window, oldest first (what
:meth:`Context.window <cgwatch.rules.context.Context.window>` returns), and gives a float,
or None where the window holds too little to say (an empty window always; ``rate`` and
``delta`` need two points). NaN values are skipped; a result that is NaN is None.

- ``avg``, ``min``, ``max``: of the values.
- ``p50``, ``p95``, ``p99``: linear interpolation between the two nearest ranks (numpy's
  default method and Prometheus's ``quantile_over_time``): with the n values sorted, the
  q-quantile sits at rank ``(n - 1) * q``.
- ``rate``: per-second increase of a cumulative counter between the first and the last
  point, ``increase / (t_last - t_first)``. A value lower than the one before it is a
  counter reset, as in Prometheus: the counter restarted from 0, so the increase over that
  step is the new value. Unlike Prometheus, nothing is extrapolated to the window's edges.
  Never negative. For gauges, use ``delta``.
- ``delta``: last value minus first value (a gauge's change over the window; may be negative).
- ``total``: for a per-second metric (``proc.exits_nonzero``, ``net.tcp_retransmits``), how
  many happened in the window: each value times the time it covers, the gap since the
  point before it (the first point: the gap after it), but never more than the window's
  typical (median) gap: a value measured over one interval covers one interval, also
  after a pause in the data (a container that was stopped, a daemon restart). The same
  answer at any sampling interval, so ``total(proc.restarts, 5m) >= 3`` means "3 or
  more in 5 minutes". Needs two points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter

Points = Sequence[tuple[float, float]]
_value = itemgetter(1)


def _values(points: Points) -> list[float]:
    return [v for _, v in points if v == v]


def avg(points: Points) -> float | None:
    """Mean of the values.

    Examples:

    >>> avg([(0.0, 1.0), (5.0, 2.0), (10.0, 6.0)]), avg([])
    (3.0, None)
    """
    vs = _values(points)
    if not vs:
        return None
    r = sum(vs) / len(vs)
    return r if r == r else None


def minimum(points: Points) -> float | None:
    """Smallest value.

    Examples:

    >>> minimum([(0.0, 3.0), (5.0, 1.0)]), minimum([])
    (1.0, None)
    """
    vs = _values(points)
    return min(vs) if vs else None


def maximum(points: Points) -> float | None:
    """Largest value.

    Examples:

    >>> maximum([(0.0, 3.0), (5.0, 1.0)]), maximum([])
    (3.0, None)
    """
    vs = _values(points)
    return max(vs) if vs else None


def quantile(points: Points, q: float) -> float | None:
    """The ``q``-quantile (0 <= q <= 1), interpolating linearly between the nearest ranks.

    Examples:

    >>> pts = [(float(t), float(v)) for t, v in enumerate([10, 20, 30, 40, 50])]
    >>> quantile(pts, 0.5), quantile(pts, 0.95), quantile(pts, 0.99), quantile([], 0.5)
    (30.0, 48.0, 49.6, None)
    """
    vs = _values(points)
    if not vs:
        return None
    vs.sort()
    h = (len(vs) - 1) * q
    lo = int(h)
    if lo + 1 >= len(vs):
        return vs[-1]
    r = vs[lo] + (h - lo) * (vs[lo + 1] - vs[lo])
    return r if r == r else None


def rate(points: Points) -> float | None:
    """Per-second increase of a counter; a drop is a reset to 0 (as in Prometheus).

    Examples:

    >>> rate([(0.0, 100.0), (10.0, 150.0), (20.0, 200.0)])
    5.0
    >>> rate([(0.0, 100.0), (10.0, 150.0), (20.0, 30.0)])   # reset: +50, then +30 from 0
    4.0
    >>> rate([(0.0, 1.0)]) is None
    True
    """
    first_t = prev = None
    last_t = 0.0
    increase = 0.0
    for t, v in points:
        if v != v:
            continue
        if prev is None:
            first_t = t
        else:
            increase += v - prev if v >= prev else v
        prev, last_t = v, t
    if first_t is None or last_t <= first_t:
        return None
    r = increase / (last_t - first_t)
    return r if r == r else None


def delta(points: Points) -> float | None:
    """Last value minus first value.

    Examples:

    >>> delta([(0.0, 5.0), (10.0, 3.0), (20.0, 2.0)]), delta([(0.0, 5.0)])
    (-3.0, None)
    """
    n = len(points)
    i, j = 0, n - 1
    while i < n and points[i][1] != points[i][1]:
        i += 1
    while j > i and points[j][1] != points[j][1]:
        j -= 1
    if j <= i:
        return None
    r = points[j][1] - points[i][1]
    return r if r == r else None


def total(points: Points) -> float | None:
    """How many events a per-second metric counted in the window.

    Examples:

    >>> total([(10.0, 0.0), (11.0, 1.0), (12.0, 0.0), (13.0, 2.0)])   # 1 s apart
    3.0
    >>> total([(0.0, 0.5), (5.0, 0.5), (10.0, 0.5)])                  # 5 s apart: 0.5/s for 15 s
    7.5
    >>> total([(0.0, 1.0), (1.0, 0.0), (2.0, 0.0), (62.0, 1.0), (63.0, 0.0)])  # a minute's pause
    2.0
    >>> total([(0.0, 1.0)]) is None
    True
    >>> total([(0.0, 0.0), (1.0, 0.0)]), total([(0.0, 0.0), (0.0, 0.0)]) is None
    (0.0, True)
    """
    if len(points) >= 2 and not any(map(_value, points)):
        # nothing counted (no NaN either: NaN is true): 0 whatever the gaps. The usual case
        # (a crash-loop rule over 300 quiet seconds), and 8x cheaper than the sums below
        return 0.0 if points[-1][0] > points[0][0] else None
    good = [(t, v) for t, v in points if v == v]
    if len(good) < 2 or good[-1][0] <= good[0][0]:
        return None
    gaps = [t1 - t0 for (t0, _), (t1, _) in zip(good, good[1:])]
    typical = sorted(gaps)[(len(gaps) - 1) // 2]
    acc = good[0][1] * min(gaps[0], typical)
    for gap, (_, v) in zip(gaps, good[1:]):
        acc += v * min(gap, typical)
    return acc if acc == acc else None


#: window function name -> implementation
WINDOW: dict[str, Callable[[Points], float | None]] = {
    "avg": avg, "min": minimum, "max": maximum,
    "p50": lambda p: quantile(p, 0.50), "p95": lambda p: quantile(p, 0.95), "p99": lambda p: quantile(p, 0.99),
    "rate": rate, "delta": delta, "total": total,
}
