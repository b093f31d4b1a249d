"""Exactly-once effect through a broker restart and a database restart (design brief,
invariant 3), on a private Kafka and PostgreSQL so the session's servers stay up."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import psycopg

from streams import db
from streams.infra import infra_down, infra_up
from streams.infra.kafka import LocalKafka
from streams.infra.postgres import LocalPostgres
from streams.infra.procs import stop_session
from streams.settings import load_settings
from streams.topics import ensure_topics
from tests.helpers import assert_running, unique
from tests.integration.test_infra import free_port
from tests.integration.test_pipeline_oracle import (
    RULE_SETTINGS,
    assert_stored_equal_the_reference,
    random_log,
)
from tests.profiles_helpers import (
    group_caught_up,
    produce,
    wait_until,
    with_profiles_schema,
)


async def stored_count(s) -> int:
    t = s.database
    try:
        async with await psycopg.AsyncConnection.connect(
                host=t.host, port=t.port, user=t.user, password=t.password, dbname=t.dbname,
                autocommit=True) as conn:
            cur = await conn.execute(f'SELECT count(*) FROM "{s.profiles_schema}".profile_events')
            return (await cur.fetchone())[0]
    except psycopg.OperationalError:
        return -1


async def test_broker_and_database_restarts_lose_nothing_count_nothing_twice(
        tmp_path, infra_settings, spawn_worker):
    private = load_settings(
        data_dir=tmp_path / "data", cache_dir=infra_settings.cache_dir,
        kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
        database_url=f"postgresql+psycopg://app:s3cret@127.0.0.1:{free_port()}/appdb",
        kafka_heap="384m", pg_shared_buffers="32MB",
        topic_prefix=unique("r") + ".", consumer_group=unique("g"), topic_partitions=3,
        batch_size=10, batch_seconds=0.05, commit_interval=0.5, **RULE_SETTINGS,
    )
    # Blocking infra calls run on a pool of our own, shut down at the end (no stray thread).
    pool = ThreadPoolExecutor(1, thread_name_prefix="restarts")
    loop = asyncio.get_running_loop()

    async def blocking(fn, *args):
        return await loop.run_in_executor(pool, fn, *args)

    await blocking(infra_up, private)
    worker = None
    try:
        await blocking(db.upgrade, private)
        s = await with_profiles_schema(private)
        await ensure_topics(s)
        logs = random_log(13, 450)
        worker = spawn_worker(s, name="survivor")

        async def stored_at_least(n: int):
            assert_running(worker)
            return await stored_count(s) >= n

        # Broker restart while the worker is mid-stream.
        await produce(s, logs[:150])
        await wait_until(lambda: stored_at_least(30), limit_s=90, what="worker mid-stream",
                         interval=0.1)
        kafka = LocalKafka(s)
        await blocking(kafka.stop)
        await blocking(kafka.start)
        await produce(s, logs[150:300])

        # Database restart while the worker is mid-stream.
        await wait_until(lambda: stored_at_least(180), limit_s=120, what="worker after broker")
        pg = LocalPostgres(s)
        await blocking(pg.stop)
        await produce(s, logs[300:])


        async def worker_met_the_database_down():
            assert_running(worker)
            return "database unavailable" in worker.log_path.read_text(errors="replace")

        # The database comes back only once the worker found it gone and waits.
        await wait_until(worker_met_the_database_down, limit_s=90,
                         what="worker waiting for the database", interval=0.2)
        await blocking(pg.start)

        await wait_until(lambda: group_caught_up(s), limit_s=240, what="worker caught up")
        assert_running(worker)  # it rode out both restarts without being restarted
        log = worker.log_path.read_text(errors="replace")
        assert "database unavailable" in log  # it met the database down, waited, went on
        assert "dead-lettered" not in log  # waited out: nothing given up for it
        stored = await assert_stored_equal_the_reference(s, logs)
        assert sum(p["counts"]["total"] for p in stored.values()) == len(
            {d["messageId"] for d in logs})
    finally:
        if worker is not None:
            stop_session(worker)
        await blocking(infra_down, private)
        pool.shutdown()
