"""``serve``: binding IPv4 and IPv6, a busy port's clear error, and malformed ``listen`` values."""

from __future__ import annotations

import asyncio
import errno
import socket

import aiohttp
import pytest

from cgwatch.web import build_app, serve
from cgwatch.web.app import parse_listen
from tests.web.conftest import MemoryView


def test_busy_port_says_so(view: MemoryView) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def body() -> None:
            await serve(build_app(view), f"127.0.0.1:{port}")

        with pytest.raises(OSError) as caught:
            asyncio.run(body())
    assert caught.value.errno == errno.EADDRINUSE
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in str(caught.value)


def test_unresolvable_host_names_itself(view: MemoryView) -> None:
    with pytest.raises(OSError, match=r"cannot listen on no-such-host\.invalid:9477: "):
        asyncio.run(serve(build_app(view), "no-such-host.invalid:9477"))


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_ipv6_listen(view: MemoryView) -> None:
    async def body() -> tuple[tuple[str, int], int, str]:
        runner = await serve(build_app(view), "[::1]:0")
        try:
            host, port = runner.addresses[0][:2]
            async with aiohttp.ClientSession() as http, http.get(f"http://[::1]:{port}/healthz") as r:
                return (host, port), r.status, await r.text()
        finally:
            await runner.cleanup()

    (host, port), status, text = asyncio.run(body())
    assert host == "::1" and port > 0
    assert (status, text) == (200, "ok\n")


@pytest.mark.parametrize(("listen", "message"), [
    ("9477", "listen: '9477' is not HOST:PORT or [IPv6]:PORT"),
    (":9477", "listen: ':9477' is not HOST:PORT or [IPv6]:PORT"),
    ("::1:9477", "listen: '::1:9477' is not HOST:PORT or [IPv6]:PORT (put IPv6 addresses in brackets)"),
    ("127.0.0.1:http", "listen: '127.0.0.1:http' is not HOST:PORT or [IPv6]:PORT"),
    ("127.0.0.1:70000", "listen: port 70000 in '127.0.0.1:70000' is not between 0 and 65535"),
])
def test_bad_listen_values(listen: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_listen(listen)
    assert str(caught.value) == message


def test_good_listen_values() -> None:
    assert parse_listen("0.0.0.0:9477") == ("0.0.0.0", 9477)
    assert parse_listen("[fe80::1%eth0]:80") == ("fe80::1%eth0", 80)
    assert parse_listen(" localhost:9477 ") == ("localhost", 9477)
