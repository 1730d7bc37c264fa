"""A profile as a file to hand on: folded stacks, speedscope JSON, a static flame graph SVG, or one
self-contained interactive HTML page.

The HTML page inlines the vendored d3 and d3-flame-graph (``static/``, see ``VERSIONS.txt``) and
``flame.js``, with the profile's flame tree in a ``<script type="application/json">`` block, so it
opens offline; its own Content-Security-Policy forbids every request. The SVG is drawn here (a
static file cannot run the renderer): one rect per frame of at least :data:`MIN_SHARE` of the
samples, each with a ``<title>``.

Examples
--------
>>> from ..model import Container
>>> from .model import Profile
>>> c = Container(id="ab" * 32, name="web-1", runtime="docker")
>>> p = Profile(id="p1", container=c, started=0.0, duration_s=1.0, requested_s=1.0, hz=49,
...             stacks={("app", "main", "hot"): 7, ("app", "main", "cold"): 3})
>>> '<title>hot (7 samples, 70.00%)</title>' in svg(p)
True
>>> FORMATS[".svg"], FORMATS[".htm"], FORMATS[".txt"]
('svg', 'html', 'folded')
"""

from __future__ import annotations

import json
import re
import time
import zlib
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from .formats import flame_tree, folded, speedscope, top_functions
from .model import KERNEL_SUFFIX, Profile

__all__ = ["ASSETS", "FORMATS", "MIN_SHARE", "asset", "format_for", "html", "json_for_script", "svg", "title", "write"]

#: file extension -> format name
FORMATS = {".folded": "folded", ".txt": "folded", ".json": "speedscope", ".svg": "svg", ".html": "html",
           ".htm": "html"}
#: the vendored files (and ours) in ``cgwatch.profile``'s ``static/``, the only ones served
ASSETS = ("d3.v7.min.js", "d3-flamegraph.min.js", "d3-flamegraph.css", "flame.js", "LICENSE-d3",
          "LICENSE-d3-flame-graph", "VERSIONS.txt")
#: frames with a smaller share of the samples are left out of the SVG
MIN_SHARE = 0.001

SVG_WIDTH = 1200
FRAME_H = 17
FONT_PX = 12
CHAR_W = 7.0          # average glyph width of 12 px monospace, for clipping labels
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def asset(name: str) -> str:
    """One file of ``cgwatch.profile``'s static directory, as text."""
    return resources.files("cgwatch.profile").joinpath("static", name).read_text(encoding="utf-8")


def format_for(path: Path | str) -> str:
    """The format ``path``'s extension names; ValueError (one line) for one we do not write.

    >>> format_for("web.SVG")
    'svg'
    """
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown profile format '{path.suffix}' (use .folded, .json, .svg or .html)")
    return kind


def write(p: Profile, path: Path | str) -> str:
    """Write ``p`` to ``path`` in the format its extension names; returns that format's name.

    >>> write(None, "x.pdf")
    Traceback (most recent call last):
    ...
    ValueError: x.pdf: unknown profile format '.pdf' (use .folded, .json, .svg or .html)
    """
    path = Path(path)
    kind = format_for(path)
    if kind == "folded":
        text = folded(p)
    elif kind == "speedscope":
        text = json.dumps(speedscope(p), separators=(",", ":")) + "\n"
    elif kind == "svg":
        text = svg(p)
    else:
        text = html(p)
    path.write_text(text, encoding="utf-8")
    return kind


def title(p: Profile) -> str:
    """One line naming the profile: container, when, how long, how many samples, why.

    >>> from ..model import Container
    >>> c = Container(id="ab" * 32, name="web-1", runtime="docker")
    >>> title(Profile(id="p", container=c, started=1732492800.0, duration_s=4.2, requested_s=10.0, hz=49,
    ...               stacks={("a", "b"): 5}, partial="container exited", rule="cpu-hog"))
    'web-1 · 2024-11-25 00:00:00 UTC · 4.2 s of 10 s · 49 Hz · 5 samples · rule cpu-hog · partial: container exited'
    """
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(p.started))
    parts = [p.container.name, when, f"{p.duration_s:.3g} s" + (f" of {p.requested_s:.3g} s"
                                                                  if p.requested_s != p.duration_s else ""),
             f"{p.hz} Hz", f"{p.samples} samples", f"rule {p.rule}" if p.rule else "on demand"]
    if p.lost:
        parts.append(f"{p.lost} stacks lost")
    if p.partial:
        parts.append(f"partial: {p.partial}")
    return " · ".join(parts)


# -- SVG -------------------------------------------------------------------------------------------


def _color(name: str) -> str:
    """Warm hues for user frames, blues for kernel frames; the same name always gets the same colour."""
    v = zlib.crc32(name.encode("utf-8", "replace")) / 0xFFFFFFFF
    w = (zlib.crc32(name[::-1].encode("utf-8", "replace")) & 0xFFFF) / 0xFFFF
    if name.endswith(KERNEL_SUFFIX):
        return f"rgb({round(60 + 50 * v)},{round(150 + 60 * w)},{round(200 + 55 * v)})"
    return f"rgb({round(205 + 50 * w)},{round(230 * v)},{round(55 * w)})"


def _label(name: str, width: float) -> str:
    """``name`` cut to what fits ``width`` pixels ("" when not even three characters do)."""
    fits = int((width - 6) / CHAR_W)
    if fits < 3:
        return ""
    return name if len(name) <= fits else name[: fits - 2] + ".."


