"""A short soak at high load with memory flat (issue #14, fault suite item 11): events
written at up to ``RATE`` per second for ``SOAK_S`` seconds, held back only while more
than ``MAX_BACKLOG`` are not yet folded (so the worker is kept saturated on any machine,
and the backlog left at the end is bounded), while the resident memory of the worker and
its fold processes is sampled. After a warm-up, memory must stay within
``GROWTH_LIMIT``; afterwards the lag is back to zero within ``RECOVERY_S`` and every
event is counted exactly once."""

from __future__ import annotations

import asyncio
import statistics
import time

import orjson
import psutil
import psycopg
from aiokafka import AIOKafkaProducer

from streams.topics import ensure_topics
from tests.helpers import assert_running
from tests.integration.faults.support import lag
from tests.profiles_helpers import (
    drop_profiles_schema,
    group_caught_up,
    stored_profiles,
    topic_for,
    wait_until,
    with_profiles_schema,
)

RATE = 4000  # events per second at most: more than a worker folds on two cores
MAX_BACKLOG = 4000
SOAK_S = 60.0
WARM_UP_S = 20.0
RECOVERY_S = 90.0
PEOPLE = 3000


def growth_limit(baseline: int) -> int:
    """The memory growth allowed after the warm-up: 32 MiB or 10%, whichever is more
    (a leak of a kilobyte an event would grow by about 60 MiB over the soak)."""
    return max(32 << 20, baseline // 10)


def worker_rss(pid: int) -> int:
    """Resident bytes of the worker and its fold processes."""
    me = psutil.Process(pid)
    procs = [me, *(c for c in me.children(recursive=True)
                   if "resource_tracker" not in " ".join(c.cmdline()))]
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def event(i: int) -> dict:
    doc = {"type": "page" if i % 3 else "track", "messageId": f"soak-{i}",
           "anonymousId": f"anon-{i % PEOPLE}", "timestamp": "2026-03-01T10:00:00Z",
           "event": "Product Viewed", "name": "Home",
           "properties": {"product_id": f"sku-{i % 40}", "category": "shoes"}}
    if i % 10 == 0:
        doc.update(type="identify", userId=f"user-{i % (PEOPLE // 3)}",
                   traits={"plan": "pro"})
    return doc


async def profile_event_count(s) -> int:
    t = s.database
    async with await psycopg.AsyncConnection.connect(
            host=t.host, port=t.port, user=t.user, password=t.password, dbname=t.dbname,
            autocommit=True) as conn:
        cur = await conn.execute(f'SELECT count(*) FROM "{s.profiles_schema}".profile_events')
        return (await cur.fetchone())[0]


async def test_soak_at_high_load_keeps_memory_flat(make_settings, spawn_worker):
    s = await with_profiles_schema(make_settings(topic_partitions=4, batch_size=200,
                                                 triggers_enabled=False))
    await ensure_topics(s)
    worker = spawn_worker(s, name="soak")
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=20)
    await producer.start()
    samples: list[tuple[float, int]] = []
    sent = folded = 0
    try:
        await wait_until(lambda: _ready(s, worker), limit_s=90, what="worker started")
        started = time.monotonic()
        tick = 0.1
        while (elapsed := time.monotonic() - started) < SOAK_S:
            due = sent + int(RATE * tick)
            if not samples or elapsed - samples[-1][0] >= 1.0:
                assert_running(worker)
                samples.append((elapsed, worker_rss(worker.pid)))
                folded = await profile_event_count(s)
            if sent - folded > MAX_BACKLOG:
                due = sent  # saturated: wait for the worker
            futures = []
            for i in range(sent, due):
                doc = event(i)
                key = (doc.get("userId") or doc["anonymousId"]).encode()
                futures.append(await producer.send(topic_for(s, doc), orjson.dumps(doc),
                                                   key=key))
            sent = due
            await asyncio.gather(*futures)
            await asyncio.sleep(tick)
    finally:
        await producer.stop()
    try:
        await wait_until(lambda: group_caught_up(s), limit_s=RECOVERY_S,
                         what="lag back to zero after the soak")
        assert set((await lag(s)).values()) == {0}
        warm = [rss for t, rss in samples if WARM_UP_S <= t < WARM_UP_S + 10]
        last = [rss for t, rss in samples if t >= SOAK_S - 10]
        baseline, final = statistics.median(warm), statistics.median(last)
        trace = ", ".join(f"{t:.0f}s={rss >> 20}MiB" for t, rss in samples[::5])
        print(f"soak: {sent} events; RSS {baseline / 2**20:.0f} -> {final / 2**20:.0f} MiB")
        assert final - baseline <= growth_limit(int(baseline)), f"memory grew: {trace}"
        assert await profile_event_count(s) == sent
        stored = await stored_profiles(s)
        assert sum(p["counts"]["total"] for p in stored.values()) == sent
    finally:
        await drop_profiles_schema(s)


async def _ready(s, worker) -> bool:
    """The worker has joined its group and holds partitions (its lag report exists)."""
    assert_running(worker)
    return "fold_events_into_profiles" in worker.log_path.read_text(errors="replace") and \
        bool(await _assigned(s))


async def _assigned(s) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.compat import describe_group

    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        group = await describe_group(admin, s.consumer_group)
    finally:
        await admin.close()
    return group.state == "Stable" and any(m.partitions for m in group.members)
