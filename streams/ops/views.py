"""HTTP routes of the ops domain: the /ops page, /ops/lag.json and Prometheus /metrics.

Read-only (GET and HEAD only). When ``STREAMS_OPS_TOKEN`` is set the three routes need it,
as ``Authorization: Bearer <token>`` or ``?token=<token>``; it must be set when the
server listens on anything but a loopback address. The static files (the page's script,
style sheet and the Plotly library from the ``plotly`` package) hold no data and are
served without it.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from streams.ops.metrics import exposition
from streams.ops.sampler import LagSampler, open_sampler
from streams.settings import Settings
from streams.static_files import static_handler

OPS_SAMPLER = web.AppKey("ops_sampler", LagSampler)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATIC = {
    "dashboard.js": ("streams.ops", "static/dashboard.js", "text/javascript"),
    "dashboard.css": ("streams.ops", "static/dashboard.css", "text/css"),
    "plotly.min.js": ("plotly", "package_data/plotly.min.js", "text/javascript"),
}


class OpsConfigError(ValueError):
    """The ops settings would expose the dashboard unsafely, or are malformed."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(settings: Settings) -> None:
    """Raise OpsConfigError when the server would listen beyond loopback without a token."""
    token = settings.ops.token_value()
    if token is not None and not token.strip():
        raise OpsConfigError("STREAMS_OPS_TOKEN is set but empty")
    if token is None and not is_loopback(settings.http.host):
        raise OpsConfigError(
            f"STREAMS_HTTP_HOST={settings.http.host} is not a loopback address: set "
            "STREAMS_OPS_TOKEN so that /ops, /ops/lag.json and /metrics are not open to the "
            "network"
        )


def _authorized(request: web.Request, token: str | None) -> bool:
    if token is None:
        return True
    offered = request.query.get("token")
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        offered = value.strip()
    if not offered:
        return False
    return hmac.compare_digest(offered.encode(), token.encode())


def _protected(token: str | None, handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _authorized(request, token):
            # Says how to authenticate; never echoes what was offered.
            return web.json_response(
                {"error": "unauthorized",
                 "detail": "send the ops token as 'Authorization: Bearer <token>' or ?token="},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="streams-ops"'},
            )
        response = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return guarded


def register(app: web.Application, settings: Settings, sampler: LagSampler | None = None) -> None:
    """Add the ops routes to ``app`` and run a sampler while the app runs.

    Without ``sampler`` one is built from the settings (Kafka, PostgreSQL) on startup and
    closed on cleanup; a given sampler is started and stopped but not closed. Raises
    OpsConfigError when the binding is unsafe (see :func:`check_binding`).
    """
    check_binding(settings)
    token = settings.ops.token_value()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            running = sampler
            if running is None:
                running = await stack.enter_async_context(open_sampler(settings))
            app[OPS_SAMPLER] = running
            running.start()
            stack.push_async_callback(running.stop)
            yield

    app.cleanup_ctx.append(lifecycle)
    page = resources.files("streams.ops").joinpath("static/dashboard.html").read_bytes()

    async def dashboard(_request: web.Request) -> web.Response:
        # Everything comes from this server; Plotly needs inline styles, nothing else.
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers={
            "Content-Security-Policy": (
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
            ),
            "X-Frame-Options": "DENY",
        })

    async def lag_json(request: web.Request) -> web.Response:
        report = request.app[OPS_SAMPLER].report
        return web.Response(body=orjson.dumps(report.as_dict()), content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        sampler_ = request.app[OPS_SAMPLER]
        body = exposition(lambda: sampler_.report)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    static = static_handler(_STATIC)

    app.router.add_get("/ops", _protected(token, dashboard))
    app.router.add_get("/ops/", _protected(token, dashboard))
    app.router.add_get("/ops/lag.json", _protected(token, lag_json))
    app.router.add_get("/metrics", _protected(token, metrics))
    app.router.add_get("/ops/static/{name}", static)
