"""The collector against the real Kafka: routing, bad input and its status, rate limits,
partial batches dead-lettered, gzip bodies, demo traffic."""

from __future__ import annotations

import orjson

from streams.ingest.commands import run_demo

from .support import read_all, read_dlq, read_events

TS = "2026-11-01T10:00:00.000Z"


async def test_each_route_lands_on_its_topic_keyed_by_user_or_anonymous_id(
        make_settings, start_collector):
    settings = make_settings()
    client = await start_collector(settings)
    calls = [
        ("/v1/track", "wk_web", {"event": "Product Clicked", "anonymousId": "anon-1",
                                 "messageId": "click-1", "timestamp": TS}),
        ("/v1/track", "wk_web", {"event": "Post Shared", "userId": "user-1",
                                 "anonymousId": "anon-1", "messageId": "social-web-1",
                                 "properties": {"channel": "facebook"}}),
        ("/v1/track", "wk_ig", {"event": "Post Liked", "anonymousId": "instagram:ada",
                                "messageId": "social-ig-1"}),
        ("/v1/page", "wk_web", {"name": "Home", "anonymousId": "anon-1", "messageId": "page-1"}),
        ("/v1/screen", "wk_app", {"name": "Cart", "userId": "user-1", "messageId": "screen-1"}),
        ("/v1/screen", "wk_watch", {"name": "Heart Rate", "userId": "user-1",
                                    "messageId": "screen-2"}),
        ("/v1/identify", "wk_web", {"userId": "user-1", "anonymousId": "anon-1",
                                    "traits": {"consent": {"email": True}},
                                    "messageId": "identify-1"}),
        ("/v1/alias", "wk_app", {"previousId": "anon-9", "userId": "user-1",
                                 "messageId": "alias-1"}),
    ]
    for path, key, body in calls:
        status, answer, _ = await client.post(path, body, key)
        assert (status, answer) == (200, {"success": True, "accepted": 1}), (path, answer)

    events = await read_events(settings)
    placed = {kind: sorted((e["messageId"], e["_key"], e["source"]) for e in docs)
              for kind, docs in events.items()}
    assert placed == {
        "click": [("click-1", "anon-1", "web")],
        "social": [("social-ig-1", "instagram:ada", "social"),
                   ("social-web-1", "user-1", "web")],
        "view": [("page-1", "anon-1", "web"), ("screen-1", "user-1", "mobile"),
                 ("screen-2", "user-1", "smartwatch")],
        "identify": [("alias-1", "user-1", "mobile"), ("identify-1", "user-1", "web")],
    }
    social = {e["messageId"]: e for e in events["social"]}
    assert social["social-ig-1"]["socialChannel"] == "instagram"
    assert social["social-web-1"]["socialChannel"] == "facebook"
    assert events["click"][0]["type"] == "track" and events["click"][0]["receivedAt"]
    assert await read_all(settings, settings.topic_dlq) == []


async def test_bad_requests_are_refused_whole_and_write_nothing(make_settings, start_collector):
    settings = make_settings()
    client = await start_collector(settings)
    good = {"type": "track", "event": "Clicked", "anonymousId": "a"}
    cases = [
        # (path, body, key, status, field)
        ("/v1/track", good, None, 401, "Authorization"),
        ("/v1/track", good, "wk_wrong", 401, "Authorization"),
        ("/v1/batch", b'{"batch": [{"type": "track",', "wk_web", 400, "body"),
        ("/v1/track", b"not json", "wk_web", 400, "body"),
        ("/v1/track", {**good, "properties": {"blob": "x" * 33_000}}, "wk_web", 413,
         "max_event_bytes"),
        ("/v1/batch", {"batch": [good, {**good, "properties": {"blob": "x" * 33_000}}]},
         "wk_web", 413, "/batch/1"),
        ("/v1/batch", {"batch": [{**good, "properties": {"blob": "x" * 30_000}}] * 18},
         "wk_web", 413, "max_request_bytes"),
        ("/v1/track", {"event": "Clicked"}, "wk_web", 400, "/userId"),
        ("/v1/identify", {"traits": {}, "userId": None, "anonymousId": None}, "wk_web", 400,
         "/userId"),
        ("/v1/batch", {"batch": {"type": "page"}}, "wk_web", 400, "batch"),
    ]
    for path, body, key, status, field in cases:
        got, answer, _ = await client.post(path, body, key)
        assert (got, answer["field"]) == (status, field), (path, field, answer)
        assert answer["success"] is False and answer["message"] and answer["error"]
        assert "wk_wrong" not in orjson.dumps(answer).decode()

    # An unknown type is refused naming the type.
    got, answer, _ = await client.post("/v1/merge", {"userId": "u", "groupId": "g"})
    assert (got, answer["field"]) == (400, "type") and "merge" in answer["message"]
    # In a batch an unknown type is one rejected event, dead-lettered.
    got, answer, _ = await client.post("/v1/batch", {"batch": [{"type": "merge", "userId": "u"}]})
    assert got == 200 and answer["rejected"][0]["field"] == "/type"
    events = await read_events(settings)
    assert all(docs == [] for docs in events.values())
    letters = await read_dlq(settings)
    assert [letter.field for letter, _ in letters] == ["/type"]  # only the batch's reject


