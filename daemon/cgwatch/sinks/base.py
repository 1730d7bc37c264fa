"""What every sink shares: typed config keys, the policy they map to, an HTTP
session made on first use, the registry of sink types, and ``build_sinks``.

A sink builds one request (or journal entry, or line) for a group of
notifications and says how it went; retrying, backoff, grouping and rate
limits belong to the delivery loop (``alerts/``), which reads the sink's
:class:`~cgwatch.alerts.notification.SinkPolicy`.

>>> sinks = build_sinks({"out": {"type": "stdout", "min_severity": "warning", "group_wait": "5s"}})
>>> sinks["out"].policy.min_severity, sinks["out"].policy.group_wait_s
('warning', 5.0)
>>> sorted(SINKS)
['alertmanager', 'file', 'journald', 'slack', 'stdout', 'webhook']
"""

from __future__ import annotations

import asyncio
import importlib
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..alerts.notification import Notification, SendResult, Sink, SinkPolicy
from ..units import parse_duration
from .retry import classify, describe, redact_url, scrub

#: sink type -> "module:Class", imported on first use (one line each)
SINKS = {
    "journald": "cgwatch.sinks.journald:JournaldSink",
    "webhook": "cgwatch.sinks.webhook:WebhookSink",
    "slack": "cgwatch.sinks.slack:SlackSink",
    "alertmanager": "cgwatch.sinks.alertmanager:AlertmanagerSink",
    "stdout": "cgwatch.sinks.jsonl:StdoutSink",
    "file": "cgwatch.sinks.jsonl:FileSink",
}
#: how many bytes of an answer a sink reads (Slack's "ok"; the rest is dropped)
MAX_ANSWER = 4096
USER_AGENT = "cgwatch/0.1"
_DEFAULT = SinkPolicy()


def to_seconds(value: Any) -> float:
    """A duration as config files write it (``2s``, ``5m``, or a number of seconds).

    >>> to_seconds("5m"), to_seconds(3), to_seconds("250ms")
    (300.0, 3.0, 0.25)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("must be a duration such as 30s")
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a duration of 0 or more, such as 30s")
    return seconds


Duration = Annotated[float, BeforeValidator(to_seconds)]
Severity = Literal["info", "warning", "critical"]


def check_http_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host, else ValueError (which never quotes it).

    >>> check_http_url("https://example.com/hook")
    'https://example.com/hook'
    >>> check_http_url("ftp://example.com/")
    Traceback (most recent call last):
    ...
    ValueError: not an http(s) URL
    """
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("not an http(s) URL")
    return url


