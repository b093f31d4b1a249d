"""The Kafka adapter's parsing of group descriptions, without a broker."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from streams.ops.kafka import KafkaLagSource
from streams.ops.models import Member


class FakeAdmin:
    def __init__(self, groups):
        self.groups = groups

    async def describe_consumer_groups(self, group_ids):
        return [SimpleNamespace(groups=[self.groups[g] for g in group_ids])]


def assignment(*pairs) -> bytes:
    return ConsumerProtocolMemberAssignment(0, list(pairs), b"").encode()


async def test_members_and_assignments_are_decoded_and_foreign_formats_tolerated():
    source = KafkaLagSource("127.0.0.1:1")
    source._admin = FakeAdmin({
        "g": (0, "g", "Stable", "consumer", "range", [
            ("m-1", "c-1", "/10.0.0.1", b"", assignment(("t", [0, 2]))),
            ("m-2", "c-2", "/10.0.0.2", b"", b"\x00not an assignment"),
            ("m-3", "c-3", "/10.0.0.3", b"", b""),
        ]),
        "connect": (0, "connect", "Stable", "connect", "sessioned", [
            ("w-1", "worker", "/10.0.0.9", b"", b"connect's own format"),
        ]),
        "gone": (16, "gone", "", "", "", []),
    })
    state, assigned = await source._describe("g")
    assert (state.group, state.state, state.members) == ("g", "Stable", 3)
    member = Member("m-1", "c-1", "/10.0.0.1")
    assert assigned == {TopicPartition("t", 0): member, TopicPartition("t", 2): member}
    state, assigned = await source._describe("connect")
    assert state.members == 1 and assigned == {}
    state, assigned = await source._describe("gone")
    assert state.state == "Unknown" and assigned == {}
