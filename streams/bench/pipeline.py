"""``streams bench pipeline``: events folded into PostgreSQL profiles per second, end to
end, against a Faust agent that does nothing, on the same topics in the same run.

Steps: produce N events for P people into fresh topics; run the no-op worker over them
and time it from its first to its last offset commit; run ``streams worker`` (into a
fresh schema) over the same topics and time it the same way, sampling its RSS; then
produce at half the measured fold rate and take the p99 of produce -> row visible
(committed) in PostgreSQL; finally the schema's bytes per profile.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table
from sqlalchemy import select, text

from streams.bench.logs import child_output, close_in_parent
from streams.db import in_schema, qualified
from streams.infra.procs import stop_session
from streams.profiles import tables
from streams.profiles.store import event_partitions
from streams.settings import Settings, child_environment, load_settings

console = Console(width=None if sys.stdout.isatty() else 160)


def make_events(people: int, events: int, seed: int = 1, start: float | None = None,
                prefix: str = "b", timezone: str = "Europe/Paris"
                ) -> list[tuple[bytes, bytes, str]]:
    """``iter_events`` as a list (for the small runs that index into it). Pure."""
    return list(iter_events(people, events, seed, start, prefix, timezone))


def iter_events(people: int, events: int, seed: int = 1, start: float | None = None,
                prefix: str = "b", timezone: str = "Europe/Paris"
                ) -> Iterator[tuple[bytes, bytes, str]]:
    """(key, value, topic kind) for ``events`` envelopes spread over ``people`` people:
    anonymous views first, then identifies linking a user id, then clicks, 10 ms apart
    from ``start`` (epoch seconds), all from people in ``timezone``. Generated one at a
    time, so that a bench of ten million events holds none of them. Pure."""
    rnd = random.Random(seed)
    base = start if start is not None else 1_772_000_000.0
    for i in range(events):
        person = i % people
        step = i // people
        anon = f"{prefix}-a{person}"
        doc: dict = {"messageId": f"{prefix}-{i}", "anonymousId": anon,
                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                time.gmtime(base + i * 0.01)) + "Z",
                     "source": rnd.choice(["web", "mobile", "smartwatch"]),
                     "context": {"timezone": timezone}}
        if step % 3 == 1:
            doc.update(type="identify", userId=f"{prefix}-u{person}",
                       traits={"email": f"{prefix}{person}@example.test", "plan": "pro"})
            kind = "identify"
        elif step % 3 == 0:
            doc.update(type="page", name="Product",
                       properties={"product_id": f"sku-{rnd.randint(0, 500)}",
                                   "category": rnd.choice(["shoes", "books", "music"])})
            kind = "view"
        else:
            doc.update(type="track", event="Product Added",
                       properties={"product_id": f"sku-{rnd.randint(0, 500)}"})
            kind = "click"
        yield anon.encode(), orjson.dumps(doc), kind


def _topic(settings: Settings, kind: str) -> str:
    return settings.topic({"view": settings.topic_view, "identify": settings.topic_identify,
                           "click": settings.topic_click}[kind])


async def produce(settings: Settings, records: Iterable[tuple[bytes, bytes, str]],
                  rate: float | None = None,
                  sent_at: dict | None = None, sample: set[str] | None = None) -> None:
    """Send records (at ``rate`` per second when given), recording send times by
    message id in ``sent_at`` (only for the message ids in ``sample`` when given)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        t0 = time.monotonic()
        futures = []
        for n, (key, value, kind) in enumerate(records):
            if rate:
                # Paced in 10 ms steps, so that pacing costs little CPU.
                due = t0 + n / rate
                delay = due - time.monotonic()
                if delay > 0.01:
                    await asyncio.sleep(delay)
            if sent_at is not None:
                message_id = orjson.loads(value)["messageId"]
                if sample is None or message_id in sample:
                    sent_at[message_id] = time.monotonic()
            futures.append(await producer.send(_topic(settings, kind), value, key=key))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_total(settings: Settings, admin: AIOKafkaAdminClient) -> int:
    """Offsets committed by the settings' group over the event topics; 0 while the
    broker cannot say yet (a fresh broker creates its offsets topic on first use)."""
    try:
        offsets = await admin.list_consumer_group_offsets(settings.consumer_group)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        return 0
    return sum(max(m.offset, 0) for tp, m in offsets.items() if tp.topic in settings.event_topics)


