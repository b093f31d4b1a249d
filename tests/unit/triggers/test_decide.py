"""decide_send: each built-in rule sends a schema-valid message, and nothing goes out
for an exit, quiet hours, a cap, missing consent, expiry, the control group or a
forgotten person."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import hypothesis
import jsonschema_rs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.triggers.channels import allowed
from streams.triggers.logic import decide_send, in_control_group, plan_rule, plan_schedules
from streams.triggers.models import (
    Cancel,
    Hold,
    HoldOut,
    Intent,
    Person,
    Send,
    SentRecord,
    Suppress,
)
from streams.triggers.timing import Quiet, zone_of
from tests.unit.triggers.factories import (
    RULES,
    T0,
    at,
    ev,
    event_logs,
    person,
    phone,
    rules_with,
    social,
    view,
    watch,
)

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas" / "v1"
# The built-in rules without control groups, so that every test person is sent to.
def sending(**changes) -> object:
    """The built-in rules without control groups, with some rules' fields changed."""
    base: dict = {name: {"control_share": 0.0} for name in RULES.rules}
    for name, fields in changes.items():
        base[name] = {**base.get(name, {}), **fields}
    return rules_with(**base)


SENDING = sending()


@pytest.fixture(scope="module")
def message_schema() -> jsonschema_rs.Validator:
    docs = [orjson.loads(p.read_bytes()) for p in sorted(SCHEMAS.glob("*.json"))]
    registry = jsonschema_rs.Registry([(d["$id"], d) for d in docs])
    [schema] = [d for d in docs if d["$id"].endswith("/message.json")]
    return jsonschema_rs.validator_for(schema, registry=registry, validate_formats=True)


def intent_of(p: Person, rule: str, rules=SENDING) -> Intent:
    [intent] = plan_rule(p, rules.rule(rule))
    return intent


def sent(decision) -> Send:
    assert isinstance(decision, Send), decision
    return decision


# --- each rule fires ---------------------------------------------------------------------
def test_welcome_goes_to_the_device_it_came_from(message_schema):
    p = person([phone("m1", T0, "screen")])
    intent = intent_of(p, "welcome")
    send = sent(decide_send(intent, p, [], SENDING, intent.due_at))
    assert send.channel == "push"
    assert send.destination == {"type": "device_id", "value": "phone-1"}
    message = send.message
    message_schema.validate(message)
    assert message["messageId"] == intent.message_id
    assert message["profileId"] == p.profile_id
    assert message["template"] == "welcome-v1" and message["locale"] == "en"
    assert message["personalization"]["name"] == "Ada"
    assert message["why"]["channel"]["reason"] == "the channel the trigger came from"
    assert message["why"]["events"][0]["messageId"] == "m1"
    assert message["dueAt"] == "2026-03-02T10:00:05.000000Z"
    assert message["emittedAt"] == message["dueAt"]


def test_welcome_on_the_web_goes_in_app_without_asking_consent(message_schema):
    p = person([view("m1", T0)], consent={})
    intent = intent_of(p, "welcome")
    send = sent(decide_send(intent, p, [], SENDING, intent.due_at))
    assert send.destination == {"type": "anonymous_id", "value": "anon-web"}
    message_schema.validate(send.message)
    opted_out = replace(p, consent={"web": False})
    decision = decide_send(intent, opted_out, [], SENDING, intent.due_at)
    assert decision == Suppress("consent", "email: no consent; facebook: no consent; "
                                "instagram: no consent; linkedin: no consent; push: no "
                                "consent; twitter: no consent; watch: no consent; web: "
                                "opted out")


def test_browse_abandonment_recommends_what_was_viewed(message_schema):
    views = [view(f"v{i}", at(minutes=i), category="running", item=f"shoe-{i % 2}")
             for i in range(3)]
    p = person(views, preferences={"categories": ["yoga"]})
    intents = plan_rule(p, SENDING.rule("browse_abandonment"))
    intent = next(i for i in intents if i.facts["scope"] == "category")
    send = sent(decide_send(intent, p, [], SENDING, intent.due_at))
    message_schema.validate(send.message)
    personal = send.message["personalization"]
    assert personal["preferences"] == {"categories": ["yoga"]}
    assert personal["recommendations"][:2] == [
        {"item": "shoe-0", "category": "running", "reason": "because you viewed shoe-0"},
        {"item": "shoe-1", "category": "running", "reason": "because you viewed shoe-1"}]
    assert {"item": None, "category": "yoga",
            "reason": "because you told us you like yoga"} in personal["recommendations"]
    # Web is where Ada browses: the most engaged channel the rule allows.
    assert send.channel == "web"
    assert send.message["why"]["channel"]["engagement"]["web"]["recent"] == 3


