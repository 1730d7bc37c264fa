"""``cgwatch report``: a recording summarised as one offline HTML page or as Markdown.

:func:`~cgwatch.report.summary.summarize` reads the recording once (statistics per
container × metric, events, top offenders, the alerts of the rules through the
replay engine); :func:`~cgwatch.report.html.render_html` and
:func:`~cgwatch.report.markdown.render_markdown` write it out.
"""

from __future__ import annotations

from .html import render_html
from .markdown import render_markdown
from .summary import Report, summarize

FORMATS = ("html", "md")


def format_for(output: str, given: str | None) -> str:
    """The output format: as given, else from the output's suffix (``.md`` → md), else html.

    >>> format_for("r.md", None), format_for("r.html", None), format_for("-", "md")
    ('md', 'html', 'md')
    """
    if given:
        return given
    return "md" if output.lower().endswith((".md", ".markdown")) else "html"


def render(report: Report, fmt: str) -> str:
    """The report as text in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "md":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown report format {fmt!r} (use {' or '.join(FORMATS)})")


__all__ = ["FORMATS", "Report", "format_for", "render", "render_html", "render_markdown", "summarize"]
