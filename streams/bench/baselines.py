"""This machine's limits for the work the product does, measured in the harness's run:
the figures the product's own are divided by.

- ``raw_producer``: aiokafka sending already-serialized events (acks=all, idempotent),
  nothing else: the ceiling of any producer, the collector included.
- ``raw_consumer``: aiokafka ``getmany`` plus ``orjson.loads`` of every value: the ceiling
  of any consumer that reads the events at all, below Faust's own machinery.
- ``bulk_upsert``: profile-shaped rows upserted into PostgreSQL, one transaction per
  batch of the pipeline's size: what the database alone takes for the profile stage's
  main write.

Each returns a ``Measured`` (events, seconds, CPU seconds per process group).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text

from streams.bench.meter import CpuMeter
from streams.settings import Settings


@dataclass
class Measured:
    """One timed run: ``events`` in ``seconds`` and the CPU seconds each measured process
    group spent meanwhile."""

    events: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def cpu_us(self, *groups: str) -> float:
        """CPU µs per event of the named groups together."""
        spent = sum(self.cpu.get(g, 0.0) for g in groups)
        return spent / self.events * 1e6 if self.events else 0.0


async def raw_producer(settings: Settings, topic: str,
                       records: Iterable[tuple[bytes, bytes]], meter: CpuMeter) -> Measured:
    """Send every (key, value) to ``topic`` and wait for all acknowledgements. The CPU
    measured is this process's (``meter``'s ``bench`` group) and the broker's. Blocks."""
    from streams.kafka import make_producer

    producer = make_producer(settings)
    await producer.start()
    try:
        await (await producer.send(topic, b"{}", key=b"warm"))  # metadata, connections
        before = meter.snapshot()
        started = time.perf_counter()
        send, futures, count = producer.send, [], 0
        for key, value in records:
            futures.append(await send(topic, value, key=key))
            count += 1
            if len(futures) >= 10_000:  # bounded: a long run holds no more than this
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
        seconds = time.perf_counter() - started
        return Measured(count, seconds, CpuMeter.spent(before, meter.snapshot()))
    finally:
        await producer.stop()


async def raw_consumer(settings: Settings, parts: list[TopicPartition], total: int,
                       meter: CpuMeter, limit_s: float = 600) -> Measured:
    """Read ``total`` records from the start of the partitions ``parts`` with ``getmany``
    (the worker's batch size) and decode each value with orjson. Raises TimeoutError
    when fewer than ``total`` arrive within ``limit_s``. Blocks."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                group_id=None, max_partition_fetch_bytes=4 * 2**20,
                                fetch_max_bytes=64 * 2**20)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        loads, seen = orjson.loads, 0
        before = meter.snapshot()
        started = time.perf_counter()
        deadline = time.monotonic() + limit_s
        while seen < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consumer read {seen} of {total} records")
            batches = await consumer.getmany(timeout_ms=500, max_records=settings.batch_size)
            for records in batches.values():
                for record in records:
                    loads(record.value)
                seen += len(records)
        seconds = time.perf_counter() - started
        return Measured(seen, seconds, CpuMeter.spent(before, meter.snapshot()))
    finally:
        await consumer.stop()


def profile_rows(template: dict, count: int, start: int = 0) -> list[dict]:
    """``count`` copies of a stored profile row (``template``: the columns of the
    profiles table) under fresh profile ids. Pure."""
    rows = []
    for i in range(start, start + count):
        row = dict(template)
        row["profile_id"] = str(uuid.UUID(int=i + 1))
        row["component_id"] = i + 1
        rows.append(row)
    return rows


async def bulk_upsert(engine, schema: str, template: dict, count: int, batch: int,
                      meter: CpuMeter) -> Measured:
    """Upsert ``count`` profile-shaped rows (``template``'s columns) into a scratch table
    shaped like the profiles table, ``batch`` rows per statement and transaction, each
    row written twice (insert, then update: the stage updates far more than it inserts,
    so half of each are measured). Blocks on PostgreSQL."""
    table = f'"{schema}"."bench_upsert"'
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await conn.execute(text(
            f"CREATE TABLE {table} (LIKE \"{schema}\".profiles INCLUDING ALL)"))
    columns = list(template)
    names = ", ".join(columns)
    values = ", ".join(f"CAST(:{c} AS {_cast(c)})" for c in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "profile_id")
    statement = text(f"INSERT INTO {table} ({names}) VALUES ({values}) "
                     f"ON CONFLICT (profile_id) DO UPDATE SET {updates}")
    rows = [{c: (orjson.dumps(v).decode() if isinstance(v, (dict, list)) else v)
             for c, v in r.items()} for r in profile_rows(template, count)]
    before = meter.snapshot()
    started = time.perf_counter()
    for _ in range(2):
        for i in range(0, len(rows), batch):
            async with engine.begin() as conn:
                await conn.execute(statement, rows[i:i + batch])
    seconds = time.perf_counter() - started
    measured = Measured(2 * count, seconds, CpuMeter.spent(before, meter.snapshot()))
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    return measured


def _cast(column: str) -> str:
    return {"profile_id": "uuid", "component_id": "bigint",
            "updated_at": "timestamptz", "document": "bytea"}.get(column, "jsonb")
