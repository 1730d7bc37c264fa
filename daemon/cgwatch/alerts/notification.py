"""What the alert manager hands to sinks, and what a sink answers.

A :class:`Notification` is one notice about one alert (one fingerprint = rule
+ container): that it fires, fires still (a ``repeat``), or has resolved. Its
``id`` is stable for the notice's whole life: a retried delivery carries the
same id, so a receiver can drop duplicates. Sinks receive notifications in
groups (a list), so a storm over many containers can become one message.

A sink's ``send`` returns a :class:`SendResult`; deciding when and how often to
retry belongs to the delivery loop (``alerts/delivery.py``), never to a sink.

Examples
--------
>>> n = Notification(id="a1b2", fingerprint="cpu-hog/4f1c", ts=1732492830.0, rule="cpu-hog",
...                  state="firing", severity="warning", value=0.97, summary="web-1 hot",
...                  container="web-1", container_id="4f1c", runtime="docker",
...                  starts_at=1732492800.0, host="node-1")
>>> n.to_json()["id"], n.to_json()["container"], n.to_json()["state"]
('a1b2', 'web-1', 'firing')
>>> SendResult.retry_later("HTTP 429", retry_after=30.0).retry
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..profile.formats import top_text
from ..units import human_bytes

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(slots=True, frozen=True)
class Notification:
    """One notice about one alert, as every sink receives it."""

    id: str
    """Stable for this notice (retries keep it); receivers deduplicate on it."""
    fingerprint: str
    """rule + container id: the same for every notice about one alert."""
    ts: float
    """When the state changed (or the repeat was due), Unix seconds."""
    rule: str
    state: str
    """``firing`` or ``resolved``."""
    severity: str
    value: float | None
    summary: str
    container: str
    """Display name."""
    container_id: str
    runtime: str
    starts_at: float
    """When the alert began firing."""
    host: str
    ends_at: float | None = None
    """When it resolved (``resolved`` notices only)."""
    description: str = ""
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    """The rule's labels."""
    container_labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    repeat: int = 0
    """0 for the first notice of a state, n for the n-th repeat while firing."""
    profile: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    """The CPU profile taken when it fired: ``id``, ``url``, ``samples``, ``partial`` and
    ``top`` (``[{"function", "share"}]``, inclusive share 0..1), where the rule asked for one;
    ``diff`` (``{against, started, grew, shrank}``) when the container had a profile before."""
    card: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    """What changed around the onset (first firing notices): ``changed`` (``[{metric, before,
    now, z}]``), ``events`` (``[{ts, kind, fields}]``), ``neighbours`` and ``missing``
    (``cgwatch.web.card``)."""

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md's alert line (ts, rule, container, state, severity, value,
        summary), then ``id`` and the rest of what a receiver may need."""
        out: dict[str, Any] = {
            "ts": self.ts,
            "rule": self.rule,
            "container": self.container,
            "state": self.state,
            "severity": self.severity,
            "value": self.value,
            "summary": self.summary,
            "id": self.id,
            "fingerprint": self.fingerprint,
            "container_id": self.container_id,
            "runtime": self.runtime,
            "host": self.host,
            "starts_at": self.starts_at,
        }
        if self.ends_at is not None:
            out["ends_at"] = self.ends_at
        if self.description:
            out["description"] = self.description
        if self.image:
            out["image"] = self.image
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.container_labels:
            out["container_labels"] = dict(self.container_labels)
        if self.repeat:
            out["repeat"] = self.repeat
        if self.profile:
            out["profile"] = dict(self.profile)
        if self.card:
            out["card"] = dict(self.card)
        return out

    def card_lines(self) -> list[str]:
        """The card as short lines for text sinks ([] without a card): :func:`card_lines`."""
        return card_lines(self.card)

    def profile_text(self) -> str:
        """The profile's top functions as aligned lines ("" without a profile).

        >>> n = Notification(id="a", fingerprint="r/c", ts=0.0, rule="r", state="firing", severity="info",
        ...                  value=None, summary="s", container="c", container_id="c", runtime="docker",
        ...                  starts_at=0.0, host="h", profile={"top": [{"function": "hot", "share": 0.7}]})
        >>> n.profile_text()
        ' 70%  hot'
        >>> from dataclasses import replace
        >>> print(replace(n, profile={"top": [{"function": "gc", "share": 0.6}], "diff": {"grew": [
        ...     {"function": "gc", "before": 0.2, "now": 0.6}], "shrank": []}}).profile_text())
         60%  gc
        grew since the profile before: gc 20% → 60%
        """
        if not self.profile:
            return ""
        text = top_text((str(t["function"]), float(t["share"])) for t in self.profile.get("top", ()))
        diff = self.profile.get("diff") or {}
        for side in ("grew", "shrank"):
            moved = [f"{d['function']} {float(d['before']):.0%} → {float(d['now']):.0%}" for d in diff.get(side, ())]
            if moved:
                text += f"\n{side} since the profile before: " + ", ".join(moved)
        return text


def card_lines(card: Mapping[str, Any] | None) -> list[str]:
    """A root-cause card (``cgwatch.web.card``) as short lines, for text sinks and reports ([] without one).

    >>> card_lines({"changed": [{"metric": "mem.usage_bytes", "before": 104857600.0, "now": 314572800.0,
    ...             "z": 27.0}], "events": [{"ts": 0.0, "kind": "exit", "fields": {"code": 3, "comm": "app"}}],
    ...             "neighbours": None, "missing": []})
    ['changed: mem.usage_bytes 100.00MiB → 300.00MiB (z 27)', 'events: exit (code=3 comm=app)']
    """
    if not card:
        return []
    out = []
    changed = [f"{c['metric']} {_shown(c['metric'], c['before'])} → {_shown(c['metric'], c['now'])} "
               f"(z {float(c['z']):.3g})" for c in card.get("changed", ())]
    if changed:
        out.append("changed: " + "; ".join(changed))
    events = [e["kind"] + (" (" + " ".join(f"{k}={v}" for k, v in dict(e.get("fields") or {}).items()) + ")"
                           if e.get("fields") else "") for e in card.get("events", ())]
    if events:
        out.append("events: " + "; ".join(events))
    if card.get("neighbours"):
        out.append(f"waited behind: {card['neighbours']}")
    if not out and card.get("missing"):
        out.append("; ".join(card["missing"]))
    return out


def _shown(metric: str, v: float) -> str:
    return human_bytes(v) if metric.endswith("_bytes") else f"{v:.3g}"


@dataclass(slots=True, frozen=True)
class SendResult:
    """A sink's answer for one group: delivered, retry later, or give up.

    ``retry_after`` is the receiver's own wish (``Retry-After``), in seconds.
    ``error`` is one line for the log, with no secret in it.
    """

    ok: bool
    retry: bool = False
    retry_after: float | None = None
    error: str = ""

    @classmethod
    def delivered(cls) -> SendResult:
        """>>> SendResult.delivered().ok
        True
        """
        return cls(True)

    @classmethod
    def retry_later(cls, error: str, retry_after: float | None = None) -> SendResult:
        """A failure worth retrying (timeouts, 5xx, 429, a dropped connection)."""
        return cls(False, True, retry_after, error)

    @classmethod
    def failed(cls, error: str) -> SendResult:
        """A failure that retrying cannot fix (4xx other than 408/429)."""
        return cls(False, False, None, error)


@dataclass(slots=True, frozen=True)
class SinkPolicy:
    """How the delivery loop treats one sink (config keys beside ``type`` under ``notify.NAME``).

    >>> SinkPolicy().admits("warning"), SinkPolicy(min_severity="critical").admits("warning")
    (True, False)
    """

    min_severity: str = "info"
    """Notices of a lower severity are not sent to this sink."""
    group_wait_s: float = 2.0
    """Notices arriving within this long of the first one go out as one group (one message)."""
    max_group: int = 100
    """At most this many notices in one message; more make more messages."""
    rate_limit_per_min: float = 30.0
    """At most this many messages a minute; the rest wait (in the outbox, not in memory)."""
    repeat_s: float = 4 * 3600.0
    """Re-notify a still-firing alert this often (a rule's ``repeat:`` overrides it)."""
    max_age_s: float = 24 * 3600.0
    """A notice not delivered after this long is recorded as dropped and counted."""

    def admits(self, severity: str) -> bool:
        """Whether a notice of ``severity`` goes to this sink."""
        return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK.get(self.min_severity, 0)


@runtime_checkable
class Sink(Protocol):
    """What the delivery loop needs of a sink (``sinks/base.py`` implements it)."""

    name: str
    policy: SinkPolicy

    async def send(self, group: Sequence[Notification]) -> SendResult: ...

    async def close(self) -> None: ...