def test_stated_preferred_channel_wins_over_engagement():
    views = [view(f"v{i}", at(minutes=i), item="shoe") for i in range(3)]
    p = person(views, preferences={"preferredChannel": "email"})
    intent = intent_of(p, "browse_abandonment")
    send = sent(decide_send(intent, p, [], SENDING, intent.due_at))
    assert send.destination == {"type": "email", "value": "ada@example.com"}


def test_cross_device_goes_to_another_device(message_schema):
    p = person([phone("s", T0, event="Video Started", item="video-7"), watch("w", at(days=-2))])
    intent = intent_of(p, "cross_device")
    send = sent(decide_send(intent, p, [], SENDING, intent.due_at))
    assert send.destination == {"type": "device_id", "value": "watch-1"}
    why = send.message["why"]["channel"]
    assert why["excluded"]["push"] == "no destination"  # phone-1 is where it started
    message_schema.validate(send.message)
    assert send.message["personalization"]["recommendations"][0] == {
        "item": "video-7", "category": None, "reason": "because you started video-7 on your ios"}


def test_cross_device_start_without_an_item_still_sends_a_valid_message(message_schema):
    # Found by the trigger oracle's property test: a start naming neither an item nor a
    # category rendered a recommendation of nothing, which the schema refuses.
    p = person([phone("s", T0, event="Video Started"), watch("w", at(days=-2))])
    intent = intent_of(p, "cross_device")
    send = sent(decide_send(intent, p, [], SENDING, intent.due_at))
    message_schema.validate(send.message)
    assert all(r["item"] or r["category"]
               for r in send.message["personalization"]["recommendations"])


def test_re_engagement_waits_for_the_best_hour(message_schema):
    p = person([view("v", T0)])  # active mostly at 19:00 Berlin
    intent = intent_of(p, "re_engagement")
    assert intent.due_at == at(days=14)  # 11:00 in Berlin
    evening = datetime(2026, 3, 16, 18, 0, tzinfo=UTC)  # 19:00 Berlin (UTC+1)
    assert decide_send(intent, p, [], SENDING, intent.due_at) == Hold(evening, "best_hour")
    send = sent(decide_send(intent, p, [], SENDING, evening))
    message_schema.validate(send.message)
    time = send.message["why"]["time"]
    assert time["bestHour"] == 19 and time["timezone"] == "Europe/Berlin"
    assert time["heldUntil"] == "2026-03-16T18:00:00.000000Z"
    assert send.channel == "web"


def test_best_hour_after_the_expiry_is_not_waited_for():
    p = person([view("v", T0)])
    rules = sending(re_engagement={"expires_after": "2h"})
    intent = intent_of(p, "re_engagement", rules)
    sent(decide_send(intent, p, [], rules, intent.due_at))


def test_social_follow_up_answers_on_the_same_network(message_schema):
    p = person([social("s1", "Post Liked", item="post-3")])
    intent = intent_of(p, "social_follow_up")
    send = sent(decide_send(intent, p, [], SENDING, intent.due_at))
    assert send.destination == {"type": "instagram_handle", "value": "ada"}
    assert send.message["personalization"]["recommendations"][0]["reason"] == \
        "because you liked post-3 on instagram"
    message_schema.validate(send.message)
    # Without consent for instagram DMs: another channel the person consented to.
    elsewhere = replace(p, consent={"email": True})
    assert sent(decide_send(intent, elsewhere, [], SENDING, intent.due_at)).channel == "email"


# --- and does not -----------------------------------------------------------------------
def test_exit_goal_reached_by_send_time_cancels():
    views = [view(f"v{i}", at(minutes=i), item="shoe") for i in range(3)]
    intent = intent_of(person(views), "browse_abandonment")
    late = intent.due_at + timedelta(hours=1)
    bought = ev("buy", intent.due_at + timedelta(minutes=30), event="Order Completed")
    p = person([*views, bought])
    assert decide_send(intent, p, [], SENDING, late) == Cancel("exit")
    # A goal before the trigger does not count.
    early = person([ev("buy", at(minutes=-5), event="Order Completed"), *views])
    sent(decide_send(intent, early, [], SENDING, late))


