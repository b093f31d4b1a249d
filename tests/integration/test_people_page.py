"""The person page in a real headless Chromium (Debian's package, driven by Playwright),
over the running pipeline: a scripted person on the web, a phone, a watch and Instagram,
whose anonymous phone profile merged into the web one, found by an email; identifiers, the
merge, the cross-device timeline, the charts and a message of the real trigger stage are
shown; a merged-away id leads to the survivor; a read token cannot forget, the forget
token does. Screenshots go to test-artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from streams.db import async_engine
from streams.people.models import Lookup
from streams.people.store import PeopleStore
from streams.profiles.models import profile_id_for
from streams.server import create_web_app
from streams.topics import ensure_topics
from tests.helpers import API_FORGET_TOKEN, API_READ_TOKEN, REPO, eventually, unique
from tests.profiles_helpers import drop_profiles_schema, produce, with_profiles_schema

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
READ, FORGET = API_READ_TOKEN, API_FORGET_TOKEN  # the session's tokens (tests/helpers.py)


def scripted_person(tag: str) -> list[dict]:
    """Web visit, phone app (anonymous), sign-in on the phone, alias of the web visit,
    a watch workout (with a blocked anonymous id), an Instagram like."""
    start = datetime.now(UTC) - timedelta(minutes=10)

    def at(minute: int) -> str:
        return (start + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")

    web_anon, app_anon, user = f"web-{tag}", f"app-{tag}", f"u-{tag}"
    return [
        {"type": "page", "messageId": f"{tag}-1", "anonymousId": web_anon, "name": "Shoe",
         "timestamp": at(0), "source": "web",
         "properties": {"product_id": "sku-7", "category": "shoes"}},
        {"type": "screen", "messageId": f"{tag}-2", "anonymousId": app_anon, "name": "Shoe",
         "timestamp": at(1), "properties": {"product_id": "sku-7", "category": "shoes"},
         "context": {"device": {"id": f"phone-{tag}", "type": "ios", "model": "iPhone"}}},
        {"type": "identify", "messageId": f"{tag}-3", "anonymousId": app_anon, "userId": user,
         "timestamp": at(2), "context": {"timezone": "Europe/Paris",
                                         "device": {"id": f"phone-{tag}", "type": "ios"}},
         "traits": {"email": f"Ann.{tag}@Example.test", "name": "Ann",
                    "consent": {"email": True, "push": False},
                    "preferences": {"size": "38"}}},
        {"type": "alias", "messageId": f"{tag}-4", "previousId": web_anon, "userId": user,
         "timestamp": at(3)},
        {"type": "track", "messageId": f"{tag}-5", "userId": user, "anonymousId": "undefined",
         "event": "Workout Shared", "timestamp": at(4),
         "context": {"device": {"id": f"watch-{tag}", "type": "watch"}}},
        {"type": "track", "messageId": f"{tag}-6", "userId": user, "event": "Post Liked",
         "socialChannel": "instagram", "timestamp": at(5),
         "context": {"externalIds": [{"type": "instagram_handle", "id": f"@Ann_{tag}"}]}},
    ]


@pytest.mark.timeout(300)
async def test_person_page_end_to_end(make_settings, spawn_worker, monkeypatch):
    settings = await with_profiles_schema(make_settings(topic_partitions=2))
    await ensure_topics(settings)
    spawn_worker(settings)
    tag = unique("p")
    events = scripted_person(tag)
    survivor, merged_away = profile_id_for(f"{tag}-1"), profile_id_for(f"{tag}-2")
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    store = PeopleStore(engine, settings.profiles_schema)
    runner = None
    try:
        await produce(settings, events)

        async def folded_with_a_message():
            found = await store.locate(Lookup(identifiers=(f"user_id:{tag.lower()}",)))
            found = found or await store.locate(Lookup(identifiers=(f"user_id:u-{tag}",)))
            rows = await store.person(found[0], 1) if found else None
            done = rows and rows.profile["counts"]["total"] == len(events) and rows.messages
            return rows if done else None

        rows = await eventually(folded_with_a_message, timeout=120,
                                what="six events folded and a scheduled message")
        assert rows.profile["id"] == survivor
        rules_shown = {m.rule for m in rows.messages}

        app = create_web_app(settings)
        # As `streams serve` runs it: no access log (it would hold ?token= values).
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ARTIFACTS.mkdir(exist_ok=True)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text)
                        if msg.type == "error" and "403" not in msg.text else None)

                # The data needs a token; the shell asks for one.
                assert (await page.request.get(f"{base}/people/{survivor}.json")).status == 401
                shell = await page.goto(f"{base}/people")
                assert shell is not None and shell.status == 401  # the page too, without one
                await page.locator("#token-panel").wait_for(state="visible")
                await page.fill("#token", READ)
                await page.click("#token-form button")
                await page.fill("#q", f"email:ANN.{tag}@example.test")
                await page.click("#search button")
                await page.locator("#person").wait_for(state="visible", timeout=20_000)
                assert await page.inner_text("#pid") == survivor

                # Identifiers, grouped and with their status.
                held = [f"user_id:u-{tag}", f"email:ann.{tag}@example.test",
                        f"anonymous_id:web-{tag}", f"anonymous_id:app-{tag}",
                        f"device_id:phone-{tag}", f"device_id:watch-{tag}",
                        f"instagram_handle:ann_{tag}"]
                for key in held:
                    status = page.locator(f'#identifiers tr[data-key="{key.lower()}"] .status')
                    assert await status.inner_text() == "held", key
                blocked = page.locator('#identifiers tr[data-key="anonymous_id:undefined"]')
                assert await blocked.locator(".status").inner_text() == "blocked"
                # The merge: the phone's anonymous profile, absorbed by the alias.
                merge = page.locator(f'#merges tr[data-merged="{merged_away}"]')
                assert f"{tag}-4" in await merge.inner_text()
                # The picture: a node per identifier, the merge, linking edges.
                assert await page.locator("svg#graph g.node.identifier.held").count() == 7
                assert await page.locator("svg#graph g.node.identifier.blocked").count() == 1
                assert await page.locator("svg#graph g.node.merge").count() == 1
                assert await page.locator(
                    f'svg#graph path.merged[data-from="e:{tag}-4"]').count() == 1
                # The sign-in linked the phone's anonymous id and device to the user and email.
                linked = await page.eval_on_selector_all(
                    f'svg#graph path[data-from="e:{tag}-3"]', "ps => ps.map(p => p.dataset.to)")
                assert sorted(linked) == sorted(f"i:{k}" for k in (
                    f"anonymous_id:app-{tag}", f"user_id:u-{tag}",
                    f"email:ann.{tag}@example.test", f"device_id:phone-{tag}"))

                # The timeline crosses devices and channels, newest first.
                lanes = await page.eval_on_selector_all(
                    "#timeline tbody tr", "rows => rows.map(r => r.dataset.lane)")
                assert lanes[0] == "instagram" and lanes[-1] == "web", lanes
                assert {"web", "mobile", "smartwatch", "instagram"} <= set(lanes)
                ids = await page.eval_on_selector_all(
                    "#timeline tbody tr", "rows => rows.map(r => r.dataset.messageId)")
                assert ids == [e["messageId"] for e in reversed(events)]

                # Told beside did; the charts drew bars and the journey.
                assert await page.inner_text('#consent tr[data-channel="email"] .status') == \
                    "granted"
                assert "Europe/Paris" in await page.inner_text("#hours-caption")
                await page.wait_for_function(
                    "() => document.querySelectorAll('#chart-hours .bars path').length >= 1"
                    " && document.querySelectorAll('#chart-affinity .bars path').length >= 1"
                    " && document.querySelectorAll('#chart-journey .scatterlayer .point')"
                    f".length === {len(events)}", timeout=20_000)

                # The trigger stage's message for this person.
                message_rules = await page.eval_on_selector_all(
                    "#messages tbody tr[data-status] td:nth-child(2)",
                    "cells => cells.map(c => c.textContent)")
                assert rules_shown <= set(message_rules) and message_rules
                # Bytes, written here: Playwright's own path= writes from an executor thread.
                shot = await page.screenshot(full_page=True)
                (ARTIFACTS / "people-page.png").write_bytes(shot)

                # A merged-away id opens its survivor.
                await page.goto(f"{base}/people?id={merged_away}")
                await page.locator("#followed").wait_for(state="visible", timeout=20_000)
                assert await page.inner_text("#pid") == survivor
                assert merged_away in await page.inner_text("#followed")

                # A fresh tab: /people?token=…&identifier=TYPE:VALUE opens the person, and
                # the token leaves the address for the tab's sessionStorage.
                other = await browser.new_context()
                tab = await other.new_page()
                await tab.goto(f"{base}/people?token={READ}&identifier=user_id:u-{tag}")
                await tab.locator("#person").wait_for(state="visible", timeout=20_000)
                assert await tab.inner_text("#pid") == survivor
                assert READ not in tab.url
                await other.close()

                # Forget: a read token is refused, the forget token forgets.
                await page.click("#forget-open")
                await page.fill("#forget-token", READ)
                await page.click("#forget-confirm")
                await page.wait_for_function(
                    "() => document.querySelector('#forget-result').textContent.includes("
                    "'may not forget')")
                assert await page.locator("#person").is_visible()
                await page.fill("#forget-token", FORGET)
                await page.click("#forget-confirm")
                await page.locator("#banner.info").wait_for(state="visible", timeout=20_000)
                assert "Forgotten" in await page.inner_text("#banner")
                assert not await page.locator("#person").is_visible()
                (ARTIFACTS / "people-page-forgotten.png").write_bytes(await page.screenshot())
                gone = await page.request.get(f"{base}/people/{survivor}.json",
                                              headers={"Authorization": f"Bearer {READ}"})
                assert gone.status == 404
                # Expected: the 401 of each load of the page's address without ?token= (the
                # token is in the tab, not in the request); the data shown above proves
                # that the page's own calls carried it.
                assert not [e for e in errors if "status of 401" not in e], errors
            finally:
                await browser.close()
    finally:
        if runner is not None:
            await runner.cleanup()
        await engine.dispose()
        await drop_profiles_schema(settings)
