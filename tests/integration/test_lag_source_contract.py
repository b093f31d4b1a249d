"""One contract for the lag source, run against the scripted cluster the unit tests use
and the real Kafka adapter (arroyo's habit): what the sampler and the status rules rely
on holds for both, so the fake cannot drift from the real thing unnoticed."""

from __future__ import annotations

from datetime import datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.ops.kafka import KafkaLagSource
from tests.helpers import unique
from tests.unit.ops.fakes import ScriptedCluster


class RealCluster:
    """A topic of two partitions, records on both, a group that committed on partition 0
    and then stopped (no members); ``grow`` writes more to partition 0."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.topic, self.group = unique("lagc"), unique("g")

    async def __aenter__(self) -> KafkaLagSource:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(self.topic, 2, 1)])
        await admin.close()
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await self.producer.start()
        for partition, n in ((0, 12), (1, 7)):
            for i in range(n):
                await self.producer.send_and_wait(self.topic, b"x%d" % i, partition=partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                    enable_auto_commit=False)
        await consumer.start()
        consumer.assign([TopicPartition(self.topic, 0)])
        await consumer.commit({TopicPartition(self.topic, 0): 4})
        await consumer.stop()
        self.source = KafkaLagSource(self.bootstrap, groups=(self.group,), topics=(self.topic,))
        await self.source.start()
        return self.source

    async def __aexit__(self, *exc) -> None:
        await self.source.close()
        await self.producer.stop()

    async def grow(self) -> None:
        for i in range(5):
            await self.producer.send_and_wait(self.topic, b"y%d" % i, partition=0)


class ScriptedUnderTest:
    def __init__(self):
        self.cluster = ScriptedCluster()

    async def __aenter__(self):
        return self.cluster

    async def __aexit__(self, *exc) -> None:
        pass

    async def grow(self) -> None:
        pass  # every observe() of the script writes ten more records to partition 0


@pytest.fixture(params=["scripted", "kafka"])
def cluster(request, infra_settings):
    if request.param == "scripted":
        return ScriptedUnderTest()
    return RealCluster(infra_settings.kafka_bootstrap)


async def test_lag_source_contract(cluster):
    async with cluster as source:
        first = await source.observe()
        await cluster.grow()
        second = await source.observe()
    for obs in (first, second):
        assert isinstance(obs.at, datetime) and obs.at.tzinfo is not None
        groups = {g.group: g for g in obs.groups}
        assert groups and obs.partitions
        for row in obs.partitions:
            assert row.group in groups
            assert row.end >= 0
            assert row.committed is None or 0 <= row.committed <= row.end
            if groups[row.group].members == 0:
                assert row.owner is None  # a stopped group owns nothing
        topics = {row.topic for row in obs.partitions}
        for topic in topics:  # a topic's end sums every partition's, read or not
            ends = {row.partition: row.end for row in obs.partitions if row.topic == topic}
            assert obs.topic_ends[topic] >= sum(ends.values()) > 0
        stopped = [row for row in obs.partitions if row.committed is not None]
        assert stopped and all(row.end > row.committed for row in stopped)  # lag to see
    assert second.at > first.at
    grown = {(r.topic, r.partition): r.end for r in second.partitions}
    for row in first.partitions:
        assert grown[(row.topic, row.partition)] >= row.end
    assert sum(second.topic_ends.values()) > sum(first.topic_ends.values())
