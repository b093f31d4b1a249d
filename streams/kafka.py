"""Kafka I/O shared by the collector and the stages: the batching writer (the collector's
events, the trigger stage's messages) and reading a topic to its end (dead letters,
``streams messages tail``, tests).

The producer uses acks=all and idempotence, so an acknowledged write is on every in-sync
replica and a retried send is never duplicated by the broker.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.compat import wait_on_metadata
from streams.settings import Settings


class OutgoingRecord(NamedTuple):
    """One record to write: topic, key, value and headers (a named tuple: one is made
    per event on the hot path)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


def make_producer(settings: Settings, **overrides) -> AIOKafkaProducer:
    """An idempotent, acks=all producer tuned for throughput by the collector's settings."""
    config = settings.collector
    options = dict(
        bootstrap_servers=settings.kafka.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=config.linger_ms,
        max_batch_size=config.max_batch_bytes,
        compression_type=config.compression,
        max_request_size=1_048_576,
        request_timeout_ms=int(config.ack_timeout * 1000),
    )
    options.update(overrides)
    return AIOKafkaProducer(**options)


_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (the Java client's ``Utils.murmur2``, unsigned), as
    ``aiokafka.partitioner.murmur2`` computes it (a property test compares them), in
    about a third of its time: the words are unpacked at once, not byte by byte (the
    writer hashes every key it has not seen: in a burst, every message). Pure."""
    length = len(data)
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{length >> 2}I", data):
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    tail, base = length & 3, length & ~3
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h = ((h ^ data[base]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


class _OpenBatch:
    """A record batch for one topic-partition that is still being filled."""

    __slots__ = ("topic", "partition", "builder", "done", "count")

    def __init__(self, topic: str, partition: int, builder, done: asyncio.Future):
        self.topic, self.partition, self.builder, self.done = topic, partition, builder, done
        self.count = 0


class EventWriter:
    """Writes records to Kafka and waits for every acknowledgement (acks=all, idempotent).

    Records of all concurrent requests are appended to one open record batch per
    topic-partition (aiokafka's ``create_batch``/``send_batch``), which is submitted after
    ``producer_linger_ms`` or when full; ``write`` waits for the batches holding its
    records. This costs a few microseconds a record where ``producer.send`` costs tens
    (a coroutine, a future and a partitioner call each). Partitions are chosen as
    Kafka's Java client does (murmur2 of the key), so direct producers and the collector
    put a key on the same partition.
    """

    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None,
                 started: bool = False, linger_ms: int | None = None):
        """``producer``: one of the caller's (made by ``start`` otherwise); ``started``:
        it is already started, and its owner stops it (``start``/``stop`` not called);
        ``linger_ms``: instead of ``producer_linger_ms`` (0 for a writer whose every
        write holds all the records there are)."""
        self.settings = settings
        # aiokafka binds a producer to the running loop, so it is made in start().
        self.producer: AIOKafkaProducer | None = producer
        self._started = started and producer is not None
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._partitions: dict[str, int] = {}
        self._hashes: dict[bytes, int] = {}
        self._round_robin = 0
        self._tasks: set[asyncio.Task] = set()
        self._linger = (settings.collector.linger_ms if linger_ms is None else linger_ms) / 1000
        self._ack_timeout = settings.collector.ack_timeout

    async def start(self) -> None:
        """Connect to Kafka. Raises KafkaConnectionError when it cannot be reached."""
        if self.producer is None:
            self.producer = make_producer(self.settings)
        await self.producer.start()
        self._started = True

    async def stop(self) -> None:
        """Submit and flush what is pending, then disconnect."""
        if self._started and self.producer is not None:
            for batch in list(self._open.values()):
                self._submit(batch)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._started = False
            await self.producer.stop()

    async def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            assert self.producer is not None
            count = await wait_on_metadata(self.producer, topic)
            if not count:
                raise KafkaError(f"topic {topic} has no partitions")
            self._partitions[topic] = count
        return count

    def _partition_of(self, key: bytes | None, count: int) -> int:
        if key is None:
            self._round_robin += 1
            return self._round_robin % count
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) > 200_000:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed % count

    def _new_batch(self, topic: str, partition: int) -> _OpenBatch:
        assert self.producer is not None
        loop = asyncio.get_running_loop()
        batch = _OpenBatch(topic, partition, self.producer.create_batch(), loop.create_future())
        # Mark a failure as seen even when no writer is left waiting for it.
        batch.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._open[(topic, partition)] = batch
        if self._linger > 0:
            loop.call_later(self._linger, self._submit, batch)
        else:
            loop.call_soon(self._submit, batch)
        return batch

    def _submit(self, batch: _OpenBatch) -> None:
        key = (batch.topic, batch.partition)
        if self._open.get(key) is not batch:
            return  # already submitted (it filled up before its linger ran out)
        del self._open[key]
        batch.builder.close()
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: _OpenBatch) -> None:
        assert self.producer is not None
        try:
            delivered = await self.producer.send_batch(batch.builder, batch.topic,
                                                       partition=batch.partition)
            await delivered
        except Exception as exc:  # noqa: BLE001 - handed to every waiting writer
            if not batch.done.done():
                batch.done.set_exception(exc)
        else:
            if not batch.done.done():
                batch.done.set_result(None)

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        """Append every record to its partition's open batch, then wait until all those
        batches are acknowledged. Raises aiokafka's KafkaError (or TimeoutError after
        ``collector_ack_timeout``) when Kafka cannot take them; some may then have been
        written, which the events' messageIds make safe to retry."""
        if not records:
            return
        if self.producer is None or not self._started:
            raise RuntimeError("EventWriter.write before start()")
        counts = {}
        for topic in {r.topic for r in records}:
            counts[topic] = await self._partition_count(topic)
        waits: set[asyncio.Future] = set()
        open_batches = self._open
        for r in records:
            partition = self._partition_of(r.key, counts[r.topic])
            batch = open_batches.get((r.topic, partition))
            if batch is None:
                batch = self._new_batch(r.topic, partition)
            headers = list(r.headers) if r.headers else []
            if batch.builder.append(timestamp=None, key=r.key, value=r.value,
                                    headers=headers) is None:
                self._submit(batch)  # full: send it, start the next one
                batch = self._new_batch(r.topic, partition)
                if batch.builder.append(timestamp=None, key=r.key, value=r.value,
                                        headers=headers) is None:
                    raise ValueError(f"record of {len(r.value)} bytes does not fit a batch")
            batch.count += 1
            waits.add(batch.done)
        # asyncio.wait, not wait_for(gather): a timeout must not cancel batches that other
        # requests are waiting on too.
        done, pending = await asyncio.wait(waits, timeout=self._ack_timeout)
        if pending:
            raise TimeoutError(f"Kafka did not acknowledge {len(pending)} record batches "
                               f"within {self._ack_timeout:g}s")
        for future in done:
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """A record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int


async def read_topic(
    settings: Settings, topic: str, *, idle_seconds: float = 2.0,
    max_records: int | None = None, start: dict[int, int] | None = None,
) -> AsyncIterator[ConsumedRecord]:
    """Read a topic from its beginning (or ``start`` offsets per partition) to its current
    end, without a consumer group; blocks until the end offsets are reached.

    ``idle_seconds`` bounds the wait when the end is not reachable (for example records
    of aborted transactions). Raises aiokafka's KafkaError when Kafka is unreachable.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
        group_id=None, auto_offset_reset="earliest", isolation_level="read_committed",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - fresh topic
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if start and tp.partition in start:
                consumer.seek(tp, start[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        remaining = {tp for tp in tps if ends[tp] > (await consumer.position(tp))}
        count = 0
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=int(idle_seconds * 1000))
            if not batch:
                break
            for tp, messages in batch.items():
                for m in messages:
                    yield ConsumedRecord(m.topic, m.partition, m.offset, m.key, m.value,
                                         list(m.headers or ()), m.timestamp)
                    count += 1
                    if max_records is not None and count >= max_records:
                        return
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
