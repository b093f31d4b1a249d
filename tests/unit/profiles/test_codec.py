"""The profile store's compact format (``streams.profiles.codec``): every version written
reads back, old rows keep decoding, and bytes that are no document say so."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.profiles import codec
from streams.profiles.models import FoldEvent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=30)

PROFILE = {"identifiers": ["anonymous_id:a-1", "email:ann@example.com"],
           "created": ["2026-01-01T00:00:00.000000Z", "m-1"], "traits": {"name": "Ann"},
           "counts": {"total": 2, "type": {"page": 1, "identify": 1}}, "notes": []}


@given(json_values)
def test_every_value_packed_reads_back(value):
    assert codec.unpack(codec.pack(value)) == value


def test_the_current_version_is_zstandard_and_smaller_than_the_json():
    data = codec.pack(PROFILE)
    assert data[0] == 2
    assert len(data) < len(codec.orjson.dumps(PROFILE)) / 2
    assert codec.unpack_profile("p-1", data) == {"id": "p-1", **PROFILE}


def test_rows_of_version_1_still_decode():
    old = codec.pack_v1(PROFILE)
    assert old[0] == 1
    assert codec.unpack(old) == PROFILE
    # Bytes written by version 1 before version 2 existed (frozen: never regenerate).
    frozen = bytes.fromhex("0103da829a5320860253054ac908b4039e5b6185b4635e9e526d2d00")
    assert codec.unpack(frozen) == {"identifiers": ["email:ann@example.com"],
                                    "traits": {"name": "Ann"}}


def test_an_event_keeps_everything_but_its_id_and_time_columns():
    event = FoldEvent(message_id="m-1", time="2026-01-01T00:00:00.000000Z", type="track",
                      identifiers=("anonymous_id:a-1",), source="web", event="Product Added",
                      item="sku-1")
    data = codec.pack_event(event)
    assert codec.unpack_event("m-1", "2026-01-01T00:00:00.000000Z", data) == event


@pytest.mark.parametrize("data, says", [
    (b"", "empty"),
    (b"\x07abc", "unknown version 7"),
    (b"\x02not zstandard", "does not decode"),
    (b"\x01not deflate", "does not decode"),
    (codec._PREFIX + codec._codecs.compress(b"{not json"), "does not decode"),
])
def test_bytes_that_are_no_document_raise_a_clear_value_error(data, says):
    with pytest.raises(ValueError, match=says):
        codec.unpack(data)


def test_version_2s_dictionary_is_frozen():
    # Rows of version 2 decode only with these exact bytes: a new dictionary is a new
    # version (scripts/train_dictionary.py writes it; the codec keeps every old one).
    assert hashlib.sha256(codec._DICTIONARY_2).hexdigest() == (
        "08817febf3e979ab4b2142642c01da7e5e7070bcf99d58bd2ef5daa8b8033d0f")
