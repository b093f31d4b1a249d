"""The trigger records read what the profile stage stores (a contract test: the profile
stage's own fold builds the documents), and the timing helpers."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.profiles.decode import decode_envelope
from streams.profiles.logic import fold_event, new_profile
from streams.profiles.models import FoldEvent
from streams.triggers.logic import plan_schedules
from streams.triggers.models import Person, TriggerEvent, social_action
from streams.triggers.timing import Quiet, best_hour, next_hour_at, quiet_end, zone
from tests.unit.triggers.factories import RULES

BERLIN = zone("Europe/Berlin")


def envelopes() -> list[dict]:
    context = {"device": {"id": "phone-1", "type": "ios"}, "os": {"name": "iOS"},
               "app": {"name": "Shop"}, "timezone": "Europe/Berlin"}
    return [
        {"type": "screen", "messageId": "m1", "anonymousId": "app-1", "name": "Product",
         "timestamp": "2026-03-02T18:10:00Z", "properties": {"product_id": "shoe",
                                                            "category": "running"},
         "context": context},
        {"type": "identify", "messageId": "m2", "anonymousId": "app-1", "userId": "u1",
         "timestamp": "2026-03-02T18:11:00Z", "context": context,
         "traits": {"email": "Ada@Example.com", "firstName": "Ada", "locale": "de-DE",
                    "consent": {"email": True, "push": False},
                    "preferences": {"categories": ["yoga"]}}},
        {"type": "track", "messageId": "m3", "anonymousId": "ig:ada", "event": "Post Liked",
         "socialChannel": "instagram", "timestamp": "2026-03-02T18:12:00Z",
         "properties": {"post_id": "post-3"}},
    ]


def folded() -> tuple[dict, list[dict]]:
    events = [decode_envelope(doc) for doc in envelopes()]
    assert all(isinstance(e, FoldEvent) for e in events)
    profile = new_profile("00000000-0000-4000-8000-000000000001", events[0].key)
    profile["identifiers"] = sorted({i for e in events for i in e.identifiers})
    for event in events:
        fold_event(profile, event)
    return profile, [e.to_json() for e in events]


def test_person_from_a_profile_document_and_its_stored_events():
    profile, stored = folded()
    p = Person.from_profile(profile, stored)
    assert p.profile_id == profile["id"]
    assert p.identifiers_of("email") == ["ada@example.com"]
    assert p.name == "Ada" and p.locale == "de-DE"
    assert p.consent == {"email": True, "push": False}
    assert p.preferences == {"categories": ["yoga"]}
    assert p.timezone == "Europe/Berlin"
    assert p.hours_local == {19: 1} and p.hours_utc == {18: 1}
    assert p.recent_items == ("shoe",)
    assert p.item_affinity["shoe"] == 1 and p.category_affinity == {"running": 1}
    first, _, liked = p.events
    assert (first.source, first.device_id, first.device_type, first.origin) == \
        ("mobile", "phone-1", "ios", "push")
    assert first.anonymous_id == "app-1" and first.item == "shoe" and first.viewed
    assert (liked.origin, liked.action, liked.item) == ("instagram", "like", "post-3")
    kinds = sorted(i.kind for i in plan_schedules(p, RULES))
    assert kinds == ["re_engagement", "social_follow_up", "welcome"]


def test_event_times_must_be_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        TriggerEvent("m", datetime(2026, 1, 1), "track")  # noqa: DTZ001 - the point


def test_person_keeps_events_canonical():
    a = TriggerEvent("b", datetime(2026, 1, 1, tzinfo=UTC), "page")
    b = TriggerEvent("a", datetime(2026, 1, 1, tzinfo=UTC), "page")
    c = TriggerEvent("c", datetime(2025, 1, 1, tzinfo=UTC), "page")
    assert [e.message_id for e in Person("p", events=(a, b, c, a)).events] == ["c", "a", "b"]


@pytest.mark.parametrize(("name", "action"), [
    ("Post Liked", "like"), ("post_shared", "share"), ("Comment Posted", "comment"),
    ("Brand Mentioned", "mention"), ("Account Followed", "follow"),
    ("Direct Message Sent", "message"), ("Page Viewed", None), (None, None)])
def test_social_actions(name, action):
    assert social_action(name) == action


def test_quiet_hours_spanning_midnight():
    quiet = Quiet(time(22), time(8))
    assert quiet.contains(time(23, 59)) and quiet.contains(time(0)) and quiet.contains(time(7))
    assert not quiet.contains(time(8)) and not quiet.contains(time(21, 59))
    assert not Quiet(time(9), time(9)).contains(time(9))
    assert Quiet(time(1), time(5)).contains(time(3))
    evening = datetime(2026, 3, 2, 21, 30, tzinfo=UTC)  # 22:30 Berlin
    assert quiet_end(evening, BERLIN, quiet) == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    early = datetime(2026, 3, 3, 5, 0, tzinfo=UTC)  # 06:00 Berlin
    assert quiet_end(early, BERLIN, quiet) == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    assert quiet_end(datetime(2026, 3, 3, 7, 0, tzinfo=UTC), BERLIN, quiet) is None


def test_quiet_hours_end_across_a_dst_change():
    # Europe/Berlin springs forward on 2026-03-29: 08:00 is then 06:00 UTC.
    night = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert quiet_end(night, BERLIN, Quiet(time(22), time(8))) == \
        datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_best_hour_skips_quiet_hours_and_ties_go_early():
    hours = [0] * 24
    hours[23], hours[9], hours[18] = 50, 5, 5
    assert best_hour(hours, Quiet(time(22), time(8))) == 9
    assert best_hour(hours, None) == 23
    assert best_hour([0] * 24, None) is None


@given(st.integers(0, 365 * 24 * 60), st.integers(0, 23),
       st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"]))
def test_next_hour_at_is_the_first_matching_local_hour(minutes, hour, name):
    tz = zone(name)
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    found = next_hour_at(start, tz, hour)
    if found is None:  # only when DST skips that hour
        return
    assert found >= start and found - start <= timedelta(hours=24)
    assert found.astimezone(tz).hour == hour
    probe = start
    while probe + timedelta(minutes=30) < found:  # no earlier moment has that hour
        probe += timedelta(minutes=30)
        assert probe.astimezone(tz).hour != hour or probe >= found


@given(rule=st.text(), scope=st.text(), ids=st.lists(st.text(), max_size=4))
def test_message_ids_are_the_standard_uuid5_of_rule_scope_and_sorted_events(rule, scope, ids):
    import uuid

    from streams.triggers.models import MESSAGE_NAMESPACE, message_id_for

    name = "\x1f".join((rule, scope, *sorted(set(ids))))
    assert message_id_for(rule, scope, ids) == str(uuid.uuid5(MESSAGE_NAMESPACE, name))


# Hypothesis takes naive bounds and adds the zones itself.
@given(ts=st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.timezones()))  # noqa: DTZ001
def test_iso_is_utc_with_microseconds_and_a_z(ts):
    from streams.triggers.models import iso

    assert iso(ts) == ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with pytest.raises(ValueError):
        iso(ts.replace(tzinfo=None))
