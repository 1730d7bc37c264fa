"""``alertmanager``: ``POST {url}/api/v2/alerts`` with the group as a JSON list.

Each alert has labels ``alertname`` (the rule), ``container``, ``severity``,
``instance`` (the host) over the rule's own labels, annotations ``summary``
and ``description`` (and ``profile``, ``profile_url`` when a CPU profile was
taken: its top functions, one per line; ``card``, what changed around the onset, one
part per line, on a first firing notice), ``startsAt`` and, for a resolved alert only,
``endsAt``, in RFC 3339 UTC. Alertmanager resolves a firing alert by itself
after its ``resolve_timeout`` (5m) unless it is sent again, so this sink's
``repeat`` defaults to 1m (Prometheus re-sends every minute too); a rule's
own ``repeat:`` wins over it, so keep that under 5m for rules routed here.

>>> a = alert(_example())
>>> a["labels"]["alertname"], a["labels"]["instance"], a["startsAt"], "endsAt" in a
('cpu-hog', 'node-1', '2024-11-25T00:00:00Z', False)
>>> AlertmanagerConfig(url="http://am:9093").policy().repeat_s
60.0
>>> rfc3339(1732492800.25)
'2024-11-25T00:00:00.250Z'
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import field_validator

from ..alerts.notification import Notification, SendResult
from .base import BaseSink, Duration, HttpSinkConfig, check_http_url

PATH = "/api/v2/alerts"

log = logging.getLogger("cgwatch.sinks")


class AlertmanagerConfig(HttpSinkConfig):
    """``notify.NAME`` for ``type: alertmanager``: ``url`` is Alertmanager's base URL, or a list
    of them: the members of one Alertmanager cluster, each of which gets every alert.

    >>> AlertmanagerConfig(url=["http://am-0:9093", "http://am-1:9093"]).urls
    ['http://am-0:9093', 'http://am-1:9093']
    """

    type: Literal["alertmanager"] = "alertmanager"
    url: str | list[str]
    repeat: Duration = 60.0

    @field_validator("url")
    @classmethod
    def _http(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("needs at least one URL")
            if len(set(v)) != len(v):
                raise ValueError("lists a URL twice")
            return [check_http_url(u) for u in v]
        return check_http_url(v)

    @property
    def urls(self) -> list[str]:
        return list(self.url) if isinstance(self.url, list) else [self.url]


def rfc3339(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC, milliseconds only when there are some."""
    dt = datetime.fromtimestamp(ts, UTC)
    ms = round(dt.microsecond / 1000)
    if ms == 1000:
        dt, ms = datetime.fromtimestamp(round(ts), UTC), 0
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms:03d}Z" if ms else f"{base}Z"


def alert(n: Notification) -> dict[str, Any]:
    """One postable alert (Alertmanager's API v2 ``postableAlert``)."""
    labels = {str(k): str(v) for k, v in n.labels.items()}
    labels.update(alertname=n.rule, container=n.container, severity=n.severity, instance=n.host)
    annotations = {"summary": n.summary, "description": n.description or n.summary}
    if n.value is not None:
        annotations["value"] = f"{n.value:g}"
    if n.profile:
        annotations["profile"] = n.profile_text()
        if n.profile.get("url"):
            annotations["profile_url"] = str(n.profile["url"])
    if n.card:
        annotations["card"] = "\n".join(n.card_lines()) or "nothing changed that cgwatch could see"
    out: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": rfc3339(n.starts_at)}
    if n.state == "resolved":
        out["endsAt"] = rfc3339(n.ends_at if n.ends_at is not None else n.ts)
    return out


class AlertmanagerSink(BaseSink):
    """One POST of the whole group to each Alertmanager (a cluster deduplicates, as
    Prometheus relies on): delivered once any member took it. A member that was down
    hears of it from the others by gossip, and from this sink's next repeat."""

    Config = AlertmanagerConfig
    config: AlertmanagerConfig

    def __repr__(self) -> str:
        return f"AlertmanagerSink(name={self.name!r}, url={self.config.url!r})"

    def secrets(self) -> list[str]:
        """Credentials written into a URL (``user:password@``), if any."""
        return [u for u in self.config.urls if "@" in u]

    @property
    def endpoints(self) -> list[str]:
        """The alerts endpoint under each configured base URL."""
        return [u.rstrip("/") + PATH for u in self.config.urls]

    async def send(self, group: Sequence[Notification]) -> SendResult:
        """POST the list to every member at once."""
        body = json.dumps([alert(n) for n in group], ensure_ascii=False).encode()
        headers = {**self.config.headers, "Content-Type": "application/json"}
        results = await asyncio.gather(*(self.post(url, body, headers) for url in self.endpoints))
        if any(r.ok for r in results):
            for r in results:
                if not r.ok:
                    log.info("sink %s: one Alertmanager missed a group (the cluster has it): %s", self.name, r.error)
            return SendResult.delivered()
        if len(results) == 1:
            return results[0]
        retry = any(r.retry for r in results)
        waits = [r.retry_after for r in results if r.retry_after is not None]
        error = "; ".join(r.error for r in results)
        return SendResult(False, retry, min(waits) if waits else None, f"every Alertmanager failed: {error}")


def _example() -> Notification:
    return Notification(id="a1", fingerprint="cpu-hog/4f1c", ts=1732492830.0, rule="cpu-hog", state="firing",
                        severity="warning", value=0.97, summary="web-1 hot", container="web-1",
                        container_id="4f1c", runtime="docker", starts_at=1732492800.0, host="node-1")

