"""The stage runner against the real services: the same dead-letter contract for the
fake sink and the Kafka one, and a poison record of each data-fault kind dead-lettered
with its reason by the real PostgreSQL while the valid records around it are stored."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text

from streams.db import async_engine
from streams.events.dlq import read_dead_letter
from streams.events.models import DeadLetter
from streams.kafka import read_topic
from streams.pipeline.batch import process_batch
from streams.pipeline.policy import RetryPolicy
from streams.pipeline.runner import ProducerSink, StageRunner
from streams.pipeline.stage import StageSpec
from streams.pipeline.systemic import DlqLimit, SystemicFailureDetector
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.helpers import unique
from tests.unit.pipeline.fakes import ListSink

pytestmark = pytest.mark.asyncio


class TableStage:
    """Writes JSON records ``{"id", "name", "doc", "amount", "qty"}`` into a table whose
    columns refuse each data fault: an indexed text column (value too large for an index,
    54000), jsonb (a \\u0000 escape, 22P05), numeric(6,2) (overflow, 22003), a CHECK
    constraint (23514); and NUL in text, which psycopg refuses before sending."""

    def __init__(self, engine, table: str):
        self.engine, self.table = engine, table

    def decode(self, record):
        return orjson.loads(record[4])

    async def write(self, events: Sequence[dict]):
        async with self.engine.begin() as conn:
            for e in events:
                await conn.execute(text(
                    f"INSERT INTO {self.table} (id, name, doc, amount, qty) "
                    "VALUES (:id, :name, CAST(:doc AS jsonb), :amount, :qty) "
                    "ON CONFLICT (id) DO NOTHING"),
                    {"id": e["id"], "name": e.get("name", "x"), "doc": e.get("doc", "{}"),
                     "amount": e.get("amount", 1), "qty": e.get("qty", 1)})
        return len(events)

    async def close(self):
        pass


# Random text does not compress, so TOAST cannot shrink it under the index row limit.
LONG = secrets.token_hex(6000)
POISON = {
    "index-too-large": ({"name": LONG}, "SQLSTATE 54000"),
    "nul-in-jsonb": ({"doc": '{"a": "\\u0000"}'}, "SQLSTATE 22P05"),
    "numeric-overflow": ({"amount": 10**9}, "SQLSTATE 22003"),
    "check-violation": ({"qty": -1}, "SQLSTATE 23514"),
    "nul-in-text": ({"name": "a\x00b"}, "NUL"),
}


@pytest.fixture
async def table_stage(session_settings: Settings):
    engine = async_engine(session_settings, pool_size=1, max_overflow=0)
    table = unique("poison_")
    async with engine.begin() as conn:
        await conn.execute(text(
            f"CREATE TABLE {table} (id text PRIMARY KEY, name text NOT NULL, doc jsonb, "
            "amount numeric(6,2), qty int CHECK (qty >= 0))"))
        # A btree index on the text column: a long value exceeds its row size limit.
        await conn.execute(text(f"CREATE INDEX ON {table} (name)"))
    yield TableStage(engine, table)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {table}"))
    await engine.dispose()


def record(offset: int, doc: dict, topic: str = "t.events.click"):
    return (topic, 0, offset, b"k", orjson.dumps(doc))


async def run_consuming(settings: Settings, topic: str, stage, sink, count: int) -> list:
    """Feed the runner from a real consumer until ``count`` records were acknowledged."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=unique("g"), auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    acked = []

    class Executor:
        in_flight = 1

        async def start(self):
            pass

        async def run(self, raws):
            return await process_batch(stage, raws, RetryPolicy(tries=2))

        def close(self, kill=False):
            pass

    async def ack(message):
        acked.append(message)

    async def crash(exc):
        raise AssertionError(f"the runner crashed: {exc!r}")

    async def batches():
        while len(acked) < count:
            got = await consumer.getmany(timeout_ms=500, max_records=4)
            for records in got.values():
                yield records

    runner = StageRunner(StageSpec("t", "test", (topic,), lambda s: stage, 0), Executor(), sink,
                         SystemicFailureDetector(DlqLimit(0.99, 1000, 500)),
                         hold=lambda m: None, ack=ack, crash=crash,
                         raw=lambda m: (m.topic, m.partition, m.offset, m.key, m.value))
    try:
        await asyncio.wait_for(runner.run(batches()), timeout=60)
    finally:
        await consumer.stop()
    return acked


async def test_each_data_fault_goes_to_the_dlq_and_the_partition_keeps_moving(
        make_settings, table_stage):
    settings = make_settings(topic_partitions=1)
    await ensure_topics(settings)
    topic = settings.topic(settings.topic_click)
    docs = []
    for i, (name, (fields, _)) in enumerate(POISON.items()):
        docs.append({"id": f"good-{i}"})
        docs.append({"id": name, **fields})
    docs.append({"id": "good-last"})
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for doc in docs:
            await producer.send_and_wait(topic, orjson.dumps(doc), key=b"k")
        sink = ProducerSink(producer, settings.topic(settings.topic_dlq))
        acked = await run_consuming(settings, topic, table_stage, sink, len(docs))
    finally:
        await producer.stop()
    assert len(acked) == len(docs)
    async with table_stage.engine.connect() as conn:
        stored = {r[0] for r in await conn.execute(text(f"SELECT id FROM {table_stage.table}"))}
    assert stored == {d["id"] for d in docs if d["id"].startswith("good")}
    letters = [read_dead_letter(r.partition, r.offset, r.key, r.value, r.headers)
               async for r in read_topic(settings, settings.topic(settings.topic_dlq))]
    by_id = {letter.event["id"]: letter for letter in letters}
    assert set(by_id) == set(POISON)
    for name, (_, expected) in POISON.items():
        letter = by_id[name]
        assert letter.reason.startswith("data fault: ") and expected in letter.reason, name
        assert letter.original_topic == topic and letter.origin == "processing"
        assert LONG[:40] not in letter.reason  # the reason names the fault, not the data


# --- one contract for the fake and the real dead-letter sink --------------------------

LETTER = DeadLetter(b"key-1", b'{"version": 1, "reason": "r"}',
                    [("x-reason", b"r"), ("x-original-offset", b"7")])


class KafkaSinkUnderTest:
    def __init__(self, settings):
        self.settings = settings
        self.topic = settings.topic(settings.topic_dlq)

    async def __aenter__(self):
        self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                         acks="all")
        await self.producer.start()
        return ProducerSink(self.producer, self.topic)

    async def __aexit__(self, *exc):
        await self.producer.stop()

    async def sent(self):
        return [DeadLetter(r.key, r.value, list(r.headers))
                async for r in read_topic(self.settings, self.topic)]


class ListSinkUnderTest:
    async def __aenter__(self):
        self.sink = ListSink()
        return self.sink

    async def __aexit__(self, *exc):
        pass

    async def sent(self):
        return self.sink.sent


@pytest.fixture(params=["fake", "kafka"])
async def sink_under_test(request, make_settings):
    if request.param == "fake":
        return ListSinkUnderTest()
    settings = make_settings(topic_partitions=1)
    await ensure_topics(settings)
    return KafkaSinkUnderTest(settings)


async def test_sink_contract_a_sent_letter_is_there_whole_once_send_returns(sink_under_test):
    async with sink_under_test as sink:
        await sink.send(LETTER)
        await sink.send(DeadLetter(None, b"{}", []))
    first, second = await sink_under_test.sent()
    assert (first.key, first.value) == (LETTER.key, LETTER.value)
    assert first.header("x-reason") == "r" and first.header("x-original-offset") == "7"
    assert second.key is None and second.value == b"{}"
