"""Every place the product reaches into a library's private parts, in one module.

Each function here depends on an internal of faust, aiokafka or the standard library that
no public API offers. ``tests/unit/test_compat.py`` checks each internal is still there
and shaped as expected, so an upgrade that changes one fails loudly there rather than
quietly in production.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition

# How long the broker may hold a fetch that found no new records. Faust hard-codes
# 1,500 ms for its consumer; aiokafka fetches only the partitions whose previous records
# have been handed over, so at moderate rates a fetch often waits out the whole 1.5 s
# while records queue up on the other partitions: it was most of the produce -> commit
# latency at half load (p50 about 2 s). 100 ms costs a few empty fetches per second.
FETCH_MAX_WAIT_MS = 100


def streams_transport() -> type:
    """Faust's aiokafka transport whose worker consumer waits at most
    ``FETCH_MAX_WAIT_MS`` for a fetch. Internals: faust's ``_create_worker_consumer``
    and ``_new_consumer_thread``, aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms``."""
    from faust.transport.drivers import aiokafka as driver

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):  # noqa: ANN001, ANN202 - faust's
            consumer = super()._create_worker_consumer(transport)
            # Read by the consumer when it starts its fetcher (not started yet here).
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport


async def wait_on_metadata(producer, topic: str) -> int:  # noqa: ANN001 - AIOKafkaProducer
    """The partition count of ``topic`` once the producer's client has its metadata
    (0 when the topic has none). Internal: aiokafka's ``AIOKafkaClient._wait_on_metadata``
    (what ``send`` itself awaits; there is no public equivalent)."""
    await producer.client._wait_on_metadata(topic)  # noqa: SLF001
    return len(producer.client.cluster.partitions_for_topic(topic) or ())


def kill_pool_processes(pool: concurrent.futures.ProcessPoolExecutor) -> int:
    """SIGKILL every process of ``pool`` now; returns how many. Internal: the pool's
    ``_processes`` table (Python 3.14 adds a public ``kill_workers``)."""
    killer = getattr(pool, "kill_workers", None)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    if killer is not None:
        killer()
        return len(processes)
    for process in processes:
        process.kill()
    return len(processes)


@dataclass(frozen=True)
class GroupMember:
    """A consumer-group member as DescribeGroups reports it, with its partitions."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[TopicPartition, ...]


@dataclass(frozen=True)
class GroupDescription:
    """A consumer group as DescribeGroups reports it (None ``state`` on an error)."""

    state: str | None
    protocol_type: str
    members: tuple[GroupMember, ...]
    undecoded: int = 0  # members whose assignment is in a foreign assignor's format


async def describe_group(admin, group: str) -> GroupDescription:  # noqa: ANN001
    """One consumer group's state and members. Internals: the raw DescribeGroups
    response tuples of aiokafka's admin client and its consumer-protocol assignment
    decoder. One group per request: aiokafka 0.14 decodes a DescribeGroups v3 answer with
    the v2 schema, which misreads every group after the first when several are asked."""
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    (response,) = await admin.describe_consumer_groups([group])
    if not response.groups:
        return GroupDescription(None, "", ())
    error_code, _group, state, protocol_type, _protocol, members = response.groups[0][:6]
    if error_code:
        return GroupDescription(None, protocol_type or "", ())
    described: list[GroupMember] = []
    undecoded = 0
    for member_id, client_id, host, _metadata, assignment in (m[:5] for m in members):
        partitions: Sequence[TopicPartition] = ()
        if protocol_type == "consumer" and assignment:
            try:
                partitions = ConsumerProtocolMemberAssignment.decode(assignment).partitions()
            except Exception:  # noqa: BLE001 - a foreign assignor's format: no detail
                undecoded += 1
        described.append(GroupMember(member_id, client_id, host, tuple(partitions)))
    return GroupDescription(state or "Unknown", protocol_type, tuple(described), undecoded)
