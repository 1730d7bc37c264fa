"""cgwatch's HTTP side: ``/healthz``, ``/metrics`` and the JSON API, served from a :class:`View`.

The daemon implements :class:`View` and calls :func:`build_app` then
:func:`serve`; nothing here imports the daemon. There are no write endpoints:
when one is added it must require a token.
"""

from __future__ import annotations

from .app import DEFAULT_LISTEN, build_app, serve
from .view import AlertInfo, ContainerInfo, Stats, View

__all__ = ["DEFAULT_LISTEN", "AlertInfo", "ContainerInfo", "Stats", "View", "build_app", "serve"]
