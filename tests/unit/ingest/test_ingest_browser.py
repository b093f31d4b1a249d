"""The collector as browser SDKs call it, with a stand-in writer: short paths, the body's
write key, text/plain bodies, group calls, empty ids, CORS, and what the collector adds
to ``context`` (ip, browser, os, device)."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.ingest import cors, logic
from streams.ingest.device import describe_user_agent, enrich_context
from streams.ingest.views import Collector, CollectorConfigError, register
from streams.settings import load_settings

from .test_ingest_views import AUTH

CHROME_LINUX = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/120.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
ANDROID_TABLET = ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/120.0 Safari/537.36")


class Writer:
    def __init__(self):
        self.written: list = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def write(self, records) -> None:
        self.written.extend(records)

    def values(self) -> list[dict]:
        return [orjson.loads(r.value) for r in self.written]


@pytest.fixture
async def collector():
    async def no_topics(_settings) -> None:
        return None

    clients: list[TestClient] = []

    async def start(**overrides) -> tuple[TestClient, Writer]:
        settings = load_settings(topic_prefix="unit.", **overrides)
        writer = Writer()
        app = web.Application()
        register(app, settings, collector=Collector(settings, writer=writer,
                                                    prepare_topics=no_topics))

        async def profile(_request: web.Request) -> web.Response:
            return web.json_response({"id": "p"})

        app.router.add_get("/v1/profiles/{profile_id}", profile)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client, writer

    yield start
    for client in clients:
        await client.close()


@pytest.mark.parametrize("short,kind,body", [
    ("t", "click", {"event": "Clicked"}), ("p", "view", {"name": "Home"}),
    ("s", "view", {"name": "Cart"}), ("i", "identify", {"traits": {"a": 1}}),
    ("g", "identify", {"groupId": "acme"}),
])
async def test_short_paths_are_aliases_with_the_body_write_key_as_text_plain(
        collector, short, kind, body):
    client, writer = await collector()
    doc = {"anonymousId": "anon-1", "writeKey": "wk_web", **body}
    response = await client.post(f"/v1/{short}", data=orjson.dumps(doc),
                                 headers={"Content-Type": "text/plain"})
    answer = await response.json()
    assert response.status == 200 and answer == {"success": True, "accepted": 1}
    [record] = writer.written
    assert record.topic == f"unit.events.{kind}"
    assert b"wk_web" not in record.value  # the key is never written
    assert orjson.loads(record.value)["source"] == "web"


async def test_alias_and_batch_short_paths(collector):
    client, writer = await collector()
    response = await client.post("/v1/a", data=orjson.dumps(
        {"userId": "u1", "previousId": "anon-1", "writeKey": "wk_web"}))
    assert response.status == 200
    response = await client.post("/v1/b", data=orjson.dumps({"writeKey": "wk_web", "batch": [
        {"type": "track", "event": "A", "anonymousId": "x", "writeKey": "wk_web"},
        {"type": "group", "groupId": "acme", "userId": "u1", "traits": {"name": "Acme"}}]}))
    assert response.status == 200 and (await response.json())["accepted"] == 2
    assert [v["type"] for v in writer.values()] == ["alias", "track", "group"]
    assert all(b"wk_web" not in r.value for r in writer.written)


async def test_unknown_body_key_is_401_like_a_header_one_and_nothing_is_written(collector):
    client, writer = await collector()
    for headers, doc in (({}, {"anonymousId": "a", "event": "E", "writeKey": "wk_nope"}),
                         (AUTH | {"Authorization": "Basic d2tfbm9wZTo="}, {"anonymousId": "a",
                                                                          "event": "E"}),
                         ({}, {"anonymousId": "a", "event": "E"}),
                         ({}, b"{not json")):
        data = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        response = await client.post("/v1/t", data=data, headers=headers)
        answer = await response.json()
        assert response.status == 401, answer
        assert "wk_nope" not in orjson.dumps(answer).decode()
    assert writer.written == []


async def test_a_header_key_wins_over_the_body_key(collector):
    client, writer = await collector(write_keys="wk_web=web,wk_app=mobile")
    response = await client.post("/v1/track", headers=AUTH, data=orjson.dumps(
        {"anonymousId": "a", "event": "E", "writeKey": "wk_app"}))
    assert response.status == 200
    [value] = writer.values()
    assert value["source"] == "web" and "writeKey" not in value


async def test_empty_ids_count_as_absent(collector):
    client, writer = await collector()
    response = await client.post("/v1/page", headers=AUTH, data=orjson.dumps(
        {"userId": "", "anonymousId": "anon-9", "name": "Home"}))
    assert response.status == 200
    [value] = writer.values()
    assert "userId" not in value and writer.written[0].key == b"anon-9"
    response = await client.post("/v1/page", headers=AUTH, data=orjson.dumps(
        {"userId": "", "anonymousId": ""}))
    assert response.status == 400 and (await response.json())["field"] == "/userId"


async def test_group_without_group_id_is_400(collector):
    client, writer = await collector()
    response = await client.post("/v1/group", headers=AUTH,
                                 data=orjson.dumps({"userId": "u", "traits": {"x": 1}}))
    assert response.status == 400 and (await response.json())["field"] == "/groupId"
    assert writer.written == []


async def test_context_gets_ip_browser_os_and_device(collector):
    client, writer = await collector()
    response = await client.post("/v1/t", data=orjson.dumps({
        "writeKey": "wk_web", "anonymousId": "a", "event": "E",
        "context": {"userAgent": IPHONE, "os": {"name": "iOS", "version": "17.1.2"}}}))
    assert response.status == 200
    context = writer.values()[0]["context"]
    assert context["ip"] == "127.0.0.1"
    assert context["os"] == {"name": "iOS", "version": "17.1.2"}  # the SDK's own wins
    assert context["browser"]["name"] == "Mobile Safari"
    assert context["device"] == {"type": "mobile", "manufacturer": "Apple", "model": "iPhone"}
    response = await client.post("/v1/t", headers=AUTH, data=orjson.dumps(
        {"anonymousId": "a", "event": "E", "context": {"ip": "203.0.113.7"}}))
    assert writer.values()[1]["context"] == {"ip": "203.0.113.7"}


def test_user_agents_give_device_kinds():
    assert describe_user_agent(CHROME_LINUX) == {
        "browser": {"name": "Chrome", "version": "120.0.0"}, "os": {"name": "Linux"},
        "device": {"type": "desktop"}}
    assert describe_user_agent(ANDROID_TABLET)["device"]["type"] == "tablet"
    assert describe_user_agent("Googlebot/2.1 (+http://www.google.com/bot.html)")[
        "device"] == {"type": "bot"}
    assert enrich_context(None, None) is None
    original = {"userAgent": CHROME_LINUX, "device": {"id": "d-1"}}
    enriched = enrich_context(original, "10.0.0.1")
    assert enriched["device"] == {"id": "d-1", "type": "desktop"} and enriched["ip"] == "10.0.0.1"
    assert original == {"userAgent": CHROME_LINUX, "device": {"id": "d-1"}}  # not changed


def test_origin_policy_default_is_loopback_of_any_port():
    policy = cors.parse_origins("")
    for origin in ("http://localhost:3000", "http://127.0.0.1:51234", "http://[::1]:8080",
                   "http://localhost"):
        assert policy.allows(origin), origin
    for origin in ("https://localhost:3000", "http://evil.example:80", "http://127.0.0.2:1",
                   "null", "http://localhost.evil.example:3000", ""):
        assert not policy.allows(origin), origin
    shop = cors.parse_origins("https://shop.example, http://localhost:*")
    assert shop.allows("https://shop.example") and not shop.allows("https://shop.example:444")
    assert cors.parse_origins("*").allows("https://anything.example")
    with pytest.raises(cors.CorsConfigError):
        cors.parse_origins("shop.example")


async def test_preflight_answered_for_allowed_origins_on_collector_paths_only(collector):
    client, writer = await collector()
    ask = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "content-type,anonymousid,sentat,authorization"}
    retried = ("x-retry-count", "retry-attempt", "retry-reason")  # the SDKs' retries
    for path in ("/v1/t", "/v1/batch", "/v1/page", "/v1/g"):
        response = await client.options(path, headers=ask)
        assert response.status == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        assert all(h in allowed for h in ("content-type", "anonymousid", "sentat",
                                          "authorization", *retried))
    # The profile API is never opened to other origins.
    response = await client.options("/v1/profiles/p", headers=ask)
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.get("/v1/profiles/p", headers={"Origin": "http://localhost:5173"})
    assert "Access-Control-Allow-Origin" not in response.headers
    # A page of an origin that is not allowed: preflight refused, simple POST refused.
    evil = {**ask, "Origin": "https://evil.example"}
    response = await client.options("/v1/t", headers=evil)
    assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers
    response = await client.post("/v1/t", headers={"Origin": "https://evil.example",
                                                   "Content-Type": "text/plain"},
                                 data=orjson.dumps({"writeKey": "wk_web", "anonymousId": "a",
                                                    "event": "E"}))
    assert response.status == 403 and writer.written == []
    # An allowed origin's POST carries the CORS answer.
    response = await client.post("/v1/t", headers={"Origin": "http://127.0.0.1:9"},
                                 data=orjson.dumps({"writeKey": "wk_web", "anonymousId": "a",
                                                    "event": "E"}))
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:9"


def test_a_bad_origin_setting_is_refused_at_startup():
    settings = load_settings(cors_origins="shop.example")
    with pytest.raises(CollectorConfigError, match="STREAMS_CORS_ORIGINS"):
        register(web.Application(), settings, collector=Collector(settings, writer=Writer()))


async def test_configured_origins_replace_the_default(collector):
    client, _ = await collector(cors_origins="https://shop.example")
    ask = {"Access-Control-Request-Method": "POST"}
    ok = await client.options("/v1/t", headers={**ask, "Origin": "https://shop.example"})
    local = await client.options("/v1/t", headers={**ask, "Origin": "http://localhost:3000"})
    assert (ok.status, local.status) == (204, 403)


def test_body_key_is_taken_out_of_the_parsed_request():
    parsed = logic.parse_request(orjson.dumps({"writeKey": "k", "anonymousId": "a"}), "page")
    assert parsed.write_key == "k" and parsed.events == [{"anonymousId": "a"}]
    assert "k" not in repr(parsed)
