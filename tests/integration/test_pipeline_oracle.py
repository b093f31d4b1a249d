"""The real pipeline against the independent reference (``streams.reference``): real
Kafka, real PostgreSQL, `streams worker` subprocesses, varied partition counts and batch
sizes, one to three workers, folding in fold processes or in the worker's own loop,
forgets in the middle, dead letters, and a worker killed with SIGKILL mid-stream."""

from __future__ import annotations

import os
import random
import signal
from collections import Counter

import orjson
import psutil
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.db import async_engine
from streams.infra.procs import stop_session
from streams.kafka import read_topic
from streams.profiles.rebuild import rebuild
from streams.profiles.store import ProfileStore, drop_schema
from streams.reference import Forget, expected_state
from streams.topics import ensure_topics
from tests.event_strategies import DEFAULT_RULES, TEST_RULES, rich_logs
from tests.long_profile import WORKER_COUNTS, examples, log_size
from tests.profiles_helpers import (
    RECORD_TIMES,
    assert_settings_state_equals_reference,
    assert_state_equals_reference,
    drop_profiles_schema,
    drop_topics,
    forget_holder,
    group_caught_up,
    produce,
    record_time,
    split_at_forgets,
    wait_until,
    with_profiles_schema,
)

RULE_SETTINGS = {"identity_limits": {"user_id": "1", "email": "2"},
                 "identity_default_limit": 3, "identity_merge_cap": 3}


def fold_processes(worker: int) -> list[psutil.Process]:
    """The worker's fold processes (not multiprocessing's resource tracker)."""
    return [c for c in psutil.Process(worker).children()
            if "resource_tracker" not in " ".join(c.cmdline())]


def _letter(reason: str, doc: object) -> tuple[str, bytes]:
    return reason, orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


async def dead_letters(s) -> Counter:
    """(reason, original event) of every record on the dead-letter topic."""
    found: Counter = Counter()
    async for record in read_topic(s, s.topic(s.topic_dlq)):
        doc = orjson.loads(record.value)
        found[_letter(doc["reason"], doc.get("event"))] += 1
    return found


async def assert_stored_equal_the_reference(s, logs: list, dead: bool = False) -> dict:
    """The whole state stored in ``s``'s schema must be what the independent reference
    expects of ``logs`` under ``s``'s identity rules; with ``dead``, the dead-letter
    topic must hold exactly the records the reference dead-letters. Returns the stored
    profiles."""
    stored = await assert_settings_state_equals_reference(s, logs, s.identity)
    if dead:
        want = expected_state(logs, s.identity)
        assert await dead_letters(s) == Counter(
            _letter(reason, logs[position]) for position, reason in want.dead)
    return stored.profiles


async def forget_in(s, forget) -> None:
    """Forget the holder of ``forget.identifier`` through the store, as the API does."""
    engine = async_engine(s, pool_size=1, max_overflow=0)
    try:
        await forget_holder(ProfileStore.for_settings(s, engine), forget)
    finally:
        await engine.dispose()


async def run_log(s, log: list, limit_s: float) -> None:
    """Produce ``log``; at each forget, wait until the workers caught up, then forget."""
    # Kafka times of an earlier log (Hypothesis runs a failing example again) are not
    # this one's: the reference would bound a re-sent record's time around the old one.
    RECORD_TIMES.clear()
    for docs, forget in split_at_forgets(log):
        await produce(s, docs)
        if forget is not None:
            await wait_until(lambda: group_caught_up(s), limit_s=limit_s,
                             what="workers caught up before a forget")
            await forget_in(s, forget)
    await wait_until(lambda: group_caught_up(s), limit_s=limit_s, what="workers caught up")


@settings(max_examples=examples(5, 40), deadline=None, suppress_health_check=list(HealthCheck))
@given(logs=rich_logs(rules=TEST_RULES, min_size=10, max_size=log_size(40, 120),
                      forgets=True),
       partitions=st.sampled_from([1, 3, 5]), batch_size=st.sampled_from([1, 7, 50]),
       workers=st.sampled_from(WORKER_COUNTS), fold_processes=st.sampled_from([0, 2]))
async def test_pipeline_equals_the_reference(make_settings, spawn_worker, logs, partitions,
                                             batch_size, workers, fold_processes):
    base = make_settings(topic_partitions=partitions, batch_size=batch_size,
                         fold_processes=fold_processes, **RULE_SETTINGS)
    await assert_workers_equal_the_reference(base, spawn_worker, logs, workers, limit_s=120)


