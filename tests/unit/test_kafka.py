"""The writer's own murmur2 against aiokafka's (the Java client's partitioning)."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import murmur2 as reference
from hypothesis import given
from hypothesis import strategies as st

from streams.kafka import murmur2


@given(st.binary(max_size=200))
def test_murmur2_is_aiokafkas(data):
    assert murmur2(data) == reference(data)


def test_murmur2_of_profile_ids_and_known_values():
    # Keys as the writers send them (a profile id as text, 36 bytes), and the Java
    # client's published values (kafka's UtilsTest.testMurmur2).
    for _ in range(100):
        key = str(uuid.uuid4()).encode()
        assert murmur2(key) == reference(key)
    java = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
            b"a-little-bit-longer-string": -1486304829,
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
            b"abc": 479470107}
    for data, signed in java.items():
        assert murmur2(data) == signed & 0xFFFFFFFF
