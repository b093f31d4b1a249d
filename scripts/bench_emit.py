"""The emit loop in process: ``TriggerStage.emit_once`` over a burst of bench messages
(``streams.bench.trigger_due``'s people and rules, all due at once), real Kafka through
the stage's writer, real PostgreSQL, in a throwaway schema and topics. Prints the
stage's Python CPU and its PostgreSQL backends' CPU (from /proc) per message, the CPU of
PostgreSQL's background processes (WAL writer, checkpointer...) and of the Kafka broker
per message (every client's work: other sessions' add noise), and the wall rate. With
``--cprofile FILE`` the rounds run under cProfile (slower; for where the time goes, not
for the rate).

    .venv/bin/python scripts/bench_emit.py PEOPLE [--lanes N] [--rounds R] [--cprofile F]

Each of R rounds parks the burst rows again and makes them due, so one seeding serves
several measurements (the schedule's dead index entries grow from round to round, as
they do in a real burst).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pickle
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

import streams.profiles.store  # noqa: F401 - psycopg decodes JSON with orjson, as in the worker
from streams.bench.pipeline import bench_settings, drop_bench
from streams.bench.trigger_due import BENCH_RULES, BURST, schedule_sql, seed
from streams.db import async_engine
from streams.settings import load_settings
from streams.triggers.agents import make_message_producer, prepare_trigger_process
from streams.triggers.stage import TriggerStage

TICK = os.sysconf("SC_CLK_TCK")


def _servers_but(pids: list[int]) -> tuple[list[int], list[int]]:
    """The Kafka broker's pids, and PostgreSQL's background processes' (the WAL writer,
    the checkpointer, autovacuum...: not a client's backend, which other sessions'
    work would make noise of; ``pids``, the pool's backends, are counted apart)."""
    import psutil

    broker, background = [], []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "kafka.Kafka" in cmd:
            broker.append(proc.pid)
        elif (proc.info["name"] or "").startswith("postgres") and proc.pid not in pids \
                and not (cmd and cmd[0].startswith("postgres: ") and "(" in cmd[0]) \
                and not (len(cmd) == 1 and "(" in cmd[0]):
            background.append(proc.pid)
    return broker, background


def _proc_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
    return total


STEPS: dict[str, float] = {}


def _time_steps() -> None:
    """Wrap the emit round's statements (store and feed functions) to sum their wall."""
    from streams.profiles import feed
    from streams.triggers import stage, store

    def wrap(module, name):
        inner = getattr(module, name)

        async def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                STEPS[name] = STEPS.get(name, 0.0) + time.perf_counter() - t
        setattr(module, name, timed)

    for name in ("claim_due", "history", "decide"):
        wrap(store, name)
    wrap(feed, "snapshots")
    wrap(stage.EventWriter, "write")


async def _backend_pids(engine, n: int) -> list[int]:
    conns = [await engine.connect() for _ in range(n)]
    try:
        return [int(await c.scalar(text("SELECT pg_backend_pid()"))) for c in conns]
    finally:
        for c in conns:
            await c.close()


async def _dump(engine, settings, set_path, S) -> dict:  # noqa: N803
    """One round's inputs (claimed rows, snapshots) for a DB-free look at
    ``decide_send`` (rolled back: nothing is claimed)."""
    from streams.profiles import feed
    from streams.triggers import store
    from streams.triggers.models import PERSON_KEYS

    async with engine.connect() as conn:
        await conn.execute(set_path)
        await conn.execute(text(f"UPDATE {S} SET {S.due_at} = now() WHERE {S.rule} = :r"),
                           {"r": BURST})
        claim = await store.claim_due(conn, datetime.now(UTC), 200)
        ids = sorted({r.profile_id for r in claim.rows})
        snaps = await feed.snapshots(conn, ids, PERSON_KEYS)
        await conn.rollback()
    return {"rows": [(r.message_id, r.rule, r.profile_id, r.status, r.reason, r.intent_doc,
                      r.due_at, r.sent_at, r.decided_at, r.converted_at) for r in claim.rows],
            "snaps": {k: (v.document, v.events) for k, v in snaps.items()}}


