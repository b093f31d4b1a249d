"""The due-loop half of ``streams bench triggers``: messages falling due evenly over a
window (delay past due per message) and all at once (messages emitted per second), with
a raw aiokafka producer sending the same bytes as the baseline.

Setup, outside every measurement: N people (one web page view each) are folded by the
profile store into the bench's schema (without the change feed, so the stage's plan loop
finds nothing to do); the planner itself (``plan_schedules``) plans two welcome-kind
rules for each person, and the store stores them (``upsert_intents``): real intents that
``decide_send`` sends. The rows are parked at due time ``infinity``; a phase starts with
one UPDATE that gives them their due times, as a hold that ends moves a row's due time.
Then ``trigger_emitter`` processes (``TriggerStage.run``, real clock) emit them, and the
bench polls the rows until none is pending.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psutil
from sqlalchemy import select, text

from streams.bench.logs import child_output, close_in_parent
from streams.db import SqlNames, check_schema_name
from streams.infra.procs import stop_session
from streams.settings import Settings, child_environment

# Two rules of the welcome kind, so that each person has one message per phase. Neither
# is held by quiet hours or a control group, and the caps are out of the way: every row
# is a send, whatever the time of day the bench runs at.
BENCH_RULES = """
caps = { per_day = 1000, per_week = 1000 }
[rules.bench_spread]
kind = "welcome"
template = "welcome-v1"
delay = "5s"
expires_after = "1d"
prefer_origin = true
quiet_hours = false
exit_on_goal = false
[rules.bench_burst]
kind = "welcome"
template = "welcome-v1"
delay = "5s"
expires_after = "1d"
prefer_origin = true
quiet_hours = false
exit_on_goal = false
"""
SPREAD, BURST = "bench_spread", "bench_burst"


@dataclass
class DueLoopResult:
    """Figures of the due-loop phases (seconds; rates per second)."""

    emitters: int
    batch: int
    messages: int
    lanes: int
    spread_seconds: float
    spread_sent: int = 0
    # Delay past due, from the Kafka record's timestamp (set when the stage produced it).
    delay_p50: float = float("nan")
    delay_p99: float = float("nan")
    delay_max: float = float("nan")
    # The same from the row's sent_at (the decision time of the round).
    sent_at_p99: float = float("nan")
    late_start: float = 0.0  # how far past the first due time the UPDATE committed
    burst_sent: int = 0
    burst_seconds: float = float("nan")  # due -> the last row committed as sent
    burst_record_seconds: float = float("nan")  # due -> the last record's timestamp
    raw_seconds: float = float("nan")
    raw_messages: int = 0
    message_bytes: float = 0.0
    setup_seconds: float = 0.0
    emitter_cpu: dict[str, float] = field(default_factory=dict)  # phase -> CPU s, summed
    # phase -> CPU s of every PostgreSQL and Kafka broker process on the machine (other
    # clients of the same server included): what the messages cost beside the emitters.
    server_cpu: dict[str, float] = field(default_factory=dict)
    # phase -> CPU s of the emitters' own PostgreSQL backends (the server processes of
    # their connections): the stage's PostgreSQL cost, without other clients'.
    backend_cpu: dict[str, float] = field(default_factory=dict)

    @property
    def burst_rate(self) -> float:
        """Messages sent per second, from falling due to the last one committed."""
        return self.burst_sent / self.burst_seconds if self.burst_seconds else 0.0

    @property
    def raw_rate(self) -> float:
        """The raw producer's messages per second (same bytes, same producer settings)."""
        return self.raw_messages / self.raw_seconds if self.raw_seconds else 0.0


def schedule_sql(settings: Settings):
    """The schedule table's quoted names, and the statement that puts a transaction in
    the settings' schema. Pure."""
    from streams.triggers.tables import scheduled_messages

    S = SqlNames(scheduled_messages)  # noqa: N806 - the store's own name for it
    return S, text(f'SET LOCAL search_path TO "{check_schema_name(settings.profiles_schema)}"')


