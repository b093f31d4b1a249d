"""The same messageId twice (issue #14, fault suite item 6): sent twice straight to Kafka,
posted twice to the collector (an SDK's retry: the copies differ in ``receivedAt``), twice
in one batch request, once each way, and twice under different keys (so on different
partitions, folded by different processes at the same time). Each counts once: the
stored profiles equal the oracle's fold of every record on the topics."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaProducer

from streams.kafka import read_topic
from streams.topics import ensure_topics
from tests.integration.test_pipeline_oracle import (
    RULE_SETTINGS,
    assert_stored_equal_the_reference,
    random_log,
)
from tests.profiles_helpers import (
    drop_profiles_schema,
    group_caught_up,
    produce,
    topic_for,
    wait_until,
    with_profiles_schema,
)

TS = "2026-03-01T12:00:00Z"


def track(message_id: str, anonymous_id: str = "anon-dup", **extra) -> dict:
    return {"type": "track", "event": "Product Viewed", "messageId": message_id,
            "anonymousId": anonymous_id, "timestamp": TS,
            "properties": {"product_id": "sku-1"}, **extra}


async def event_records(s) -> list[bytes]:
    """Every value on the four event topics: what the collector and producers wrote."""
    values = []
    for kind in ("click", "view", "social", "identify"):
        topic = s.topic(getattr(s, f"topic_{kind}"))
        values += [r.value async for r in read_topic(s, topic, idle_seconds=1.0)]
    return values


async def test_the_same_message_id_twice_counts_once_every_way(make_settings, spawn_worker,
                                                               start_collector):
    s = await with_profiles_schema(make_settings(topic_partitions=4, triggers_enabled=False,
                                                 **RULE_SETTINGS))
    await ensure_topics(s)
    client = await start_collector(s)
    filler = random_log(41, 80)
    try:
        await produce(s, filler[:40])
        # Straight to Kafka, the same record twice.
        await produce(s, [track("dup-direct")] * 2)
        # Through the collector: the same call twice, and twice in one batch.
        for _ in range(2):
            status, answer, _ = await client.post("/v1/track", track("dup-http"))
            assert (status, answer["accepted"]) == (200, 1), answer
        status, answer, _ = await client.post(
            "/v1/batch", {"batch": [{**track("dup-batch"), "type": "track"}] * 2})
        assert (status, answer["accepted"]) == (200, 2), answer
        # Once each way.
        status, _, _ = await client.post("/v1/track", track("dup-both"))
        assert status == 200
        await produce(s, [track("dup-both")])
        # Under two keys: two partitions, folded concurrently by different processes.
        doc = track("dup-keys", userId="user-dup")
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for key in (b"user-dup", b"anon-dup", b"k1", b"k2", b"k3"):
                await producer.send_and_wait(topic_for(s, doc), orjson.dumps(doc), key=key)
        finally:
            await producer.stop()
        await produce(s, filler[40:])

        spawn_worker(s, name="dedup")
        await wait_until(lambda: group_caught_up(s), limit_s=120, what="worker caught up")
        records = await event_records(s)
        assert len(records) == len(filler) + 2 + 2 + 2 + 2 + 5
        stored = await assert_stored_equal_the_reference(s, [orjson.loads(v) for v in records])
        ids = {orjson.loads(v)["messageId"] for v in records}
        assert sum(p["counts"]["total"] for p in stored.values()) == len(ids)
        (dup,) = [p for p in stored.values()
                  if any(i.endswith("anon-dup") for i in p["identifiers"])]
        # dup-direct, dup-http, dup-batch, dup-both, dup-keys: once each.
        assert dup["counts"]["total"] == 5, dup["counts"]
    finally:
        await drop_profiles_schema(s)
