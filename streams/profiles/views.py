"""Profile API in ``streams serve``: read a profile, find one by identifier, forget one.

GET    /v1/profiles/{profile_id}            a merged-away id answers with the survivor
GET    /v1/profiles?identifier=TYPE:VALUE   the value is normalized as the worker does
DELETE /v1/profiles/{profile_id}            forget the person

Every route needs a bearer token of ``STREAMS_API_TOKENS`` (``streams.auth``): scope
``read`` for the GETs, ``forget`` for DELETE; each token has its own rate.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from streams.auth import install_access, require
from streams.db import async_engine
from streams.identity.logic import canonical_type, normalize_value
from streams.identity.models import id_key
from streams.profiles.logic import profile_view
from streams.profiles.store import ProfileStore
from streams.settings import Settings

STORE_KEY = web.AppKey("profile_store", ProfileStore)


def _error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


def parse_identifier(raw: str) -> str:
    """``TYPE:VALUE`` from a query or the CLI, normalized; raises ValueError naming what
    is wrong."""
    id_type, sep, value = raw.partition(":")
    if not sep or not id_type or not value:
        raise ValueError("identifier must be TYPE:VALUE, e.g. email:ann@example.com")
    canonical = canonical_type(id_type)
    if canonical is None:
        raise ValueError(f"identifier type {id_type!r} is not a valid type name")
    normalized = normalize_value(canonical, value)
    if normalized is None:
        raise ValueError(f"{value!r} is not a valid {canonical}")
    return id_key(canonical, normalized)


def render(doc: dict, history: list[dict], now: datetime) -> dict:
    """The JSON answer for one profile."""
    return {**profile_view(doc, now), "merge_history": history}


def register(app: web.Application, settings: Settings,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """Add the profile routes to ``app``, behind the API tokens; the store's engine opens
    and closes with it."""
    install_access(app, settings)

    async def store_context(app: web.Application):
        engine = async_engine(settings, pool_size=3, max_overflow=2)
        app[STORE_KEY] = ProfileStore.for_settings(settings, engine)
        yield
        await engine.dispose()

    app.cleanup_ctx.append(store_context)

    def valid_id(request: web.Request) -> str | None:
        pid = request.match_info["profile_id"]
        try:
            return str(uuid.UUID(pid))
        except ValueError:
            return None

    @require("read")
    async def get_profile(request: web.Request) -> web.Response:
        pid = valid_id(request)
        if pid is None:
            return _error(400, "profile_id", "profile_id must be a UUID")
        found = await request.app[STORE_KEY].get_profile(pid)
        if found is None:
            return _error(404, "profile_id", f"no profile {pid}")
        return web.json_response(render(*found, clock()))

    @require("read")
    async def find_profile(request: web.Request) -> web.Response:
        raw = request.query.get("identifier")
        if not raw:
            return _error(400, "identifier", "query parameter identifier=TYPE:VALUE is required")
        try:
            identifier = parse_identifier(raw)
        except ValueError as exc:
            return _error(400, "identifier", str(exc))
        found = await request.app[STORE_KEY].find_by_identifier(identifier)
        if found is None:
            return _error(404, "identifier", f"no profile holds {identifier.split(':')[0]} "
                                             "with that value")
        return web.json_response(render(*found, clock()))

    @require("forget")
    async def forget_profile(request: web.Request) -> web.Response:
        pid = valid_id(request)
        if pid is None:
            return _error(400, "profile_id", "profile_id must be a UUID")
        removed = await request.app[STORE_KEY].forget(pid)
        if removed is None:
            return _error(404, "profile_id", f"no profile {pid}")
        return web.json_response({"forgotten": removed})

    app.router.add_get("/v1/profiles", find_profile)
    app.router.add_get("/v1/profiles/{profile_id}", get_profile)
    app.router.add_delete("/v1/profiles/{profile_id}", forget_profile)
