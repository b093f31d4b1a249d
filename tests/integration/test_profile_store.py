"""The PostgreSQL profile store against the oracle, without Kafka: arbitrary arrival
orders and batch sizes, two concurrent writers, duplicates, forgetting."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.db import async_engine
from streams.pipeline.policy import RetryPolicy
from streams.profiles.models import FoldEvent, profile_id_for
from streams.profiles.store import ProfileStore, create_schema, drop_schema
from tests.event_strategies import DEFAULT_RULES, TEST_RULES, rich_logs
from tests.helpers import FORGET_KEY, unique
from tests.long_profile import examples, log_size
from tests.production_state import decoded as stage_decoded
from tests.profiles_helpers import (
    arrival_order,
    assert_state_equals_reference,
    forget_holder,
    split_at_forgets,
)

KEY = FORGET_KEY.encode()


def decoded(logs):
    """Fold events of ``logs`` by the stage's own decoding (dead letters left out)."""
    return stage_decoded(logs)[0]


@pytest.fixture
async def engine(session_settings):
    eng = async_engine(session_settings, pool_size=4, max_overflow=0)
    yield eng
    await eng.dispose()


async def fresh_store(engine, rules=TEST_RULES) -> ProfileStore:
    schema = unique("ps_")
    await create_schema(engine, schema)
    return ProfileStore(engine, rules, schema=schema, forget_key=KEY)


async def check_equal(store: ProfileStore, logs) -> None:
    """The whole stored state equals the reference's (``streams.reference``)."""
    await assert_state_equals_reference(store.engine, store.schema, logs, store.rules)


async def write_log(store: ProfileStore, log: list, rnd, batch: int) -> list[FoldEvent]:
    """Write ``log`` as the worker would meet it: each segment between forgets in an
    arbitrary arrival order and batches of ``batch``, then the forget. Returns every
    event written."""
    written = []
    for docs, forget in split_at_forgets(log):
        arrival = arrival_order(decoded(docs), rnd)
        for i in range(0, len(arrival), batch):
            await store.write_batch(arrival[i:i + batch])
        written += arrival
        if forget is not None:
            await forget_holder(store, forget)
    return written


@settings(max_examples=examples(12, 150), deadline=None, suppress_health_check=list(HealthCheck))
@given(log=rich_logs(rules=TEST_RULES, max_size=log_size(30, 100), forgets=True),
       seed=st.randoms(use_true_random=False), batch=st.integers(1, 8))
async def test_store_equals_the_reference_in_any_order(engine, log, seed, batch):
    store = await fresh_store(engine)
    try:
        written = await write_log(store, log, seed, batch)
        await check_equal(store, log)
        # A whole redelivery folds nothing again; copies of a forgotten person's events
        # are skipped as forgotten, as the reference says of a log that ends with them.
        outcome = await store.write_batch(written)
        assert outcome.applied == 0
        await check_equal(store, [*log, *(e for e in log if isinstance(e, dict))])
    finally:
        await drop_schema(engine, store.schema)


@settings(max_examples=examples(4, 40), deadline=None, suppress_health_check=list(HealthCheck))
@given(log=rich_logs(rules=DEFAULT_RULES, max_size=log_size(30, 100), forgets=True),
       seed=st.randoms(use_true_random=False), batch=st.sampled_from([3, 50]))
async def test_store_equals_the_reference_with_the_production_rules(engine, log, seed, batch):
    store = await fresh_store(engine, DEFAULT_RULES)
    try:
        await write_log(store, log, seed, batch)
        await check_equal(store, log)
    finally:
        await drop_schema(engine, store.schema)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_two_concurrent_writers_equal_the_reference(engine, seed):
    rnd = random.Random(seed)
    logs = [{"type": rnd.choice(["page", "identify", "track"]), "messageId": f"m{i}",
             "anonymousId": f"a{rnd.randint(0, 12)}",
             **({"userId": f"u{rnd.randint(0, 5)}"} if rnd.random() < 0.4 else {}),
             "event": "Product Viewed", "name": "Home",
             "timestamp": f"2026-03-01T10:{rnd.randint(0, 59):02d}:00Z"} for i in range(160)]
    store = await fresh_store(engine)
    other = ProfileStore(engine, TEST_RULES, schema=store.schema)
    try:
        events = decoded(logs)
        rnd.shuffle(events)
        half = len(events) // 2

        async def writer(s, chunk):
            # As the runner writes: a deadlock between the two is retried by the policy.
            for i in range(0, len(chunk), 5):
                await RetryPolicy().call(lambda s=s, i=i: s.write_batch(chunk[i:i + 5]))

        await asyncio.gather(writer(store, events[:half]), writer(other, events[half:]))
        await check_equal(store, logs)
    finally:
        await drop_schema(engine, store.schema)


