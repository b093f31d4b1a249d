"""CORS for the collector's paths, so that browser SDKs on a page of another origin can
post events (``STREAMS_CORS_ORIGINS``).

Only the collector's paths (``/v1/track`` ... ``/v1/batch`` and their short forms
``/v1/t`` ... ``/v1/b``) are answered; the profile API, /ops and everything else never
get an ``Access-Control-*`` header from here, so a page of another origin can never read
them.

- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed
  origin is answered 204 with the methods and headers the SDKs send (Segment's
  analytics-next posts ``text/plain``; RudderStack's SDK sends ``Authorization``,
  ``AnonymousId`` and ``SentAt`` headers); from any other origin it is answered 403
  without CORS headers, so the browser sends nothing.
- A request that carries an ``Origin`` that is not allowed is refused 403 before its body
  is read: a ``text/plain`` POST is a "simple" request, sent without a preflight, so
  the browser's own check would come too late (the event would already be written).
  Requests without ``Origin`` (server SDKs, curl) are not concerned.

Origins are ``scheme://host[:port]`` patterns, comma-separated; ``:*`` matches any port
and ``*`` alone any origin (only when set explicitly). The default is every loopback
origin (``http://localhost:*``, ``http://127.0.0.1:*``, ``http://[::1]:*``), so a local
page just works. aiohttp-cors was considered: it matches exact origins only (no port
wildcard) and configures per route, which a one-middleware policy does not need.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from aiohttp import web

DEFAULT_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")
ALLOWED_METHODS = "POST, OPTIONS"
# What the browser SDKs ask for in their preflights: analytics-next sends Authorization
# (beside the body's writeKey) and X-Retry-Count on a retry; RudderStack Authorization,
# AnonymousId, SentAt, Retry-Attempt and Retry-Reason on a retry, Custom-Authorization
# after setAuthToken; JSON clients Content-Encoding and X-Requested-With.
ALLOWED_HEADERS = ("Content-Type, Authorization, AnonymousId, SentAt, Content-Encoding, "
                   "X-Requested-With, X-Retry-Count, Retry-Attempt, Retry-Reason, "
                   "Custom-Authorization")
MAX_AGE = "600"

# The collector's paths (long, short and Segment's import); the only ones CORS opens.
COLLECTOR_PATH = re.compile(
    r"/v1/(?:track|page|screen|identify|alias|group|batch|import|[tpsiagb])/?")


class CorsConfigError(ValueError):
    """``STREAMS_CORS_ORIGINS`` holds something that is not an origin pattern."""


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which origins may call the collector from a browser. Pure; never blocks."""

    any_origin: bool
    exact: frozenset[str]
    any_port: frozenset[str]  # "scheme://host" of the ":*" patterns

    def allows(self, origin: str) -> bool:
        """True when a page of ``origin`` (an Origin header's value) may post events."""
        if self.any_origin:
            return True
        origin = origin.strip().lower()
        if origin in self.exact:
            return True
        parts = urlsplit(origin)
        try:
            port = parts.port
        except ValueError:
            return False
        if not parts.scheme or not parts.hostname or parts.path:
            return False
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        # With or without an explicit port, "scheme://host" must be a ":*" pattern.
        return f"{parts.scheme}://{host}" in self.any_port and (port is None or port > 0)


def parse_origins(raw: str | Iterable[str] | None) -> OriginPolicy:
    """The policy of a ``STREAMS_CORS_ORIGINS`` value; empty or None gives the loopback
    default. Raises CorsConfigError naming an entry that is not ``scheme://host[:port|:*]``.
    """
    items = raw.split(",") if isinstance(raw, str) else list(raw or ())
    entries = [i.strip().lower().rstrip("/") for i in items if i and i.strip()]
    if not entries:
        entries = list(DEFAULT_ORIGINS)
    any_origin = False
    exact: set[str] = set()
    any_port: set[str] = set()
    for entry in entries:
        if entry == "*":
            any_origin = True
            continue
        match = re.fullmatch(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:(\*|\d{1,5}))?", entry)
        if match is None:
            raise CorsConfigError(
                f"STREAMS_CORS_ORIGINS entry {entry[:80]!r} is not an origin: use "
                "scheme://host, scheme://host:port or scheme://host:* (or * alone)")
        if match.group(4) == "*":
            any_port.add(f"{match.group(1)}://{match.group(2)}")
        else:
            exact.add(entry)
    return OriginPolicy(any_origin, frozenset(exact), frozenset(any_port))


def _refused(origin_field: str, message: str) -> web.Response:
    return web.Response(status=403, content_type="application/json", body=orjson.dumps(
        {"success": False, "error": "origin_not_allowed", "field": origin_field,
         "message": message}))


def cors_middleware(policy: OriginPolicy) -> Callable:
    """An aiohttp middleware applying ``policy`` to the collector's paths only."""

    @web.middleware
    async def cors(request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
        if COLLECTOR_PATH.fullmatch(request.path) is None:
            return await handler(request)
        origin = request.headers.get("Origin")
        preflight = (request.method == "OPTIONS"
                     and "Access-Control-Request-Method" in request.headers)
        if origin is None:
            if preflight:
                return _refused("Origin", "a CORS preflight needs an Origin header")
            return await handler(request)
        if not policy.allows(origin):
            # Never repeat the origin: it is the caller's input, kept out of answers.
            return _refused("Origin", "this origin may not post events here; see "
                                      "STREAMS_CORS_ORIGINS")
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                   # RudderStack's SDK sends its XHRs with credentials.
                   "Access-Control-Allow-Credentials": "true"}
        if preflight:
            return web.Response(status=204, headers={
                **headers, "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": MAX_AGE})
        response = await handler(request)
        response.headers.update(headers)
        return response

    return cors