def svg(p: Profile) -> str:
    """A static flame graph: root at the bottom, width proportional to samples, a ``<title>`` per frame."""
    tree = flame_tree(p)
    total = tree["value"]
    rows: list[tuple[int, float, dict[str, Any]]] = []         # (depth, x, node)
    depth_max = 0
    todo = [(0, 0.0, tree)] if total else []
    while todo:
        depth, x, node = todo.pop()
        rows.append((depth, x, node))
        depth_max = max(depth_max, depth)
        cx = x
        for child in node["children"]:
            if child["value"] / total >= MIN_SHARE:
                todo.append((depth + 1, cx, child))
            cx += child["value"] / total * SVG_WIDTH
    top, bottom = 44, 10
    height = top + (depth_max + 1) * FRAME_H + bottom
    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}" '
        f'viewBox="0 0 {SVG_WIDTH} {height}" font-family="Menlo, Consolas, DejaVu Sans Mono, monospace" '
        f'font-size="{FONT_PX}">',
        f"<title>{escape('CPU profile: ' + title(p))}</title>",
        f'<rect x="0" y="0" width="{SVG_WIDTH}" height="{height}" fill="#fafafa"/>',
        f'<text x="{SVG_WIDTH / 2}" y="18" text-anchor="middle" font-size="15">'
        f"{escape('CPU profile of ' + p.container.name)}</text>",
        f'<text x="{SVG_WIDTH / 2}" y="34" text-anchor="middle" fill="#555">{escape(title(p))}</text>',
    ]
    if not total:
        out.append(f'<text x="{SVG_WIDTH / 2}" y="{top + 12}" text-anchor="middle">no samples</text>')
    for depth, x, node in sorted(rows, key=lambda r: (r[0], r[1])):
        name, n = node["name"], node["value"]
        w = n / total * SVG_WIDTH
        y = height - bottom - (depth + 1) * FRAME_H
        label = _label(name, w)
        text = (f'<text x="{x + 3:.2f}" y="{y + FRAME_H - 4.5:.1f}">{escape(label)}</text>' if label else "")
        out.append(f'<g><title>{escape(name)} ({n} samples, {100 * n / total:.2f}%)</title>'
                   f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{FRAME_H - 1}" rx="2" '
                   f'fill="{_color(name)}"/>{text}</g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- HTML ------------------------------------------------------------------------------------------


def json_for_script(data: Any) -> str:
    """JSON that can sit inside ``<script type="application/json">``: ``<``, ``>``, ``&`` escaped.

    >>> json_for_script({"s": "</script><b>&"})
    '{"s":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e\\\\u0026"}'
    """
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _inline(text: str) -> str:
    """Text safe inside <script> or <style>: it cannot end the element early."""
    if re.search(r"</(script|style)|<!--", text, re.I):
        raise ValueError("an inlined asset contains </script, </style or <!--")
    return text


def _licence(name: str, what: str) -> str:
    return f"/*! {what}\n{asset(name).replace('*/', '* /')}*/\n"


_CSS = """
body { margin: 0; padding: 14px 18px 30px; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #0f172a; background: #fff; }
h1 { font-size: 19px; margin: 0 0 4px; }
.meta { color: #475569; margin: 0 0 8px; }
.partial { background: #fef3c7; border: 1px solid #fcd34d; padding: 4px 8px; border-radius: 4px; display: inline-block; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { padding: 2px 10px 2px 0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.toolbar { display: flex; gap: 10px; align-items: center; margin: 6px 0; }
.toolbar input { width: 280px; padding: 4px 6px; border: 1px solid #cbd5e1; border-radius: 4px; font: inherit; }
#details { color: #475569; min-height: 1.4em; }
#flame { width: 100%; }
"""


def html(p: Profile) -> str:
    """The profile as ONE HTML file with everything inlined (opens offline, loads nothing)."""
    top = top_functions(p)
    rows = "".join(f'<tr><td class="num">{s * 100:.1f}%</td><td>{escape(f)}</td></tr>' for f, s in top)
    data = {"id": p.id, "title": title(p), "tree": flame_tree(p), "top": [[f, s] for f, s in top]}
    partial = (f'<p class="partial">Partial profile: {escape(p.partial)}</p>' if p.partial else "")
    scripts = [_licence("LICENSE-d3", "d3 7.9.0, ISC licence") + asset("d3.v7.min.js"),
               _licence("LICENSE-d3-flame-graph", "d3-flame-graph 5.0.0, Apache-2.0 licence")
               + asset("d3-flamegraph.min.js"),
               asset("flame.js")]
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="generator" content="cgwatch">
<title>{escape(f"CPU profile · {p.container.name} · {p.id}")}</title>
<style>{_inline(asset("d3-flamegraph.css"))}{_CSS}</style>
</head>
<body>
<h1>CPU profile of {escape(p.container.name)}</h1>
<p class="meta">{escape(title(p))}<br>container {escape(p.container.id[:12])} ({escape(p.container.runtime)}) · profile {escape(p.id)}</p>
{partial}
<h2>Top functions</h2>
<table id="top"><thead><tr><th>share</th><th>function (inclusive)</th></tr></thead><tbody>{rows or '<tr><td colspan="2">no samples</td></tr>'}</tbody></table>
<div class="toolbar"><input id="search" type="search" placeholder="search frames" aria-label="search frames">
<button id="reset" type="button">Reset zoom</button><span id="details"></span></div>
<div id="flame"></div>
<noscript><p>The flame graph needs JavaScript; the top functions above do not.</p></noscript>
<script type="application/json" id="profile-data">{json_for_script(data)}</script>
{"".join(f"<script>{_inline(s)}</script>" + chr(10) for s in scripts)}</body>
</html>
"""