async def test_forget_removes_the_person_and_suppresses_later_events(engine):
    store = await fresh_store(engine)
    try:
        logs = [
            {"type": "identify", "messageId": "m1", "anonymousId": "a1", "userId": "u1",
             "traits": {"email": "ann@x.test"}, "timestamp": "2026-03-01T10:00:00Z"},
            {"type": "page", "messageId": "m2", "anonymousId": "a1",
             "timestamp": "2026-03-01T10:01:00Z"},
            {"type": "page", "messageId": "m3", "anonymousId": "a2", "userId": "u2",
             "timestamp": "2026-03-01T10:02:00Z"},
        ]
        await store.write_batch(decoded(logs))
        found = await store.find_by_identifier("email:ann@x.test")
        assert found is not None
        pid = found[0]["id"]
        removed = await store.forget(pid)
        assert removed == {"profile_id": pid, "identifiers": 3, "events": 2}
        assert await store.get_profile(pid) is None
        assert await store.find_by_identifier("user_id:u1") is None
        later = decoded([{"type": "page", "messageId": "m4", "anonymousId": "a9",
                          "userId": "u1", "timestamp": "2026-03-01T11:00:00Z"}])
        outcome = await store.write_batch(later)
        assert outcome.skipped == {"forgotten": 1}
        counts = await store.counts()
        assert counts["profiles"] == 1 and counts["skipped_forgotten"] == 1
        assert await store.find_by_identifier("anonymous_id:a9") is None
        assert (await store.find_by_identifier("user_id:u2"))[0]["counts"]["total"] == 1
    finally:
        await drop_schema(engine, store.schema)


async def _digests(store: ProfileStore) -> set[bytes]:
    from sqlalchemy import text

    async with store.engine.connect() as conn:
        await store._begin(conn)
        rows = await conn.execute(text("SELECT identifier_sha256 FROM forgotten_identifiers"))
        return {bytes(r[0]) for r in rows}


async def test_forgotten_identifiers_are_kept_as_keyed_hashes_and_old_ones_still_hold(engine):
    from sqlalchemy import text

    from streams.credentials import forget_digest, legacy_digest

    store = await fresh_store(engine)
    try:
        await store.write_batch(decoded([
            {"type": "identify", "messageId": "k1", "userId": "u1",
             "traits": {"email": "ann@x.test"}, "timestamp": "2026-03-01T10:00:00Z"}]))
        pid = (await store.find_by_identifier("user_id:u1"))[0]["id"]
        await store.forget(pid)
        idents = ("user_id:u1", "email:ann@x.test")
        # Only the keyed digests: no dictionary of emails can be tried against them.
        assert await _digests(store) == {forget_digest(i, KEY) for i in idents}
        assert not {legacy_digest(i) for i in idents} & await _digests(store)
        # The key matters: a store with another key does not recognise the person.
        other = ProfileStore(engine, TEST_RULES, schema=store.schema,
                             forget_key=b"another-key-0123456789")
        outcome = await other.write_batch(decoded([
            {"type": "page", "messageId": "k2", "userId": "u1",
             "timestamp": "2026-03-01T11:00:00Z"}]))
        assert outcome.skipped == {} and outcome.applied == 1
        # A row of the old, unkeyed form (forgotten before the key existed) still
        # suppresses, and is re-keyed when its identifier comes back.
        async with engine.begin() as conn:
            await conn.execute(text(f'INSERT INTO "{store.schema}".forgotten_identifiers '
                                    "(identifier_sha256) VALUES (:d)"),
                               {"d": legacy_digest("user_id:old1")})
        outcome = await store.write_batch(decoded([
            {"type": "page", "messageId": "k3", "userId": "old1",
             "timestamp": "2026-03-01T12:00:00Z"}]))
        assert outcome.skipped == {"forgotten": 1}
        digests = await _digests(store)
        assert forget_digest("user_id:old1", KEY) in digests
        assert legacy_digest("user_id:old1") not in digests
        outcome = await store.write_batch(decoded([
            {"type": "page", "messageId": "k4", "userId": "old1",
             "timestamp": "2026-03-01T12:01:00Z"}]))
        assert outcome.skipped == {"forgotten": 1}  # still forgotten, by the keyed row now
    finally:
        await drop_schema(engine, store.schema)


