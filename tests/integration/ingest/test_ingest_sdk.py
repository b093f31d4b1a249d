"""Existing SDKs post unchanged to ``streams serve`` by pointing their host at it: the
Segment Python SDK (its default background batching, then a synchronous flush), the
RudderStack Python SDK (gzip-compressed batches, synchronous mode) and Segment's Node
SDK (``@segment/analytics-node`` from js/package-lock.json). The browser SDKs are in
test_browser_sdks.py."""

from __future__ import annotations

import asyncio
import os
import subprocess

import orjson
import pytest

from tests.helpers import REPO

from .support import one_profile, read_events


def test_segment_sdk_posts_unchanged(make_settings, spawn_server):
    from segment.analytics import Client

    settings = make_settings()
    url = spawn_server(settings)
    errors = []
    client = Client("wk_web", host=url, on_error=lambda e, batch: errors.append(e),
                    max_retries=1, upload_interval=0.05)
    client.page(anonymous_id="anon-sdk", name="Home", properties={"path": "/"},
                message_id="seg-page")
    client.track(anonymous_id="anon-sdk", event="Product Clicked",
                 properties={"product_id": "sku-1"}, message_id="seg-click")
    client.track(user_id="user-sdk", event="Post Shared", properties={"channel": "twitter"},
                 message_id="seg-social")
    client.identify(user_id="user-sdk", anonymous_id="anon-sdk",
                    traits={"email": "sdk@example.test", "consent": {"email": True}},
                    message_id="seg-identify")
    client.screen(user_id="user-sdk", name="Cart", message_id="seg-screen")
    client.alias(previous_id="anon-sdk", user_id="user-sdk", message_id="seg-alias")
    client.flush()  # blocks until the queue is uploaded
    client.shutdown()
    assert errors == []

    events = asyncio.run(read_events(settings))
    ids = {kind: sorted(e["messageId"] for e in docs) for kind, docs in events.items()}
    assert ids == {"click": ["seg-click"], "social": ["seg-social"],
                   "view": ["seg-page", "seg-screen"],
                   "identify": ["seg-alias", "seg-identify"]}
    click = events["click"][0]
    assert click["context"]["library"]["name"] == "analytics-python"
    assert click["_key"] == "anon-sdk" and click["source"] == "web"
    assert events["social"][0]["socialChannel"] == "twitter"
    # The SDK sent sentAt; the collector corrected the timestamp and kept the device's.
    assert click["originalTimestamp"] and click["receivedAt"]


def test_rudderstack_sdk_posts_unchanged_gzip(make_settings, spawn_server):
    from rudderstack.analytics import Client

    settings = make_settings()
    url = spawn_server(settings)
    errors = []
    client = Client("wk_fb", host=url, sync_mode=True, gzip=True,
                    on_error=lambda e, batch: errors.append(e), max_retries=1)
    client.track(anonymous_id="facebook:ada", event="Comment Posted",
                 properties={"post_id": "p-1"}, message_id="rs-social")
    client.identify(user_id="user-rs", traits={"facebook": "ada"}, message_id="rs-identify")
    assert errors == []

    events = asyncio.run(read_events(settings))
    assert [e["messageId"] for e in events["social"]] == ["rs-social"]
    social = events["social"][0]
    assert (social["socialChannel"], social["socialAction"], social["source"]) == \
        ("facebook", "comment", "social")
    assert [e["messageId"] for e in events["identify"]] == ["rs-identify"]


NODE_SCRIPT = """
const { Analytics } = require('@segment/analytics-node');
const [host, writeKey] = process.argv.slice(2);
const analytics = new Analytics({ writeKey, host, maxEventsInBatch: 10, flushInterval: 100 });
analytics.on('error', (err) => {
  console.error(String(err && err.reason || err)); process.exitCode = 1;
});
const anonymousId = 'node-anon-1', userId = 'node-user-1';
analytics.page({ anonymousId, name: 'Home', properties: { path: '/' } });
analytics.track({ anonymousId, event: 'Product Viewed', properties: { product_id: 'sku-3' } });
analytics.alias({ previousId: anonymousId, userId });
analytics.identify({ userId, traits: { email: 'node@example.test' } });
analytics.group({ userId, groupId: 'initech', traits: { name: 'Initech' } });
analytics.closeAndFlush({ timeout: 20000 }).then(() => console.log('flushed'));
"""


@pytest.mark.timeout(120)
async def test_segment_node_sdk_posts_unchanged(make_settings, start_collector, tmp_path):
    settings = make_settings()
    collector = await start_collector(settings)
    script = tmp_path / "send.js"
    script.write_text(NODE_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        "node", str(script), collector.url, "wk_web", cwd=REPO / "js",
        env={**os.environ, "NODE_PATH": str(REPO / "js" / "node_modules")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0 and out.strip() == b"flushed", err.decode()

    events = await read_events(settings)
    kinds = {kind: sorted(e["type"] for e in docs) for kind, docs in events.items()}
    assert kinds == {"view": ["page"], "click": ["track"], "social": [],
                     "identify": ["alias", "group", "identify"]}
    library = events["click"][0]["context"]["library"]
    assert library["name"] == "@segment/analytics-node"
    assert orjson.loads((REPO / "js" / "package-lock.json").read_bytes())["packages"][
        "node_modules/@segment/analytics-node"]["version"] == library["version"]
    profile = one_profile(events, "node-anon-1", "node-user-1")
    assert profile["groups"] == {"initech": {"name": ["Initech", *profile["groups"][
        "initech"]["name"][1:]]}}