def test_superseded_welcome_is_cancelled_at_send_time():
    newcomer = person([view("new", T0)])
    intent = intent_of(newcomer, "welcome")
    merged = person([view("old", at(days=-100)), view("new", T0)])
    assert decide_send(intent, merged, [], SENDING, intent.due_at) == Cancel("superseded")


def social_at_night(**rule_changes) -> tuple[Person, Intent, object]:
    rules = sending(social_follow_up=rule_changes)
    # 21:28 UTC is 22:28 in Berlin: due at 22:30, inside quiet hours.
    p = person([social("s1", "Post Liked", time=datetime(2026, 3, 2, 21, 28, tzinfo=UTC))])
    return p, intent_of(p, "social_follow_up", rules), rules


def test_quiet_hours_hold_until_they_end_in_local_time():
    p, intent, rules = social_at_night()
    morning = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # 08:00 Berlin
    assert decide_send(intent, p, [], rules, intent.due_at) == Hold(morning, "quiet_hours")
    assert decide_send(intent, p, [], rules, morning - timedelta(hours=3)) == \
        Hold(morning, "quiet_hours")
    send = sent(decide_send(intent, p, [], rules, morning))
    assert send.message["why"]["time"]["heldUntil"] == "2026-03-03T07:00:00.000000Z"
    assert send.message["why"]["time"]["quietHours"] == {"start": "22:00", "end": "08:00",
                                                         "stated": False}


def test_quiet_hours_past_the_expiry_suppress():
    p, intent, rules = social_at_night(expires_after="2h")
    assert decide_send(intent, p, [], rules, intent.due_at).reason == "quiet_hours"


def test_quiet_hours_follow_the_person_zone_and_their_own_choice():
    _, intent, rules = social_at_night()
    in_tokyo = person(list(_.events), timezone="Asia/Tokyo")  # 06:30 there: quiet too
    assert decide_send(intent, in_tokyo, [], rules, intent.due_at) == \
        Hold(datetime(2026, 3, 2, 23, 0, tzinfo=UTC), "quiet_hours")
    in_ny = person(list(_.events), timezone="America/New_York")  # 16:30: fine
    sent(decide_send(intent, in_ny, [], rules, intent.due_at))
    night_owl = person(list(_.events), traits={"quietHours": {"start": "02:00",
                                                              "end": "06:00"}})
    sent(decide_send(intent, night_owl, [], rules, intent.due_at))
    unknown_zone = person(list(_.events), timezone=None)  # UTC: 21:30, fine
    sent(decide_send(intent, unknown_zone, [], rules, intent.due_at))


def history(n: int, end: datetime, rule: str = "other", spacing=timedelta(hours=1)):
    return [SentRecord(end - spacing * (i + 1), "email", rule, f"h{i}") for i in range(n)]


def test_frequency_caps_across_channels_day_and_week():
    p = person([social("s1", "Post Liked")])
    intent = intent_of(p, "social_follow_up")
    now = intent.due_at
    sent(decide_send(intent, p, history(2, now), SENDING, now))
    capped = decide_send(intent, p, history(3, now), SENDING, now)
    assert capped == Suppress("cap", "3 messages in the last day (cap 3)")
    week = history(10, now, spacing=timedelta(hours=15))
    assert decide_send(intent, p, week, SENDING, now).reason == "cap"
    # Older than a week: no longer counted.
    old = history(10, now - timedelta(days=8))
    sent(decide_send(intent, p, old, SENDING, now))


def test_the_same_rule_waits_for_its_re_eligibility_window():
    p = person([social("s1", "Post Liked")])
    intent = intent_of(p, "social_follow_up")
    recent = [SentRecord(intent.due_at - timedelta(hours=5), "email", "social_follow_up", "x")]
    assert decide_send(intent, p, recent, SENDING, intent.due_at).reason == "cap"


