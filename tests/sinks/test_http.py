"""Every HTTP sink answers the same statuses and broken connections the same way
(one table, as Alertmanager's notify/test.RetryTests), and never leaks its URL."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from cgwatch.sinks.base import BaseSink, build_sinks
from tests.sinks.conftest import STATUS_TABLE, Receiver, note, outcome, send

SECRET_URL_PART = "SECRETPATH"


def webhook(url: str, **kw: object) -> BaseSink:
    return build_sinks({"w": {"type": "webhook", "url": url, "secret": "hmac-key-123", **kw}})["w"]  # type: ignore[return-value]


def slack(url: str, **kw: object) -> BaseSink:
    return build_sinks({"s": {"type": "slack", "url": url, **kw}})["s"]  # type: ignore[return-value]


def alertmanager(url: str, **kw: object) -> BaseSink:
    base = url.split("/hook/")[0]          # Alertmanager's URL is its base, not a secret
    return build_sinks({"a": {"type": "alertmanager", "url": base, **kw}})["a"]  # type: ignore[return-value]


MAKERS: dict[str, Callable[..., BaseSink]] = {"webhook": webhook, "slack": slack, "alertmanager": alertmanager}
HTTP_SINKS = pytest.mark.parametrize("make", list(MAKERS.values()), ids=list(MAKERS))


@HTTP_SINKS
@pytest.mark.parametrize("status,retry_after,expected,wait", STATUS_TABLE, ids=[f"{s[0]}-{s[1]}" for s in STATUS_TABLE])
def test_status_table(receiver: Receiver, make: Callable[..., BaseSink], status: int, retry_after: str | None,
                      expected: str, wait: float | None) -> None:
    receiver.status = status
    receiver.headers = {"Retry-After": retry_after} if retry_after else {}
    r = send(make(receiver.url()), [note(1)])
    assert outcome(r) == expected, r
    assert r.retry_after == wait
    assert len(receiver.requests) == 1
    if not r.ok:
        assert f"HTTP {status}" in r.error and SECRET_URL_PART not in r.error and "\n" not in r.error


@HTTP_SINKS
def test_hang_past_timeout_is_retried(receiver: Receiver, make: Callable[..., BaseSink]) -> None:
    receiver.mode = "hang"
    r = send(make(receiver.url(), timeout="300ms"), [note(1)])
    assert (r.ok, r.retry) == (False, True) and "timed out after 0.3s" in r.error
    assert SECRET_URL_PART not in r.error


@HTTP_SINKS
@pytest.mark.parametrize("mode", ["drop", "garbage"])
def test_broken_answers_are_retried(receiver: Receiver, make: Callable[..., BaseSink], mode: str) -> None:
    receiver.mode = mode
    r = send(make(receiver.url()), [note(1)])
    assert (r.ok, r.retry) == (False, True), r
    assert r.error and "\n" not in r.error and "Traceback" not in r.error and SECRET_URL_PART not in r.error
    assert len(receiver.requests) == 1      # the request did arrive; the answer was bad


@HTTP_SINKS
def test_connection_refused_is_retried(make: Callable[..., BaseSink]) -> None:
    with socket.socket() as s:          # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = send(make(f"http://127.0.0.1:{port}/hook/T0/{SECRET_URL_PART}"), [note(1)])
    assert (r.ok, r.retry) == (False, True)
    assert "cannot connect to 127.0.0.1" in r.error and SECRET_URL_PART not in r.error


@pytest.mark.parametrize("make", [webhook, slack], ids=["webhook", "slack"])
def test_secret_urls_stay_out_of_repr_and_errors(receiver: Receiver, make: Callable[..., BaseSink]) -> None:
    sink = make(receiver.url())
    assert SECRET_URL_PART not in repr(sink) and SECRET_URL_PART not in repr(sink.config)  # type: ignore[attr-defined]
    receiver.status = 500
    assert SECRET_URL_PART not in send(sink, [note(1)]).error
    assert "hmac-key-123" not in repr(sink.config)  # type: ignore[attr-defined]


@HTTP_SINKS
def test_custom_headers_are_sent(receiver: Receiver, make: Callable[..., BaseSink]) -> None:
    r = send(make(receiver.url(), headers={"Authorization": "Bearer t0k"}), [note(1)])
    assert r.ok
    assert receiver.requests[0].headers["Authorization"] == "Bearer t0k"
    assert receiver.requests[0].headers["Content-Type"] == "application/json"


def test_tls_verification_is_on_unless_turned_off() -> None:
    assert webhook("https://example.com/x").config.tls_verify is True  # type: ignore[attr-defined]
    assert webhook("https://example.com/x", tls_verify=False).config.tls_verify is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "http://", "https://exa mple.com/"])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_only_http_urls(kind: str, url: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        MAKERS[kind](url)
    assert "not an http(s) URL" in str(e.value) and url not in str(e.value)
