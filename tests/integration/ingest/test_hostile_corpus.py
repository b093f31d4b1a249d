"""Hostile records (tests/hostile_corpus.py) through the collector and straight to Kafka,
with a real worker folding into PostgreSQL: each is refused or dead-lettered with its
field and rule, or stored verbatim; valid events on the same partitions keep being
folded; a far-future timestamp does not outvote a later opt-out. And abusive requests
to the collector get their status and write nothing (the topics' end offsets stay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.db import async_engine
from streams.events.time import parse_time
from streams.profiles.store import ProfileStore
from streams.topics import ensure_topics
from tests.helpers import eventually
from tests.hostile_corpus import CASES, PERSON_DATA, TS, Case
from tests.profiles_helpers import drop_profiles_schema, group_caught_up, with_profiles_schema

from .support import basic, read_dlq

# Pieces of hostile values that must never appear in a reason (a dead letter, an answer).
SECRETS = (*PERSON_DATA, "\x1b[31m")


def field_ok(got: str | None, expected: str, rule: str) -> bool:
    """The field as expected; for the depth limit, the pointer goes on down to the first
    container too deep, under the field named."""
    if "nested deeper" in rule:
        return got is not None and got.startswith(expected + "/")
    return got == expected


def topic_of(settings, doc: object) -> str:
    kind = doc.get("type") if isinstance(doc, dict) else None
    base = settings.topic_identify if kind in ("identify", "alias") else settings.topic_click
    return settings.topic(base)


def direct_record(settings, case: Case, uid: str) -> tuple[str, bytes, bytes]:
    """(topic, key, value) of a case as a direct producer writes it."""
    if case.raw is not None:
        return settings.topic(settings.topic_click), b"k", case.raw
    doc = case.make(uid)
    if isinstance(doc, dict) and doc and "messageId" not in doc:
        doc = {**doc, "messageId": uid}
    key = doc.get("userId") if isinstance(doc, dict) else None
    return topic_of(settings, doc), (key if isinstance(key, str) else "k").encode(), \
        orjson.dumps(doc)


def valid_person(uid: str) -> list[dict]:
    return [
        {"type": "identify", "userId": uid, "timestamp": TS,
         "traits": {"plan": "pro", "email": f"{uid}@example.test"}},
        {"type": "track", "event": "Clicked", "userId": uid, "timestamp": TS},
        {"type": "track", "event": "Viewed", "userId": uid, "timestamp": TS},
    ]


async def test_hostile_corpus_through_the_collector_and_straight_to_kafka(
        make_settings, start_collector, spawn_worker):
    assert len(CASES) >= 40
    settings = await with_profiles_schema(make_settings(
        topic_partitions=1, fold_processes=0, triggers_enabled=False, batch_seconds=0.1))
    await ensure_topics(settings)
    worker = spawn_worker(settings)
    client = await start_collector(settings)
    prefix = settings.topic_prefix
    try:
        # --- through the collector: whole-request refusals first (nothing written) ---
        for case in (c for c in CASES if c.http != 200):
            body = case.raw if case.raw is not None else orjson.dumps(case.make("x"))
            status, answer, _ = await client.post("/v1/identify", body)
            assert status == case.http, (case.name, answer)
            assert not any(s in orjson.dumps(answer).decode() for s in SECRETS)
        # --- then one batch: valid events around every per-event case ---
        batched = [c for c in CASES if c.http == 200]
        events = [case.make(f"{prefix}c-{case.name}") for case in batched]
        events += valid_person(f"{prefix}c-valid")
        status, answer, _ = await client.post("/v1/batch", {"batch": events})
        assert status == 200, answer
        rejected = {r["index"]: r for r in answer["rejected"]}
        for index, case in enumerate(batched):
            if case.field is None:
                assert index not in rejected, (case.name, rejected.get(index))
                continue
            got = rejected.get(index)
            assert got is not None, f"{case.name} was accepted by the collector"
            assert field_ok(got["field"], case.field, case.rule), (case.name, got)
            assert case.rule in got["reason"], (case.name, got)
            assert not any(s in got["reason"] for s in SECRETS), case.name
        assert answer["accepted"] == len(events) - len(rejected)

        # --- straight to Kafka: every case, then a valid person and an opt-out pair ---
        received = datetime.now(UTC).replace(microsecond=0)
        later = received + timedelta(hours=1)
        records = [direct_record(settings, case, f"{prefix}d-{case.name}") for case in CASES]
        valid = [{**doc, "messageId": f"{prefix}d-valid-{i}"}
                 for i, doc in enumerate(valid_person(f"{prefix}d-valid"))]
        optout_uid = f"{prefix}d-optout"
        valid += [
            {"type": "identify", "userId": optout_uid, "messageId": f"{optout_uid}-in",
             "timestamp": "2090-01-01T00:00:00Z", "receivedAt": received.isoformat(),
             "traits": {"consent": {"email": True}}},
            {"type": "identify", "userId": optout_uid, "messageId": f"{optout_uid}-out",
             "timestamp": later.isoformat(), "receivedAt": later.isoformat(),
             "traits": {"consent": {"email": False}}},
        ]
        records += [(topic_of(settings, d), d["userId"].encode(), orjson.dumps(d)) for d in valid]
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                    enable_idempotence=True, max_request_size=2**20)
        await producer.start()
        try:
            sent = [await producer.send_and_wait(t, v, key=k) for t, k, v in records]
        finally:
            await producer.stop()
        by_position = {(m.topic, m.offset): case for m, case in zip(sent, CASES, strict=False)}

        n_direct = sum(1 for c in CASES if c.refused)

        async def all_letters():
            letters = await read_dlq(settings)
            return letters if len(letters) >= len(rejected) + n_direct else None

        letters = await eventually(all_letters, timeout=90, what="every dead letter")
        await eventually(lambda: group_caught_up(settings), timeout=60, what="worker caught up")
        assert worker.poll() is None, worker.log_path.read_text()[-3000:]

        # --- every dead letter: its origin, field and rule; no value in any reason ---
        from_collector = {int(letter.document["batchIndex"]): letter
                          for letter, _ in letters if letter.origin == "collector"}
        assert set(from_collector) == set(rejected)
        for index, letter in from_collector.items():
            assert letter.reason == rejected[index]["reason"]
        from_worker = {(letter.original_topic, letter.original_offset): letter
                       for letter, _ in letters if letter.origin == "processing"}
        assert len(from_worker) == n_direct, sorted(from_worker)
        for position, letter in from_worker.items():
            case = by_position[position]
            field = case.direct_field if case.direct_field is not None else case.field
            rule = case.direct_rule or case.rule
            assert field_ok(letter.field, field, rule), (case.name, letter.field)
            assert rule in letter.reason, (case.name, letter.reason)
        for letter, headers in letters:
            reason = letter.reason + headers.get("x-reason", b"").decode("utf-8", "replace")
            assert not any(s in reason for s in SECRETS), letter.reason

        # --- what was accepted is stored verbatim, on both paths ---
        engine = async_engine(settings, pool_size=1, max_overflow=0)
        store = ProfileStore(engine, schema=settings.profiles_schema)
        try:
            for path in ("c", "d"):
                for case in (c for c in CASES if not c.refused):
                    uid = f"{prefix}{path}-{case.name}"
                    user = (case.user or "{uid}").replace("{uid}", uid)
                    found = await store.find_by_identifier(f"user_id:{user}")
                    assert found is not None, (path, case.name)
                    profile = found[0]
                    for name, value in case.traits.items():
                        assert profile["traits"][name][0] == value, (path, case.name, name)
                valid_profile = (await store.find_by_identifier(
                    f"user_id:{prefix}{path}-valid"))[0]
                assert valid_profile["traits"]["plan"][0] == "pro"
                assert valid_profile["counts"]["total"] == 3
            # A far-future timestamp through the collector: bounded around its receipt.
            future = (await store.find_by_identifier(f"user_id:{prefix}c-far-future"))[0]
            when = parse_time(future["traits"]["plan"][1])
            assert received - timedelta(minutes=5) < when <= datetime.now(UTC) + \
                timedelta(minutes=10)
            # Straight to Kafka with receivedAt: bounded too, so the later opt-out wins.
            optout = (await store.find_by_identifier(f"user_id:{optout_uid}"))[0]
            assert optout["consent"]["email"][0] is False
            assert parse_time(optout["consent"]["email"][1]) == later
        finally:
            await engine.dispose()
    finally:
        await drop_profiles_schema(settings)


async def end_offsets(settings) -> dict:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in settings.all_topics
                      for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = [TopicPartition(topic, p) for topic in settings.all_topics
                          for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def test_collector_abuse_gets_its_status_and_writes_nothing(make_settings,
                                                                 start_collector):
    settings = make_settings(topic_partitions=2)
    await ensure_topics(settings)
    client = await start_collector(settings)
    before = await end_offsets(settings)
    good = {"type": "track", "event": "Clicked", "userId": "u", "timestamp": TS}
    oversize = orjson.dumps({"batch": [{**good, "properties": {"x": "y" * 30_000}}] * 20})
    calls = [
        # (path, body, key, status, field)
        ("/v1/batch", oversize, "wk_web", 413, "max_request_bytes"),
        ("/v1/track", {**good, "properties": {"x": "y" * 33_000}}, "wk_web", 413,
         "max_event_bytes"),
        ("/v1/batch", b'{"batch": [{"type": "track"', "wk_web", 400, "body"),
        ("/v1/track", b'{"event": "\xff"}', "wk_web", 400, "body"),
        ("/v1/track", b'{"properties": ' + b"[" * 2000 + b"]" * 2000 + b"}", "wk_web", 400,
         "body"),
        ("/v1/track", good, None, 401, "Authorization"),
        ("/v1/batch", {"batch": [good]}, "wk_stolen_guess", 401, "Authorization"),
    ]
    for path, body, key, status, field in calls:
        got, answer, _ = await client.post(path, body, key)
        assert (got, answer["field"]) == (status, field), (path, answer)
        assert "wk_stolen_guess" not in orjson.dumps(answer).decode()
    # A key the server never issued, passed as a password instead of a user name.
    async with client.session.post(client.url + "/v1/track", data=orjson.dumps(good), headers={
            "Authorization": basic("") + "d2tfd2Vi"}) as resp:
        assert resp.status == 401
    assert await end_offsets(settings) == before
