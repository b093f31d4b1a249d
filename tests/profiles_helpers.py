"""Helpers for the profile-stage integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)
from hypothesis import event
from hypothesis.errors import InvalidArgument

from streams.db import async_engine
from streams.profiles.store import ProfileStore, create_schema, drop_schema, event_partitions
from streams.reference import Forget, State, expected_state, state_diff, stored_state
from streams.settings import Settings
from tests.event_strategies import RULES_REACHED
from tests.helpers import FORGET_KEY, unique


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


# The Kafka time ``produce`` stamped on each record, by the record's bytes (its first
# copy's): the worker bounds the event time of a record without ``receivedAt`` around it,
# and the reference must do the same (``record_time``).
RECORD_TIMES: dict[bytes, datetime] = {}


def record_time(doc: dict) -> datetime | None:
    """The Kafka time ``produce`` gave the record of ``doc`` (None: not produced)."""
    return RECORD_TIMES.get(orjson.dumps(doc))


async def produce(settings: Settings, docs: list[dict]) -> None:
    """Send envelopes keyed by userId or anonymousId, as the collector does, each with
    this moment as its Kafka time (remembered in ``RECORD_TIMES``)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = []
        stamp_ms = int(time.time() * 1000)
        stamp = datetime.fromtimestamp(stamp_ms / 1000, UTC)
        for doc in docs:
            key = str(doc.get("userId") or doc.get("anonymousId") or "").encode()
            value = orjson.dumps(doc)
            RECORD_TIMES.setdefault(value, stamp)
            futures.append(await producer.send(topic_for(settings, doc), value, key=key,
                                               timestamp_ms=stamp_ms))
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
        try:
            committed = await admin.list_consumer_group_offsets(settings.consumer_group)
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError,
                NotCoordinatorError):
            return False  # a young broker has no group coordinator yet: not caught up
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


# --- the whole stored state against the independent reference --------------------------
def arrival_order(events: list, rnd) -> list:
    """``events`` shuffled by ``rnd``, except that copies of one message id keep their
    order (the first copy wins, as on one Kafka partition: the key is the same)."""
    shuffled = list(events)
    rnd.shuffle(shuffled)
    copies: dict[str, list] = {}
    for e in events:
        copies.setdefault(e.message_id, []).append(e)
    return [copies[e.message_id].pop(0) for e in shuffled]


def split_at_forgets(log: list) -> list[tuple[list[dict], Forget | None]]:
    """The log as (envelopes, the forget that follows them or None) segments."""
    segments, current = [], []
    for entry in log:
        if isinstance(entry, Forget):
            segments.append((current, entry))
            current = []
        else:
            current.append(entry)
    segments.append((current, None))
    return segments


async def forget_holder(store: ProfileStore, forget: Forget) -> None:
    """``DELETE /v1/profiles/{id}`` of the profile holding the forget's identifier."""
    found = await store.find_by_identifier(forget.identifier)
    if found is not None:
        await store.forget(found[0]["id"])


async def assert_state_equals_reference(engine, schema: str | None, log: list, rules,
                                        dead: list | None = None,
                                        forget_key: bytes = FORGET_KEY.encode(),
                                        appended=None) -> State:
    """The whole state stored in ``schema`` must be what ``streams.reference`` expects of
    ``log``: profiles, identifier owners, merges, where each event counts, skipped
    events, redirects, forgotten digests (and ``dead`` letters when given). Returns the
    stored state; the assertion message is the readable diff. ``forget_key``: the key
    the stores keyed forgotten identifiers with (the test session's by default)."""
    want = expected_state(log, rules, forget_key, appended)
    for rule in want.reached:
        if rule in RULES_REACHED:
            with contextlib.suppress(InvalidArgument):  # outside a Hypothesis test
                event(f"reached {rule}")
    got = await stored_state(engine, schema)
    if dead is not None:
        got.dead = dead
    problems = state_diff(want, got, dead=dead is not None)
    assert not problems, "stored state differs from the reference:\n" + problems
    return got


async def assert_settings_state_equals_reference(settings: Settings, log: list, rules,
                                                 dead: list | None = None) -> State:
    """``assert_state_equals_reference`` for the profiles schema of ``settings``."""
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        key = settings.forget_key
        return await assert_state_equals_reference(
            engine, settings.profiles_schema, log, rules, dead,
            forget_key=key.get_secret_value().encode() if key else FORGET_KEY.encode(),
            appended=record_time)
    finally:
        await engine.dispose()


async def drop_topics(settings: Settings) -> None:
    """Delete the test's topics, so that many examples do not pile up partitions (and
    open files) on the shared broker. Blocks on Kafka."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [t for t in settings.all_topics if t in existing]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()
