"""The demo storefront in headless Chromium over the running pipeline: Segment's browser
SDK fetched from npm into the cache (as `streams up` does), the shop served by the real
server, a `streams worker` folding; a visitor browses a category, views and adds a
product, signs in, and the page (and the profile API) find one profile holding their
anonymous and signed-in identifiers."""

from __future__ import annotations

import contextlib

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from streams.db import async_engine
from streams.demo.sdk import ensure_sdk
from streams.profiles.store import ProfileStore
from streams.server import create_web_app
from streams.topics import ensure_topics
from tests.helpers import REPO
from tests.profiles_helpers import drop_profiles_schema, with_profiles_schema

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"


@contextlib.asynccontextmanager
async def serving(settings):
    runner = web.AppRunner(create_web_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001
    finally:
        await runner.cleanup()


@pytest.mark.timeout(240)
async def test_demo_visitor_is_one_profile_after_sign_in(make_settings, spawn_worker):
    settings = await with_profiles_schema(make_settings())
    await ensure_topics(settings)
    ensure_sdk(settings.cache_dir)  # npm, once per cache (blocks: nothing else runs yet)
    worker = spawn_worker(settings)
    email = "demo.visitor@example.test"
    try:
        async with serving(settings) as base, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                outside: list[str] = []

                async def only_here(route):
                    if route.request.url.startswith(base):
                        await route.continue_()
                    else:  # nothing may come from the internet at view time
                        outside.append(route.request.url)
                        await route.abort()

                await page.route("**/*", only_here)
                await page.goto(f"{base}/demo")
                await page.wait_for_selector("body[data-ready=true]", timeout=30_000)
                assert await page.text_content("#status") == ""
                anonymous_id = await page.text_content("#anon")
                await page.click("#categories button[data-category=shoes]")
                await page.click(".card[data-product=sku-runner] .view")
                await page.click(".card[data-product=sku-runner] .add")
                await page.fill("#email", email)
                await page.fill("#name", "Demo Visitor")
                await page.fill("#company", "Acme Corp")
                await page.click("#signin button[type=submit]")
                await page.wait_for_selector("#signedin:not([hidden])")
                # The page polls its visitor: the worker folds the anonymous and the
                # signed-in events into one profile, which the page then shows.
                await page.wait_for_selector("#identifiers li[data-type=email]",
                                             timeout=90_000)
                shown = await page.locator("#identifiers li").all_text_contents()
                link = await page.get_attribute("#profile-link", "href")
                ARTIFACTS.mkdir(exist_ok=True)
                # Bytes, written here: Playwright writes a path from an executor thread.
                (ARTIFACTS / "demo-storefront.png").write_bytes(
                    await page.screenshot(full_page=True))
            finally:
                await browser.close()
        assert errors == [] and outside == []
        assert f"anonymous_id: {anonymous_id}" in shown and f"email: {email}" in shown
        assert any(s.startswith("user_id: shopper-") for s in shown)
        assert link == f"/people?identifier=anonymous_id%3A{anonymous_id}"

        engine = async_engine(settings, pool_size=1, max_overflow=0)
        try:
            found = await ProfileStore.for_settings(settings, engine).find_by_identifier(
                f"email:{email}")
        finally:
            await engine.dispose()
        assert found is not None
        profile, _history = found
        assert f"anonymous_id:{anonymous_id}" in profile["identifiers"]
        assert profile["groups"]["acme-corp"]["name"][0] == "Acme Corp"
        counts = profile["counts"]
        assert counts["source"] == {"web": counts["total"]}
        assert counts["event"]["Product Viewed"] == 1 and counts["event"]["Product Added"] == 1
        assert counts["type"]["page"] >= 2 and counts["type"]["identify"] == 1
        assert profile["affinity"]["category"]["shoes"] >= 4
        [device] = profile["devices"].values()
        assert device["info"][0]["type"] == "desktop"
        assert worker.poll() is None
    finally:
        await drop_profiles_schema(settings)
