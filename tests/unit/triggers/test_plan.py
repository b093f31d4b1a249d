"""plan_schedules: each built-in rule fires, exits, re-eligibility, stable ids, and the
plan depends only on the set of events."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.triggers.logic import cancel_reason, plan_rule, plan_schedules
from streams.triggers.models import Intent, message_id_for
from tests.unit.triggers.factories import (
    RULES,
    T0,
    at,
    ev,
    event_logs,
    only,
    person,
    phone,
    social,
    view,
    watch,
)

PROPS = settings(max_examples=80, deadline=None)


def kinds(intents: list[Intent]) -> list[str]:
    return [i.kind for i in intents]


def test_welcome_fires_for_the_first_event_on_its_channel_and_device():
    p = person([phone("m2", at(minutes=5)), phone("m1", T0, "screen")])
    [intent] = plan_rule(p, RULES.rule("welcome"))
    assert intent.trigger_events == ("m1",)
    assert intent.trigger_time == T0
    assert intent.due_at == T0 + timedelta(seconds=5)
    assert intent.expires_at == intent.due_at + timedelta(days=1)
    assert (intent.origin_channel, intent.origin_device) == ("push", "phone-1")
    assert intent.message_id == message_id_for("welcome", "first", ["m1"])


def test_welcome_of_a_newcomer_is_superseded_when_merged_into_a_known_person():
    newcomer = person([view("new-1", at(days=30))])
    [welcome] = plan_rule(newcomer, RULES.rule("welcome"))
    merged = person([view("old-1", T0), view("new-1", at(days=30))],
                    profile_id="00000000-0000-4000-8000-000000000009")
    [known] = plan_rule(merged, RULES.rule("welcome"))
    assert known.trigger_events == ("old-1",)
    assert welcome.message_id not in {i.message_id for i in plan_schedules(merged, RULES)}
    assert cancel_reason(welcome, merged, RULES) == "superseded"
    assert cancel_reason(known, merged, RULES) is None


def test_browse_abandonment_fires_on_the_third_view_of_a_category():
    events = [view(f"v{i}", at(minutes=10 * i), category="running", item=f"shoe-{i}")
              for i in range(3)]
    intents = plan_rule(person(events), only("browse_abandonment", scopes=["category"])
                        .rule("browse_abandonment"))
    [intent] = intents
    assert intent.trigger_events == ("v0", "v1", "v2")
    assert intent.trigger_time == at(minutes=20)
    assert intent.due_at == at(minutes=80)
    assert intent.facts["category"] == "running" and intent.facts["views"] == 3
    assert intent.facts["items"] == ["shoe-2", "shoe-1", "shoe-0"]


def test_browse_abandonment_needs_the_views_within_the_lookback():
    events = [view(f"v{i}", at(hours=13 * i), category="running") for i in range(3)]
    assert plan_rule(person(events), RULES.rule("browse_abandonment")) == []


def test_browse_abandonment_exits_when_the_goal_happens_before_it_is_due():
    events = [view(f"v{i}", at(minutes=i), item="shoe") for i in range(3)]
    bought = ev("buy", at(minutes=30), event="Order Completed")
    rule = RULES.rule("browse_abandonment")
    [intent] = plan_rule(person(events), rule)
    assert plan_rule(person([*events, bought]), rule) == []
    assert cancel_reason(intent, person([*events, bought]), RULES) == "exit"
    # A goal after the due time is a conversion, not an exit: the plan keeps it.
    late = ev("buy", at(hours=3), event="order_completed")
    assert plan_rule(person([*events, late]), rule) == [intent]


def test_views_before_a_goal_do_not_count_again():
    before = [view(f"v{i}", at(minutes=i), item="shoe") for i in range(3)]
    bought = ev("buy", at(minutes=30), event="Order Completed")
    after = [view(f"w{i}", at(minutes=40 + i), item="shoe") for i in range(2)]
    rule = RULES.rule("browse_abandonment")
    assert plan_rule(person([*before, bought, *after]), rule) == []
    third = view("w2", at(minutes=45), item="shoe")
    [intent] = plan_rule(person([*before, bought, *after, third]), rule)
    assert intent.trigger_events == ("w0", "w1", "w2")


def test_re_eligibility_one_message_per_window():
    rule = only("browse_abandonment", scopes=["item"]).rule("browse_abandonment")
    day1 = [view(f"a{i}", at(minutes=i), item="shoe") for i in range(5)]
    day2 = [view(f"b{i}", at(days=1, minutes=i), item="shoe") for i in range(3)]
    day4 = [view(f"c{i}", at(days=4, minutes=i), item="shoe") for i in range(3)]
    intents = plan_rule(person([*day1, *day2, *day4]), rule)
    assert [i.trigger_events for i in intents] == [("a0", "a1", "a2"), ("c0", "c1", "c2")]


def test_cross_device_fires_when_another_device_is_used_and_exits_on_finish():
    started = phone("s", T0, event="Video Started", item="video-7")
    other = watch("w", at(days=-3))
    rule = RULES.rule("cross_device")
    [intent] = plan_rule(person([started, other]), rule)
    assert (intent.origin_channel, intent.origin_device) == ("push", "phone-1")
    assert intent.due_at == at(minutes=30)
    assert intent.facts["item"] == "video-7"
    # Only one device: nothing to continue on.
    assert plan_rule(person([started]), rule) == []
    finished = phone("f", at(minutes=20), event="Video Completed")
    assert plan_rule(person([started, other, finished]), rule) == []


def test_re_engagement_is_keyed_by_the_last_activity():
    rule = RULES.rule("re_engagement")
    first = person([view("v1", T0)])
    [intent] = plan_rule(first, rule)
    assert intent.trigger_events == ("v1",)
    assert intent.due_at == at(days=14)
    later = person([view("v1", T0), view("v2", at(days=3))])
    [replaced] = plan_rule(later, rule)
    assert replaced.trigger_events == ("v2",) and replaced.due_at == at(days=17)
    assert cancel_reason(intent, later, RULES) == "exit"
    # Identify calls are not activity.
    stated = person([view("v1", T0), ev("i", at(days=3), "identify")])
    assert plan_rule(stated, rule) == [intent]


def test_re_engagement_after_each_long_gap_but_not_twice_in_its_window():
    rule = RULES.rule("re_engagement")  # inactive 14d, re-eligible after 30d
    events = [view("a", T0), view("b", at(days=20)), view("c", at(days=40)),
              view("d", at(days=60))]
    intents = plan_rule(person(events), rule)
    # gaps after a (due d14), b (d34: within 30d of d14, skipped), c (d54), d (d74: skip)
    assert [i.trigger_events for i in intents] == [("a",), ("c",)]


def test_social_follow_up_fires_on_listed_actions_only():
    rule = RULES.rule("social_follow_up")
    liked = social("s1", "Post Liked", item="post-3")
    [intent] = plan_rule(person([liked]), rule)
    assert intent.origin_channel == "instagram" and intent.facts["action"] == "like"
    followed = social("s2", "Account Followed", channel="twitter")
    dm = social("s3", "Direct Message Sent", channel="twitter")
    assert plan_rule(person([followed, dm]), rule) == []


def test_disabled_rules_and_forgotten_people_plan_nothing():
    p = person([view("v", T0)])
    assert kinds(plan_schedules(p, only("welcome", enabled=False))) == []
    assert plan_schedules(replace(p, forgotten=True), RULES) == []
    assert kinds(plan_schedules(p, only("welcome"))) == ["welcome"]


def test_now_leaves_out_what_already_expired():
    p = person([view("v", T0)])
    assert kinds(plan_schedules(p, RULES, now=at(days=2))) == ["re_engagement"]
    assert sorted(kinds(plan_schedules(p, RULES, now=T0))) == ["re_engagement", "welcome"]


def test_message_ids_do_not_depend_on_the_profile_id():
    events = [view(f"v{i}", at(minutes=i), item="shoe") for i in range(3)]
    a = plan_schedules(person(events), RULES)
    b = plan_schedules(person(events, profile_id="00000000-0000-4000-8000-0000000000ff"),
                       RULES)
    assert [i.message_id for i in a] == [i.message_id for i in b]
    assert len({i.message_id for i in a}) == len(a) > 1


def test_intent_json_round_trip():
    [intent] = plan_rule(person([phone("m1", T0)]), RULES.rule("welcome"))
    assert Intent.from_json(intent.to_json()) == intent


# --- order independence ---------------------------------------------------------------
@PROPS
@given(event_logs(), st.randoms(use_true_random=False), st.integers(0, 5))
def test_plan_depends_only_on_the_set_of_events(events, rng: random.Random, dups):
    expected = plan_schedules(person(events), RULES)
    shuffled = list(events) + [rng.choice(events) for _ in range(dups)]
    rng.shuffle(shuffled)
    assert plan_schedules(person(shuffled), RULES) == expected


@PROPS
@given(event_logs())
def test_at_most_one_message_per_rule_and_window(events):
    for intent_list in ([i for i in plan_schedules(person(events), RULES) if i.rule == r]
                        for r in RULES.rules):
        for a, b in zip(intent_list, intent_list[1:], strict=False):
            rule = RULES.rule(a.rule)
            assert abs(b.trigger_time - a.trigger_time) >= rule.reeligible_after


@PROPS
@given(event_logs())
def test_every_planned_intent_is_still_wanted(events):
    p = person(events)
    for intent in plan_schedules(p, RULES):
        assert cancel_reason(intent, p, RULES) is None
        assert intent.due_at >= intent.trigger_time
        assert intent.expires_at > intent.due_at


@PROPS
@given(event_logs(), st.integers(0, 2**32))
def test_still_planned_says_whether_the_plan_of_all_events_keeps_an_earlier_intent(events, seed):
    from streams.triggers.logic import still_planned

    # Intents planned from a part of the log, asked of the whole (the emit loop's
    # question): the answer is plan_rule's own.
    part = random.Random(seed).sample(events, k=len(events) // 2)
    whole = person(events)
    for rule in RULES.enabled():
        now = {i.message_id for i in plan_rule(whole, rule)}
        for intent in plan_rule(person(part), rule) + plan_rule(whole, rule):
            assert still_planned(intent, whole, rule) == (intent.message_id in now)