async def test_merged_away_id_answers_with_the_survivor(engine):
    store = await fresh_store(engine)
    try:
        logs = [
            {"type": "page", "messageId": "m1", "anonymousId": "a1",
             "timestamp": "2026-03-01T10:00:00Z"},
            {"type": "page", "messageId": "m2", "anonymousId": "a2",
             "timestamp": "2026-03-01T10:01:00Z"},
            {"type": "alias", "messageId": "m3", "previousId": "a2", "anonymousId": "a1",
             "userId": "u1", "timestamp": "2026-03-01T10:02:00Z"},
        ]
        for e in decoded(logs):
            await store.write_batch([e])
        survivor, merged = profile_id_for("m1"), profile_id_for("m2")
        doc, history = await store.get_profile(merged)
        assert doc["id"] == survivor
        assert [(h["survivor"], h["merged"], h["message_id"]) for h in history] == [
            (survivor, merged, "m3")]
    finally:
        await drop_schema(engine, store.schema)


async def test_create_schema_matches_the_migration(engine):
    """`streams rebuild` and the tests build tables from metadata; production from the
    migration: both must give the same columns, types and indexes."""
    store = await fresh_store(engine)
    from sqlalchemy import text

    async def shape(conn, schema):
        cols = await conn.execute(text(
            "SELECT table_name, column_name, data_type, is_nullable FROM "
            "information_schema.columns WHERE table_schema = :s"), {"s": schema})
        idx = await conn.execute(text(
            "SELECT tablename, regexp_replace(indexdef, '^.* USING ', '') FROM pg_indexes "
            "WHERE schemaname = :s"), {"s": schema})
        return set(cols), set(idx)

    try:
        async with engine.connect() as conn:
            migrated_cols, migrated_idx = await shape(conn, "public")
            created_cols, created_idx = await shape(conn, store.schema)
        tables = {c[0] for c in created_cols}
        assert {c for c in migrated_cols if c[0] in tables} == created_cols
        assert {i for i in migrated_idx if i[0] in tables} == created_idx
        # Built through schema_translate_map: new components draw their ids from the
        # schema's own sequence, not public's.
        async with engine.connect() as conn:
            default = (await conn.execute(text(
                "SELECT column_default FROM information_schema.columns WHERE table_schema = :s "
                "AND table_name = 'components' AND column_name = 'component_id'"),
                {"s": store.schema})).scalar_one()
        assert default == f"nextval('{store.schema}.component_id_seq'::regclass)"
    finally:
        await drop_schema(engine, store.schema)


async def test_a_failed_rebuild_drops_its_schema(engine, make_settings):
    from sqlalchemy import text

    from streams.profiles.rebuild import rebuild

    async def rebuild_schemas() -> set[str]:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT schema_name FROM information_schema.schemata "
                "WHERE schema_name LIKE 'rebuild\\_%'"))
            return {r[0] for r in rows}

    before = await rebuild_schemas()
    # No Kafka there: the schema is made, then reading the topics fails.
    settings = make_settings(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(Exception):  # noqa: B017 - aiokafka's connection error, any form
        await rebuild(settings)
    assert await rebuild_schemas() == before


async def test_an_id_renamed_by_a_replay_follows_its_creating_event(engine):
    """E3 alone makes profile X; E1 (earlier) takes E3 in and X redirects to E1's profile;
    E0 (earlier still) claims E3's anonymous id for another user, so E3 moves: X must
    follow E3 to E0's profile, not keep answering with E1's person."""
    store = await fresh_store(engine, DEFAULT_RULES)
    e3 = {"type": "page", "messageId": "E3", "anonymousId": "a3",
          "timestamp": "2026-03-01T10:03:00Z"}
    e1 = {"type": "alias", "messageId": "E1", "anonymousId": "a1", "previousId": "a3",
          "userId": "u1", "timestamp": "2026-03-01T10:01:00Z"}
    e0 = {"type": "page", "messageId": "E0", "anonymousId": "a3", "userId": "u9",
          "timestamp": "2026-03-01T10:00:00Z"}
    try:
        x = profile_id_for("E3")
        await store.write_batch(decoded([e3]))
        await store.write_batch(decoded([e1]))
        assert (await store.get_profile(x))[0]["id"] == profile_id_for("E1")
        await store.write_batch(decoded([e0]))
        doc, _ = await store.get_profile(x)
        assert doc["id"] == profile_id_for("E0")
        assert "anonymous_id:a3" in doc["identifiers"]
        await check_equal(store, [e3, e1, e0])
    finally:
        await drop_schema(engine, store.schema)
