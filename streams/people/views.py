"""The person page in ``streams serve``: an HTML shell and the JSON it draws from.

GET    /people                                 the page (no data in it: public)
GET    /people/static/{name}                   its script, style sheet and Plotly
GET    /people/search?q=...                    {"id", "matched", "followed_from"}: q is a
                                               profile id, TYPE:VALUE or a bare value; a
                                               merged-away id answers with its survivor
GET    /people/{profile_id}.json               everything the page shows (read token)
GET    /people/{profile_id}/timeline.json      one more timeline page: ?before=CURSOR&limit=N
DELETE /people/{profile_id}                    forget the person (forget token)

The JSON routes need the profile API's token (``Authorization: Bearer`` or ``?token=``):
401 without a valid one, 403 when its scope does not allow the call. The page asks for
the read token once, keeps it in the tab's sessionStorage and sends it as a header.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources

import orjson
from aiohttp import web

from streams.auth import authorize, install_access
from streams.db import async_engine
from streams.people import logic
from streams.people.models import TIMELINE_PAGE, TIMELINE_PAGE_MAX, Lookup
from streams.people.store import PeopleStore
from streams.profiles.store import ProfileStore
from streams.settings import Settings
from streams.static_files import static_handler

PEOPLE_STORE = web.AppKey("people_store", PeopleStore)
PEOPLE_FORGET = web.AppKey("people_forget", ProfileStore)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATIC = {
    "people.js": ("streams.people", "static/people.js", "text/javascript"),
    "people.css": ("streams.people", "static/people.css", "text/css"),
    "plotly.min.js": ("plotly", "package_data/plotly.min.js", "text/javascript"),
}
_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def _error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


# --- access ----------------------------------------------------------------------------
# The profile API's tokens (streams/auth.py): the page's data routes need ``read``, its
# forget route ``forget``; 401 / 403 / 429 answers come from there, with the same rate.
def _require_read(request: web.Request) -> None:
    """Raise 401/403/429 unless the request carries a token with the ``read`` scope."""
    authorize(request, "read", query_token=True)


def _require_forget(request: web.Request) -> None:
    """Raise 401/403/429 unless the request carries a token with the ``forget`` scope."""
    authorize(request, "forget")


def _protected(check: Callable[[web.Request], None], handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        check(request)
        response = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return guarded


# --- routes -----------------------------------------------------------------------------
def _profile_id(request: web.Request) -> str | None:
    try:
        return str(uuid.UUID(request.match_info["profile_id"]))
    except ValueError:
        return None


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(TIMELINE_PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= TIMELINE_PAGE_MAX:
        raise ValueError(f"limit must be 1..{TIMELINE_PAGE_MAX}")
    return int(raw)


def _json(doc: dict) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


def register(app: web.Application, settings: Settings,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """Add the person page's routes to ``app``; their engine opens and closes with it.
    Raises AccessConfigError when STREAMS_API_TOKENS is malformed."""
    install_access(app, settings)
    rules = settings.identity

    async def stores(app: web.Application) -> AsyncIterator[None]:
        engine = async_engine(settings, pool_size=2, max_overflow=2)
        app[PEOPLE_STORE] = PeopleStore(engine, settings.profiles_schema or None)
        app[PEOPLE_FORGET] = ProfileStore.for_settings(settings, engine)
        yield
        await engine.dispose()

    app.cleanup_ctx.append(stores)
    page = resources.files("streams.people").joinpath("static/people.html").read_bytes()

    async def shell(request: web.Request) -> web.Response:
        # The page itself holds no data, but answers 401 without a read token (header or
        # ?token=, which its script moves to the tab's sessionStorage): the same page,
        # whose token panel asks for one.
        headers = {"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY",
                   "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
        status = 200
        try:
            authorize(request, "read", query_token=True)
        except (web.HTTPUnauthorized, web.HTTPForbidden):
            status = 401
            headers["WWW-Authenticate"] = 'Bearer realm="streams-people"'
        return web.Response(body=page, status=status, content_type="text/html",
                            charset="utf-8", headers=headers)

    async def search(request: web.Request) -> web.Response:
        try:
            lookup = logic.parse_query(request.query.get("q", ""))
        except ValueError as exc:
            return _error(400, "q", str(exc))
        found = await request.app[PEOPLE_STORE].locate(lookup)
        if found is None:
            return _error(404, "q", "no person matches that")
        followed = lookup.profile_id if lookup.profile_id not in (None, found[0]) else None
        return _json({"id": found[0], "matched": found[1], "followed_from": followed})

    async def person(request: web.Request) -> web.Response:
        pid = _profile_id(request)
        if pid is None:
            return _error(400, "profile_id", "profile_id must be a UUID")
        try:
            limit = _limit(request)
        except ValueError as exc:
            return _error(400, "limit", str(exc))
        store = request.app[PEOPLE_STORE]
        found = await store.locate(Lookup(profile_id=pid))
        rows = await store.person(found[0], limit) if found else None
        if rows is None:
            return _error(404, "profile_id", f"no person {pid}")
        return _json({**logic.person_page(rows, rules, clock(), limit), "requested": pid})

    async def timeline(request: web.Request) -> web.Response:
        pid = _profile_id(request)
        if pid is None:
            return _error(400, "profile_id", "profile_id must be a UUID")
        try:
            limit = _limit(request)
            before = request.query.get("before")
            cursor = logic.decode_cursor(before) if before else None
        except ValueError as exc:
            return _error(400, "before" if "cursor" in str(exc) else "limit", str(exc))
        events = await request.app[PEOPLE_STORE].timeline(pid, cursor, limit + 1)
        return _json(logic.timeline_page(events, limit))

    async def forget(request: web.Request) -> web.Response:
        pid = _profile_id(request)
        if pid is None:
            return _error(400, "profile_id", "profile_id must be a UUID")
        removed = await request.app[PEOPLE_FORGET].forget(pid)
        if removed is None:
            return _error(404, "profile_id", f"no person {pid}")
        return _json({"forgotten": removed})

    static = static_handler(_STATIC)

    read, forget_scope = _require_read, _require_forget
    app.router.add_get("/people", shell)
    app.router.add_get("/people/", shell)
    app.router.add_get("/people/static/{name}", static)
    app.router.add_get("/people/search", _protected(read, search))
    app.router.add_get(r"/people/{profile_id:[0-9a-fA-F-]{32,36}}.json", _protected(read, person))
    app.router.add_get("/people/{profile_id}/timeline.json", _protected(read, timeline))
    app.router.add_delete("/people/{profile_id}", _protected(forget_scope, forget))