@settings(max_examples=examples(1, 8), deadline=None, suppress_health_check=list(HealthCheck))
@given(logs=rich_logs(rules=DEFAULT_RULES, min_size=10, max_size=log_size(40, 120),
                      forgets=True),
       workers=st.sampled_from(WORKER_COUNTS))
async def test_pipeline_equals_the_reference_with_the_production_rules(
        make_settings, spawn_worker, logs, workers):
    base = make_settings(topic_partitions=3, batch_size=20)
    assert base.identity.merge_cap == DEFAULT_RULES.merge_cap
    await assert_workers_equal_the_reference(base, spawn_worker, logs, workers, limit_s=180)


async def assert_workers_equal_the_reference(base, spawn_worker, logs: list, workers: int,
                                             limit_s: float) -> None:
    """Run ``workers`` workers over ``logs`` (in a fresh profiles schema, forgets where
    the log has them) and require the whole stored state and the dead letters to be the
    reference's."""
    s = await with_profiles_schema(base)
    await ensure_topics(s)
    procs = [spawn_worker(s, name=f"w{i}") for i in range(workers)]
    try:
        await run_log(s, logs, limit_s)
        await assert_stored_equal_the_reference(s, logs, dead=True)
    finally:
        for p in procs:
            stop_session(p)
        await drop_profiles_schema(s)
        await drop_topics(s)