async def main(people: int, lanes: int, rounds: int, profile: str | None,
               dump: dict | None = None, steps: bool = False) -> None:
    from streams.profiles.store import create_schema
    from streams.topics import ensure_topics

    prepare_trigger_process(nice=0)
    tmp = Path(tempfile.mkdtemp())
    rules_path = tmp / "rules.toml"
    rules_path.write_text(BENCH_RULES)
    settings = bench_settings(load_settings(), triggers_file=rules_path,
                              triggers_emit_lanes=lanes)
    engine = async_engine(settings, pool_size=lanes + 1, max_overflow=0)
    schemas = [settings.profiles_schema]
    producer = make_message_producer(settings)
    S, set_path = schedule_sql(settings)
    try:
        await ensure_topics(settings)
        await create_schema(engine, settings.profiles_schema)
        await seed(settings, engine, people, say=lambda s: None)
        await producer.start()
        stage = TriggerStage(settings, engine, producer)
        pids = await _backend_pids(engine, lanes + 1)
        broker, background = _servers_but(pids)
        if dump is not None:
            dump.update(await _dump(engine, settings, set_path, S))
        profiler = cProfile.Profile() if profile else None
        if steps:
            _time_steps()
        for r in range(rounds):
            async with engine.begin() as conn:
                await conn.execute(set_path)
                await conn.execute(text(
                    f"UPDATE {S} SET {S.status} = 'pending', {S.due_at} = :t, "
                    f"{S.sent_at} = NULL, {S.decided_at} = NULL, {S.message} = NULL "
                    f"WHERE {S.rule} = :r"), {"t": datetime.now(UTC), "r": BURST})
                await conn.execute(text(f"ANALYZE {S}"))
            total = 0

            async def lane() -> None:
                nonlocal total
                idle = 0
                while total < people and idle < 50:
                    n = await stage.emit_once()
                    total += n
                    if not n:
                        idle += 1
                        await asyncio.sleep(0.01)

            cpu0, pg0, wall0 = time.process_time(), _proc_cpu(pids), time.perf_counter()
            kafka0, bg0 = _proc_cpu(broker), _proc_cpu(background)
            if profiler:
                profiler.enable()
            await asyncio.gather(*(lane() for _ in range(lanes)))
            if profiler:
                profiler.disable()
            cpu, pg = time.process_time() - cpu0, _proc_cpu(pids) - pg0
            kafka, bg = _proc_cpu(broker) - kafka0, _proc_cpu(background) - bg0
            wall = time.perf_counter() - wall0
            if steps:
                print("  wall us/msg: " + ", ".join(f"{k} {v / total * 1e6:.0f}"
                                                    for k, v in sorted(STEPS.items())))
                STEPS.clear()
            print(f"round {r}: {total:,} messages, {lanes} lane(s), {total / wall:,.0f} msg/s, "
                  f"Python {cpu / total * 1e6:.0f} us/msg, PostgreSQL {pg / total * 1e6:.0f} "
                  f"us/msg (+ background {bg / total * 1e6:.0f}), broker "
                  f"{kafka / total * 1e6:.0f} us/msg, load {os.getloadavg()[0]:.2f}",
                  flush=True)
        if profiler:
            profiler.dump_stats(profile)
        if steps:
            async with engine.connect() as conn:
                await conn.execute(set_path)
                sizes = (await conn.execute(text(
                    f"SELECT avg(pg_column_size(t.*)), avg(pg_column_size({S.message})), "
                    f"avg(pg_column_size({S.intent})), avg(octet_length({S.message}::text)) "
                    f"FROM {S} AS t WHERE {S.status} = 'sent'"))).one()
                print("  sent rows: row / message / intent bytes stored, message as text:",
                      ", ".join(f"{float(v):.0f}" for v in sizes))
    finally:
        await producer.stop()
        await drop_bench(settings, engine, schemas)
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("people", type=int)
    parser.add_argument("--lanes", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cprofile")
    parser.add_argument("--steps", action="store_true", help="wall time of each statement")
    parser.add_argument("--dump", help="pickle one round's inputs here (for scripts/micro)")
    args = parser.parse_args()
    inputs: dict | None = {} if args.dump else None
    asyncio.run(main(args.people, args.lanes, args.rounds, args.cprofile, inputs, args.steps))
    if args.dump:
        Path(args.dump).write_bytes(pickle.dumps(inputs))
