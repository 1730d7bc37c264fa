"""``slack``: one incoming-webhook message per group, Block Kit ``blocks`` plus a ``text`` fallback.

A single notification shows severity, container, rule, value, summary and
host as fields; a group lists one line per notification (at most
``max_lines``, then "and N more"), so a storm over 50 containers is one
message. Slack's limits are kept: 50 blocks, 3000 characters a text section,
150 a header. Slack can answer 200 with an error in the body: anything but
``ok`` is a failure. The URL is a secret (``url_file``/``url_env``).

>>> p = payload([_example()])
>>> p["text"]
':warning: [FIRING warning] cpu-hog on web-1: web-1 &lt;hot&gt; (value 0.97, host node-1)'
>>> [b["type"] for b in p["blocks"]]
['header', 'section', 'section', 'context']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from ..alerts.notification import Notification, SendResult
from .base import BaseSink, HttpSinkConfig, check_http_url
from .retry import redact_url, scrub

#: Slack's own limits
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_LINE = 300
ICON = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}
RESOLVED_ICON = ":white_check_mark:"


class SlackConfig(HttpSinkConfig):
    """``notify.NAME`` for ``type: slack``."""

    SECRETS: ClassVar[tuple[str, ...]] = ("url",)
    type: Literal["slack"] = "slack"
    url: SecretStr
    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    max_lines: int = Field(20, ge=1, le=50)
    """A group lists this many notifications, then "and N more"."""

    @field_validator("url")
    @classmethod
    def _http(cls, v: SecretStr) -> SecretStr:
        check_http_url(v.get_secret_value())
        return v


def esc(text: str) -> str:
    """Slack's mrkdwn escapes (``&``, ``<``, ``>``).

    >>> esc("a<b> & c")
    'a&lt;b&gt; &amp; c'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _icon(n: Notification) -> str:
    return RESOLVED_ICON if n.state == "resolved" else ICON.get(n.severity, ":grey_question:")


def _value(n: Notification) -> str:
    return "-" if n.value is None else f"{n.value:.4g}"


def line(n: Notification) -> str:
    """One notification as one mrkdwn line."""
    text = f"{_icon(n)} *{esc(n.severity)}* `{esc(n.rule)}` {esc(n.state)} on *{esc(n.container)}*" \
           f" (value {_value(n)})"
    if n.summary:
        text += f": {esc(n.summary)}"
    return _cut(text, MAX_LINE)


def fallback(group: Sequence[Notification], max_lines: int = 20) -> str:
    """The plain ``text`` (notifications and lock screens show it)."""
    if len(group) == 1:
        n = group[0]
        return _cut(f"{_icon(n)} [{n.state.upper()} {n.severity}] {esc(n.rule)} on {esc(n.container)}: "
                    f"{esc(n.summary)} (value {_value(n)}, host {esc(n.host)})", MAX_SECTION)
    firing = sum(n.state == "firing" for n in group)
    head = f"cgwatch on {esc(group[0].host)}: {len(group)} alerts ({firing} firing, {len(group) - firing} resolved)"
    rows = [f"{n.state.upper()} {n.severity} {esc(n.rule)} on {esc(n.container)}" for n in group[:max_lines]]
    more = f"\n… and {len(group) - max_lines} more" if len(group) > max_lines else ""
    return _cut("\n".join([head, *rows]) + more, MAX_SECTION)


def _profile(n: Notification) -> str:
    """The profile's top functions as a small code block, with its link."""
    assert n.profile is not None
    head = f"*CPU profile* ({int(n.profile.get('samples', 0))} samples"
    head += ", partial)" if n.profile.get("partial") else ")"
    url = str(n.profile.get("url", ""))
    if url:
        head += f" <{esc(url)}|flame graph>"
    body = esc(n.profile_text()).replace("`", "'") or "(no samples)"
    return _cut(f"{head}\n```{body}```", MAX_SECTION)


def _listing(group: Sequence[Notification], max_lines: int) -> tuple[str, int]:
    """Lines that fit one section, and how many notifications were left out."""
    shown: list[str] = []
    size = 0
    for n in group[:max_lines]:
        text = line(n)
        if size + len(text) + 1 > MAX_SECTION - 40:
            break
        shown.append(text)
        size += len(text) + 1
    return "\n".join(shown), len(group) - len(shown)


def payload(group: Sequence[Notification], cfg: SlackConfig | None = None) -> dict[str, Any]:
    """The incoming-webhook JSON for a group."""
    max_lines = cfg.max_lines if cfg else 20
    host = group[0].host if group else ""
    blocks: list[dict[str, Any]] = []
    if len(group) == 1:
        n = group[0]
        title = f"{n.state.upper()} {n.severity}: {n.rule} on {n.container}"
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": _cut(title, MAX_HEADER)}})
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _cut(f"{_icon(n)} {esc(n.summary or n.rule)}", MAX_SECTION)}})
        facts = [("Severity", n.severity), ("Container", n.container), ("Rule", n.rule), ("Value", _value(n)),
                 ("State", n.state), ("Host", n.host)]
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _cut(f"*{k}*\n{esc(v)}", 2000)} for k, v in facts]})
        if n.card and n.card_lines():
            body = esc("\n".join(n.card_lines())).replace("`", "'")
            blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                       "text": _cut(f"*Around the onset*\n```{body}```", MAX_SECTION)}})
        if n.profile:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _profile(n)}})
    else:
        firing = sum(n.state == "firing" for n in group)
        title = f"cgwatch: {len(group)} alerts on {host} ({firing} firing, {len(group) - firing} resolved)"
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": _cut(title, MAX_HEADER)}})
        text, left = _listing(group, max_lines)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
        if left:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"… and {left} more"}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(f"cgwatch on {esc(host)}", 2000)}]})
    out: dict[str, Any] = {"text": fallback(group, max_lines), "blocks": blocks}
    if cfg is not None:
        for key in ("channel", "username", "icon_emoji"):
            if getattr(cfg, key):
                out[key] = getattr(cfg, key)
    return out


class SlackSink(BaseSink):
    """One message per group, to a Slack incoming webhook."""

    Config = SlackConfig
    config: SlackConfig

    def __repr__(self) -> str:
        return f"SlackSink(name={self.name!r}, url={redact_url(self.config.url.get_secret_value())!r})"

    def secrets(self) -> list[str]:
        """The webhook URL (it is the credential)."""
        return [self.config.url.get_secret_value()]

    def check_answer(self, body: bytes) -> SendResult | None:
        """Slack answers ``ok``; anything else, even with 200, is an error that retrying will not fix."""
        text = body.decode("utf-8", "replace").strip()
        if text == "ok":
            return None
        return SendResult.failed(scrub(f"Slack answered {text[:100]!r} instead of 'ok'", self.secrets()))

    async def send(self, group: Sequence[Notification]) -> SendResult:
        """POST one message for the group."""
        body = json.dumps(payload(group, self.config), ensure_ascii=False).encode()
        return await self.post(self.config.url.get_secret_value(), body,
                               {**self.config.headers, "Content-Type": "application/json"})


def _example() -> Notification:
    return Notification(id="a1", fingerprint="cpu-hog/4f1c", ts=0.0, rule="cpu-hog", state="firing",
                        severity="warning", value=0.97, summary="web-1 <hot>", container="web-1",
                        container_id="4f1c", runtime="docker", starts_at=0.0, host="node-1")
