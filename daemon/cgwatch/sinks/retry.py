"""One answer to "did it arrive, and is it worth trying again?" for every HTTP sink.

Like Vector's ``src/sinks/util/http.rs``: 2xx is delivered; 408, 429 and 5xx
other than 501 are worth retrying (``Retry-After`` in seconds or as an
HTTP-date is passed on); any other status is a failure retrying cannot fix.
A connection that fails, times out, closes without an answer or answers
garbage is retried. Errors are one line, with no traceback and no secret.

>>> classify(202).ok, classify(503).retry, classify(501).retry, classify(404).retry
(True, True, False, False)
>>> classify(429, "7")
SendResult(ok=False, retry=True, retry_after=7.0, error='HTTP 429 Too Many Requests')
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp

from ..alerts.notification import SendResult

#: statuses worth retrying besides the 5xx ones (501 is not)
RETRY_STATUSES = frozenset({408, 429})
#: longest error line kept
MAX_ERROR = 200


def reason(status: int) -> str:
    """``HTTP 429 Too Many Requests``: a status with its standard phrase.

    >>> reason(500), reason(599)
    ('HTTP 500 Internal Server Error', 'HTTP 599')
    """
    try:
        return f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP-date), or None.

    >>> parse_retry_after("7"), parse_retry_after(" 2.5 "), parse_retry_after("soon"), parse_retry_after(None)
    (7.0, 2.5, None, None)
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0)
    10.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0)
    0.0
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def classify(status: int, retry_after: str | None = None) -> SendResult:
    """The SendResult for an HTTP status (and its ``Retry-After`` header, if any).

    >>> classify(408).retry, classify(400)
    (True, SendResult(ok=False, retry=False, retry_after=None, error='HTTP 400 Bad Request'))
    """
    if 200 <= status < 300:
        return SendResult.delivered()
    if status in RETRY_STATUSES or (500 <= status < 600 and status != 501):
        return SendResult.retry_later(reason(status), parse_retry_after(retry_after))
    return SendResult.failed(reason(status))


def redact_url(url: str) -> str:
    """A URL fit for a log line: scheme and host (port kept), the rest hidden.

    >>> redact_url("https://user:pw@hooks.slack.com:443/services/T0/B0/XyZ?x=1")
    'https://hooks.slack.com:443/<redacted>'
    >>> redact_url("not a url")
    '<redacted>'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<redacted>"
    if not parts.scheme or not host:
        return "<redacted>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}/<redacted>"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """One line, at most :data:`MAX_ERROR` characters, with every secret (and
    every secret URL's path and query) replaced by ``<redacted>``.

    >>> scrub("bad\\nthing at https://h/x/SECRET", ["https://h/x/SECRET"])
    'bad thing at <redacted>'
    """
    for s in secrets:
        if not s:
            continue
        text = text.replace(s, "<redacted>")
        try:
            parts = urlsplit(s)
        except ValueError:
            continue
        for piece in (parts.path + ("?" + parts.query if parts.query else ""), parts.path, parts.query,
                      parts.password or ""):
            if len(piece) > 1:
                text = text.replace(piece, "/<redacted>" if piece.startswith("/") else "<redacted>")
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def describe(e: BaseException, timeout: float | None = None) -> str:
    """A one-line account of why a request got no usable answer (no traceback).

    >>> describe(asyncio.TimeoutError(), 10.0)
    'timed out after 10s'
    >>> describe(aiohttp.ServerDisconnectedError())
    'connection closed without an answer'
    >>> describe(ConnectionRefusedError(111, "Connection refused"))
    'connection failed: Connection refused'
    """
    if isinstance(e, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return f"timed out after {timeout:g}s" if timeout else "timed out"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "connection closed without an answer"
    if isinstance(e, aiohttp.ClientConnectorError):
        detail = getattr(e.os_error, "strerror", None) or str(e.os_error)
        return f"cannot connect to {e.host}:{e.port}: {detail}"
    if isinstance(e, (aiohttp.ClientResponseError, aiohttp.ClientPayloadError)):
        return f"garbage answer: {getattr(e, 'message', '') or type(e).__name__}"
    if isinstance(e, OSError):
        return f"connection failed: {e.strerror or e}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