def _person_doc(run: str, i: int, when: datetime) -> dict:
    return {"type": "page", "messageId": f"{run}-s{i}", "anonymousId": f"{run}-a{i}",
            "name": "Home", "source": "web", "context": {"timezone": "UTC"},
            "timestamp": when.isoformat().replace("+00:00", "Z")}


async def seed(settings: Settings, engine, people: int, say=print) -> int:
    """Fold ``people`` people into the settings' schema and store both bench rules'
    intents for each, parked at due time infinity. Returns the rows stored. Blocks."""
    from streams.profiles import feed
    from streams.profiles import tables as profile_tables
    from streams.profiles.decode import decode_envelope
    from streams.profiles.store import ProfileStore
    from streams.triggers import store
    from streams.triggers.logic import plan_schedules
    from streams.triggers.models import Person
    from streams.triggers.rules import parse_rules

    rules = parse_rules(BENCH_RULES, "<bench>")
    profiles = ProfileStore.for_settings(settings.model_copy(update={"triggers_enabled": False}),
                                         engine)
    run = settings.topic_prefix.strip(".")
    first = datetime.now(UTC) - timedelta(minutes=2)
    say(f"folding {people:,} people for the due-loop...")
    for start in range(0, people, 1000):
        docs = [_person_doc(run, i, first + timedelta(microseconds=i))
                for i in range(start, min(people, start + 1000))]
        await profiles.write_batch([decode_envelope(d) for d in docs])
    S, set_path = schedule_sql(settings)
    async with engine.connect() as conn:
        await conn.execute(set_path)
        ids = [str(r[0]) for r in await conn.execute(select(profile_tables.profiles.c.profile_id))]
        await conn.rollback()
    park = text(f"UPDATE {S} SET {S.due_at} = 'infinity' WHERE {S.message_id} = ANY(:m)")
    stored = 0
    for start in range(0, len(ids), 1000):
        async with engine.begin() as conn:
            await conn.execute(set_path)
            snaps = await feed.snapshots(conn, ids[start:start + 1000])
            intents = [i for s in snaps.values()
                       for i in plan_schedules(Person.from_profile(s.document, s.events), rules)]
            await store.upsert_intents(conn, intents)
            await conn.execute(park, {"m": [i.message_id for i in intents]})
            stored += len(intents)
    return stored


async def _pending(engine, settings: Settings, rule: str) -> bool:
    """True while a row of ``rule`` is pending. An EXISTS off the pending rows' index: a
    count over the table (a parallel sequential scan, ten times a second) took CPU from
    the emitters it was timing."""
    S, set_path = schedule_sql(settings)
    async with engine.begin() as conn:
        await conn.execute(set_path)
        return bool((await conn.execute(text(
            f"SELECT EXISTS (SELECT 1 FROM {S} WHERE {S.status} = 'pending' "
            f"AND {S.due_at} >= '-infinity' AND {S.rule} = :r)"), {"r": rule})).scalar_one())


async def _rows(engine, settings: Settings, rule: str) -> list:
    S, set_path = schedule_sql(settings)
    async with engine.begin() as conn:
        await conn.execute(set_path)
        return list(await conn.execute(text(
            f"SELECT {S.message_id}, {S.due_at}, {S.sent_at}, {S.status} FROM {S} "
            f"WHERE {S.rule} = :r"), {"r": rule}))


def start_emitters(settings: Settings, count: int, rules_path: Path) -> list[subprocess.Popen]:
    """Start ``count`` emitter processes on the bench rules (each in its own session)."""
    env = child_environment(settings.model_copy(update={"triggers_file": rules_path}))
    procs = []
    for _ in range(count):
        output = child_output("emitter")
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "streams.bench.trigger_emitter"], env=env,
                stdout=subprocess.PIPE, stderr=output, start_new_session=True))
        finally:
            close_in_parent(output)
    return procs


