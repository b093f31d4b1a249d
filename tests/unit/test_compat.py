"""Each library internal that ``streams.compat`` relies on is still there and shaped as
expected: an upgrade that changes one fails here, loudly, not quietly in production."""

from __future__ import annotations

import concurrent.futures
import inspect

from streams import compat


def test_faust_consumer_thread_hooks_exist():
    from faust.transport.drivers import aiokafka as driver

    assert callable(getattr(driver.AIOKafkaConsumerThread, "_create_worker_consumer", None))
    assert callable(getattr(driver.Consumer, "_new_consumer_thread", None))
    transport = compat.streams_transport()
    assert issubclass(transport, driver.Transport)


def test_aiokafka_consumer_reads_its_fetch_wait_from_the_private_attribute():
    from aiokafka import AIOKafkaConsumer

    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(
        AIOKafkaConsumer.__init__)
    # The fetcher is built from the attribute when the consumer starts.
    assert "self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_aiokafka_client_wait_on_metadata_exists():
    from aiokafka.client import AIOKafkaClient

    method = getattr(AIOKafkaClient, "_wait_on_metadata", None)
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters)[:2] == ["self", "topic"]


def test_process_pool_keeps_its_processes_table():
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=1)
    try:
        assert pool.submit(int, "7").result(timeout=30) == 7
        assert hasattr(pool, "kill_workers") or len(pool._processes) == 1  # noqa: SLF001
    finally:
        assert compat.kill_pool_processes(pool) == 1
        pool.shutdown(wait=True)


def test_describe_groups_answer_and_assignment_decoder_are_as_expected():
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import (
        ConsumerProtocolMemberAssignment,
        ConsumerProtocolMemberMetadata,  # noqa: F401 - imported to fail when renamed
    )
    from aiokafka.protocol import admin

    assert inspect.iscoroutinefunction(AIOKafkaAdminClient.describe_consumer_groups)
    # Every version's group tuple starts with the six fields describe_group unpacks.
    for version in range(4):
        response = getattr(admin, f"DescribeGroupsResponse_v{version}")
        groups = response.SCHEMA.fields[response.SCHEMA.names.index("groups")]
        assert groups.array_of.names[:6] == ("error_code", "group", "state", "protocol_type",
                                             "protocol", "members")
    encoded = ConsumerProtocolMemberAssignment(0, [("t", [0, 2])], b"").encode()
    decoded = ConsumerProtocolMemberAssignment.decode(encoded)
    assert sorted((tp.topic, tp.partition) for tp in decoded.partitions()) == [("t", 0),
                                                                              ("t", 2)]
