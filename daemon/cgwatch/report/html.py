"""A :class:`~cgwatch.report.summary.Report` as ONE self-contained HTML file.

Everything the page needs is inside it: the vendored uPlot (MIT, its licence
kept in a comment), ``report.js`` and ``report.css`` inlined, chart data in a
``<script type="application/json" id="data">`` block. There is no external URL
in the page, and its Content-Security-Policy forbids every request anyway, so
it opens offline (from a ticket attachment, an air-gapped host) and leaks
nothing when opened. Tables are rendered here, by a sandboxed, autoescaping
Jinja2 template, so the numbers read without JavaScript too.
"""

from __future__ import annotations

import json
import re
import time
from importlib import metadata, resources
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from ..alerts.notification import card_lines
from . import fmt
from .summary import Report

UPLOT = ("static", "vendor", "uplot")
#: main metrics first in a container's table and charts; the rest follow by name
ORDER = ("cpu.usage_cores", "cpu.limit_cores", "cpu.runq_latency_p99_ms", "mem.usage_bytes", "mem.limit_bytes",
         "proc.execs", "proc.forks", "net.rx_bytes", "net.tx_bytes")
#: at most this many alert state changes are listed (all are counted)
MAX_ALERT_ROWS = 1000
#: containers whose charts are drawn as the page opens (the rest when their section is opened)
OPEN_CONTAINERS = 8


def _asset(*parts: str, package: str = "cgwatch.report") -> str:
    return resources.files(package).joinpath(*parts).read_text(encoding="utf-8")


def _script(text: str) -> Markup:
    """Text that is safe inside <script> or <style>: it cannot end the element early."""
    if re.search(r"</(script|style)|<!--", text, re.I):
        raise ValueError("an inlined asset contains </script, </style or <!--")
    return Markup(text)


def uplot_assets() -> tuple[Markup, Markup]:
    """The vendored uPlot (JS, CSS), with its licence as a comment instead of its URL banner."""
    js = _asset(*UPLOT, "uPlot.iife.min.js", package="cgwatch.web")
    css = _asset(*UPLOT, "uPlot.min.css", package="cgwatch.web")
    version = _asset(*UPLOT, "VERSION", package="cgwatch.web").splitlines()[0]
    licence = _asset(*UPLOT, "LICENSE", package="cgwatch.web").replace("*/", "* /")
    js = re.sub(r"\A/\*!.*?\*/\s*", "", js, flags=re.S)   # the banner is a URL; the licence says more
    banner = f"/* {version}\n{licence}*/\n"
    return _script(banner + js), _script(f"/* {version} */\n" + css)


def json_for_script(data: Any) -> Markup:
    """JSON that can sit inside ``<script type="application/json">``: ``<``, ``>``, ``&`` escaped.

    >>> str(json_for_script({"s": "</script><b>&"}))
    '{"s":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e\\\\u0026"}'
    """
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return Markup(text)


def metric_order(metrics: Any) -> list[str]:
    """Main metrics first (in :data:`ORDER`), then the rest by name.

    >>> metric_order(["z.m", "proc.execs", "cpu.usage_cores"])
    ['cpu.usage_cores', 'proc.execs', 'z.m']
    """
    rank = {m: i for i, m in enumerate(ORDER)}
    return sorted(metrics, key=lambda m: (rank.get(m, len(ORDER)), m))


def _y(values: list[float | None] | None) -> list[float | None] | None:
    if values is None:
        return None
    return [None if v is None else float(f"{v:.4g}") for v in values]


def chart_data(report: Report) -> dict[str, Any]:
    """What report.js draws: per container and metric, x (seconds from ``t0``), mean, maximum."""
    t0 = report.start or 0.0
    containers = []
    for c in report.containers.values():
        series = {}
        for m in metric_order(c.series):
            s = c.series[m]
            series[m] = {"x": [round(x - t0, 3) for x in s.x], "y": _y(s.y), "hi": _y(s.hi), "unit": fmt.unit_of(m)}
        containers.append({"name": c.name, "series": series})
    offenders = [{"title": o.title, "how": o.how, "metrics": list(o.metrics), "containers": [n for n, _ in o.rows]}
                 for o in report.offenders]
    return {"t0": t0, "containers": containers, "offenders": offenders, "open": OPEN_CONTAINERS}


def _environment() -> ImmutableSandboxedEnvironment:
    folder = resources.files("cgwatch.report").joinpath("templates")
    env = ImmutableSandboxedEnvironment(loader=FileSystemLoader(str(folder)), autoescape=True,
                                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=fmt.number, val=fmt.value, utc=fmt.utc, dur=fmt.duration, unit=fmt.unit_of,
                       raw=lambda v: repr(float(v)) if v is not None else "",
                       order=metric_order)
    return env


def _version() -> str:
    try:
        return metadata.version("cgwatch")
    except metadata.PackageNotFoundError:
        return "dev"


def render_html(report: Report) -> str:
    """The whole page.

    >>> from cgwatch.report.summary import Report, Skipped
    >>> page = render_html(Report("empty.jsonl", None, None, None, 0, 0, {}, Skipped(), [], None))
    >>> page.startswith("<!doctype html>"), "empty.jsonl" in page, "https://" in page
    (True, True, False)
    """
    uplot_js, uplot_css = uplot_assets()
    alerts = report.alerts or []
    return _environment().get_template("report.html.j2").render(
        r=report,
        alerts=alerts[:MAX_ALERT_ROWS],
        cards={i: card_lines(c) for i, c in report.cards.items() if i < MAX_ALERT_ROWS},
        alerts_hidden=max(0, len(alerts) - MAX_ALERT_ROWS),
        alert_counts=report.alert_counts(),
        uplot_js=uplot_js, uplot_css=uplot_css,
        report_js=_script(_asset("static", "report.js")),
        report_css=_script(_asset("static", "report.css")),
        data=json_for_script(chart_data(report)),
        generated=fmt.utc(time.time()),
        version=_version(),
        open_containers=OPEN_CONTAINERS,
    )