async def _wait_ready(procs: list[subprocess.Popen], within: float = 60.0) -> None:
    """Wait until every emitter has said ``ready`` (non-blocking reads: no thread)."""
    deadline = time.monotonic() + within
    for proc in procs:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        said = b""
        while b"ready" not in said:
            if proc.poll() is not None:
                raise RuntimeError(f"an emitter exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"an emitter was not ready within {within:.0f}s")
            try:
                said += os.read(fd, 64)
            except BlockingIOError:
                await asyncio.sleep(0.05)


def _cpu(procs: list[subprocess.Popen]) -> float:
    total = 0.0
    for proc in procs:
        try:
            total += sum(psutil.Process(proc.pid).cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _servers() -> list[psutil.Process]:
    """The machine's PostgreSQL processes and Kafka brokers (by name and command line)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        name, cmd = proc.info["name"] or "", proc.info["cmdline"] or []
        if name.startswith("postgres") or "kafka.Kafka" in cmd:
            found.append(proc)
    return found


def _server_cpu() -> float:
    """CPU seconds of the PostgreSQL and Kafka processes now running (backends come and
    go: the sum is taken over those alive at both ends of a phase by the caller)."""
    total = 0.0
    for proc in _servers():
        try:
            total += sum(proc.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


async def _backend_cpu(engine, procs: list[subprocess.Popen]) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving a connection of ``procs`` (matched
    by the connection's client port), by backend pid."""
    ports = set()
    for proc in procs:
        try:
            ports.update(c.laddr.port for c in psutil.Process(proc.pid).net_connections("tcp")
                         if c.raddr)
        except psutil.Error:
            pass
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL"
        ))).all()
    out = {}
    for pid, port in rows:
        if port in ports:
            try:
                out[pid] = sum(psutil.Process(pid).cpu_times()[:2])
            except psutil.Error:
                pass
    return out


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    # A backend opened during the phase counts from zero.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def _until_sent(engine, settings: Settings, rule: str, limit_s: float,
                      interval: float) -> float:
    """Poll until no row of ``rule`` is pending; returns the wall time (epoch seconds) it
    saw that."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not await _pending(engine, settings, rule):
            return time.time()
        await asyncio.sleep(interval)
    raise RuntimeError(f"{rule}: messages still pending after {limit_s:.0f}s")


async def _records(settings: Settings) -> dict[str, tuple[str, int, bytes, bytes]]:
    """messageId -> (rule, record timestamp ms, key, value) of the messages topic."""
    from streams.kafka import read_topic

    out: dict[str, tuple[str, int, bytes, bytes]] = {}
    async for r in read_topic(settings, settings.topic(settings.topic_messages)):
        doc = orjson.loads(r.value)
        out.setdefault(doc["messageId"], (doc["rule"], r.timestamp_ms, r.key, r.value))
    return out


async def _raw_producer(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    """Seconds the stage's own producer takes to send and get acknowledged ``records``
    (key, value) on a fresh topic of the same partitions, without the database."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams.triggers.agents import make_message_producer

    topic = settings.topic("bench.raw")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.topic_partitions,
                                            settings.topic_replication)])
    finally:
        await admin.close()
    producer = make_message_producer(settings)
    await producer.start()
    try:
        await (await producer.send(topic, b"{}", key=b"warm"))  # metadata, connections
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[98], max(values)


