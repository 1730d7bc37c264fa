"""What every response carries and what every request must show: security headers,
the query-size limit and, when a token is configured, the token.

With a token, a request needs ``Authorization: Bearer <token>`` or the
``cgwatch_token`` cookie, which a browser gets by opening ``/?token=<token>``
once (answered by a redirect to ``/`` that sets the cookie HttpOnly,
SameSite=Strict). The cookie does not hold the token itself but
:func:`cookie_value`, an HMAC-SHA256 keyed by the token: a leaked cookie (a
browser profile, a proxy's log) gives no Bearer token for scripts. Anything
else is a 401 with a JSON error. Tokens and cookies are compared in constant
time.

Every response says ``Server: cgwatch``, not the Python and aiohttp versions.

Examples
--------
>>> token_ok("s3cret", "s3cret"), token_ok("s3cre", "s3cret"), token_ok("", "s3cret")
(True, False, False)
>>> HEADERS["X-Frame-Options"]
'DENY'
>>> cookie_value("s3cret") != "s3cret", len(cookie_value("s3cret"))
(True, 64)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from .handlers import error

__all__ = ["COOKIE", "CSP", "HEADERS", "MAX_QUERY", "SERVER", "add_headers", "auth_middleware", "cookie_value",
           "limits_middleware", "token_ok"]

#: the Content-Security-Policy of every response: no inline script or style, nothing from elsewhere
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
#: the ``Server`` header of every response: the name, no versions
SERVER = "cgwatch"
#: the name of the cookie proving the token (its value is :func:`cookie_value`)
COOKIE = "cgwatch_token"
#: what :func:`cookie_value` signs; a new label invalidates every cookie given out before
COOKIE_LABEL = b"cgwatch dashboard cookie v1"
#: longest query string accepted (bytes); longer is a 414
MAX_QUERY = 2048

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Middleware = Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]


def token_ok(given: str, token: str) -> bool:
    """Whether ``given`` is ``token``, compared in constant time (an empty ``given`` never is)."""
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def cookie_value(token: str) -> str:
    """What the auth cookie holds for ``token``: HMAC-SHA256 of :data:`COOKIE_LABEL` keyed by the
    token, in hex. It proves the token without being it."""
    return hmac.new(token.encode("utf-8"), COOKIE_LABEL, hashlib.sha256).hexdigest()


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers and ``Server: cgwatch``, on every response
    (streams and errors too)."""
    response.headers["Server"] = SERVER
    for key, value in HEADERS.items():
        response.headers.setdefault(key, value)


def limits_middleware() -> _Middleware:
    """Refuse a query string over :data:`MAX_QUERY` bytes with a JSON 414."""

    @web.middleware
    async def limits(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if len(request.query_string) > MAX_QUERY:
            return error(414, f"query string too long ({len(request.query_string)} bytes; at most {MAX_QUERY})")
        return await handler(request)

    return limits


def auth_middleware(token: str, public: Iterable[str] = ()) -> _Middleware:
    """Every request needs ``token`` (header or cookie), except GETs of the exact paths in
    ``public`` (``/healthz`` for kubelet probes, ``/metrics`` for Prometheus, where the operator
    says so); ``/?token=`` sets the cookie (:func:`cookie_value`, not the token)."""
    open_paths = frozenset(public)
    cookie = cookie_value(token)

    @web.middleware
    async def auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path in open_paths and request.method in ("GET", "HEAD"):
            return await handler(request)
        if request.path == "/" and "token" in request.query:
            if not token_ok(request.query.get("token", ""), token):
                return _unauthorized("wrong token")
            redirect = web.HTTPSeeOther("/", headers={"Cache-Control": "no-store"})
            redirect.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path="/", secure=request.secure)
            raise redirect
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, given = header.partition(" ")
            ok = scheme.lower() == "bearer" and token_ok(given.strip(), token)
        else:
            ok = token_ok(request.cookies.get(COOKIE, ""), cookie)
        if not ok:
            return _unauthorized("this cgwatch needs a token: send 'Authorization: Bearer <token>', "
                                 "or open /?token=<token> once in a browser")
        return await handler(request)

    return auth


def _unauthorized(message: str) -> web.Response:
    resp = error(401, message)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="cgwatch"'
    return resp
