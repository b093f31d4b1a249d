"""Serving a page's static files (scripts, styles, Plotly) from package data: the ops
dashboard and the person page share this one handler."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources

from aiohttp import web


def static_handler(files: Mapping[str, tuple[str, str, str]]
                   ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for ``{name}`` routes serving ``files`` (name -> (package, path in
    the package, content type)): read once and kept with a gzip copy, sent gzipped when the
    client accepts it, cached an hour by browsers; 404 for any other name."""
    cache: dict[str, tuple[bytes, bytes, str]] = {}

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound(text="no such file")
        if name not in cache:
            package, path, content_type = files[name]
            raw = resources.files(package).joinpath(path).read_bytes()
            cache[name] = (raw, gzip.compress(raw, 6), content_type)
        raw, packed, content_type = cache[name]
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff",
                   "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=packed, content_type=content_type, headers=headers)
        return web.Response(body=raw, content_type=content_type, headers=headers)

    return static