async def end_total(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = await event_partitions(settings)
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


@dataclass
class CaughtUp:
    """A worker run timed from its group's first offset commit to its last: ``events``
    were consumed in ``seconds``; ``procs`` are the worker processes, still running."""

    rate: float
    events: int
    seconds: float
    procs: list[subprocess.Popen]


async def run_until_caught_up(settings: Settings, argv: list[str], total: int,
                              rss: list[int] | None = None, limit_s: float = 1800
                              ) -> tuple[float, subprocess.Popen]:
    """Start ``argv`` as a worker and return (events/s between its first and last offset
    commit, the process). Samples the process tree's RSS into ``rss`` from the first
    commit on (before it, the worker is still starting)."""
    run = await run_workers(settings, [argv], total, rss=rss, limit_s=limit_s)
    return run.rate, run.procs[0]


async def run_workers(settings: Settings, argvs: list[list[str]], total: int, *,
                      rss: list[int] | None = None, limit_s: float = 1800,
                      env: dict[str, str] | None = None, cwd: Path | None = None,
                      on_start: Callable[[list[subprocess.Popen]], None] | None = None,
                      on_first: Callable[[], None] | None = None,
                      on_done: Callable[[], None] | None = None) -> CaughtUp:
    """Start one process per ``argv`` (workers of one consumer group) and wait until the
    group has committed ``total`` offsets. The rate counts from the first commit seen to
    the last, so start-up is not in it; ``on_first`` and ``on_done`` run at those two
    moments (the CPU meter's snapshots), ``on_start`` once the processes exist. Raises
    ClickException when a worker exits or the group does not catch up within
    ``limit_s``; then no process is left running. ``env`` adds to the settings'
    environment; ``cwd`` is the processes' folder (the first entry of their import
    path). Blocks."""
    environment = {**child_environment(settings), **(env or {})}
    procs: list[subprocess.Popen] = []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        for argv in argvs:
            output = child_output("worker")
            try:
                # Popen returns at once (it does not wait for the child): no blocking.
                procs.append(subprocess.Popen(  # noqa: ASYNC220
                    argv, env=environment, stdout=output, cwd=cwd,
                    stderr=subprocess.STDOUT, start_new_session=True))
            finally:
                close_in_parent(output)
        if on_start is not None:
            on_start(procs)
        await admin.start()
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            for proc in procs:
                if proc.poll() is not None:
                    raise click.ClickException(f"worker exited with status {proc.returncode}")
            done = await committed_total(settings, admin)
            now = time.monotonic()
            if os.environ.get("STREAMS_BENCH_TRACE"):
                console.print(f"  {now:.2f} committed {done}")
            if done > 0 and first is None:
                first = (now, done)
                if on_first is not None:
                    on_first()
            if rss is not None and first is not None:  # from the first commit: the run
                try:
                    rss.append(sum(tree_rss(p.pid) for p in procs))
                except psutil.Error:
                    pass
            if done >= total and first is not None:
                if on_done is not None:
                    on_done()
                span = now - first[0]
                events = total - first[1]
                if events <= 0:  # the whole run fell within one commit: nothing to time
                    raise click.ClickException(
                        f"the worker folded all {total:,} events before its first offset "
                        f"commit: too few to time; use more profiles")
                return CaughtUp(rate=events / span if span > 0 else float("inf"),
                                events=events, seconds=span, procs=procs)
            await asyncio.sleep(0.1)
        raise click.ClickException(f"worker did not catch up within {limit_s:.0f}s")
    except BaseException:
        for proc in procs:  # the caller never sees them: nothing may outlive the bench
            stop_session(proc)
        raise
    finally:
        await admin.close()


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its children (the worker and its fold process)."""
    root = psutil.Process(pid)
    total = root.memory_info().rss
    for child in root.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


LATENCY_SAMPLES = 2000


async def latency_p99(settings: Settings, rate: float, seconds: float) -> tuple[float, int]:
    """Produce at ``rate`` for ``seconds`` and return (p99 seconds from send to the row
    being visible in PostgreSQL, samples)."""
    _p50, p99, samples = await latency_quantiles(settings, rate, seconds)
    return p99, samples


async def caught_up(settings: Settings, limit_s: float = 600) -> None:
    """Wait until the settings' group has committed every event now in the topics (a
    worker still reading earlier events would queue what is measured next behind
    them). Raises ClickException after ``limit_s``. Blocks."""
    total = await end_total(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + limit_s
        while await committed_total(settings, admin) < total:
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the worker did not catch up with {total:,} events in {limit_s:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def latency_quantiles(settings: Settings, rate: float, seconds: float,
                            prefix: str = "lat") -> tuple[float, float, int]:
    """Produce at ``rate`` for ``seconds`` and return (p50, p99 seconds from send to the
    row being visible in PostgreSQL, samples). ``prefix`` starts the message ids: a
    repeat needs its own, or its events would be copies of ones already stored. Waits
    first until the worker has caught up with the topics. Raises ClickException when no
    event was stored. Blocks."""
    from streams.db import async_engine

    await caught_up(settings)
    n = max(50, int(rate * seconds))
    records = make_events(max(1, n // 3), n, seed=7, start=2_000_000_000.0, prefix=prefix)
    # Every event is produced, but only a uniform sample (every ``step``-th, about
    # LATENCY_SAMPLES of them) is looked up: polling for every message id would put a
    # load on PostgreSQL that the worker then competes with, inflating what is measured.
    step = max(1, n // LATENCY_SAMPLES)
    sampled = {orjson.loads(v)["messageId"] for _, v, _ in records[::step]}
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    schema = settings.profiles_schema
    producing = asyncio.create_task(produce(settings, records, rate=rate, sent_at=sent,
                                            sample=sampled))
    try:
        deadline = time.monotonic() + seconds + 120
        while time.monotonic() < deadline and len(seen) < len(sampled):
            pending = [m for m in sent if m not in seen]
            if pending:
                async with engine.connect() as conn:
                    await conn.execution_options(**in_schema(schema))
                    stored = tables.profile_events.c.message_id
                    rows = await conn.execute(select(stored).where(stored.in_(pending)))
                    now = time.monotonic()
                    for (m,) in rows:
                        seen[m] = now
            await asyncio.sleep(0.05)
        await producing
    finally:
        await engine.dispose()
    latencies = sorted(seen[m] - sent[m] for m in seen)
    if not latencies:
        raise click.ClickException("no latency samples: the worker stored nothing")
    if os.environ.get("STREAMS_BENCH_TRACE"):
        q = statistics.quantiles(latencies, n=100)
        console.print(f"  latency p50 {q[49]:.3f}s p90 {q[89]:.3f}s p99 {q[98]:.3f}s "
                      f"max {latencies[-1]:.3f}s")
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return q[49], q[98], len(latencies)


async def bytes_per_profile(settings: Settings) -> tuple[float, int]:
    from streams.db import async_engine

    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            schema = settings.profiles_schema
            total = (await conn.execute(text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relkind IN ('r', 'm')"), {"s": schema})).scalar_one()
            profiles = (await conn.execute(text(
                f"SELECT count(*) FROM {qualified(tables.profiles, schema)}"))).scalar_one()
        return (total / profiles if profiles else float("nan")), profiles
    finally:
        await engine.dispose()


@click.command("pipeline")
@click.option("--profiles", "people", default=100_000, show_default=True,
              help="People (profiles) in the measured run.")
@click.option("--events-per-profile", default=2, show_default=True)
@click.option("--latency-seconds", default=15.0, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the bench schema and topics.")
@click.option("--in-process/--no-in-process", "in_process", default=True, show_default=True,
              help="Also fold the same events in the worker's own loop "
                   "(STREAMS_FOLD_PROCESSES=0), into another fresh schema.")
def pipeline(people: int, events_per_profile: int, latency_seconds: float, keep: bool,
             in_process: bool) -> None:
    """End-to-end events/s into PostgreSQL profiles vs a no-op Faust agent; p99 latency at
    half load; worker RSS; PostgreSQL bytes per profile."""
    asyncio.run(_pipeline(people, events_per_profile, latency_seconds, keep, in_process))


async def _pipeline(people: int, per_profile: int, latency_seconds: float, keep: bool,
                    in_process: bool = True) -> None:
    from streams.db import async_engine
    from streams.profiles.store import create_schema
    from streams.topics import ensure_topics

    settings = bench_settings(load_settings())
    tag = settings.consumer_group.rsplit("-", 1)[1]
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    await create_schema(engine, settings.profiles_schema)
    schemas = [settings.profiles_schema]
    await ensure_topics(settings)
    total = people * per_profile
    procs: list[subprocess.Popen] = []
    try:
        with console.status(f"producing {total:,} events for {people:,} people..."):
            t0 = time.monotonic()
            await produce(settings, iter_events(people, total))
            produce_rate = total / (time.monotonic() - t0)
        ends = await end_total(settings)
        noop_settings = settings.model_copy(update={"consumer_group": f"bench-noop-{tag}"})
        with console.status("no-op agent..."):
            noop_rate, proc = await run_until_caught_up(
                noop_settings, [sys.executable, "-m", "streams.bench.noop_worker"], ends)
            procs.append(proc)
            stop_session(proc)
        rss: list[int] = []
        with console.status("profile stage..."):
            fold_rate, worker = await run_until_caught_up(
                settings, [sys.executable, "-m", "streams", "worker"], ends, rss=rss)
            procs.append(worker)
        bpp, profiles = await bytes_per_profile(settings)
        half = fold_rate / 2
        with console.status(f"latency at {half:,.0f} events/s..."):
            p99, samples = await latency_p99(settings, half, latency_seconds)
        try:
            rss_end = tree_rss(worker.pid)
        except psutil.Error:
            rss_end = rss[-1] if rss else 0
        stop_session(worker)
        inproc_rate = None
        if in_process:
            inproc = settings.model_copy(update={
                "consumer_group": f"bench-fold0-{tag}", "fold_processes": 0,
                "profiles_schema": f"bench_{tag}_0"})
            schemas.append(inproc.profiles_schema)
            await create_schema(engine, inproc.profiles_schema)
            with console.status("profile stage folding in the worker's own loop..."):
                inproc_rate, proc = await run_until_caught_up(
                    inproc, [sys.executable, "-m", "streams", "worker"], ends)
                procs.append(proc)
                stop_session(proc)
        quarter = rss[len(rss) // 4] if rss else 0
        table = Table(title=f"bench pipeline ({total:,} events, {people:,} people, "
                            f"4 partitions, batch {settings.batch_size}, "
                            f"{settings.fold_processes} fold processes)", title_justify="left")
        for col in ("measure", "value", "target"):
            table.add_column(col)
        table.add_row("producer rate (setup)", f"{produce_rate:,.0f} ev/s", "")
        table.add_row("no-op Faust agent", f"{noop_rate:,.0f} ev/s", "")
        table.add_row("folded into PostgreSQL profiles", f"{fold_rate:,.0f} ev/s", ">= 10,000")
        table.add_row("ratio fold / no-op", f"{fold_rate / noop_rate:.1%}", ">= 60%")
        if inproc_rate is not None:
            table.add_row("  the same, folding in the worker's loop (FOLD_PROCESSES=0)",
                          f"{inproc_rate:,.0f} ev/s, {inproc_rate / noop_rate:.1%}", "")
        table.add_row(f"p99 produce -> committed row at {half:,.0f} ev/s",
                      f"{p99 * 1000:,.0f} ms ({samples:,} samples)", "< 1000 ms")
        table.add_row("worker RSS (with its fold processes) at 25% / end",
                      f"{quarter / 2**20:,.0f} MiB / {rss_end / 2**20:,.0f} MiB",
                      "flat in profile count")
        table.add_row(f"PostgreSQL bytes per profile ({profiles:,} profiles)",
                      f"{bpp:,.0f} B", "")
        console.print(table)
    finally:
        for p in procs:
            stop_session(p)
        if not keep:
            await drop_bench(settings, engine, schemas)
        await engine.dispose()


BENCH_COMMIT_INTERVAL = 0.2


def bench_settings(base: Settings, **updates) -> Settings:
    """``base`` with a unique topic prefix, consumer group and profiles schema, and 4
    partitions per topic: a bench's own world, which ``drop_bench`` removes. Offsets are
    committed every 0.2 s (not 1): a run is timed from its group's first commit to its
    last, so a short run must see several. Pure."""
    tag = uuid.uuid4().hex[:8]
    return base.model_copy(update={
        "topic_prefix": f"bench{tag}.", "consumer_group": f"bench-fold-{tag}",
        "profiles_schema": f"bench_{tag}", "topic_partitions": 4,
        "commit_interval": BENCH_COMMIT_INTERVAL, **updates,
    })


async def drop_bench(settings: Settings, engine, schemas: list[str],
                     extra_topics: tuple[str, ...] = ()) -> None:
    """Drop a bench's schemas and delete its topics (a leftover topic is harmless: a
    failure to delete is ignored). Blocks on PostgreSQL and Kafka."""
    from streams.profiles.store import drop_schema

    for schema in schemas:
        await drop_schema(engine, schema)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([*settings.all_topics, *extra_topics])
    except Exception:  # noqa: BLE001 - leftover bench topics are harmless
        pass
    finally:
        await admin.close()
