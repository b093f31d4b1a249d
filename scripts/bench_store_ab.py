"""A/B of whole workers: fold the same topics (PEOPLE people, 2 events each) with the
code of several trees, ROUNDS times each, alternating; print the rate, CPU µs/event of
the worker, its fold processes and its own PostgreSQL backends (matched by client port,
so other sessions' load on a shared server is not counted), and bytes per profile with
a per-table breakdown (last round). Topics and schemas are removed at the end (KEEP=1
keeps the schemas).

    git archive b41b07c streams schemas | tar -x -C /tmp/old
    .venv/bin/python scripts/bench_store_ab.py 20000 3 /tmp/old HERE

A tree ``HERE`` is this checkout (docs/profiles.md, "The store's cost, measured")."""
# ruff: noqa: B023 - each round's callbacks run within that round

import asyncio
import sys
import time
from pathlib import Path

import psutil
from sqlalchemy import text

from streams.bench.harness import WORKER, _create_reference_schema, _reference_env
from streams.bench.meter import CpuMeter
from streams.bench.pipeline import (
    bench_settings,
    bytes_per_profile,
    drop_bench,
    end_total,
    iter_events,
    produce,
    run_workers,
)
from streams.db import async_engine
from streams.infra.procs import stop_session
from streams.profiles.store import create_schema, drop_schema
from streams.settings import load_settings

PG_PORT = None

def tree_ports(pid):
    ports = set()
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return ports
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.raddr and c.raddr.port == PG_PORT:
                    ports.add(c.laddr.port)
        except psutil.Error:
            pass
    return ports

async def backends(engine, ports):
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT pid, client_port FROM pg_stat_activity "
                                        "WHERE client_port IS NOT NULL"))).all()
    return [pid for pid, port in rows if port in ports]

def cpu(pids):
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out

async def breakdown(engine, schema):
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT c.relname, c.relkind, pg_total_relation_size(c.oid), pg_relation_size(c.oid), "
            "pg_indexes_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace "
            "WHERE n.nspname=:s AND c.relkind IN ('r','m') ORDER BY 3 DESC"), {"s": schema})).all()
    return rows

async def main():
    global PG_PORT
    people, rounds = int(sys.argv[1]), int(sys.argv[2])
    trees = sys.argv[3:]
    base = load_settings()
    PG_PORT = base.database.port
    settings = bench_settings(base.model_copy(update={"triggers_enabled": False}))
    engine = async_engine(settings, pool_size=2, max_overflow=0)
    from streams.topics import ensure_topics
    await ensure_topics(settings)
    total = people * 2
    await produce(settings, iter_events(people, total))
    ends = await end_total(settings)
    schemas = []
    results = {t: [] for t in trees}
    try:
        for r in range(rounds):
            for ti, tree in enumerate(trees):
                here = tree == "HERE"
                run = settings.model_copy(update={
                    "consumer_group": f"{settings.consumer_group}-{ti}r{r}",
                    "profiles_schema": f"{settings.profiles_schema}_{ti}r{r}"})
                if here:
                    await create_schema(engine, run.profiles_schema)
                else:
                    await _create_reference_schema(run, Path(tree))
                schemas.append(run.profiles_schema)
                meter = CpuMeter()
                marks = {}
                state = {}
                def started(procs):
                    state["pid"] = procs[0].pid
                    meter.add_process("worker", procs[0].pid)
                    meter.add_tree("fold", procs[0].pid, include_root=False)
                def first():
                    marks["a"] = meter.snapshot()
                    ports = tree_ports(state["pid"])
                    state["ports_a"] = ports
                    marks["pa_time"] = time.monotonic()
                def done():
                    marks["b"] = meter.snapshot()
                async def sampler():
                    # PG backends of the worker: refreshed while running
                    seen = {}
                    while "b" not in marks:
                        ports = tree_ports(state.get("pid", 0)) if "pid" in state else set()
                        if ports and "a" in marks:
                            pids = await backends(engine, ports)
                            for pid, c in cpu(pids).items():
                                if pid not in seen:
                                    seen[pid] = [c, c]
                                seen[pid][1] = c
                        await asyncio.sleep(0.2)
                    state["pg"] = sum(b - a for a, b in seen.values())
                    state["npg"] = len(seen)
                task = asyncio.create_task(sampler())
                caught = await run_workers(run, [WORKER], ends, on_start=started,
                    env=None if here else _reference_env(Path(tree)),
                    cwd=None if here else Path(tree), on_first=first, on_done=done)
                await task
                for p in caught.procs:
                    stop_session(p)
                spent = CpuMeter.spent(marks["a"], marks["b"])
                n = caught.events
                bpp, profiles = await bytes_per_profile(run)
                res = dict(rate=caught.rate, worker=spent["worker"]/n*1e6,
                           fold=spent["fold"]/n*1e6, pg=state["pg"]/n*1e6, npg=state["npg"],
                           bpp=bpp, profiles=profiles)
                results[tree].append(res)
                shown = {k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()}
                print(tree, r, shown, flush=True)
                if r == rounds - 1:
                    for row in await breakdown(engine, run.profiles_schema):
                        print("   ", row[0], row[1], "total", row[2], "heap", row[3], "idx", row[4],
                              "per profile %.0f" % (row[2] / profiles), flush=True)
                if not (len(sys.argv) > 0 and "KEEP" in __import__("os").environ):
                    await drop_schema(engine, run.profiles_schema)
                    schemas.remove(run.profiles_schema)
    finally:
        import os
        if "KEEP" in os.environ:
            print("kept schemas", schemas, "prefix", settings.topic_prefix)
            schemas = []
        await drop_bench(settings, engine, schemas)
        await engine.dispose()
    import statistics
    for tree, rs in results.items():
        print("MEDIAN", tree, {k: round(statistics.median(x[k] for x in rs), 1) for k in rs[0]})

asyncio.run(main())
