"""Scaling out and in while events flow (issue #14, fault suite item 5): a second worker
started and stopped three times beside a first one, each time while the producer keeps
writing. Every rebalance hands partitions over with nothing lost and nothing counted
twice: exact counts against the oracle, every partition's lag back to zero."""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

from aiokafka.admin import AIOKafkaAdminClient

from streams.compat import describe_group
from streams.topics import ensure_topics
from tests.helpers import assert_running
from tests.integration.faults.support import SHUTDOWN_BOUND, lag, stop_timed
from tests.integration.test_pipeline_oracle import (
    RULE_SETTINGS,
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

CYCLES = 3


async def members_with_partitions(s) -> int:
    """How many members of the worker group hold partitions (a stable group only)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        group = await describe_group(admin, s.consumer_group)
    finally:
        await admin.close()
    if group.state != "Stable":
        return -1
    return sum(1 for m in group.members if m.partitions)


async def test_scaling_out_and_in_three_times_loses_nothing(make_settings, spawn_worker):
    s = await with_profiles_schema(make_settings(
        topic_partitions=4, batch_size=20, fold_processes=1, triggers_enabled=False,
        **RULE_SETTINGS))
    await ensure_topics(s)
    logs = random_log(31, 1200)
    pool = ThreadPoolExecutor(1, thread_name_prefix="scaling")
    loop = asyncio.get_running_loop()
    first = spawn_worker(s, name="steady")

    async def traffic() -> None:
        # Paced writes, so that every rebalance below happens while events arrive.
        for i in range(0, len(logs), 15):
            await produce(s, logs[i:i + 15])
            await asyncio.sleep(0.25)

    try:
        await wait_until(lambda: members_with_partitions(s), limit_s=90,
                         what="the first worker joined", interval=0.3)
        producing = asyncio.ensure_future(traffic())
        for cycle in range(CYCLES):
            second = spawn_worker(s, name=f"extra{cycle}")

            async def both_hold_partitions(w=second) -> bool:
                assert_running(first)
                assert_running(w)
                return await members_with_partitions(s) == 2

            await wait_until(both_hold_partitions, limit_s=90, what=f"scale-out {cycle}",
                             interval=0.3)
            await loop.run_in_executor(pool, stop_timed, second, signal.SIGTERM,
                                       SHUTDOWN_BOUND)
            assert second.returncode == 0, f"scale-in {cycle}: exit code {second.returncode}"
            await wait_until(lambda: _one_member(s), limit_s=90, what=f"scale-in {cycle}",
                             interval=0.3)
        await producing
        await wait_until(lambda: group_caught_up(s), limit_s=120, what="lag back to zero")
        assert set((await lag(s)).values()) == {0}, await lag(s)
        assert_running(first)
        stored = await assert_stored_equal_the_reference(s, logs)
        assert sum(p["counts"]["total"] for p in stored.values()) == len(
            {d["messageId"] for d in logs})
    finally:
        if "producing" in locals():
            producing.cancel()
        pool.shutdown()
        await drop_profiles_schema(s)


async def _one_member(s) -> bool:
    return await members_with_partitions(s) == 1
