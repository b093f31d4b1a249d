"""The /ops page's per-rule trigger table and charts, in the real headless Chromium, from
a sampler fed by fakes (the figures' reading is tested against PostgreSQL elsewhere)."""

from __future__ import annotations

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from streams.ops.models import TriggerFigures
from streams.ops.sampler import LagSampler
from streams.ops.views import register
from streams.settings import load_settings
from tests.integration.test_ops_dashboard import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.unit.ops.fakes import ScriptedCluster, figures
from tests.unit.ops.test_trigger_figures import QUIET, WELCOME


async def serve(triggers: TriggerFigures) -> tuple[web.AppRunner, str]:
    cluster = ScriptedCluster()

    async def read() -> TriggerFigures:
        return triggers

    sampler = LagSampler(cluster.observe, interval=1.0, window=3.0, history=10.0,
                         dlq_topic="events.dlq", figures=figures, clock=cluster.now,
                         triggers=read)
    for _ in range(3):
        await sampler.sample_once()
    sampler.start = lambda: None  # type: ignore[method-assign]  # driven by hand
    app = web.Application()
    register(app, load_settings(ops_token=None), sampler=sampler)
    # As `streams serve` runs it: no access log (it would hold ?token= values).
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.mark.timeout(120)
async def test_the_page_shows_per_rule_messages_conversions_and_lift():
    runner, base = await serve(TriggerFigures((WELCOME, QUIET), None))
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1400})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{base}/ops")
                row = page.locator('#triggers tr[data-rule="welcome"]')
                await row.wait_for(timeout=20_000)
                cells = await row.locator("td").all_inner_texts()
                assert cells[:5] == ["welcome", "20", "2", "10", "4"]
                assert cells[5] == "3 (consent 2, cap 1)" and cells[6] == "1 (superseded 1)"
                assert cells[7:] == ["5 · 50.0%", "1 · 25.0%", "+25.0 pts"]
                quiet = await page.locator('#triggers tr[data-rule="re_engagement"] td'
                                           ).all_inner_texts()
                assert quiet[7:] == ["0 · —", "0 · —", "—"]
                await page.wait_for_function(
                    "() => document.querySelectorAll('#chart-triggers .barlayer .point').length"
                    " >= 5 && document.querySelectorAll('#chart-conversions .barlayer .point')"
                    ".length >= 2", timeout=20_000)
                bars = await page.evaluate(
                    "() => document.getElementById('chart-triggers').data.map("
                    "  t => [t.name, t.y])")
                assert bars == [["sent", [10, 0]], ["held out", [4, 0]], ["pending", [2, 0]],
                                ["suppressed", [3, 0]], ["cancelled", [1, 0]]]
                rates = await page.evaluate(
                    "() => document.getElementById('chart-conversions').data.map(t => t.y)")
                assert rates == [[50, None], [25, None]]
                ARTIFACTS.mkdir(exist_ok=True)
                await page.locator("#triggers").scroll_into_view_if_needed()
                # Written here: playwright's own path= would start the loop's executor
                # thread inside the test, which the leak guard takes for a leak.
                shot = await page.screenshot(full_page=True)
                (ARTIFACTS / "ops-triggers.png").write_bytes(shot)
                assert errors == []
            finally:
                await browser.close()
    finally:
        await runner.cleanup()


async def test_the_page_says_why_trigger_figures_are_unavailable():
    runner, base = await serve(TriggerFigures((), "table scheduled_messages does not exist"))
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{base}/ops")
                note = page.locator("#triggers .empty")
                await note.wait_for(timeout=20_000)
                assert await note.inner_text() == (
                    "Trigger figures unavailable: table scheduled_messages does not exist")
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
