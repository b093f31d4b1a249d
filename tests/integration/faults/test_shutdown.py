"""Shutdown within a bound: SIGTERM or Ctrl-C stops a worker (Faust, its fold processes,
its trigger process) within ``SHUTDOWN_BOUND`` seconds even while a batch is stuck on a
row lock or the database is gone, and acknowledges nothing it did not store."""

from __future__ import annotations

import signal

from streams.infra.procs import stop_session
from streams.topics import ensure_topics
from tests.integration.faults.support import SHUTDOWN_BOUND, committed_offsets, stop_timed
from tests.integration.test_infra import free_port
from tests.integration.test_pipeline_oracle import (
    RULE_SETTINGS,
    HeldTable,
    assert_stored_equal_the_reference,
    random_log,
)
from tests.profiles_helpers import (
    drop_profiles_schema,
    group_caught_up,
    produce,
    wait_until,
    with_profiles_schema,
)


async def stop_within_bound(proc, sig: signal.Signals, group: bool = False) -> float:
    # Blocks the test's loop on purpose: nothing else runs in it meanwhile.
    return stop_timed(proc, sig, SHUTDOWN_BOUND, group)


async def test_sigterm_stops_a_worker_whose_batch_is_stuck_on_a_lock(make_settings,
                                                                    spawn_worker):
    s = await with_profiles_schema(make_settings(topic_partitions=2, **RULE_SETTINGS))
    await ensure_topics(s)
    logs = random_log(21, 80)
    restarted = None
    try:
        async with HeldTable(s) as held:
            proc = spawn_worker(s, name="stuck")
            await produce(s, logs)
            await held.blocked_backends()  # a fold process waits on the lock, mid-batch
            await stop_within_bound(proc, signal.SIGTERM)
            assert not await group_caught_up(s), "a batch never stored was acknowledged"
        # The lock is gone: a new worker reads the unacknowledged batches again.
        restarted = spawn_worker(s, name="restarted")
        await wait_until(lambda: group_caught_up(s), limit_s=120, what="restarted worker")
        stored = await assert_stored_equal_the_reference(s, logs)
        assert sum(p["counts"]["total"] for p in stored.values()) == len(
            {d["messageId"] for d in logs})
    finally:
        if restarted is not None:
            stop_session(restarted)
        await drop_profiles_schema(s)


async def test_ctrl_c_stops_a_worker_while_the_database_is_gone(make_settings, spawn_worker):
    # In the worker's own loop this time (no fold processes): the other executor's path.
    s = make_settings(topic_partitions=2, fold_processes=0, **RULE_SETTINGS)
    gone = s.model_copy(update={"database_url": s.database_url.__class__(
        f"postgresql+psycopg://app:x@127.0.0.1:{free_port()}/gone")})
    await ensure_topics(gone)
    proc = spawn_worker(gone, name="no-database")
    await produce(gone, random_log(22, 30))

    async def waiting_on_the_database() -> bool:
        return "database unavailable" in proc.log_path.read_text(errors="replace")

    await wait_until(waiting_on_the_database, limit_s=90, what="the worker retrying",
                     interval=0.2)
    await stop_within_bound(proc, signal.SIGINT, group=True)
    assert await committed_offsets(gone) == {}, "an offset passed an event never stored"