async def test_single_event_schema_violations_are_400_naming_the_field(make_settings,
                                                                       start_collector):
    settings = make_settings()
    client = await start_collector(settings)
    status, answer, _ = await client.post("/v1/alias", {"userId": "u"})
    assert (status, answer["field"]) == (400, "/previousId")
    status, answer, _ = await client.post("/v1/track", {"userId": "u", "event": 5})
    assert (status, answer["field"]) == (400, "/event")
    assert all(docs == [] for docs in (await read_events(settings)).values())


async def test_over_the_key_rate_is_429_with_retry_after(make_settings, start_collector):
    settings = make_settings(collector_rate=0.5, collector_burst=3,
                             write_keys={"wk_web": "web", "wk_web2": "web", "wk_app": "mobile"})
    client = await start_collector(settings)
    batch = {"batch": [{"type": "page", "anonymousId": f"a{i}"} for i in range(3)]}
    status, answer, _ = await client.post("/v1/batch", batch)
    assert (status, answer["accepted"]) == (200, 3)
    status, answer, headers = await client.post("/v1/batch", batch)
    assert status == 429 and answer["field"] == "rate"
    assert int(headers["Retry-After"]) >= 1 and answer["retryAfter"] == int(headers["Retry-After"])
    assert "wk_web" not in answer["message"] and "'web'" in answer["message"]
    # The limit is per write key: another key, of the same source or not, is not affected.
    status, _, _ = await client.post("/v1/screen", {"name": "Home", "userId": "u"}, "wk_app")
    assert status == 200
    status, _, _ = await client.post("/v1/page", {"name": "Home", "userId": "u"}, "wk_web2")
    assert status == 200
    events = await read_events(settings)
    assert len(events["view"]) == 5


async def test_partial_batch_accepts_valid_and_dead_letters_invalid(make_settings,
                                                                    start_collector):
    settings = make_settings()
    client = await start_collector(settings)
    batch = {"sentAt": TS, "batch": [
        {"type": "track", "event": "Clicked", "userId": "u1", "messageId": "ok-1"},
        {"type": "track", "event": "Clicked", "messageId": "no-ids"},
        {"type": "page", "anonymousId": "a1", "messageId": "ok-2"},
        {"type": "merge", "userId": "u1", "groupId": "g", "messageId": "bad-type"},
        {"type": "screen", "userId": "u1", "timestamp": "last tuesday", "messageId": "bad-ts"},
    ]}
    status, answer, _ = await client.post("/v1/batch", batch)
    assert status == 200
    assert answer["accepted"] == 2 and answer["deadLettered"] == 3
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [
        (1, "/userId"), (3, "/type"), (4, "/timestamp")]
    assert all(r["reason"] for r in answer["rejected"])

    events = await read_events(settings)
    assert [e["messageId"] for e in events["click"]] == ["ok-1"]
    assert [e["messageId"] for e in events["view"]] == ["ok-2"]
    letters = sorted(await read_dlq(settings), key=lambda item: item[0].document["batchIndex"])
    assert [(lt.document["batchIndex"], lt.field, lt.event["messageId"]) for lt, _ in letters] == [
        (1, "/userId", "no-ids"), (3, "/type", "bad-type"), (4, "/timestamp", "bad-ts")]
    for letter, headers in letters:
        assert headers["x-origin"] == b"collector" and headers["x-reason"]
        assert letter.reason == headers["x-reason"].decode()
    # The would-be topic is named when the type is known.
    assert letters[0][1]["x-original-topic"] == settings.topic(settings.topic_click).encode()
    assert letters[1][1]["x-original-topic"] == b""
    assert letters[0][0].key == "no-ids" or letters[0][0].key is None


async def test_gzip_body_is_accepted(make_settings, start_collector):
    settings = make_settings()
    client = await start_collector(settings)
    status, answer, _ = await client.post(
        "/v1/batch", {"batch": [{"type": "identify", "userId": "u", "messageId": "gz-1"}]},
        gzip=True)
    assert (status, answer["accepted"]) == (200, 1)
    assert [e["messageId"] for e in (await read_events(settings))["identify"]] == ["gz-1"]


async def test_demo_traffic_reaches_every_topic(make_settings, start_collector):
    settings = make_settings()
    client = await start_collector(settings)
    stats = await run_demo(settings, url=client.url, people_count=20, rate=150, duration=2.5,
                           bad_share=0.05, seed=11)
    assert stats.failed_requests == 0, stats.last_error
    assert stats.accepted + stats.rejected == stats.sent and stats.accepted > 100
    assert set(stats.by_source) >= {"web", "mobile"}
    events = await read_events(settings)
    assert sum(len(v) for v in events.values()) == stats.accepted
    assert all(events[kind] for kind in ("click", "view", "identify", "social"))
    assert len(await read_all(settings, settings.topic_dlq)) == stats.rejected > 0
