"""``journald``: one journal entry per notification, with fields to filter on.

``journalctl -t cgwatch CGWATCH_RULE=cpu-hog`` finds them. PRIORITY follows
severity: critical 2 (crit), warning 4 (warning), info 6 (info); a
``resolved`` notice is 5 (notice) whatever its severity, so
``journalctl -p warning`` shows what fires and not what recovered.

``journal.send`` writes one datagram to journald's socket. That is fast, but
can block while journald is stalled, so it runs in a worker thread
(``asyncio.to_thread``) and never blocks the event loop.

>>> fields(_example())["PRIORITY"], fields(_example())["CGWATCH_RULE"], fields(_example())["MESSAGE"]
('4', 'cpu-hog', 'FIRING warning cpu-hog on web-1: web-1 hot')
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Literal

from ..alerts.notification import Notification, SendResult
from .base import BaseSink, SinkConfig

PRIORITY = {"critical": 2, "warning": 4, "info": 6}
RESOLVED_PRIORITY = 5
IDENTIFIER = "cgwatch"


class JournaldConfig(SinkConfig):
    """``notify.NAME`` for ``type: journald`` (no keys of its own)."""

    type: Literal["journald"] = "journald"


def message(n: Notification) -> str:
    """The MESSAGE line: state, severity, rule, container, summary."""
    head = f"{n.state.upper()} {n.severity} {n.rule} on {n.container}"
    return f"{head}: {n.summary}" if n.summary else head


def fields(n: Notification) -> dict[str, str]:
    """The journal fields of one notification (all strings)."""
    prio = RESOLVED_PRIORITY if n.state == "resolved" else PRIORITY.get(n.severity, 6)
    out = {
        "MESSAGE": message(n),
        "PRIORITY": str(prio),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "CGWATCH_RULE": n.rule,
        "CGWATCH_STATE": n.state,
        "CGWATCH_SEVERITY": n.severity,
        "CGWATCH_NOTIFICATION_ID": n.id,
        "CGWATCH_FINGERPRINT": n.fingerprint,
        "CONTAINER_ID": n.container_id,
        "CONTAINER_NAME": n.container,
        "CONTAINER_RUNTIME": n.runtime,
    }
    if n.value is not None:
        out["CGWATCH_VALUE"] = repr(float(n.value))
    if n.repeat:
        out["CGWATCH_REPEAT"] = str(n.repeat)
    if n.profile:
        out["CGWATCH_PROFILE"] = n.profile_text()
        if n.profile.get("url"):
            out["CGWATCH_PROFILE_URL"] = str(n.profile["url"])
    if n.card:
        out["CGWATCH_CARD"] = "\n".join(n.card_lines())
        out["CGWATCH_CARD_JSON"] = json.dumps(dict(n.card), separators=(",", ":"), default=str)
    return out


def _write(group: Sequence[Notification]) -> None:
    from systemd import journal  # Debian's python3-systemd; imported on first use

    for n in group:
        f = fields(n)
        text = f.pop("MESSAGE")
        journal.send(text, **f)


class JournaldSink(BaseSink):
    """Entries in the systemd journal."""

    Config = JournaldConfig

    async def send(self, group: Sequence[Notification]) -> SendResult:
        """One entry per notification; a failure to write is retried."""
        try:
            await asyncio.to_thread(_write, group)
        except ImportError:
            return SendResult.failed("python3-systemd is not installed (needed by the journald sink)")
        except (OSError, ValueError) as e:
            return SendResult.retry_later(f"cannot write to the journal: {getattr(e, 'strerror', None) or e}")
        return SendResult.delivered()


def _example() -> Notification:
    return Notification(id="a1", fingerprint="cpu-hog/4f1c", ts=0.0, rule="cpu-hog", state="firing",
                        severity="warning", value=0.97, summary="web-1 hot", container="web-1",
                        container_id="4f1c", runtime="docker", starts_at=0.0, host="node-1")
