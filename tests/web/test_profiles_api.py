"""The CPU profile routes over real HTTP: a container's list, one profile and its downloads, the vendored
renderer, and the 404s (unknown or malformed ids, path tricks, profiling off)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cgwatch.model import Container
from cgwatch.profile.formats import folded
from cgwatch.profile.model import Profile, profile_id
from cgwatch.profile.store import ProfileStore
from cgwatch.web.security import CSP
from tests.web.conftest import MemoryView, Served, container

WEB = Container(id="4f1c" * 16, name="web-1", runtime="docker", image="nginx:1.27")
DB = Container(id="0d0b" * 16, name="db-0", runtime="docker")
STACKS = {("app", "main", "hot_alpha"): 70, ("app", "main", "hot_beta"): 30}


def make(c: Container, started: float, **kw: Any) -> Profile:
    return Profile(id=profile_id(c.id, started), container=c, started=started, duration_s=10.0, requested_s=10.0,
                   hz=49, stacks=dict(STACKS), **kw)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[MemoryView, list[Profile]]:
    """A view whose store holds two profiles of web-1 (the newer partial, by a rule) and one of db-0."""
    store = ProfileStore(tmp_path / "profiles")
    ps = [make(WEB, 1732492800.0), make(WEB, 1732496400.0, partial="container exited", rule="cpu-hog"),
          make(DB, 1732492900.0)]
    for p in ps:
        store.save(p)
    return MemoryView(store=store), ps


def get(view: MemoryView, served: Served, *paths: str) -> list[tuple[int, Any, Any]]:
    """(status, headers, JSON or bytes) for each path (sent as written: no normalisation)."""
    async def body() -> list[tuple[int, Any, Any]]:
        out = []
        async with served(view) as http:
            for path in paths:
                async with http.get(path, allow_redirects=False) as r:
                    raw = await r.read()
                    doc = json.loads(raw) if r.content_type == "application/json" else raw
                    out.append((r.status, r.headers, doc))
        return out

    return asyncio.run(body())


def test_list_is_the_containers_profiles_newest_first(stored: tuple[MemoryView, list[Profile]],
                                                       served: Served) -> None:
    view, ps = stored
    [(status, _, doc), (s2, _, other)] = get(view, served, f"/api/v1/containers/{WEB.id}/profiles",
                                              "/api/v1/containers/nosuch/profiles")
    assert status == 200
    assert [p["id"] for p in doc["profiles"]] == [ps[1].id, ps[0].id]
    first = doc["profiles"][0]
    assert first["partial"] == "container exited" and first["rule"] == "cpu-hog" and first["samples"] == 100
    assert first["top"][0] == {"function": "main", "share": 1.0}
    assert (s2, other) == (200, {"profiles": []})


def test_one_profile_has_its_tree_and_top_but_not_its_stacks(stored: tuple[MemoryView, list[Profile]],
                                                             served: Served) -> None:
    view, ps = stored
    [(status, _, doc)] = get(view, served, f"/api/v1/profiles/{ps[0].id}")
    assert status == 200
    assert "stacks" not in doc["profile"]
    assert doc["profile"]["id"] == ps[0].id and doc["profile"]["samples"] == 100
    assert [t["function"] for t in doc["top"]][:3] == ["main", "hot_alpha", "hot_beta"]
    main = doc["tree"]["children"][0]["children"][0]
    assert {c["name"]: c["value"] for c in main["children"]} == {"hot_alpha": 70, "hot_beta": 30}


def test_downloads(stored: tuple[MemoryView, list[Profile]], served: Served) -> None:
    view, ps = stored
    base = f"/api/v1/profiles/{ps[0].id}"
    (fs, fh, fb), (ss, sh, sb), (hs, hh, hb) = get(view, served, base + "/folded", base + "/speedscope.json",
                                                   base + "/flamegraph.html")
    assert fs == 200 and fh["Content-Type"].startswith("text/plain") and fb.decode() == folded(ps[0])
    assert ss == 200 and sh["Content-Type"].startswith("application/json")
    assert "attachment" in sh["Content-Disposition"] and ps[0].id in sh["Content-Disposition"]
    assert sb["profiles"][0]["weights"] == [70, 30]
    assert hs == 200 and hh["Content-Type"].startswith("text/html") and "attachment" in hh["Content-Disposition"]
    assert b"hot_alpha" in hb and hb.startswith(b"<!doctype html>")
    assert hh["Content-Security-Policy"] == CSP                       # served, it still runs nothing


@pytest.mark.parametrize("path", [
    "/api/v1/profiles/20991231T000000.000Z-4f1c4f1c4f1c",            # well-formed, not stored
    "/api/v1/profiles/..%2F..%2Fetc%2Fpasswd",
    "/api/v1/profiles/..%2Fprofiles%2F20241125T010000.000Z-4f1c4f1c4f1c",
    "/api/v1/profiles/%2E%2E",
    "/api/v1/profiles/" + "a" * 300,
    "/api/v1/profiles/.hidden/folded",
    "/api/v1/profiles/..%2F..%2Fetc%2Fpasswd/speedscope.json",
    "/api/v1/profiles/nosuch/flamegraph.html",
])
def test_unknown_and_malformed_ids_are_404(stored: tuple[MemoryView, list[Profile]], served: Served,
                                           path: str) -> None:
    view, _ = stored
    [(status, headers, doc)] = get(view, served, path)
    assert status == 404, doc
    assert headers["Content-Type"].startswith("application/json") and "error" in doc


def test_unknown_query_parameters_are_refused(stored: tuple[MemoryView, list[Profile]], served: Served) -> None:
    view, ps = stored
    [(status, _, doc)] = get(view, served, f"/api/v1/profiles/{ps[0].id}?x=1")
    assert status == 400 and "'x'" in doc["error"]


def test_profiling_off_is_404_everywhere(served: Served) -> None:
    view = MemoryView()                          # store None: the daemon does not profile
    pid = profile_id(WEB.id, 1732492800.0)
    for status, _, doc in get(view, served, f"/api/v1/containers/{WEB.id}/profiles", f"/api/v1/profiles/{pid}",
                              f"/api/v1/profiles/{pid}/folded"):
        assert status == 404 and "profiling is off" in doc["error"]


def test_vendored_renderer_is_served_and_nothing_else(served: Served) -> None:
    view = MemoryView()
    base = "/static/vendor/flamegraph/"
    (js, jh, jb), (css, ch, _), (lic, _, _), (bad, _, bd), (trick, _, _), (trick2, _, _) = get(
        view, served, base + "d3-flamegraph.min.js", base + "d3-flamegraph.css", base + "LICENSE-d3-flame-graph",
        base + "__init__.py", base + "..%2Fmodel.py", base + "..%2F..%2Fweb%2Fapp.py")
    assert js == 200 and jh["Content-Type"].startswith("text/javascript") and b"flamegraph" in jb
    assert css == 200 and ch["Content-Type"].startswith("text/css")
    assert lic == 200
    assert (bad, trick, trick2) == (404, 404, 404) and "error" in bd
    (uplot, _, _), = get(view, served, "/static/vendor/uplot/uPlot.min.css")    # the dashboard's own still there
    assert uplot == 200



def test_container_detail_says_whether_profiles_are_kept(stored: tuple[MemoryView, list[Profile]],
                                                         served: Served) -> None:
    on, _ = stored
    off = MemoryView()
    for v in (on, off):
        v.containers_ = [container("web-1", id=WEB.id)]
    [(s1, _, with_store)] = get(on, served, f"/api/v1/containers/{WEB.id}")
    [(s2, _, without)] = get(off, served, f"/api/v1/containers/{WEB.id}")
    assert (s1, with_store["profiling"]) == (200, True)
    assert (s2, without["profiling"]) == (200, False)
