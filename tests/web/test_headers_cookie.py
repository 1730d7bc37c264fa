"""What a client learns and what a cookie proves (issue 15, part 7): ``Server: cgwatch`` and no
versions; a malformed request is a JSON 400 and one WARNING line, rate-limited; the auth cookie is
derived from the token, authenticates, and the token itself no longer does as a cookie."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import platform

import aiohttp
import pytest

from cgwatch.web import build_app, serve
from cgwatch.web.security import COOKIE, cookie_value
from tests.web.conftest import MemoryView, container

TOKEN = "correct-horse-battery-staple"


async def raw(port: int, payload: bytes) -> bytes:
    """Send ``payload`` on a fresh connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


# -- the Server header ---------------------------------------------------------------------------------


def test_server_header_names_cgwatch_and_no_versions(view: MemoryView) -> None:
    view.containers_ = [container("web-1")]

    async def body() -> list[tuple[int, str]]:
        runner = await serve(build_app(view), "127.0.0.1:0")
        port = runner.addresses[0][1]
        out = []
        try:
            async with aiohttp.ClientSession() as http:
                for path in ("/healthz", "/api/v1/containers", "/", "/nope", "/static/style.css"):
                    async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                        out.append((r.status, r.headers.getall("Server")))
            status, headers, _ = split(await raw(port, b"NOT HTTP AT ALL\r\n\r\n"))
            out.append((status, [headers["server"]]))
        finally:
            await runner.cleanup()
        return out

    answers = asyncio.run(body())
    assert [status for status, _ in answers] == [200, 200, 200, 404, 200, 400]
    for _, server in answers:
        assert server == ["cgwatch"]
    for _, [server] in answers:
        assert "Python" not in server and "aiohttp" not in server and platform.python_version() not in server


# -- malformed requests --------------------------------------------------------------------------------

GARBAGE = [
    b"GARBAGE\r\n\r\n",                                        # not a method
    b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",     # a broken header
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS to the HTTP port
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",           # request line over the limit
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
]


def test_malformed_requests_answer_json_400_and_log_one_warning_line(view: MemoryView,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> list[tuple[int, str, dict[str, str]]]:
        runner = await serve(build_app(view), "127.0.0.1:0")
        port = runner.addresses[0][1]
        try:
            answers = []
            for payload in GARBAGE * 20:
                status, headers, text = split(await raw(port, payload))
                answers.append((status, headers.get("content-type", ""), json.loads(text)))
            # the server is fine afterwards
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert (r.status, await r.text()) == (200, "ok\n")
            return answers
        finally:
            await runner.cleanup()

    with caplog.at_level(logging.DEBUG):
        answers = asyncio.run(body())
    for status, ctype, doc in answers:
        assert status == 400
        assert ctype.startswith("application/json")
        assert doc["error"].startswith("bad HTTP request: ") and "\n" not in doc["error"]
    served = [r for r in caplog.records if r.name.startswith(("aiohttp", "cgwatch.web"))]
    assert not [r for r in served if r.levelno >= logging.ERROR], [r.getMessage() for r in served]
    assert not [r for r in served if r.exc_info], "no tracebacks"
    bad = [r for r in served if "bad HTTP request" in r.getMessage()]
    # 100 malformed requests within the rate limiter's window: one line, at WARNING, on one line
    assert len(bad) == 1, [r.getMessage() for r in bad]
    assert bad[0].levelno == logging.WARNING
    assert "\n" not in bad[0].getMessage()
    assert bad[0].getMessage().startswith("bad HTTP request from 127.0.0.1: BadHttpMethod: ")


# -- the cookie ----------------------------------------------------------------------------------------


def test_the_cookie_is_derived_from_the_token_and_authenticates(view: MemoryView) -> None:
    view.containers_ = [container("web-1")]
    derived = hmac.new(TOKEN.encode(), b"cgwatch dashboard cookie v1", hashlib.sha256).hexdigest()
    assert cookie_value(TOKEN) == derived

    async def body() -> None:
        runner = await serve(build_app(view, TOKEN), "127.0.0.1:0")
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as browser:
                async with browser.get(f"{base}/?token={TOKEN}", allow_redirects=False) as r:
                    assert r.status == 303
                    set_cookie = r.headers["Set-Cookie"]
                    assert TOKEN not in set_cookie
                    assert f"{COOKIE}={derived};" in set_cookie
                    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
                assert [c.value for c in jar] == [derived]
                for path in ("/", "/api/v1/containers", "/healthz"):
                    async with browser.get(base + path) as r:
                        assert r.status == 200, path
            async with aiohttp.ClientSession() as http:
                # the raw token is no longer a valid cookie; near misses are not either
                for value in (TOKEN, derived.upper(), derived[:-1], cookie_value(TOKEN + "x"), ""):
                    async with http.get(f"{base}/api/v1/containers", headers={"Cookie": f"{COOKIE}={value}"}) as r:
                        assert r.status == 401, value
                        assert r.headers["WWW-Authenticate"] == 'Bearer realm="cgwatch"'
                # the Bearer header still takes the token itself, and only the token
                async with http.get(f"{base}/api/v1/containers", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert r.status == 200
                    assert [c["name"] for c in (await r.json())["containers"]] == ["web-1"]
                async with http.get(f"{base}/api/v1/containers", headers={"Authorization": f"Bearer {derived}"}) as r:
                    assert r.status == 401
                async with http.get(f"{base}/?token=wrong", allow_redirects=False) as r:
                    assert r.status == 401 and "Set-Cookie" not in r.headers
        finally:
            await runner.cleanup()

    asyncio.run(body())


def test_cookies_differ_between_tokens() -> None:
    values = {cookie_value(t) for t in ("a", "b", "s3cret", "s3cret ", "ü")}
    assert len(values) == 5
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in values)
