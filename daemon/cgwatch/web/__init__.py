"""cgwatch's HTTP side: ``/healthz``, ``/metrics`` and the JSON API, served from a :class:`View`.

The daemon implements :class:`View` (holding a :class:`History` and a
:class:`Hub`, fed once per interval with ``hub.update(now, samples, events,
alerts)``) and calls :func:`build_app` then :func:`serve`; nothing here imports
the daemon. There are no write endpoints; with a token every request needs it.
"""

from __future__ import annotations

from .app import DEFAULT_LISTEN, build_app, serve
from .history import History
from .live import Hub
from .view import AlertInfo, AlertRecord, ContainerInfo, RuleInfo, SilenceInfo, Stats, View

__all__ = ["DEFAULT_LISTEN", "AlertInfo", "AlertRecord", "ContainerInfo", "History", "Hub", "RuleInfo",
           "SilenceInfo", "Stats", "View", "build_app", "serve"]
