"""Access to the profile API and the pages that show people: bearer tokens with scopes,
and a rate limit per token (or per client address without a valid token).

Use, in a domain's ``register(app, settings)``::

    from streams.auth import install_access, require

    install_access(app, settings)            # once per app; later calls do nothing

    @require("read")                          # "read" or "forget" (forget implies read)
    async def handler(request): ...

    @require("read", query_token=True)        # pages: ?token= is accepted as well
    async def page(request): ...

    caller = authorize(request, "forget")     # or inside a handler: raises the 401/403/429

A protected handler runs only for a known token whose scope allows the call; the token
that called is ``request[API_CALLER]`` (its name and scope, never its value). Answers:
401 (no token, or an unknown one) with ``WWW-Authenticate: Bearer``, 403 (scope too
small), 429 with ``Retry-After`` (over the rate). The limit is taken before the request
body is read. Tokens are compared in constant time, against every configured token.
A ``?token=`` is part of the URL: `streams serve` runs without an access log, so that it
is never written down.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps

from aiohttp import web

from streams.credentials import ApiToken
from streams.ops.views import is_loopback
from streams.settings import DEMO_WRITE_KEYS, Settings

__all__ = ["API_ACCESS", "API_CALLER", "Access", "AccessConfigError", "Caller", "RequestRate",
           "install_access", "require", "authorize", "check_exposure", "is_loopback",
           "bearer_token"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AccessConfigError(ValueError):
    """The server would expose people's data or accept public credentials."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The token that made a request: its name (``#1``: position in STREAMS_API_TOKENS)
    and scope. Never the token itself."""

    name: str
    scope: str


class RequestRate:
    """A token bucket per key (a token's name, or a client address), counted in
    requests, holding at most ``max_keys`` buckets: the least recently used goes first
    (it would be nearly full again anyway), so that requests from ever new addresses
    cannot grow memory. Holds state, does no I/O; ``rate`` <= 0 turns limiting off."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000):
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Take one request for ``key`` at monotonic ``now``; 0.0 when allowed, else the
        seconds until the bucket holds one again."""
        if self.rate <= 0:
            return 0.0
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class Access:
    """The configured tokens and the rate limiter of one server. ``check`` is pure
    apart from the limiter's state; ``monotonic`` is injectable for tests."""

    tokens: tuple[ApiToken, ...]
    limiter: RequestRate
    monotonic: Callable[[], float] = time.monotonic
    realm: str = "streams"
    _digests: tuple[bytes, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._digests = tuple(t.digest for t in self.tokens)

    @classmethod
    def for_settings(cls, settings: Settings) -> Access:
        """The access rules of ``settings.api``."""
        api = settings.api
        return cls(api.tokens, RequestRate(api.rate, api.burst))

    def identify(self, offered: str | None) -> ApiToken | None:
        """The configured token equal to ``offered``, or None. Constant time: the
        offered token's digest is compared with every token's digest, all of them."""
        if not offered:
            return None
        digest = hashlib.sha256(offered.encode()).digest()
        found: ApiToken | None = None
        for token, known in zip(self.tokens, self._digests, strict=True):
            if hmac.compare_digest(digest, known) and found is None:
                found = token
        return found

    def check(self, request: web.Request, scope: str, query_token: bool) -> Caller | web.Response:
        """The caller of ``request`` when a known token allows ``scope`` and the rate
        allows one more request; otherwise the 401, 403 or 429 to answer."""
        offered = bearer_token(request, query_token)
        token = self.identify(offered)
        # Counted per token; without a valid one per client address, so that guessing
        # tokens is as slow as the rate.
        bucket = f"token:{token.name}" if token else f"addr:{request.remote or '?'}"
        wait = self.limiter.take(bucket, self.monotonic())
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return _error(429, "rate_limited", "rate",
                          f"over the profile API's rate of {self.limiter.rate:g} requests/s; "
                          f"retry after {seconds}s", {"Retry-After": str(seconds)})
        if token is None:
            how = ("send a token as 'Authorization: Bearer <token>'"
                   + (" or ?token=<token>" if query_token else ""))
            # RFC 6750: no error code when none was offered, invalid_token otherwise.
            challenge = f'Bearer realm="{self.realm}"' + (
                ', error="invalid_token"' if offered else "")
            return _error(401, "unauthorized", "Authorization",
                          ("unknown token: " if offered else "no token: ") + how,
                          {"WWW-Authenticate": challenge})
        if not token.allows(scope):
            return _error(403, "forbidden", "scope",
                          f"token {token.name} has scope {token.scope!r}, which does not "
                          f"allow {scope!r}",
                          {"WWW-Authenticate": f'Bearer realm="{self.realm}", '
                                               f'error="insufficient_scope", scope="{scope}"'})
        return Caller(token.name, token.scope)


API_ACCESS = web.AppKey("api_access", Access)
API_CALLER = web.RequestKey("api_caller", Caller)


def bearer_token(request: web.Request, query_token: bool = False) -> str | None:
    """The token a request offers: ``Authorization: Bearer``, else (pages only)
    ``?token=``; None when it offers none."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if query_token:
        return request.query.get("token") or None
    return None


def _error(status: int, code: str, field_: str, message: str,
           headers: dict[str, str]) -> web.Response:
    # Never echoes what was offered.
    return web.json_response({"error": code, "field": field_, "detail": message},
                             status=status, headers=headers)


def install_access(app: web.Application, settings: Settings) -> Access:
    """Put the access rules of ``settings`` on ``app`` (once: later calls return the
    first) so that ``require`` finds them, also from sub-applications."""
    if API_ACCESS not in app:
        app[API_ACCESS] = Access.for_settings(settings)
    return app[API_ACCESS]


_RAISED = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 429: web.HTTPTooManyRequests}


def authorize(request: web.Request, scope: str, *, query_token: bool = False) -> Caller:
    """The caller of ``request`` when a known token allows ``scope`` (the rate taken);
    otherwise raises the 401, 403 or 429 as aiohttp's HTTPException (JSON body). For
    handlers that decide the scope inside; ``require`` is the decorator form. Raises
    RuntimeError when ``install_access`` was not called for the app."""
    caller = _check(request, scope, query_token)
    if isinstance(caller, web.Response):
        headers = {k: v for k, v in caller.headers.items()
                   if k in ("WWW-Authenticate", "Retry-After")}
        assert isinstance(caller.body, bytes)
        raise _RAISED[caller.status](text=caller.body.decode(), headers=headers,
                                     content_type="application/json")
    return caller


def _check(request: web.Request, scope: str, query_token: bool) -> Caller | web.Response:
    access = request.config_dict.get(API_ACCESS)
    if access is None:
        raise RuntimeError("streams.auth.install_access(app, settings) was not called")
    caller = access.check(request, scope, query_token)
    if isinstance(caller, Caller):
        request[API_CALLER] = caller
    return caller


def require(scope: str, *, query_token: bool = False) -> Callable[[Handler], Handler]:
    """Decorate an aiohttp handler so that it runs only for a token allowing ``scope``
    (``read`` or ``forget``); see the module's docstring. ``query_token`` also accepts
    ``?token=`` (for pages a browser opens). Raises RuntimeError at the request when
    ``install_access`` was not called for the app: a programming error, never a 200."""
    if scope not in ("read", "forget"):
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            caller = _check(request, scope, query_token)
            if isinstance(caller, web.Response):
                return caller
            response = await handler(request)
            # People's data: not cached, and a ?token= never leaks through a Referer.
            response.headers.setdefault("Cache-Control", "no-store")
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            return response

        return guarded

    return decorate


# --- what `streams serve` refuses ------------------------------------------------------


def check_exposure(settings: Settings) -> None:
    """Raise AccessConfigError when the server would listen beyond loopback with the
    built-in (public) demo write keys, without API tokens, or without a forget key."""
    if is_loopback(settings.http.host):
        return
    where = f"STREAMS_HTTP_HOST={settings.http.host} is not a loopback address"
    demo = {pair.partition("=")[0] for pair in DEMO_WRITE_KEYS.split(",")}
    if demo & set(settings.collector.write_keys):
        raise AccessConfigError(
            f"{where}, and STREAMS_WRITE_KEYS holds built-in demo keys (public): set write "
            "keys of your own")
    if not settings.api.tokens:
        raise AccessConfigError(
            f"{where}: set STREAMS_API_TOKENS (token=read or token=forget pairs) so that "
            "the profile API is not open to the network")
    if settings.api.forget_key is None:
        raise AccessConfigError(
            f"{where}: set STREAMS_FORGET_KEY (the same on every worker and server), so "
            "that forgotten people stay forgotten")
