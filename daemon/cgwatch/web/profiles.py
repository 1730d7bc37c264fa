"""The CPU profiles the daemon keeps, read-only: a container's list, one profile's flame tree and
its downloads, and the vendored flame graph renderer the container page draws it with.

Every route answers 404 ``{"error": ...}`` for an id that is not a stored profile (or not an id at
all) and when the daemon does not profile (``View.profiles()`` is None). Profiles are read from
disk in a worker thread, so a large one does not stall the event loop.

Examples
--------
>>> from cgwatch.web.metrics import _DemoView
>>> from cgwatch.web.app import build_app
>>> sorted(r.resource.canonical for r in build_app(_DemoView()).router.routes()
...        if r.method == "GET" and r.resource.canonical.startswith("/api/v1/profiles"))
['/api/v1/profiles/{pid}', '/api/v1/profiles/{pid}/flamegraph.html', '/api/v1/profiles/{pid}/folded', '/api/v1/profiles/{pid}/speedscope.json']
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

from aiohttp import web

from ..profile import render
from ..profile.formats import flame_tree, folded, speedscope, top_functions, top_json
from ..profile.model import Profile
from ..profile.store import ProfileStore
from .handlers import VIEW_KEY, error, json_response

__all__ = ["VENDOR", "add_routes", "detail", "enabled"]

#: where the page finds the renderer (files of ``cgwatch.profile``'s ``static/``)
VENDOR = "/static/vendor/flamegraph/"
_TYPES = {".js": "text/javascript", ".css": "text/css"}
_MAX_ID = 256


def _store(request: web.Request) -> ProfileStore | None:
    method = getattr(request.app[VIEW_KEY], "profiles", None)
    return None if method is None else method()


def enabled(view: object) -> bool:
    """Whether ``view`` keeps profiles (the container page asks for them only then)."""
    method = getattr(view, "profiles", None)
    return method is not None and method() is not None


def _off() -> web.Response:
    return error(404, "this cgwatch does not keep CPU profiles (profiling is off)")


def _known(request: web.Request) -> web.Response | None:
    if request.query:
        return error(400, f"unknown query parameter {next(iter(request.query))!r}; known: none")
    return None


async def _profile(request: web.Request) -> Profile | web.Response:
    """The profile the path names, or the error response to send."""
    if (bad := _known(request)) is not None:
        return bad
    store, pid = _store(request), request.match_info["pid"]
    if store is None:
        return _off()
    found = await asyncio.to_thread(store.load, pid) if len(pid) <= _MAX_ID and store.path(pid) else None
    if found is None:
        return error(404, f"no such profile: {pid[:80]!r}")
    return found


async def container_profiles(request: web.Request) -> web.Response:
    """``GET /api/v1/containers/{id}/profiles``: the container's stored profiles, newest first."""
    if (bad := _known(request)) is not None:
        return bad
    store, cid = _store(request), request.match_info["id"]
    if store is None:
        return _off()
    found = await asyncio.to_thread(store.list, cid) if len(cid) <= _MAX_ID else []
    return json_response({"profiles": [info.to_json() for info in found]})


def detail(p: Profile) -> dict[str, Any]:
    """What the container page draws: the profile without its stacks, the top functions, the tree."""
    meta = p.to_json()
    del meta["stacks"]
    return {"profile": meta, "top": top_json(top_functions(p)),
            "tree": flame_tree(p)}


async def profile(request: web.Request) -> web.Response:
    """``GET /api/v1/profiles/{pid}``: :func:`detail` of one profile."""
    p = await _profile(request)
    return p if isinstance(p, web.Response) else json_response(detail(p))


def _download(p: Profile, suffix: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="cgwatch-profile-{p.id}{suffix}"'}


async def profile_folded(request: web.Request) -> web.Response:
    """``GET /api/v1/profiles/{pid}/folded``: folded stacks (text)."""
    p = await _profile(request)
    if isinstance(p, web.Response):
        return p
    return web.Response(text=folded(p), content_type="text/plain", charset="utf-8")


async def profile_speedscope(request: web.Request) -> web.Response:
    """``GET /api/v1/profiles/{pid}/speedscope.json``: speedscope's file format, as a download."""
    p = await _profile(request)
    if isinstance(p, web.Response):
        return p
    return web.Response(text=json.dumps(speedscope(p), separators=(",", ":")), content_type="application/json",
                        headers=_download(p, ".speedscope.json"))


async def profile_html(request: web.Request) -> web.Response:
    """``GET /api/v1/profiles/{pid}/flamegraph.html``: the self-contained HTML flame graph, as a download."""
    p = await _profile(request)
    if isinstance(p, web.Response):
        return p
    page = await asyncio.to_thread(render.html, p)
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=_download(p, ".html"))


async def vendor(request: web.Request) -> web.Response:
    """``GET /static/vendor/flamegraph/{name}``: one of :data:`cgwatch.profile.render.ASSETS`."""
    name = request.match_info["name"]
    if name not in render.ASSETS:
        return error(404, f"no such path: {request.path}")
    body = resources.files("cgwatch.profile").joinpath("static", name).read_bytes()
    kind = next((t for ext, t in _TYPES.items() if name.endswith(ext)), "text/plain")
    return web.Response(body=body, content_type=kind, charset="utf-8", headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    """Add the profile API and the renderer's assets (before the dashboard's ``/static/``)."""
    app.router.add_get(VENDOR + "{name}", vendor)
    app.router.add_get("/api/v1/containers/{id}/profiles", container_profiles)
    app.router.add_get("/api/v1/profiles/{pid}", profile)
    app.router.add_get("/api/v1/profiles/{pid}/folded", profile_folded)
    app.router.add_get("/api/v1/profiles/{pid}/speedscope.json", profile_speedscope)
    app.router.add_get("/api/v1/profiles/{pid}/flamegraph.html", profile_html)