def test_never_the_same_message_twice():
    p = person([social("s1", "Post Liked")])
    intent = intent_of(p, "social_follow_up")
    before = [SentRecord(intent.due_at, "instagram", "social_follow_up", intent.message_id)]
    assert decide_send(intent, p, before, SENDING, intent.due_at) == \
        Suppress("duplicate", "already sent on instagram")


def test_missing_consent_suppresses():
    p = person([phone("m1", T0, "screen")], consent={"push": False})
    rules = sending(welcome={"channels": ["email", "push", "watch"]})
    intent = intent_of(p, "welcome", rules)
    decision = decide_send(intent, p, [], rules, intent.due_at)
    assert decision == Suppress("consent", "email: no consent; push: opted out; "
                                "watch: no consent")
    assert sent(decide_send(intent, replace(p, consent={"email": True}), [], rules,
                            intent.due_at)).channel == "email"


def test_expired_messages_are_dropped():
    p = person([phone("m1", T0, "screen")])
    intent = intent_of(p, "welcome")
    assert decide_send(intent, p, [], SENDING, intent.expires_at).reason == "expired"
    assert decide_send(intent, p, [], SENDING, intent.due_at - timedelta(seconds=1)) == \
        Hold(intent.due_at, "due")


def test_control_group_is_held_out_deterministically():
    p = person([phone("m1", T0, "screen")])
    rules = rules_with(welcome={"control_share": 1.0})
    intent = intent_of(p, "welcome", rules)
    assert decide_send(intent, p, [], rules, intent.due_at) == HoldOut(intent.due_at, "push")
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(4000)]
    held = [i for i in ids if in_control_group(i, "welcome", 0.1)]
    assert 0.08 < len(held) / len(ids) < 0.12
    assert held == [i for i in ids if in_control_group(i, "welcome", 0.1)]
    assert not any(in_control_group(i, "welcome", 0.0) for i in ids)
    # Held out only when it would have been sent: a capped person is suppressed.
    capped = decide_send(intent, p, history(3, intent.due_at), rules, intent.due_at)
    assert capped.reason == "cap"


def test_forgotten_people_get_nothing():
    p = person([phone("m1", T0, "screen")])
    intent = intent_of(p, "welcome")
    assert decide_send(intent, Person.gone(p.profile_id), [], SENDING, intent.due_at) == \
        Suppress("forgotten")
    assert decide_send(intent, replace(p, forgotten=True), [], SENDING,
                       intent.due_at).reason == "forgotten"


def test_a_rule_turned_off_cancels_its_messages():
    p = person([phone("m1", T0, "screen")])
    intent = intent_of(p, "welcome")
    off = rules_with(welcome={"enabled": False})
    assert decide_send(intent, p, [], off, intent.due_at).reason == "disabled"
    gone = replace(intent, rule="renamed")
    assert decide_send(gone, p, [], SENDING, intent.due_at) == \
        Cancel("disabled", "rule 'renamed' is not enabled")


# --- invariant 5: never without consent, never in quiet hours, never to the forgotten ---
CONSENTS = st.dictionaries(st.sampled_from(["email", "push", "watch", "web", "instagram",
                                            "twitter"]), st.booleans())


@settings(max_examples=80, deadline=None)
@given(event_logs(), CONSENTS, st.sampled_from(["Europe/Berlin", "Asia/Tokyo", None]),
       st.integers(0, 60 * 24 * 3), st.booleans())
def test_sent_messages_respect_consent_quiet_hours_and_forgetting(events, consent, tz,
                                                                  late_minutes, forgotten):
    p = person(events, consent=consent, timezone=tz, forgotten=forgotten)
    zone_name, tz_info = zone_of(p, SENDING.default_timezone)
    for intent in plan_schedules(replace(p, forgotten=False), SENDING):
        now = intent.due_at + timedelta(minutes=late_minutes)
        decision = decide_send(intent, p, [], SENDING, now)
        hypothesis.event(type(decision).__name__)
        if forgotten:
            assert decision == Suppress("forgotten")
        if isinstance(decision, Send):
            assert allowed(decision.channel, consent)
            assert decision.channel in SENDING.rule(intent.rule).channels
            local = now.astimezone(tz_info).time()
            assert not Quiet(time(22), time(8)).contains(local)
            assert now < intent.expires_at
        if isinstance(decision, Hold):
            assert now < decision.until < intent.expires_at
