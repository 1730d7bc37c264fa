"""A profile written as a file: formats by extension, the static SVG, the self-contained HTML, and
frame names that try to break out of either."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cgwatch.model import Container
from cgwatch.profile import render
from cgwatch.profile.formats import folded
from cgwatch.profile.model import Profile

SVG_NS = "{http://www.w3.org/2000/svg}"
STATIC = Path(render.__file__).with_name("static")


def profile(stacks: dict[tuple[str, ...], int] | None = None, **kw: object) -> Profile:
    c = Container(id="ab" * 32, name="web-1", runtime="docker")
    base: dict[str, object] = dict(id="20241125T000000.000Z-abababababab", container=c, started=1732492800.0,
                                   duration_s=10.0, requested_s=10.0, hz=49)
    base.update(kw)
    return Profile(stacks=stacks if stacks is not None else {("app", "main", "hot_alpha"): 70,
                                                            ("app", "main", "hot_beta"): 30}, **base)  # type: ignore[arg-type]


class _Tags(HTMLParser):
    """Every start tag with its attributes, and each <script> element's text, as a browser splits them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in: dict[str, str | None] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append((self._in, ""))

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in = None


def titles(svg_text: str) -> dict[str, str]:
    """Frame name -> its rect's title, from the SVG."""
    root = ET.fromstring(svg_text)
    out = {}
    for g in root.iter(f"{SVG_NS}g"):
        t, r = g.find(f"{SVG_NS}title"), g.find(f"{SVG_NS}rect")
        assert t is not None and r is not None and t.text
        out[t.text.rsplit(" (", 1)[0]] = t.text
    return out


@pytest.mark.parametrize(("name", "kind"), [("p.folded", "folded"), ("p.txt", "folded"), ("p.json", "speedscope"),
                                             ("p.svg", "svg"), ("p.html", "html"), ("P.HTM", "html")])
def test_write_picks_the_format_by_extension(tmp_path: Path, name: str, kind: str) -> None:
    p = profile()
    assert render.write(p, tmp_path / name) == kind
    text = (tmp_path / name).read_text()
    if kind == "folded":
        assert text == folded(p)
    elif kind == "speedscope":
        assert json.loads(text)["profiles"][0]["weights"] == [70, 30]
    elif kind == "svg":
        assert text.lstrip().startswith("<?xml")
    else:
        assert text.startswith("<!doctype html>")


def test_write_refuses_an_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"p\.pdf: unknown profile format '\.pdf' \(use \.folded, \.json, \.svg or \.html\)"):
        render.write(profile(), tmp_path / "p.pdf")
    assert not (tmp_path / "p.pdf").exists()


def test_svg_has_a_titled_rect_per_frame_with_its_share() -> None:
    t = titles(render.svg(profile()))
    assert t["hot_alpha"] == "hot_alpha (70 samples, 70.00%)"
    assert t["hot_beta"] == "hot_beta (30 samples, 30.00%)"
    assert t["main"] == "main (100 samples, 100.00%)"
    assert t["web-1"] == "web-1 (100 samples, 100.00%)"              # the root is the container


def test_svg_widths_follow_samples_and_tiny_frames_are_left_out() -> None:
    stacks = {("app", "main", "big"): 99_950, ("app", "main", "tiny"): 50}     # 0.05%: under MIN_SHARE
    root = ET.fromstring(render.svg(profile(stacks)))
    rects = {g.find(f"{SVG_NS}title").text.split(" (")[0]: g.find(f"{SVG_NS}rect")  # type: ignore[union-attr]
             for g in root.iter(f"{SVG_NS}g")}
    assert "tiny" not in rects
    assert float(rects["big"].get("width")) == pytest.approx(render.SVG_WIDTH * 0.9995, abs=0.01)
    assert float(rects["main"].get("width")) == pytest.approx(render.SVG_WIDTH, abs=0.01)


def test_svg_labels_fit_their_rects_and_kernel_frames_differ_in_colour() -> None:
    long = "a_really_long_function_name_" * 8
    stacks = {("app", "main", long): 5, ("app", "main", "do_syscall_64_[k]"): 5}
    root = ET.fromstring(render.svg(profile(stacks)))
    for g in root.iter(f"{SVG_NS}g"):
        r, text = g.find(f"{SVG_NS}rect"), g.find(f"{SVG_NS}text")
        if text is not None:
            assert len(text.text or "") * render.CHAR_W <= float(r.get("width")) + 0.01   # type: ignore[union-attr]
    fills = {g.find(f"{SVG_NS}title").text.split(" (")[0]: g.find(f"{SVG_NS}rect").get("fill")  # type: ignore[union-attr]
             for g in root.iter(f"{SVG_NS}g")}
    def rgb(name: str) -> tuple[int, ...]:
        return tuple(int(v) for v in re.findall(r"\d+", fills[name]))
    r, g, b = rgb("do_syscall_64_[k]")
    assert b > r                                                        # kernel: blue
    r, g, b = rgb(long)
    assert r >= 205 and b <= 55                                         # user: warm


def test_svg_of_an_empty_profile_is_still_valid() -> None:
    root = ET.fromstring(render.svg(profile({})))
    assert "no samples" in "".join(root.itertext())


def test_html_is_self_contained_and_embeds_the_tree() -> None:
    page = render.html(profile(partial="container exited", rule="cpu-hog"))
    tags = _Tags(page)
    assert [t for t, a in tags.tags if "src" in a or "href" in a] == []   # nothing loaded from anywhere
    assert [t for t, _ in tags.tags if t in ("link", "iframe", "img", "object", "embed")] == []
    assert "@import" not in page and "url(http" not in page
    kinds = [a.get("type") for a, _ in tags.scripts]
    assert kinds == ["application/json", None, None, None]              # the data, d3, d3-flame-graph, flame.js
    data = json.loads(tags.scripts[0][1])
    names = json.dumps(data["tree"])
    assert "hot_alpha" in names and "hot_beta" in names
    assert data["top"][0][0] == "main"
    assert "partial: container exited" in page and "rule cpu-hog" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "flamegraph.default()" in page and "Apache" in page            # renderer and its licence


def test_hostile_frame_names_render_safely() -> None:
    evil = "</script><script>alert(1)</script>"
    stacks = {("app", evil, "a&b<c>"): 60, ("app", "x]]>--><!--", "ok"): 40}
    p = profile(stacks, partial="<b>half</b> & more")
    page = render.html(p)
    assert evil not in page and "<b>half</b>" not in page
    tags = _Tags(page)
    assert len(tags.scripts) == 4                                        # nothing ended a script early
    assert evil in json.dumps(json.loads(tags.scripts[0][1]), ensure_ascii=False)
    assert [a.get("type") for a, _ in tags.scripts] == ["application/json", None, None, None]
    assert "&lt;b&gt;half&lt;/b&gt; &amp; more" in page
    t = titles(render.svg(p))                                               # valid XML, names intact
    assert t[evil] == f"{evil} (60 samples, 60.00%)"
    assert t["a&b<c>"] == "a&b<c> (60 samples, 60.00%)"


def test_vendored_files_match_versions_txt() -> None:
    listed = dict(reversed(line.split()) for line in (STATIC / "VERSIONS.txt").read_text().splitlines()
                  if re.match(r"^[0-9a-f]{64}  ", line))
    for name in render.ASSETS:
        if name in ("VERSIONS.txt", "flame.js"):
            continue
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == listed[name], name
    assert 'createElement("style")' not in (STATIC / "d3-flamegraph.min.js").read_text()   # CSP: no inline style
