"""Conversions and per-rule stats."""

from __future__ import annotations

from datetime import timedelta

from streams.triggers.logic import converted, outcome, tally
from streams.triggers.models import Cancel, Hold, HoldOut, Send, Suppress
from tests.unit.triggers.factories import RULES, T0, at, ev, view


def test_a_goal_within_the_window_after_the_send_converts():
    rule = RULES.rule("browse_abandonment")  # goal: order, cart; window 3 days
    bought = [ev("b", at(days=2), event="Order Completed")]
    assert converted(T0, rule, bought)
    assert not converted(at(days=2), rule, bought)  # not after: at the same moment
    assert not converted(T0 - timedelta(days=2), rule, bought)  # too late
    assert not converted(T0, rule, [ev("x", at(hours=1), event="Product Viewed")])


def test_any_activity_converts_a_re_engagement():
    rule = RULES.rule("re_engagement")
    assert converted(T0, rule, [view("v", at(days=1))])
    assert not converted(T0, rule, [ev("i", at(days=1), "identify")])


def test_outcomes():
    assert outcome(Send("email", {}, {})) == ("sent", None)
    assert outcome(Hold(T0, "quiet_hours")) == ("held", "quiet_hours")
    assert outcome(HoldOut(T0, "push")) == ("held_out", None)
    assert outcome(Suppress("cap")) == ("suppressed", "cap")
    assert outcome(Cancel("exit")) == ("cancelled", "exit")


def test_tally_per_rule():
    rows = [
        {"rule": "welcome", "status": "sent", "converted": True},
        {"rule": "welcome", "status": "sent", "converted": False},
        {"rule": "welcome", "status": "held_out", "converted": False},
        {"rule": "welcome", "status": "suppressed", "reason": "consent"},
        {"rule": "welcome", "status": "suppressed", "reason": "consent"},
        {"rule": "welcome", "status": "cancelled", "reason": "exit"},
        {"rule": "welcome", "status": "pending"},
        {"rule": "old_rule", "status": "held"},
    ]
    stats = {s.rule: s for s in tally(rows, RULES)}
    assert set(stats) == {*RULES.rules, "old_rule"}
    welcome = stats["welcome"]
    assert (welcome.scheduled, welcome.sent, welcome.held_out, welcome.pending) == (7, 2, 1, 1)
    assert welcome.suppressed == {"consent": 2} and welcome.cancelled == {"exit": 1}
    assert welcome.lift == 0.5
    assert stats["cross_device"].to_json()["scheduled"] == 0
    assert stats["cross_device"].lift is None
    assert stats["old_rule"].pending == 1


def test_grouped_counts_tally_as_their_rows():
    rows = [{"rule": "welcome", "status": "sent", "reason": None, "converted": True},
            {"rule": "welcome", "status": "sent", "reason": None, "converted": True},
            {"rule": "welcome", "status": "sent", "reason": None, "converted": False},
            {"rule": "welcome", "status": "suppressed", "reason": "cap", "converted": False}]
    grouped = [{"rule": "welcome", "status": "sent", "reason": None, "converted": True,
                "count": 2},
               {"rule": "welcome", "status": "sent", "reason": None, "converted": False,
                "count": 1},
               {"rule": "welcome", "status": "suppressed", "reason": "cap", "converted": False,
                "count": 1}]
    assert [s.to_json() for s in tally(grouped)] == [s.to_json() for s in tally(rows)]
    (welcome,) = tally(grouped)
    assert (welcome.scheduled, welcome.sent, welcome.converted_sent) == (4, 3, 2)
    assert welcome.suppressed == {"cap": 1}
