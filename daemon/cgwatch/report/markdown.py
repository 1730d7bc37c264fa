"""A :class:`~cgwatch.report.summary.Report` as compact GitHub-flavoured Markdown, for a ticket."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..alerts.notification import card_lines
from . import fmt
from .summary import Report

#: the metrics of the per-container table, in column order
MAIN = (("cpu.usage_cores", "mean"), ("cpu.usage_cores", "max"), ("mem.usage_bytes", "max"),
        ("proc.execs", "mean"), ("cpu.runq_latency_p99_ms", "p95"))
#: at most this many alert state changes are listed
MAX_ALERT_ROWS = 50


def cell(text: object) -> str:
    """Text that stays inside one table cell, as text: pipes escaped, no line breaks, no HTML.

    >>> cell("a|b\\nc</script>")
    'a\\\\|b c&lt;/script&gt;'
    """
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def table(header: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[int] = ()) -> list[str]:
    """A GFM table; the columns in ``right`` are right-aligned (numbers).

    >>> print("\\n".join(table(["name", "n"], [["a", 1]], right=[1])))
    | name | n |
    |---|---:|
    | a | 1 |
    """
    out = ["| " + " | ".join(cell(h) for h in header) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(report: Report) -> str:
    """The Markdown summary.

    >>> from cgwatch.report.summary import Report, Skipped
    >>> print(render_markdown(Report("rec.jsonl", "node-1", 0.0, 60.0, 10, 1, {}, Skipped(), [], None)))
    ... # doctest: +ELLIPSIS
    ### cgwatch report: rec.jsonl
    <BLANKLINE>
    - **Host:** node-1
    - **Time range (UTC):** 1970-01-01T00:00:00Z → 1970-01-01T00:01:00Z (1m 0s)
    - **Containers:** 0 · **samples:** 10 · **events:** 1
    - **Alerts:** no rules evaluated
    ...
    """
    r = report
    host = r.host or "not recorded (recordings carry no host name)"
    alerts = ("no rules evaluated" if r.alerts is None
              else f"{len(r.alerts)} state changes from {r.rules} rules")
    out = [f"### cgwatch report: {cell(r.source)}", "",
           f"- **Host:** {cell(host)}",
           f"- **Time range (UTC):** {fmt.utc(r.start)} → {fmt.utc(r.end)} ({fmt.duration(r.duration)})",
           f"- **Containers:** {len(r.containers)} · **samples:** {r.samples} · **events:** {r.events}",
           f"- **Alerts:** {alerts}"]
    if r.skipped.count:
        first = "; ".join(f"line {n}: {why}" for n, why in r.skipped.first)
        out.append(f"- **{r.skipped.count} line{'' if r.skipped.count == 1 else 's'} skipped** "
                   f"(unreadable, or of a container beyond the bound): {cell(first)}")
    if r.offenders:
        out += ["", "#### Top offenders", ""]
        for o in r.offenders:
            out += [f"**{o.title}** ({o.how} of {' + '.join(o.metrics)})", ""]
            out += table(["#", "container", o.how],
                         [[i, f"`{name}`", fmt.value(v, o.metrics[0])] for i, (name, v) in enumerate(o.rows, 1)],
                         right=[0, 2])
            out.append("")
    if r.alerts:
        out += ["#### Alerts", ""] if out[-1] == "" else ["", "#### Alerts", ""]
        out += table(["rule", "firing", "resolved"],
                     [[rule, c["firing"], c["resolved"]] for rule, c in r.alert_counts().items()], right=[1, 2])
        out.append("")
        out += table(["time (UTC)", "rule", "container", "state", "severity", "value", "summary"],
                     [[fmt.utc(a.ts), a.rule, a.container.name, a.state, a.severity, fmt.number(a.value), a.summary]
                      for a in r.alerts[:MAX_ALERT_ROWS]], right=[5])
        if len(r.alerts) > MAX_ALERT_ROWS:
            out += ["", f"… and {len(r.alerts) - MAX_ALERT_ROWS} more (see the HTML report)."]
        shown = [(r.alerts[i], card_lines(c)) for i, c in sorted(r.cards.items()) if i < MAX_ALERT_ROWS]
        shown = [(a, lines) for a, lines in shown if lines]
        if shown:
            out += ["", "#### Around the onset", ""]
            out += [f"- **{cell(a.rule)}** on **{cell(a.container.name)}** at {fmt.utc(a.ts)}: "
                    + "; ".join(cell(x) for x in lines) for a, lines in shown]
    if r.containers:
        out += ["", "#### Containers", ""]
        header = ["container"] + [f"{m} {how}" for m, how in MAIN] + ["events"]
        rows = []
        for c in r.containers.values():
            row: list[object] = [f"`{c.name}`"]
            for m, how in MAIN:
                s = c.series.get(m)
                row.append(fmt.value(getattr(s.stats, how), m) if s else "–")
            row.append(", ".join(f"{k} {n}" for k, n in c.events.items()) or "–")
            rows.append(row)
        out += table(header, rows, right=list(range(1, len(MAIN) + 1)))
    out += ["", f"<sub>Percentiles: numpy `{r.percentile_method}` method. Generated by `cgwatch report`.</sub>"]
    return "\n".join(out) + "\n"
