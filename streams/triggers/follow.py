"""Following ``messages.personalized`` as a downstream sender would, without a consumer
group (nothing is committed, no sender's group is disturbed): ``streams messages tail``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from streams.settings import Settings

# How long to wait for the topic's partitions to be assigned before saying so.
ASSIGN_NOTICE_SECONDS = 10.0


class TopicMissing(LookupError):
    """The topic to follow does not exist (a worker creates it at start)."""


@asynccontextmanager
async def follow_topic(settings: Settings, topic: str, *, from_beginning: bool = False,
                       on_waiting: Callable[[], None] | None = None,
                       ) -> AsyncIterator[tuple[int, AsyncIterator[ConsumerRecord]]]:
    """Open a group-less consumer on every partition of ``topic``, positioned at the
    end (records produced from now on) or at the beginning, and yield
    ``(partitions, records)``: ``records`` yields each record as it arrives, forever.

    Positions are fixed before this yields, so a record produced afterwards is always
    seen. ``on_waiting`` is called once when the assignment takes longer than
    ASSIGN_NOTICE_SECONDS. Raises TopicMissing when the topic does not exist and
    aiokafka's KafkaError when Kafka cannot be reached. Blocks on the network (async);
    the consumer is stopped on exit, cancellation included.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        # Checked first: subscribing to a missing topic could have the broker create it
        # with its default partition count.
        if topic not in await consumer.topics():
            raise TopicMissing(topic)
        consumer.subscribe([topic])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ASSIGN_NOTICE_SECONDS
        while not consumer.assignment():
            if on_waiting is not None and loop.time() > deadline:
                on_waiting()
                on_waiting = None
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        for tp in partitions:
            await consumer.position(tp)  # resolves "latest"/"earliest" now, not later

        async def records() -> AsyncIterator[ConsumerRecord]:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for tp in sorted(batch):
                    for record in batch[tp]:
                        yield record

        yield len(partitions), records()
    finally:
        await consumer.stop()
