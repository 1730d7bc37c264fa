"""``webhook``: POST the group as JSON to any URL, signed with HMAC-SHA256.

The body is ``{"version": "1", "host": ..., "alerts": [...]}``, each alert
being :meth:`Notification.to_json` (DESIGN.md's alert line plus ``id``, which
a receiver deduplicates on: a retried delivery repeats it). With ``secret``
set, ``X-Cgwatch-Signature: sha256=<hex>`` is the HMAC of the exact body
bytes. The URL and secret are secrets (``url_file``/``url_env``,
``secret_file``/``secret_env``) and appear in no error and no repr.

>>> cfg = WebhookConfig(type="webhook", url="https://hooks.example.com/T0/XYZ", secret="k")
>>> WebhookSink("ops", cfg)
WebhookSink(name='ops', url='https://hooks.example.com/<redacted>', signed=True)
>>> signature(b'{"a":1}', "k")
'sha256=c3a92ff9e274cdcce27a58c15a78ec6dcbbdbd0038a87e7a11baef2028fd8bff'
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import SecretStr, field_validator

from ..alerts.notification import Notification, SendResult
from .base import BaseSink, HttpSinkConfig, check_http_url
from .retry import redact_url

SIGNATURE_HEADER = "X-Cgwatch-Signature"
VERSION = "1"


class WebhookConfig(HttpSinkConfig):
    """``notify.NAME`` for ``type: webhook``."""

    SECRETS: ClassVar[tuple[str, ...]] = ("url", "secret")
    type: Literal["webhook"] = "webhook"
    url: SecretStr
    secret: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, v: SecretStr) -> SecretStr:
        check_http_url(v.get_secret_value())
        return v


def signature(body: bytes, secret: str) -> str:
    """The ``X-Cgwatch-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(group: Sequence[Notification]) -> bytes:
    """The request body (compact JSON, UTF-8)."""
    host = group[0].host if group else ""
    doc = {"version": VERSION, "host": host, "alerts": [n.to_json() for n in group]}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class WebhookSink(BaseSink):
    """One POST per group."""

    Config = WebhookConfig
    config: WebhookConfig

    def __repr__(self) -> str:
        url = redact_url(self.config.url.get_secret_value())
        return f"WebhookSink(name={self.name!r}, url={url!r}, signed={self.config.secret is not None})"

    def secrets(self) -> list[str]:
        """The URL and the HMAC key."""
        out = [self.config.url.get_secret_value()]
        if self.config.secret is not None:
            out.append(self.config.secret.get_secret_value())
        return out

    async def send(self, group: Sequence[Notification]) -> SendResult:
        """POST the group; classify the answer."""
        try:
            body = encode(group)
        except ValueError as e:
            return SendResult.failed(f"cannot encode the alerts as JSON: {e}")
        headers = {**self.config.headers, "Content-Type": "application/json"}
        if self.config.secret is not None:
            headers[SIGNATURE_HEADER] = signature(body, self.config.secret.get_secret_value())
        return await self.post(self.config.url.get_secret_value(), body, headers)
