"""The message id a record claims, which tells the runner which records may be copies of
one event (``streams.events.derive.claimed_message_id``)."""

from __future__ import annotations

import orjson
import pytest

from streams.events.derive import claimed_message_id


@pytest.mark.parametrize(("value", "claimed"), [
    ({"messageId": "  m-1 "}, "m-1"),  # trimmed, as the stages read it
    ({"messageId": 42}, "42"),  # a number counts as its text
    ({"messageId": 1.5}, "1.5"),
    ({"messageId": ""}, None),  # none claimed: the id is derived from the bytes
    ({"messageId": "   "}, None),
    ({"messageId": None}, None),
    ({"messageId": True}, None),
    ({"messageId": ["m"]}, None),
    ({"type": "page"}, None),
])
def test_the_claimed_message_id(value, claimed):
    assert claimed_message_id(orjson.dumps(value)) == claimed


@pytest.mark.parametrize("value", [None, b"", b"not json", b"[1, 2]", b'"m-1"'])
def test_a_record_that_is_not_an_event_claims_nothing(value):
    assert claimed_message_id(value) is None


@pytest.mark.parametrize("value", [
    b'{"messageId":"m-1","type":"page"}',  # the plain string, read without parsing
    b'{"type":"page", "messageId" :  " m-1\\t"}',
    b'{"messageId":"m\\u002d1"}',  # an escape: parsed
    b'{"properties":{"messageId":"other"},"messageId":"m-1"}',  # twice: parsed
])
def test_every_spelling_of_one_claim_is_one_key(value):
    assert claimed_message_id(value) == "m-1"


def test_a_nested_claim_alone_may_order_but_never_splits_copies():
    # Read without parsing, a nested key names a key; the parsed record claims none. Both
    # copies of it get the same key, so at worst two batches are ordered needlessly.
    value = b'{"properties":{"messageId":"x"}}'
    assert claimed_message_id(value) == claimed_message_id(value) == "x"