def random_log(seed: int, n: int) -> list[dict]:
    """A larger log for the kill test: chains, shared kiosks, several users, duplicates."""
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        doc = {"type": rnd.choice(["page", "track", "identify", "screen"]),
               "messageId": f"k-{i}", "anonymousId": f"anon-{rnd.randint(0, 60)}",
               "timestamp": f"2026-03-01T{10 + rnd.randint(0, 3)}:{rnd.randint(0, 59):02d}:00Z",
               "event": "Product Viewed", "name": "Home",
               "properties": {"product_id": f"sku-{rnd.randint(0, 9)}", "category": "shoes"}}
        if rnd.random() < 0.3:
            doc["userId"] = f"user-{rnd.randint(0, 25)}"
        if doc["type"] == "identify":
            doc["traits"] = {"plan": rnd.choice(["free", "pro"]),
                             "email": f"p{rnd.randint(0, 30)}@example.test"}
        docs.append(doc)
    docs += [dict(docs[rnd.randrange(len(docs))]) for _ in range(n // 10)]  # duplicates
    rnd.shuffle(docs)
    return docs


async def test_sigkill_mid_stream_loses_nothing_counts_nothing_twice(make_settings,
                                                                    spawn_worker):
    base = make_settings(topic_partitions=3, batch_size=10, batch_seconds=0.05,
                         **RULE_SETTINGS)
    s = await with_profiles_schema(base)
    await ensure_topics(s)
    logs = random_log(11, 600)
    t = s.database
    conninfo = dict(host=t.host, port=t.port, user=t.user, password=t.password,
                    dbname=t.dbname, autocommit=True)
    first = spawn_worker(s, name="victim")
    second = None
    try:
        await produce(s, logs[:400])

        async def some_but_not_all_stored():
            async with await psycopg.AsyncConnection.connect(**conninfo) as conn:
                cur = await conn.execute(
                    f'SELECT count(*) FROM "{s.profiles_schema}".profile_events')
                n = (await cur.fetchone())[0]
            return n >= 50

        await wait_until(some_but_not_all_stored, limit_s=90, what="worker mid-stream",
                         interval=0.1)
        folders = psutil.Process(first.pid).children(recursive=True)
        assert folders, "the worker has no fold processes"
        # Only the worker itself, as the kernel's OOM killer would: its fold processes,
        # maybe mid-transaction, must not outlive it.
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        _, alive = psutil.wait_procs(folders, timeout=10)
        assert not alive, f"fold processes outlived the worker: {alive}"
        assert not await group_caught_up(s), "the worker finished before it was killed"
        await produce(s, logs[400:])
        second = spawn_worker(s, name="restarted")
        await wait_until(lambda: group_caught_up(s), limit_s=180, what="restarted worker")
        stored = await assert_stored_equal_the_reference(s, logs)
        assert sum(p["counts"]["total"] for p in stored.values()) == len(
            {d["messageId"] for d in logs})
    finally:
        stop_session(first)
        if second is not None:
            stop_session(second)
        await drop_profiles_schema(s)


async def test_two_workers_sharing_partitions_equal_the_reference(make_settings, spawn_worker):
    base = make_settings(topic_partitions=4, batch_size=13, **RULE_SETTINGS)
    await assert_workers_equal_the_reference(base, spawn_worker, random_log(5, 300), workers=2,
                                          limit_s=180)


class HeldTable:
    """``profile_events`` locked by another session, so that a worker's batch stops in
    the middle of its transaction, at its INSERT into that table."""

    def __init__(self, s):
        t = s.database
        self.conninfo = dict(host=t.host, port=t.port, user=t.user, password=t.password,
                             dbname=t.dbname)
        self.schema = s.profiles_schema
        self.locker = None

    async def __aenter__(self) -> HeldTable:
        self.locker = await psycopg.AsyncConnection.connect(**self.conninfo)
        await self.locker.execute(f'LOCK TABLE "{self.schema}".profile_events IN EXCLUSIVE MODE')
        return self

    async def __aexit__(self, *exc) -> None:
        await self.locker.close()

    async def blocked_backends(self, terminate: bool = False) -> list[int]:
        """Wait for the backends stuck on the lock; with ``terminate``, the database then
        drops their connections."""
        async with await psycopg.AsyncConnection.connect(**self.conninfo,
                                                         autocommit=True) as watch:

            async def blocked():
                cur = await watch.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE 'INSERT INTO profile_events%%'")
                return [r[0] for r in await cur.fetchall()]

            pids = await wait_until(blocked, limit_s=60, what="a batch blocked", interval=0.2)
            for pid in pids if terminate else ():
                await watch.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return pids

    async def release(self) -> None:
        await self.locker.rollback()


async def test_database_connection_killed_mid_batch_is_retried_not_lost(make_settings,
                                                                        spawn_worker):
    s = await with_profiles_schema(make_settings(topic_partitions=2, **RULE_SETTINGS))
    await ensure_topics(s)
    logs = random_log(3, 60)
    proc = None
    try:
        async with HeldTable(s) as held:
            proc = spawn_worker(s)
            await produce(s, logs)
            # The database drops the worker's connection in the middle of its transaction.
            await held.blocked_backends(terminate=True)
            await held.release()
            await wait_until(lambda: group_caught_up(s), limit_s=120, what="worker caught up")
        await assert_stored_equal_the_reference(s, logs)
        assert proc.poll() is None, "the worker died instead of retrying"
    finally:
        if proc is not None:
            stop_session(proc)
        await drop_profiles_schema(s)


async def test_fold_process_killed_mid_batch_is_replaced_and_nothing_lost(make_settings,
                                                                          spawn_worker):
    s = await with_profiles_schema(make_settings(topic_partitions=2, **RULE_SETTINGS))
    await ensure_topics(s)
    logs = random_log(4, 80)
    proc = None
    try:
        async with HeldTable(s) as held:
            proc = spawn_worker(s)
            await produce(s, logs)
            await held.blocked_backends()
            # Every fold process dies in the middle of its transaction.
            folders = fold_processes(proc.pid)
            assert folders, "the worker has no fold processes"
            for child in folders:
                child.kill()
            psutil.wait_procs(folders, timeout=10)
            await held.release()
            await wait_until(lambda: group_caught_up(s), limit_s=120, what="worker caught up")
        await assert_stored_equal_the_reference(s, logs)
        assert proc.poll() is None, "the worker died instead of replacing its fold processes"
        replaced = fold_processes(proc.pid)
        assert replaced and not {c.pid for c in replaced} & {c.pid for c in folders}
    finally:
        if proc is not None:
            stop_session(proc)
        await drop_profiles_schema(s)


async def test_fold_processes_die_with_a_sigkilled_worker_even_mid_transaction(
        make_settings, spawn_worker):
    s = await with_profiles_schema(make_settings(topic_partitions=2, **RULE_SETTINGS))
    await ensure_topics(s)
    try:
        async with HeldTable(s) as held:
            proc = spawn_worker(s)
            await produce(s, random_log(6, 40))
            await held.blocked_backends()  # a fold process waits on the lock, mid-transaction
            folders = fold_processes(proc.pid)
            assert folders, "the worker has no fold processes"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            # Still blocked, so only the kernel's parent-death signal can end them now.
            _, alive = psutil.wait_procs(folders, timeout=10)
            assert not alive, f"fold processes outlived the worker: {alive}"
    finally:
        await drop_profiles_schema(s)


@settings(max_examples=examples(1, 6), deadline=None, suppress_health_check=list(HealthCheck))
@given(logs=rich_logs(rules=TEST_RULES, min_size=10, max_size=log_size(40, 120)))
async def test_rebuild_equals_the_reference(make_settings, spawn_worker, logs):
    """`streams rebuild` folds the topics into a new schema: its whole state, not only
    its profiles, must be the reference's, as the live one is."""
    s = await with_profiles_schema(make_settings(topic_partitions=3, batch_size=7,
                                                 **RULE_SETTINGS))
    await ensure_topics(s)
    proc = spawn_worker(s)
    engine = async_engine(s, pool_size=1, max_overflow=0)
    report = None
    try:
        await run_log(s, logs, limit_s=120)
        await assert_stored_equal_the_reference(s, logs)
        report = await rebuild(s, batch=9, keep=True)
        assert report.identical, report
        await assert_state_equals_reference(engine, report.schema, logs, s.identity)
    finally:
        stop_session(proc)
        if report is not None:
            await drop_schema(engine, report.schema)
        await engine.dispose()
        await drop_profiles_schema(s)
        await drop_topics(s)


def person_event(message_id: str, minute: int, anonymous_id: str,
                 user_id: str | None = None) -> dict:
    doc = {"type": "track", "event": "Product Viewed", "messageId": message_id,
           "anonymousId": anonymous_id, "timestamp": f"2026-03-01T08:{minute:02d}:00Z",
           "properties": {"product_id": f"sku-{minute}", "category": "shoes"}}
    if user_id is not None:
        doc["userId"] = user_id
    return doc


# P and Q; Q's event f-3 carries P's anonymous id, dropped by the user_id limit of 1.
# Forgetting P deletes P's events (f-1, its copy, f-4), keeps f-3 in Q without P's id
# and skips what comes after with it (f-6, and a copy of f-4: its id is free again).
FORGET_LOG = [
    person_event("f-1", 0, "anon-p", "user-p"),
    person_event("f-2", 1, "anon-q", "user-q"),
    person_event("f-3", 2, "anon-p", "user-q"),
    person_event("f-4", 3, "anon-p"),
    person_event("f-1", 0, "anon-p", "user-p"),
    Forget("anonymous_id:anon-p"),
    person_event("f-6", 5, "anon-p"),
    person_event("f-4", 3, "anon-p"),
    person_event("f-7", 6, "anon-q2", "user-q"),
]


async def assert_rebuild_equals_the_reference(s, spawn_worker, logs: list) -> None:
    """Run a worker over ``logs`` (forgets included), then `streams rebuild` from the
    topics: the rebuilt schema's whole state must be the reference's, as the live one's
    is, and the rebuild must find the two identical."""
    await ensure_topics(s)
    proc = spawn_worker(s)
    engine = async_engine(s, pool_size=1, max_overflow=0)
    report = None
    try:
        await run_log(s, logs, limit_s=120)
        await assert_stored_equal_the_reference(s, logs)
        report = await rebuild(s, batch=9, keep=True)
        await assert_state_equals_reference(engine, report.schema, logs, s.identity,
                                            forget_key=s.forget_key.get_secret_value().encode(),
                                            appended=record_time)
        assert report.identical, report
    finally:
        stop_session(proc)
        if report is not None:
            await drop_schema(engine, report.schema)
        await engine.dispose()
        await drop_profiles_schema(s)
        await drop_topics(s)


async def test_rebuild_after_a_forget_equals_the_reference(make_settings, spawn_worker):
    want = expected_state(FORGET_LOG, TEST_RULES)
    assert set(want.events) == {"f-2", "f-3", "f-7"}  # the case is the one described
    assert want.skipped == {"f-6": "forgotten", "f-4": "forgotten"}
    s = await with_profiles_schema(make_settings(topic_partitions=3, batch_size=4,
                                                 **RULE_SETTINGS))
    await assert_rebuild_equals_the_reference(s, spawn_worker, FORGET_LOG)


@settings(max_examples=examples(1, 6), deadline=None, suppress_health_check=list(HealthCheck))
@given(logs=rich_logs(rules=TEST_RULES, min_size=10, max_size=log_size(40, 120),
                      forgets=True))
async def test_rebuild_after_forgets_equals_the_reference(make_settings, spawn_worker, logs):
    s = await with_profiles_schema(make_settings(topic_partitions=3, batch_size=7,
                                                 **RULE_SETTINGS))
    await assert_rebuild_equals_the_reference(s, spawn_worker, logs)
