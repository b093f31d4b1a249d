"""Real browser SDKs against the collector: Segment's analytics-next and RudderStack's
JavaScript SDK (npm, versions of js/package-lock.json) loaded in headless Chromium on a
page of another origin (``http://localhost:<port>``, the collector on
``http://127.0.0.1:<port>``), configured offline. Their page, track, alias, identify
and group calls reach the topics and fold (the reference fold) into one profile per
visitor; a page of an origin that is not allowed writes nothing."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from tests.helpers import eventually

from .browser_pages import bundles_present, page_app
from .support import one_profile, read_events

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.asynccontextmanager
async def serve(app: web.Application):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    finally:
        await runner.cleanup()


async def run_page(url: str, paths: set[str]) -> tuple[str, list[str], list[str]]:
    """Open ``url`` in Chromium until its SDK calls returned and posted to every one of
    ``paths``; requests to any host but loopback are blocked and listed (an offline SDK
    makes none). Returns the visitor's anonymousId, those requests and the collector
    paths called."""
    outside: list[str] = []
    posted: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            async def only_loopback(route):
                if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
                    if route.request.method == "POST":
                        posted.append(urlsplit(route.request.url).path)
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            await page.route("**/*", only_loopback)
            await page.goto(url)
            await page.wait_for_function("window.sdkDone || window.sdkError", timeout=30_000)
            assert await page.evaluate("window.sdkError || null") is None, errors
            anonymous_id = await page.evaluate("window.anonymousId")
            # RudderStack and the batching mode send from a queue after the calls return.
            await eventually(lambda: asyncio.sleep(0, paths <= set(posted)), timeout=20,
                             what=f"posts to {sorted(paths)} from {url} (got {posted})")
        finally:
            await browser.close()
    return anonymous_id, outside, posted


# analytics-next posts text/plain to the short paths (one a call, or /v1/b batches);
# RudderStack to the long paths with Basic auth, "userId": "" while anonymous.
PATHS = {"segment": {"/v1/p", "/v1/t", "/v1/a", "/v1/i", "/v1/g"},
         "segment-batching": {"/v1/b"},
         "rudderstack": {"/v1/page", "/v1/track", "/v1/alias", "/v1/identify", "/v1/group"}}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sdk", sorted(PATHS))
async def test_browser_sdk_on_another_origin_reaches_one_profile(
        sdk, make_settings, start_collector):
    assert bundles_present() == [], "run `make js` (npm ci in js/)"
    settings = make_settings()
    collector = await start_collector(settings)
    user_id, email = f"{sdk}-user-1", f"{sdk}@example.test"
    page, _, mode = sdk.partition("-")
    query = f"user={user_id}&email={email}" + ("&batching=1" if mode == "batching" else "")
    async with serve(page_app(collector.url, "wk_web")) as port:
        anonymous_id, outside, posted = await run_page(
            f"http://localhost:{port}/{page}.html?{query}", PATHS[sdk])
    assert outside == []  # offline: no settings, plugins or chunks from a vendor's CDN
    assert PATHS[sdk] <= set(posted)

    async def arrived():
        events = await read_events(settings)
        return events if sum(map(len, events.values())) >= 5 else None

    events = await eventually(arrived, timeout=30, what="five events on the topics")
    kinds = {kind: sorted(e["type"] for e in docs) for kind, docs in events.items()}
    assert kinds == {"view": ["page"], "click": ["track"], "social": [],
                     "identify": ["alias", "group", "identify"]}
    for doc in (e for docs in events.values() for e in docs):
        assert doc["source"] == "web" and "writeKey" not in doc
        assert doc["context"]["ip"] == "127.0.0.1"  # filled in from the request
        assert doc["context"]["device"]["type"] == "desktop"  # from the user agent
        assert doc["context"]["os"]["name"] == "Linux"
        assert "Chrome" in doc["context"]["browser"]["name"]
    page_view = events["view"][0]
    assert "userId" not in page_view and page_view["anonymousId"] == anonymous_id

    profile = one_profile(events, anonymous_id, user_id)
    assert f"email:{email}" in profile["identifiers"]
    assert profile["traits"]["email"][0] == email
    group_id = "globex" if sdk == "rudderstack" else "acme"
    assert profile["groups"][group_id]["name"][0] in ("Acme", "Globex")
    assert profile["counts"]["source"] == {"web": 5}
    [device] = profile["devices"].values()
    assert device["info"][0]["type"] == "desktop" and "Chrome" in device["info"][0]["browser"]


@pytest.mark.timeout(120)
async def test_a_page_of_an_origin_not_allowed_writes_nothing(make_settings, start_collector):
    settings = make_settings(cors_origins="https://shop.example")
    collector = await start_collector(settings)
    body = {"writeKey": "wk_web", "anonymousId": "a-evil", "event": "Clicked"}
    async with serve(page_app(collector.url, "wk_web")) as port, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"http://localhost:{port}/blank.html")
            # A simple request (text/plain, no preflight) and one that needs a preflight.
            outcomes = await page.evaluate("""async ([url, body]) => {
                const tries = [{"Content-Type": "text/plain"},
                               {"Content-Type": "application/json",
                                "Authorization": "Basic " + btoa("wk_web:")}];
                const out = [];
                for (const headers of tries) {
                  try {
                    const r = await fetch(url, {method: "POST", headers,
                                                body: JSON.stringify(body)});
                    out.push("answered " + r.status);
                  } catch (e) { out.push("blocked"); }
                }
                return out;
            }""", [collector.url + "/v1/t", body])
        finally:
            await browser.close()
    # The browser hides both answers from the page; the server refused both (403 for
    # the simple post, the refused preflight kept the other from being sent).
    assert outcomes == ["blocked", "blocked"]
    events = await read_events(settings)
    assert all(docs == [] for docs in events.values())
    status, answer, headers = await collector.post(
        "/v1/t", body, key=None, headers={"Origin": f"http://localhost:{port}"})
    assert status == 403 and answer["error"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in headers
