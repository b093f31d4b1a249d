"""The demo storefront at ``/demo`` in ``streams serve``: a small shop page instrumented
with Segment's browser SDK (``streams.demo.sdk``: fetched from npm into the cache by
``streams up``), so a newcomer makes real browser events by clicking.

GET /demo                      the shop (HTML; its config: a web write key, the collector)
GET /demo/static/{file}        the page's script and style
GET /demo/sdk/{file}           the SDK bundle from the cache (also its lazily loaded chunks,
                               under /demo/sdk/analytics-next/bundles/{file})
GET /demo/visitor.json?anonymousId=ID
                               the visitor's profile id, identifiers and messages (404
                               until the worker folded their first event)

The page posts to the collector on the same server (no CORS needed). ``visitor.json``
answers only by anonymousId, the random id the visitor's own browser holds, shows no
traits or message addresses, and only while the server listens on a loopback address
(beyond it, a person's identifiers need a read token: ``/people``).
"""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.db import async_engine
from streams.demo import reads
from streams.demo.sdk import VERSION, bundle_dir
from streams.ops.views import is_loopback
from streams.profiles.store import ProfileStore
from streams.settings import Settings

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"demo.js": "text/javascript", "demo.css": "text/css"}
ENGINE_KEY = web.AppKey("demo_engine", AsyncEngine)


def web_write_key(settings: Settings) -> str | None:
    """The first write key bound to the web source (the page's SDK posts with it; a
    browser write key is public by design, as in Segment)."""
    return next((k for k, source in settings.collector.write_keys.items() if source == "web"),
                None)


def page_config(settings: Settings) -> dict:
    """What the page's script needs: the write key, the SDK version, whether it is here."""
    return {"writeKey": web_write_key(settings), "sdkVersion": VERSION,
            "sdkReady": bundle_dir(settings.cache_dir) is not None}


def register(app: web.Application, settings: Settings) -> None:
    """Add the demo routes to ``app``; a small database engine opens and closes with it."""

    async def engine_context(app: web.Application):
        engine = async_engine(settings, pool_size=1, max_overflow=1)
        app[ENGINE_KEY] = engine
        yield
        await engine.dispose()

    app.cleanup_ctx.append(engine_context)

    async def page(_request: web.Request) -> web.Response:
        html = (STATIC / "demo.html").read_text()
        config = orjson.dumps(page_config(settings)).decode().replace("</", "<\\/")
        return web.Response(text=html.replace("{{config}}", config), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC / name).read_bytes(), content_type=STATIC_FILES[name])

    async def sdk(request: web.Request) -> web.Response:
        folder = bundle_dir(settings.cache_dir)
        name = request.match_info["name"]
        if folder is None or "/" in name or not name.endswith(".js") \
                or not (folder / name).is_file():
            raise web.HTTPNotFound()
        return web.Response(body=(folder / name).read_bytes(), content_type="text/javascript",
                            headers={"Cache-Control": "max-age=3600"})

    local = is_loopback(settings.http_host)

    async def visitor(request: web.Request) -> web.Response:
        if not local:
            # Beyond loopback a person's identifiers need a read token: /people.
            return web.json_response({"error": "the demo's visitor view is served on a "
                                      "loopback address only; use /people with a read "
                                      "token", "field": "host"}, status=403)
        anonymous_id = request.query.get("anonymousId", "")
        if not anonymous_id or len(anonymous_id) > 200:
            return web.json_response({"error": "anonymousId is required", "field":
                                      "anonymousId"}, status=400)
        engine = request.app[ENGINE_KEY]
        store = ProfileStore.for_settings(settings, engine)
        try:
            doc = await reads.visitor(engine, store, settings.profiles_schema or None,
                                      anonymous_id)
        except SQLAlchemyError as exc:
            return web.json_response({"error": f"database unavailable ({type(exc).__name__})",
                                      "field": "database"}, status=503)
        if doc is None:
            return web.json_response({"error": "no profile yet", "field": "anonymousId"},
                                     status=404)
        return web.json_response(doc)

    app.router.add_get("/demo", page)
    app.router.add_get("/demo/static/{name}", static)
    app.router.add_get("/demo/sdk/{name}", sdk)
    app.router.add_get("/demo/sdk/analytics-next/bundles/{name}", sdk)
    app.router.add_get("/demo/visitor.json", visitor)
