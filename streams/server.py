"""The HTTP server of ``streams serve``: collector, profile API and /ops on one aiohttp app.

Each domain adds its routes through a ``register(app, settings)`` function in its
``views.py``; this module only composes them.
"""

from __future__ import annotations

from aiohttp import web

from streams.settings import Settings

SETTINGS_KEY = web.AppKey("settings", Settings)


def create_web_app(settings: Settings) -> web.Application:
    """Build the aiohttp application with every domain's routes. Does not listen yet."""
    app = web.Application(client_max_size=512 * 1024)
    app[SETTINGS_KEY] = settings

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    # Domain routes (one line each):
    from streams.ops.views import register as register_ops  # ops: /ops, /metrics
    register_ops(app, settings)
    from streams.ingest.views import register as register_ingest  # ingest: collector /v1/*
    register_ingest(app, settings)
    from streams.profiles import views as profile_views  # profiles domain

    profile_views.register(app, settings)
    from streams.people.views import register as register_people  # the person page: /people
    register_people(app, settings)
    from streams.demo.views import register as register_demo  # demo storefront: /demo
    register_demo(app, settings)
    return app
