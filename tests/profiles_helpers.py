"""Helpers for the profile-stage integration tests."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.db import async_engine
from streams.profiles.store import ProfileStore, create_schema, drop_schema, event_partitions
from streams.settings import Settings
from tests.helpers import unique


async def with_profiles_schema(settings: Settings) -> Settings:
    """``settings`` with a fresh schema of profile tables of its own."""
    schema = unique("pt_")
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        await create_schema(engine, schema)
    finally:
        await engine.dispose()
    return settings.model_copy(update={"profiles_schema": schema})


async def drop_profiles_schema(settings: Settings) -> None:
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        await drop_schema(engine, settings.profiles_schema)
    finally:
        await engine.dispose()


def topic_for(settings: Settings, doc: dict) -> str:
    """The topic the collector routes an envelope to."""
    kind = doc.get("type")
    if kind in ("page", "screen"):
        return settings.topic(settings.topic_view)
    if kind in ("identify", "alias", "group"):
        return settings.topic(settings.topic_identify)
    if doc.get("socialChannel"):
        return settings.topic(settings.topic_social)
    return settings.topic(settings.topic_click)


async def produce(settings: Settings, docs: list[dict]) -> None:
    """Send envelopes keyed by userId or anonymousId, as the collector does."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for doc in docs:
            key = str(doc.get("userId") or doc.get("anonymousId") or "").encode()
            futures.append(await producer.send(topic_for(settings, doc), orjson.dumps(doc),
                                               key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def group_caught_up(settings: Settings) -> bool:
    """True when the worker group's committed offsets reach every partition's end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    from aiokafka import AIOKafkaConsumer
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.consumer_group)
        tps = await event_partitions(settings)
        if not tps:
            return False
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if ends[tp] == 0:
                continue
            meta = committed.get(tp)
            if meta is None or meta.offset < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()
        await admin.close()


async def stored_profiles(settings: Settings) -> dict[str, dict]:
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        return await ProfileStore(engine, schema=settings.profiles_schema).all_profiles()
    finally:
        await engine.dispose()


async def wait_until(check, limit_s: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {limit_s:.0f}s waiting for {what} (last: {last!r})")
