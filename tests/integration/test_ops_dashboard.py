"""The /ops page in a real headless Chromium (Debian's package, driven by Playwright):
a lagging group shows its state, a healthy one is OK, the charts render with data, and a
screenshot is saved under test-artifacts/ for a person to look at."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import orjson
import pytest
from aiohttp import ClientSession, web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from playwright.async_api import async_playwright
from pydantic import SecretStr

from streams.ops.views import OPS_SAMPLER
from streams.server import create_web_app
from streams.topics import ensure_topics
from tests.helpers import REPO, child_env, eventually, unique
from tests.integration.ops_support import PARTITIONS, Traffic
from tests.promtool import promtool_findings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "browser-test-token"


async def consume_forever(consumer: AIOKafkaConsumer) -> None:
    while True:
        await consumer.getmany(timeout_ms=200)


@pytest.mark.timeout(300)
async def test_dashboard_shows_lagging_group_and_renders_charts(make_settings):
    lagging, healthy = unique("lagging-"), unique("healthy-")
    settings = make_settings(
        topic_partitions=PARTITIONS, ops_interval=0.5, ops_window=3.0, ops_history=120.0,
        ops_groups=(lagging, healthy), ops_token=SecretStr(TOKEN),
    )
    await ensure_topics(settings)
    topic = settings.topic(settings.topic_view)
    dlq = settings.topic(settings.topic_dlq)
    bootstrap = settings.kafka_bootstrap

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(20):
            await producer.send_and_wait(topic, orjson.dumps({"type": "page", "n": n}),
                                         partition=n % PARTITIONS)
    finally:
        await producer.stop()

    # The lagging group read a little, committed, and went away.
    gone = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=lagging,
                            enable_auto_commit=False)
    await gone.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        gone.assign(tps)
        await gone.commit({tps[0]: 3, tps[1]: 4})
    finally:
        await gone.stop()
    # The healthy group keeps reading and committing.
    live = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=healthy,
                            auto_offset_reset="earliest", auto_commit_interval_ms=200)
    await live.start()
    reader = asyncio.create_task(consume_forever(live))

    app = create_web_app(settings)
    # As `streams serve` runs it: no access log (it would hold ?token= values).
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        async with Traffic(settings, topic, per_second=10) as traffic, \
                Traffic(settings, dlq, per_second=2) as dead_letters:
            traffic.running.set()
            dead_letters.running.set()
            sampler = app[OPS_SAMPLER]

            async def enough_history():
                report = sampler.report
                groups = {g.group: g.status.value for g in report.groups}
                return len(report.history) >= 8 and groups.get(lagging) == "STOP" \
                    and groups.get(healthy) == "OK"

            await eventually(enough_history, timeout=90, what="8 samples, lagging STOP")
            # Both groups read the same partitions at different offsets: each gets its age.
            stopped = next(g for g in sampler.report.groups if g.group == lagging)
            assert all(p.lag_seconds is not None and p.lag_seconds > 0
                       for p in stopped.partitions), stopped.partitions

            # The server's /metrics over this real report passes Prometheus's own lint.
            async with ClientSession() as http, http.get(
                    f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                exposition = await resp.read()
            assert promtool_findings(exposition) == ""
            assert f'streams_ops_group_lag{{group="{lagging}"}}'.encode() in exposition

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    page.on("console", lambda msg: errors.append(msg.text)
                            if msg.type == "error" else None)
                    page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}")
                            if r.status >= 400 else None)

                    # Without the token the page itself is refused.
                    denied = await page.request.get(f"{base}/ops")
                    assert denied.status == 401

                    await page.goto(f"{base}/ops?token={TOKEN}")
                    card = page.locator(f'.card[data-group="{lagging}"]')
                    await card.wait_for(timeout=20_000)
                    assert await card.get_attribute("data-status") == "STOP"
                    assert await card.locator(".badge").inner_text() == "STOP"
                    assert "STOP since" in await card.locator(".since").inner_text()
                    ok_card = page.locator(f'.card[data-group="{healthy}"]')
                    # A consumer that keeps committing is never STALL or STOP; on a busy
                    # 2-core machine it may fall behind for a moment (WARNING) between
                    # the sampler check above and the page load.
                    assert await ok_card.get_attribute("data-status") in ("OK", "WARNING")
                    # Worst first: the lagging group leads.
                    first = page.locator(".card").first
                    assert await first.get_attribute("data-group") == lagging

                    # Per-partition detail of the lagging group is open, rows STOP.
                    rows = page.locator("details.group[open] tbody tr[data-status='STOP']")
                    assert await rows.count() == PARTITIONS

                    # Pipeline figures: events stored is a number, absent tables say so.
                    stored = page.locator('.tile[data-figure="events_stored"] .v')
                    assert (await stored.inner_text()).replace(",", "").isdigit()

                    # Charts: Plotly drew SVG with lines, and they carry the samples.
                    await page.wait_for_function(
                        "() => document.querySelectorAll('.chart .main-svg').length >= 5"
                        " && document.querySelectorAll('#chart-lag .scatterlayer path.js-line')"
                        ".length >= 2", timeout=20_000)
                    points = await page.evaluate(
                        "() => ['chart-lag', 'chart-produce', 'chart-consume', 'chart-dlq',"
                        " 'chart-lag-seconds'].map(id => {"
                        "  const d = document.getElementById(id).data || [];"
                        "  return [id, d.length, Math.max(0, ...d.map(t => t.y.filter("
                        "    v => v !== null).length))]; })")
                    for chart_id, traces, filled in points:
                        assert traces >= 1 and filled >= 5, (chart_id, traces, filled)
                    lag_names = await page.evaluate(
                        "() => document.getElementById('chart-lag').data.map(t => t.name)")
                    assert set(lag_names) == {lagging, healthy}
                    dlq_values = await page.evaluate(
                        "() => document.getElementById('chart-dlq').data[0].y"
                        ".filter(v => v !== null)")
                    assert max(dlq_values) > 0

                    # It refreshes itself: the sample count on the page goes up.
                    before = int(await page.evaluate("() => document.body.dataset.samples"))
                    await page.wait_for_function(
                        f"() => Number(document.body.dataset.samples) > {before}",
                        timeout=15_000)

                    # Bytes, written here: Playwright's own path= writes from a thread
                    # that outlives the test (the no_leaks guard would flag it).
                    shot = await page.screenshot(full_page=True)
                    (ARTIFACTS / "ops-dashboard.png").write_bytes(shot)
                    assert not errors, errors
                finally:
                    await browser.close()

            # `streams lag --url` reads the same report from the running server.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "streams", "lag", "--url", base, "--json",
                env=child_env(settings), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            assert proc.returncode == 0, err.decode()[-2000:]
            remote = {g["group"]: g for g in orjson.loads(out)["groups"]}
            assert remote[lagging]["status"] == "STOP"
            assert remote[healthy]["status"] in ("OK", "WARNING")  # as above
            assert TOKEN not in out.decode() + err.decode()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await live.stop()
        await runner.cleanup()
