"""``cgwatch top``: a live table of containers, refreshed every interval."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

from .model import Sample
from .units import human_bytes

#: (header, metric, format) of each column after the container's name
COLUMNS = (
    ("CPU", "cpu.usage_cores", "{:.2f}"),
    ("MEM", "mem.usage_bytes", "bytes"),
    ("EXEC/s", "proc.execs", "{:.1f}"),
    ("FAULT/s", "mem.page_faults", "{:.0f}"),
    ("RUNQ p99 ms", "cpu.runq_latency_p99_ms", "{:.2f}"),
    ("RX/s", "net.rx_bytes", "bytes"),
    ("TX/s", "net.tx_bytes", "bytes"),
)


def snapshot(samples: Iterable[Sample]) -> dict[str, dict[str, object]]:
    """container id -> {"container": Container, metric: value} for one interval.

    >>> from cgwatch.model import HOST
    >>> snap = snapshot([Sample(1.0, HOST, "cpu.usage_cores", 0.5)])
    >>> snap["host"]["cpu.usage_cores"]
    0.5
    """
    rows: dict[str, dict[str, object]] = {}
    for s in samples:
        row = rows.get(s.container.id)
        if row is None:
            row = rows[s.container.id] = {"container": s.container}
        row[s.metric] = s.value
    return rows


def _cell(value: object, fmt: str) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return human_bytes(value) if fmt == "bytes" else fmt.format(value)


def render(rows: dict[str, dict[str, object]], limit: int = 40) -> Table:
    """The table for one snapshot, busiest CPU first; absent values show as ``-``.

    >>> from cgwatch.model import HOST
    >>> t = render(snapshot([Sample(1.0, HOST, "cpu.usage_cores", 0.5)]))
    >>> t.row_count, [c.header for c in t.columns][:3]
    (1, ['CONTAINER', 'RUNTIME', 'CPU'])
    """
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("CONTAINER", no_wrap=True, max_width=48)
    table.add_column("RUNTIME")
    for header, _, _ in COLUMNS:
        table.add_column(header, justify="right")

    def cpu(row: dict[str, object]) -> float:
        v = row.get("cpu.usage_cores")
        return float(v) if isinstance(v, (int, float)) else -1.0

    for row in sorted(rows.values(), key=cpu, reverse=True)[:limit]:
        c = row["container"]
        table.add_row(
            getattr(c, "name", "?"), getattr(c, "runtime", "?"),
            *(_cell(row.get(metric), fmt) for _, metric, fmt in COLUMNS),
        )
    return table
