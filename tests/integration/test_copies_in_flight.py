"""Two batches of one partition in flight at once (two fold processes), the later one
quicker, with two copies of one message id under different bodies: the copy first in
the log must be the one stored, as the independent reference has it.

The case CI found (issue 15): the merge-cap episode of the test rules (cap 3) with a
different-body copy of a leaf's event first in the log. Its first copy comes after the
hub event (its leaf id is then new, and joins the hub's profile); the second copy comes
before it (five leaf profiles at the hub: the fifth leaf is dropped by the merge cap and
stays a profile of its own). Stored in the wrong order, the state is the second one.
Both tests failed with the runner before the fix (which let the quicker batch go first)
and reproduce CI's disagreement exactly: the first drives the runner with the real store
in this process, the second a `streams worker` with two fold processes.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from sqlalchemy import text

from streams.db import async_engine
from streams.identity.store import _lock_key as lock_key
from streams.identity.store import lock_identifiers
from streams.infra.procs import stop_session
from streams.pipeline.batch import process_batch
from streams.pipeline.policy import RetryPolicy
from streams.pipeline.runner import StageRunner
from streams.pipeline.stage import StageSpec
from streams.pipeline.systemic import DlqLimit, SystemicFailureDetector
from streams.profiles.stage import copies_key, make_profile_stage
from streams.reference import expected_state
from streams.topics import ensure_topics
from tests.event_strategies import at
from tests.integration.test_pipeline_oracle import RULE_SETTINGS
from tests.profiles_helpers import (
    assert_settings_state_equals_reference,
    drop_profiles_schema,
    drop_topics,
    group_caught_up,
    produce,
    wait_until,
    with_profiles_schema,
)
from tests.unit.pipeline.fakes import ListSink


def page(message_id: str, minute: int, *leaf_types: str) -> dict:
    return {"type": "page", "name": "Home", "messageId": message_id, "anonymousId": "null",
            "timestamp": at(minute),
            "context": {"externalIds": [{"id": "e0", "type": t} for t in leaf_types]}}


LEAVES = [page(f"e0-l{k}", 17, f"leaf{k}_id") for k in range(5)]
HUB = page("e0-h0", 18, "hub_id", *(f"leaf{k}_id" for k in range(5)))
LATE_COPY = {**LEAVES[2], "timestamp": at(30), "properties": {"product_id": "sku-9"}}
# Log order: the late copy of e0-l2 first, in the first batch; e0-l2 itself in the second.
FIRST = [LEAVES[0], LEAVES[1], LEAVES[3], LEAVES[4], HUB, LATE_COPY]
SECOND = [LEAVES[2]]


class FirstBatchSlow:
    """Two batches in flight, each through the real profile stage in this process; the
    first waits until the second is stored (at most ``patience`` seconds: a runner that
    keeps them in order never starts the second before the first is done)."""

    in_flight = 2

    def __init__(self, stage, patience: float = 1.0):
        self.stage, self.patience = stage, patience
        self.runs = 0
        self.second_stored = asyncio.Event()

    async def start(self):
        pass

    async def run(self, raws):
        self.runs += 1
        first = self.runs == 1
        if first:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.second_stored.wait(), self.patience)
        result = await process_batch(self.stage, raws, RetryPolicy(tries=3))
        if not first:
            self.second_stored.set()
        return result

    def close(self, kill=False):
        pass


def records(topic: str, docs: list[dict], start: int) -> list[tuple]:
    """``docs`` as records of one partition of ``topic`` (the same topic and key: copies
    of one event are on one partition), from offset ``start``."""
    return [(topic, 0, start + i, b"null", orjson.dumps(d)) for i, d in enumerate(docs)]


async def test_the_first_copy_in_the_log_wins_over_a_quicker_batch(make_settings):
    log = FIRST + SECOND
    want = expected_state(log, make_settings(**RULE_SETTINGS).identity)
    hub_profile = want.owners["hub_id:e0"]
    assert want.owners["leaf4_id:e0"] == hub_profile  # the late copy counted: no cap drop
    s = await with_profiles_schema(make_settings(**RULE_SETTINGS))
    stage = make_profile_stage(s)
    view = s.topic(s.topic_view)
    acked = []
    sink = ListSink()

    async def ack(event):
        acked.append(event)

    async def crash(exc):
        raise AssertionError(f"the runner crashed: {exc!r}")

    async def batches():
        yield records(view, FIRST, 0)
        yield records(view, SECOND, len(FIRST))

    runner = StageRunner(
        StageSpec("fold", "profiles", (view,), make_profile_stage, 2, order_key=copies_key),
        FirstBatchSlow(stage), sink, SystemicFailureDetector(DlqLimit(0.99, 1000, 500)),
        hold=lambda record: None, ack=ack, crash=crash, raw=lambda record: record)
    try:
        await asyncio.wait_for(runner.run(batches()), timeout=60)
        assert len(acked) == len(log) and not sink.sent
        await assert_settings_state_equals_reference(s, log, s.identity)
    finally:
        await stage.close()
        await drop_profiles_schema(s)


def first_locked(others: list[str]) -> str:
    """A pin identifier whose advisory lock a batch takes before those of ``others``
    (locks are taken in ascending key order), so that holding it stops the batch before
    it holds anything."""
    lowest = min(lock_key(i) for i in others)
    return next(f"pin_id:p{n}" for n in range(10_000) if lock_key(f"pin_id:p{n}") < lowest)


async def test_a_worker_with_two_fold_processes_stores_the_first_copy_in_the_log(
        make_settings, spawn_worker):
    # The same case through `streams worker`: one partition, batches of 7, two fold
    # processes. The first batch is held on the advisory lock of an identifier only it
    # carries (its first lock), while the second, with the other copy, is free to go.
    others = ["hub_id:e0", *(f"leaf{k}_id:e0" for k in range(5))]
    pin = first_locked(others)
    pinned = page("pin-0", 5)
    pinned["context"]["externalIds"] = [{"id": pin.partition(":")[2], "type": "pin_id"}]
    log = [pinned, *FIRST, *SECOND]
    assert len(FIRST) + 1 == 7
    s = await with_profiles_schema(make_settings(topic_partitions=1, batch_size=7,
                                                 batch_seconds=1.0, fold_processes=2,
                                                 **RULE_SETTINGS))
    await ensure_topics(s)
    engine = async_engine(s, pool_size=2, max_overflow=0)
    proc = None
    try:
        await produce(s, log)  # all there before the worker: batches of 7, then 1
        async with engine.connect() as holder:
            await holder.begin()
            await lock_identifiers(holder, [pin])
            proc = spawn_worker(s)
            async with engine.connect() as watch:

                async def first_batch_waits():
                    rows = await watch.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                        "'Lock' AND query LIKE '%pg_advisory_xact_lock%'"))
                    waiting = rows.scalar_one() > 0
                    await watch.rollback()  # a transaction keeps one snapshot of the view
                    return waiting

                await wait_until(first_batch_waits, limit_s=60, what="the first batch held")

                async def second_copy_stored():
                    rows = await watch.execute(text(
                        f'SELECT count(*) FROM "{s.profiles_schema}".profile_events '
                        "WHERE message_id = 'e0-l2'"))
                    stored = rows.scalar_one() > 0
                    await watch.rollback()
                    return stored

                # The runner before the fix stored the second batch here, within a second
                # or two; now it waits for the first, however long that takes.
                with contextlib.suppress(AssertionError):
                    await wait_until(second_copy_stored, limit_s=5, what="e0-l2 stored",
                                     interval=0.2)
            await holder.rollback()
        await wait_until(lambda: group_caught_up(s), limit_s=60, what="worker caught up")
        await assert_settings_state_equals_reference(s, log, s.identity)
    finally:
        if proc is not None:
            stop_session(proc)
        await engine.dispose()
        await drop_profiles_schema(s)
        await drop_topics(s)
