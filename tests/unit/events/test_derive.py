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