class SinkConfig(BaseModel):
    """Keys every sink has beside ``type``; each maps onto a SinkPolicy field.

    ``SECRETS`` names the keys that may instead be given as ``KEY_file`` (a
    file holding the value) or ``KEY_env`` (an environment variable's name).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
    SECRETS: ClassVar[tuple[str, ...]] = ()

    type: str
    min_severity: Severity = "info"
    group_wait: Duration = _DEFAULT.group_wait_s
    max_group: int = Field(_DEFAULT.max_group, ge=1, le=1000)
    rate_limit: float = Field(_DEFAULT.rate_limit_per_min, gt=0)
    repeat: Duration = _DEFAULT.repeat_s
    max_age: Duration = _DEFAULT.max_age_s

    def policy(self) -> SinkPolicy:
        """The delivery knobs the alert manager reads."""
        return SinkPolicy(self.min_severity, self.group_wait, self.max_group, self.rate_limit,
                          self.repeat, self.max_age)


class HttpSinkConfig(SinkConfig):
    """Keys of the sinks that POST: ``timeout`` (10s), ``tls_verify`` (true), extra ``headers``."""

    timeout: Duration = Field(10.0, gt=0)
    tls_verify: bool = True
    headers: dict[str, str] = {}


class BaseSink:
    """A sink's name, policy and config; an aiohttp session made on first use."""

    Config: ClassVar[type[SinkConfig]] = SinkConfig

    def __init__(self, name: str, config: SinkConfig) -> None:
        self.name = name
        self.config = config
        self.policy = config.policy()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    async def send(self, group: Sequence[Notification]) -> SendResult:  # pragma: no cover - abstract
        """Deliver one group as one message."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Values that must never reach an error line."""
        return []

    def session(self) -> aiohttp.ClientSession:
        """The HTTP session, made on first use in the running loop (and again in a new loop)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            cfg = self.config
            verify = getattr(cfg, "tls_verify", True)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=getattr(cfg, "timeout", 10.0)),
                connector=aiohttp.TCPConnector(ssl=None if verify else False),
                headers={"User-Agent": USER_AGENT})
            self._loop = loop
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        """POST ``body`` and classify the answer (:mod:`cgwatch.sinks.retry`);
        :meth:`check_answer` may turn a 2xx into a failure."""
        try:
            async with self.session().post(url, data=body, headers=dict(headers), allow_redirects=False) as resp:
                answer = await resp.content.read(MAX_ANSWER)
                result = classify(resp.status, resp.headers.get("Retry-After"))
                if result.ok:
                    result = self.check_answer(answer) or result
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            result = SendResult.retry_later(describe(e, getattr(self.config, "timeout", None)))
        if result.error:
            where = redact_url(url) if self.secrets() else url
            return type(result)(result.ok, result.retry, result.retry_after,
                                scrub(f"{result.error} from {where}", self.secrets()))
        return result

    def check_answer(self, body: bytes) -> SendResult | None:
        """A receiver's quirk: a 2xx answer that is a failure after all (None: it is fine)."""
        return None

    async def close(self) -> None:
        """Release the HTTP session, if one was made."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def sink_class(type_name: str) -> type[BaseSink]:
    """The class of a sink type (KeyError if there is none such).

    >>> sink_class("stdout").__name__
    'StdoutSink'
    """
    module, cls = SINKS[type_name].split(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def build_sinks(configs: Mapping[str, SinkConfig | Mapping[str, Any]]) -> dict[str, Sink]:
    """name -> Sink, from validated configs or plain mappings (validated here;
    pydantic's ValidationError or KeyError for an unknown type)."""
    out: dict[str, Sink] = {}
    for name, cfg in configs.items():
        type_name = cfg.type if isinstance(cfg, SinkConfig) else cfg["type"]
        cls = sink_class(type_name)
        if not isinstance(cfg, cls.Config):
            cfg = cls.Config.model_validate(dict(cfg) if isinstance(cfg, Mapping) else cfg.model_dump())
        out[name] = cls(name, cfg)
    return out


def test_notification(host: str, now: float | None = None) -> Notification:
    """A notification that says plainly it is a test (rule ``cgwatch-test``, severity info).

    >>> n = test_notification("node-1", now=0.0)
    >>> n.rule, n.severity, n.state, n.summary
    ('cgwatch-test', 'info', 'firing', 'cgwatch test notification from node-1: delivery works')
    """
    now = time.time() if now is None else now
    return Notification(
        id=f"test-{uuid.uuid4().hex[:16]}", fingerprint="cgwatch-test/cgwatch", ts=now, rule="cgwatch-test",
        state="firing", severity="info", value=None,
        summary=f"cgwatch test notification from {host}: delivery works",
        container="cgwatch-test", container_id="", runtime="", starts_at=now, host=host,
        description="Sent by `cgwatch notify test`; nothing is wrong.", labels={"test": "true"})


test_notification.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


async def notify_test(sinks: Mapping[str, Sink], host: str) -> list[tuple[str, SendResult]]:
    """Send one test notification to every sink at once (whatever its
    ``min_severity``); (name, result) in the order of ``sinks``."""
    note = test_notification(host)

    async def one(sink: Sink) -> SendResult:
        try:
            return await sink.send([note])
        except Exception as e:  # a sink bug must not hide the other sinks' answers
            return SendResult.failed(f"{type(e).__name__}: {' '.join(str(e).split())}"[:200])

    results = await asyncio.gather(*(one(s) for s in sinks.values()))
    return list(zip(sinks, results))
