"""Group calls in the profile fold: the accounts a person belongs to, folded like traits
(last writer wins per account trait, commutative under merges), never identifying the
person by the account's traits."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.profiles.decode import decode_envelope
from streams.profiles.logic import fold_event, merge_profiles, new_profile, profile_view
from streams.profiles.models import FoldEvent, InvalidEvent
from streams.reference import expected_state

NOW = datetime(2026, 3, 2, tzinfo=UTC)


def group(message_id: str, minute: int, group_id: str = "acme", **traits) -> dict:
    return {"type": "group", "messageId": message_id, "userId": "u-1", "groupId": group_id,
            "timestamp": f"2026-03-01T10:{minute:02d}:00Z", "traits": traits}


def test_group_call_decodes_to_the_account_and_its_traits():
    event = decode_envelope(group("g-1", 0, name="Acme", email="billing@acme.test"))
    assert isinstance(event, FoldEvent)
    assert (event.group_id, event.group_traits) == ("acme", {"name": "Acme",
                                                             "email": "billing@acme.test"})
    assert event.identifiers == ("user_id:u-1",)  # the account's email is not the person's
    assert event.traits == {}
    assert FoldEvent.from_json(event.to_json()) == event
    missing = decode_envelope({**group("g-2", 0), "groupId": ""})
    assert isinstance(missing, InvalidEvent) and "groupId" in missing.reason


def test_groups_fold_last_writer_wins_and_merge_commutes():
    events = [decode_envelope(d) for d in (
        group("g-1", 0, name="Acme", plan="free"), group("g-2", 5, plan="pro"),
        group("g-3", 1, "globex", name="Globex"))]
    a, b = new_profile("a", ("", "")), new_profile("b", ("", ""))
    fold_event(a, events[1])
    for event in (events[0], events[2]):
        fold_event(b, event)
    one, other = merge_profiles(a, b), merge_profiles(b, a)
    assert one["groups"] == other["groups"]
    view = profile_view(one, NOW)
    assert view["groups"] == {"acme": {"name": "Acme", "plan": "pro"},
                              "globex": {"name": "Globex"}}
    # A group call is provided information, not behaviour.
    assert one["counts"]["type"] == {"group": 3} and one["hours"] == {"local": {}, "utc": {}}


def test_the_reference_keeps_groups_whatever_the_order():
    docs = [group("g-1", 0, name="Acme"), group("g-2", 5, name="Acme Inc"),
            {"type": "identify", "messageId": "i-1", "userId": "u-1", "anonymousId": "a-1",
             "timestamp": "2026-03-01T10:03:00Z", "traits": {"email": "ann@example.test"}}]
    first = expected_state(docs).profiles
    second = expected_state(list(reversed(docs))).profiles
    assert first == second
    [profile] = first.values()
    assert profile["groups"] == {"acme": {"name": ["Acme Inc", "2026-03-01T10:05:00.000000Z",
                                                   "g-2"]}}
    assert "email:billing@acme.test" not in profile["identifiers"]
