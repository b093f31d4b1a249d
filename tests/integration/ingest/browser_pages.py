"""Pages of another origin for the browser-SDK tests: a small aiohttp server on loopback
that serves Segment's and RudderStack's browser SDKs from ``js/node_modules`` (installed
by ``make js`` from the lock file) and one page per SDK pointed at the collector, each
configured offline (no settings or plugins fetched from a vendor's CDN)."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web

from tests.helpers import REPO

NODE_MODULES = REPO / "js" / "node_modules"
SEGMENT_UMD = NODE_MODULES / "@segment" / "analytics-next" / "dist" / "umd"
RUDDER_UMD = NODE_MODULES / "@rudderstack" / "analytics-js" / "dist" / "npm" / "modern" / \
    "bundled" / "umd"

# Each page makes one visitor: anonymous page view and product views, then alias, sign-in
# (identify) and group; window.sdkDone says the calls returned, window.sdkError why not.
SEGMENT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>segment</title>
<script src="/sdk/segment/index.js"></script></head><body><script>
(async () => {
  try {
    const cfg = %(config)s;
    const segment = {apiKey: cfg.writeKey, apiHost: cfg.apiHost, protocol: "http"};
    if (cfg.batching) {  // analytics-next's batching mode posts to /v1/b
      segment.deliveryStrategy = {strategy: "batching", config: {size: 5, timeout: 500}};
    }
    const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
      {writeKey: cfg.writeKey, cdnURL: cfg.cdn,
       cdnSettings: {integrations: {"Segment.io": segment}}},
      {integrations: {"Segment.io": segment}});
    const anon = analytics.user().anonymousId();
    await analytics.page("Shop", "Home");
    await analytics.track("Product Viewed", {product_id: "sku-1", category: "shoes"});
    await analytics.alias(cfg.userId, anon);
    await analytics.identify(cfg.userId, {email: cfg.email, name: "Ada"});
    await analytics.group("acme", {name: "Acme", plan: "pro"});
    window.anonymousId = anon;
    window.sdkDone = true;
  } catch (e) { window.sdkError = String(e && e.stack || e); }
})();
</script></body></html>"""

RUDDER_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rudderstack</title>
<script src="/sdk/rudderstack/index.js"></script></head><body><script>
(() => {
  try {
    const cfg = %(config)s;
    const source = {source: {id: "src-web", name: "web", workspaceId: "ws-test",
                             enabled: true, config: {}, destinations: []}};
    const ra = new rudderanalytics.RudderAnalytics();
    ra.load(cfg.writeKey, cfg.dataPlane, {
      getSourceConfig: () => source, polyfillIfRequired: false, logLevel: "ERROR"});
    ra.ready(() => {
      const anon = ra.getAnonymousId();
      ra.page("Shop", "Home");
      ra.track("Product Viewed", {product_id: "sku-2", category: "hats"});
      ra.alias(cfg.userId, anon);
      ra.identify(cfg.userId, {email: cfg.email, name: "Grace"});
      ra.group("globex", {name: "Globex", plan: "team"});
      window.anonymousId = anon;
      window.sdkDone = true;
    });
  } catch (e) { window.sdkError = String(e && e.stack || e); }
})();
</script></body></html>"""


def page_app(collector_url: str, write_key: str) -> web.Application:
    """The page server: ``/segment.html?user=&email=[&batching=1]`` and
    ``/rudderstack.html?user=&email=``, and
    the SDK bundles (analytics-next's lazily loaded chunks under its CDN path)."""
    host = collector_url.split("://", 1)[1]

    def page(template: str):
        async def handler(request: web.Request) -> web.Response:
            config = {"writeKey": write_key, "apiHost": f"{host}/v1",
                      "dataPlane": collector_url, "cdn": f"{request.scheme}://{request.host}",
                      "userId": request.query["user"], "email": request.query["email"],
                      "batching": request.query.get("batching") == "1"}
            html = template % {"config": orjson.dumps(config).decode()}
            return web.Response(text=html, content_type="text/html")
        return handler

    def files(root: Path):
        # Read in the loop (small files): aiohttp's static route would start an executor
        # thread that outlives the test.
        async def handler(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            path = root / name
            if "/" in name or not name.endswith(".js") or not path.is_file():
                raise web.HTTPNotFound()
            return web.Response(body=path.read_bytes(), content_type="text/javascript")
        return handler

    app = web.Application()
    async def blank(_request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>blank</title>", content_type="text/html")

    app.router.add_get("/blank.html", blank)
    app.router.add_get("/segment.html", page(SEGMENT_PAGE))
    app.router.add_get("/rudderstack.html", page(RUDDER_PAGE))
    app.router.add_get("/sdk/segment/{name}", files(SEGMENT_UMD))
    app.router.add_get("/analytics-next/bundles/{name}", files(SEGMENT_UMD))
    app.router.add_get("/sdk/rudderstack/{name}", files(RUDDER_UMD))
    return app


def bundles_present() -> list[Path]:
    """The bundle files a page loads that are missing (run ``make js``)."""
    return [p for p in (SEGMENT_UMD / "index.js", RUDDER_UMD / "index.js") if not p.is_file()]
