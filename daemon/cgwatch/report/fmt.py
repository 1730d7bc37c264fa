"""Units and number formatting shared by the HTML and Markdown reports (docs/metrics.md)."""

from __future__ import annotations

import math
import time

from ..units import human_bytes

#: unit of each catalogued metric, as docs/metrics.md gives it
UNITS = {
    "cpu.usage_cores": "cores", "cpu.cgroup_usage_cores": "cores", "cpu.limit_cores": "cores",
    "cpu.ctx_switches": "1/s", "cpu.involuntary_ctx_switches": "1/s",
    "cpu.runq_latency_avg_ms": "ms", "cpu.runq_latency_p99_ms": "ms", "cpu.throttled_ratio": "0–1",
    "mem.usage_bytes": "bytes", "mem.limit_bytes": "bytes", "mem.usage_ratio": "0–1",
    "mem.page_faults": "1/s", "mem.major_faults": "1/s", "mem.oom_kills": "1/s",
    "proc.forks": "1/s", "proc.execs": "1/s", "proc.exits_nonzero": "1/s", "proc.count": "tasks",
    "io.read_bytes": "bytes/s", "io.write_bytes": "bytes/s", "net.rx_bytes": "bytes/s", "net.tx_bytes": "bytes/s",
    "net.tcp_retransmits": "1/s", "psi.cpu_some": "%", "psi.memory_some": "%", "psi.io_some": "%",
}


def unit_of(metric: str) -> str:
    """The unit of a metric ("" when it is not in the catalogue).

    >>> unit_of("mem.usage_bytes"), unit_of("net.rx_bytes"), unit_of("my.metric")
    ('bytes', 'bytes/s', '')
    """
    return UNITS.get(metric, "")


def number(v: float | None) -> str:
    """A plain number for a table: 4 significant digits, no exponent below 10^15.

    >>> number(49.5), number(94.05000001), number(1234567.0), number(0.000123), number(None)
    ('49.5', '94.05', '1234567', '0.000123', '–')
    """
    if v is None or not math.isfinite(v):
        return "–"
    if abs(v) >= 1e4 and abs(v) < 1e15:
        return f"{v:.0f}"
    return f"{v:.4g}"


def value(v: float | None, metric: str) -> str:
    """A metric's value with its unit, bytes in binary units.

    >>> value(3 * 2**30, "mem.usage_bytes"), value(2048, "net.tx_bytes"), value(0.5, "cpu.usage_cores")
    ('3.00GiB', '2.00KiB/s', '0.5')
    """
    if v is None or not math.isfinite(v):
        return "–"
    unit = unit_of(metric)
    if unit == "bytes":
        return human_bytes(v)
    if unit == "bytes/s":
        return human_bytes(v) + "/s"
    return number(v)


def utc(ts: float | None) -> str:
    """Unix seconds as UTC ISO 8601 (whole seconds).

    >>> utc(1732492800.25), utc(None)
    ('2024-11-25T00:00:00Z', '–')
    """
    if ts is None:
        return "–"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def duration(seconds: float) -> str:
    """A duration as h/m/s.

    >>> duration(3725.0), duration(59.5), duration(0)
    ('1h 2m 5s', '59.5s', '0s')
    """
    if seconds < 60:
        return f"{seconds:.3g}s"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return " ".join(p for p in (f"{h}h" if h else "", f"{m}m" if h or m else "", f"{sec}s") if p)
