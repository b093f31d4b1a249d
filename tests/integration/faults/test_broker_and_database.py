"""Exactly-once effect through infrastructure faults under load (design brief, invariant
3; issue #14, fault suite items 3 and 4), on a PRIVATE Kafka and PostgreSQL started by
the project's own infra code on free ports, so the shared development servers stay up:

- the broker killed with SIGKILL while the worker works through a backlog, then
  restarted (an unclean stop: it recovers its logs);
- the worker's database connections terminated (``pg_terminate_backend``) mid-stream,
  three times;
- PostgreSQL stopped while events keep arriving, then started again.

The worker rides out all of them without being restarted; afterwards its lag is back to
zero within ``RECOVERY_S`` seconds and the stored profiles equal the oracle's, every
accepted event counted once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import psutil
import psycopg

from streams import db
from streams.infra import infra_down, infra_up
from streams.infra.kafka import LocalKafka
from streams.infra.postgres import LocalPostgres
from streams.infra.procs import stop_session
from streams.settings import load_settings
from streams.topics import ensure_topics
from tests.helpers import assert_running, unique
from tests.integration.faults.support import lag
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

# After the last fault, the worker's lag is back to zero within this many seconds.
RECOVERY_S = 120


def conninfo(s) -> dict:
    t = s.database
    return dict(host=t.host, port=t.port, user=t.user, password=t.password, dbname=t.dbname,
                autocommit=True)


async def stored_count(s) -> int:
    try:
        async with await psycopg.AsyncConnection.connect(**conninfo(s)) as conn:
            cur = await conn.execute(f'SELECT count(*) FROM "{s.profiles_schema}".profile_events')
            return (await cur.fetchone())[0]
    except psycopg.OperationalError:
        return -1


async def terminate_worker_backends(s) -> int:
    """Drop every other client connection to the private database (the worker's fold
    and trigger processes hold them all); returns how many were dropped."""
    async with await psycopg.AsyncConnection.connect(**conninfo(s)) as conn:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
            "datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")
        return (await cur.fetchone())[0]


def kill_broker(kafka: LocalKafka) -> None:
    """SIGKILL the private broker and wait until it is gone (blocks)."""
    pid = kafka.pid()
    assert pid is not None, "the private broker is not running"
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(timeout=30)


async def test_broker_kill_connection_drops_and_database_restart_lose_nothing(
        private_data_dir, infra_settings, spawn_worker):
    private = load_settings(
        data_dir=private_data_dir, cache_dir=infra_settings.cache_dir,
        kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
        database_url=f"postgresql+psycopg://app:s3cret@127.0.0.1:{free_port()}/appdb",
        kafka_heap="384m", pg_shared_buffers="32MB",
        topic_prefix=unique("r") + ".", consumer_group=unique("g"), topic_partitions=3,
        batch_size=10, batch_seconds=0.05, commit_interval=0.5, **RULE_SETTINGS,
    )
    # Blocking infra calls run on a pool of our own, shut down at the end (no stray thread).
    pool = ThreadPoolExecutor(1, thread_name_prefix="faults")
    loop = asyncio.get_running_loop()

    async def blocking(fn, *args):
        return await loop.run_in_executor(pool, fn, *args)

    await blocking(infra_up, private)
    worker = None
    try:
        await blocking(db.upgrade, private)
        s = await with_profiles_schema(private)
        await ensure_topics(s)
        logs = random_log(13, 600)
        worker = spawn_worker(s, name="survivor")

        async def stored_at_least(n: int):
            assert_running(worker)
            return await stored_count(s) >= n

        # 1. The broker killed while the worker works through a backlog.
        await produce(s, logs[:150])
        await wait_until(lambda: stored_at_least(30), limit_s=90, what="worker mid-stream",
                         interval=0.1)
        kafka = LocalKafka(s)
        await blocking(kill_broker, kafka)
        await blocking(kafka.start)
        await produce(s, logs[150:300])

        # 2. Its database connections dropped, three times, each mid-stream.
        await wait_until(lambda: stored_at_least(170), limit_s=120, what="worker after broker",
                         interval=0.1)
        for chunk in (logs[300:350], logs[350:400], logs[400:450]):
            before = await stored_count(s)
            await produce(s, chunk)
            await wait_until(lambda b=before: stored_at_least(b + 10), limit_s=60,
                             what="worker folding", interval=0.1)
            assert await terminate_worker_backends(s) >= 1

        # 3. The database stopped while events keep arriving, then started again.
        pg = LocalPostgres(s)
        await blocking(pg.stop)
        await produce(s, logs[450:])

        async def met_the_database_down() -> bool:
            assert_running(worker)
            return "database unavailable" in worker.log_path.read_text(errors="replace")

        await wait_until(met_the_database_down, limit_s=60, what="the worker waiting",
                         interval=0.2)
        await blocking(pg.start)

        await wait_until(lambda: group_caught_up(s), limit_s=RECOVERY_S,
                         what="lag back to zero")
        assert set((await lag(s)).values()) == {0}
        assert_running(worker)  # it rode out every fault without being restarted
        log = worker.log_path.read_text(errors="replace")
        assert "dead-lettered" not in log  # waited out: nothing given up for it
        stored = await assert_stored_equal_the_reference(s, logs)
        assert sum(p["counts"]["total"] for p in stored.values()) == len(
            {d["messageId"] for d in logs})
    finally:
        if worker is not None:
            stop_session(worker)
        try:
            await blocking(infra_down, private)
        finally:
            pool.shutdown()

