"""Per-step CPU of ``ProfileStore.write_batch``: this process's CPU (``process_time``)
in each step, found by wrapping the function that does it, and its PostgreSQL backend's.
The bench's events for PEOPLE people (2 each) are decoded first (not measured), then
written in batches of 500 into a fresh schema, which is dropped at the end.

    .venv/bin/python scripts/bench_store_steps.py 10000

Run the old code's store the same way from a ``git archive`` of it:
``cd TREE && PYTHONPATH=TREE /path/.venv/bin/python /path/scripts/bench_store_steps.py N``
(docs/profiles.md, "The store's cost, measured")."""
import asyncio
import functools
import sys
import time
import uuid
from collections import defaultdict

import psutil
from sqlalchemy import text

from streams.bench.pipeline import iter_events
from streams.db import async_engine
from streams.events.topics import TopicKinds
from streams.identity import store as ids
from streams.profiles import logic as lg
from streams.profiles import store as st
from streams.profiles import writes as wr
from streams.profiles.stage import decode
from streams.settings import load_settings

acc = defaultdict(float)
stack = []

def wrap_sync(mod, name, label):
    f = getattr(mod, name)
    @functools.wraps(f)
    def g(*a, **k):
        t = time.process_time()
        try:
            return f(*a, **k)
        finally:
            acc[label] += time.process_time() - t
    setattr(mod, name, g)

def wrap_async(obj, name, label):
    f = getattr(obj, name)
    @functools.wraps(f)
    async def g(*a, **k):
        t = time.process_time()
        try:
            return await f(*a, **k)
        finally:
            acc[label] += time.process_time() - t
    setattr(obj, name, g)

wrap_sync(st, "usable_identifiers", "1 usable identifiers (rules)")
wrap_async(ids, "lock_and_map", "2 lock identifiers + components (SQL)")
wrap_async(ids, "forgotten_among", "3 forgotten identifiers (digests + SQL)")
wrap_async(st.ProfileStore, "_known_messages", "4 deduplicate (SQL)")
wrap_sync(st, "group_events", "5 group events")
wrap_sync(st, "row_to_profile", "6b decode profiles read")
wrap_sync(lg.Graph, "apply", "7 resolve + fold (in memory)")
wrap_sync(st, "collect", "8 collect rows (incl. encoding)")
wrap_async(wr.BatchWrites, "flush", "9 flush writes (SQL)")

async def main():
    people = int(sys.argv[1])
    s = load_settings()
    kinds = TopicKinds.for_settings(s)
    topic = {"view": s.topic(s.topic_view), "identify": s.topic(s.topic_identify),
             "click": s.topic(s.topic_click)}
    events = [decode((topic[kind], 0, i, k, v), kinds)
              for i, (k, v, kind) in enumerate(iter_events(people, people * 2))]
    parts = [[], [], [], []]
    for e in events:
        parts[hash(e.identifiers[0]) % 4].append(e)
    batches = []
    for p in parts:
        batches += [p[i:i + 500] for i in range(0, len(p), 500)]
    batches.sort(key=lambda b: b[0].time)
    schema = "sb_" + uuid.uuid4().hex[:8]
    engine = async_engine(s, pool_size=1, max_overflow=0)
    await st.create_schema(engine, schema)
    store = st.ProfileStore(engine, s.identity, schema=schema, forget_key=b"k" * 32)
    try:
        async with engine.connect() as c:
            bpid = (await c.execute(text("select pg_backend_pid()"))).scalar_one()
        backend = psutil.Process(bpid)
        acc.clear()
        import gc
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)  # as the fold processes (streams.pipeline.tuning)
        b0 = sum(backend.cpu_times()[:2])
        for b in batches:
            t = time.process_time()
            await store.write_batch(b)
            acc["total write_batch"] += time.process_time() - t
        b1 = sum(backend.cpu_times()[:2])
        n = len(events)
        for k in sorted(acc):
            print(f"{k:45} {acc[k]/n*1e6:7.1f} us/event")
        print(f"{'PostgreSQL backend':45} {(b1-b0)/n*1e6:7.1f} us/event")
    finally:
        await st.drop_schema(engine, schema)
        await engine.dispose()
asyncio.run(main())
