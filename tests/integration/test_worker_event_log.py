"""The foundation path: aiokafka producer -> events.view -> Faust agent -> PostgreSQL rows
(the event and its profile), with the consumer group's offset committed only after the
rows are committed."""

from __future__ import annotations

import asyncio

import orjson
import psycopg
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.profiles.codec import event_doc, unpack_profile
from streams.profiles.models import iso
from streams.topics import ensure_topics
from tests.helpers import eventually
from tests.profiles_helpers import (
    assert_settings_state_equals_reference,
    drop_profiles_schema,
    with_profiles_schema,
)


async def committed(admin: AIOKafkaAdminClient, group: str, tp: TopicPartition) -> int | None:
    offsets = await admin.list_consumer_group_offsets(group)
    meta = offsets.get(tp)
    return None if meta is None or meta.offset < 0 else meta.offset


async def test_view_event_lands_in_postgres_before_offset_commit(make_settings, spawn_worker):
    settings = await with_profiles_schema(make_settings())
    await ensure_topics(settings)
    t = settings.database
    conninfo = dict(host=t.host, port=t.port, user=t.user, password=t.password, dbname=t.dbname)
    topic = settings.topic(settings.topic_view)

    # Hold the event log locked, so the worker's insert must wait for us.
    schema = settings.profiles_schema
    locker = await psycopg.AsyncConnection.connect(**conninfo)
    await locker.execute(f'LOCK TABLE "{schema}".profile_events IN EXCLUSIVE MODE')

    spawn_worker(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    await admin.start()
    try:
        sent = {
            "type": "page", "messageId": "msg-view-1", "anonymousId": "anon-42",
            "name": "Home", "timestamp": "2026-11-01T10:00:00Z",
            "properties": {"url": "https://example.test/"},
        }
        meta = await producer.send_and_wait(topic, orjson.dumps(sent), key=b"anon-42")
        tp = TopicPartition(topic, meta.partition)

        async with await psycopg.AsyncConnection.connect(**conninfo, autocommit=True) as watch:

            async def worker_waits_on_lock():
                cur = await watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE 'INSERT INTO profile_events%%'"
                )
                return (await cur.fetchone())[0] > 0

            # The worker has consumed the event and is blocked inside its transaction.
            await eventually(worker_waits_on_lock, timeout=60, what="worker insert blocked")
            # Several commit intervals pass: the offset must not move past the event.
            for _ in range(6):
                await asyncio.sleep(settings.commit_interval)
                offset = await committed(admin, settings.consumer_group, tp)
                assert offset is None or offset <= meta.offset, (
                    f"offset {offset} committed before the event was stored"
                )

            await locker.rollback()  # release the lock: the worker's transaction goes through

            async def stored_row():
                cur = await watch.execute(
                    f'SELECT e.message_id, e.event_time, e.event, p.profile_id, p.document '
                    f'FROM "{schema}".profile_events e JOIN "{schema}".profiles p '
                    f'USING (profile_id)'
                )
                return await cur.fetchall()

            rows = await eventually(stored_row, timeout=30, what="row in profile_events")
            assert len(rows) == 1
            message_id, event_time, event, profile_id, document = rows[0]
            assert message_id == "msg-view-1"
            assert iso(event_time) == "2026-11-01T10:00:00.000000Z"
            assert event_doc(message_id, iso(event_time), event)["y"] == "page"
            profile = unpack_profile(profile_id, document)
            assert profile["identifiers"] == ["anonymous_id:anon-42"]
            assert profile["counts"]["type"] == {"page": 1}

            async def offset_moved():
                return await committed(admin, settings.consumer_group, tp) == meta.offset + 1

            await eventually(offset_moved, timeout=30, what="offset committed past the event")
            # And the whole state is the independent reference's for this one event.
            await assert_settings_state_equals_reference(settings, [sent],
                                                         settings.identity)
    finally:
        await locker.close()
        await producer.stop()
        await admin.close()
        await drop_profiles_schema(settings)