async def due_loop(settings: Settings, engine, *, messages: int, spread_seconds: float,
                   emitters: int, say=print) -> DueLoopResult:
    """Run both phases on the bench's schema and topics (see the module). Raises
    RuntimeError when an emitter fails to start or messages stay pending. Blocks."""
    result = DueLoopResult(emitters=emitters, batch=settings.triggers_batch, messages=messages,
                           lanes=settings.triggers_emit_lanes, spread_seconds=spread_seconds)
    t0 = time.monotonic()
    await seed(settings, engine, messages, say)
    result.setup_seconds = time.monotonic() - t0
    S, set_path = schedule_sql(settings)
    with tempfile.TemporaryDirectory() as tmp:
        rules_path = Path(tmp) / "bench-rules.toml"
        rules_path.write_text(BENCH_RULES)
        procs = start_emitters(settings, emitters, rules_path)
        try:
            await _wait_ready(procs)
            # Phase 1: due evenly over the window, starting once the UPDATE has committed
            # (it takes about 3 s for 100,000 rows here; a late start would count as delay).
            say(f"{messages:,} messages due evenly over {spread_seconds:.0f}s, "
                f"{emitters} emitter process(es)...")
            first_due = datetime.now(UTC) + timedelta(seconds=max(3.0, messages / 10_000))
            async with engine.begin() as conn:
                await conn.execute(set_path)
                await conn.execute(text(
                    f"UPDATE {S} SET {S.due_at} = CAST(:t0 AS timestamptz) + (r.n - 1) * "
                    f"CAST(:step AS double precision) * interval '1 second' FROM (SELECT "
                    f"{S.message_id} AS m, row_number() OVER (ORDER BY {S.message_id}) AS n "
                    f"FROM {S} WHERE {S.rule} = :r) AS r WHERE {S.message_id} = r.m"),
                    {"t0": first_due, "step": spread_seconds / messages, "r": SPREAD})
            result.late_start = max(0.0, (datetime.now(UTC) - first_due).total_seconds())
            cpu0, server0 = _cpu(procs), _server_cpu()
            backends0 = await _backend_cpu(engine, procs)
            await _until_sent(engine, settings, SPREAD, spread_seconds + 600, 0.5)
            result.emitter_cpu["spread"] = _cpu(procs) - cpu0
            result.server_cpu["spread"] = _server_cpu() - server0
            result.backend_cpu["spread"] = _spent(backends0, await _backend_cpu(engine, procs))
            # Phase 2: all due at once.
            say(f"{messages:,} messages due at once...")
            cpu0, server0 = _cpu(procs), _server_cpu()
            backends0 = await _backend_cpu(engine, procs)
            async with engine.begin() as conn:
                await conn.execute(set_path)
                due_now = datetime.now(UTC)
                await conn.execute(text(f"UPDATE {S} SET {S.due_at} = :t WHERE {S.rule} = :r"),
                                   {"t": due_now, "r": BURST})
            done = await _until_sent(engine, settings, BURST, 600, 0.1)
            result.emitter_cpu["burst"] = _cpu(procs) - cpu0
            result.server_cpu["burst"] = _server_cpu() - server0
            result.backend_cpu["burst"] = _spent(backends0, await _backend_cpu(engine, procs))
            # From the due moment (the UPDATE's own commit time counts against the stage).
            result.burst_seconds = done - due_now.timestamp()
        finally:
            for proc in procs:
                proc.send_signal(15)  # all at once: they stop in parallel
            for proc in procs:
                stop_session(proc)
    say("reading the messages back...")
    records = await _records(settings)
    delays, sent_delays = [], []
    for mid, due_at, sent_at, status in await _rows(engine, settings, SPREAD):
        if status != "sent":
            continue
        result.spread_sent += 1
        sent_delays.append((sent_at - due_at).total_seconds())
        if mid in records:
            delays.append(records[mid][1] / 1000 - due_at.timestamp())
    result.delay_p50, result.delay_p99, result.delay_max = _quantiles(delays)
    result.sent_at_p99 = _quantiles(sent_delays)[1]
    burst = [(mid, due_at) for mid, due_at, _s, status in await _rows(engine, settings, BURST)
             if status == "sent"]
    result.burst_sent = len(burst)
    stamps = [records[m][1] / 1000 for m, _ in burst if m in records]
    if stamps:
        result.burst_record_seconds = max(stamps) - burst[0][1].timestamp()
    raw = [records[m][2:] for m, _ in burst if m in records]
    if raw:
        result.message_bytes = sum(len(v) for _, v in raw) / len(raw)
        say(f"raw aiokafka producer: the same {len(raw):,} messages...")
        result.raw_seconds = await _raw_producer(settings, raw)
        result.raw_messages = len(raw)
    return result
