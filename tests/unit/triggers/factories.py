"""Factories for the trigger tests: events, people and the built-in rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from streams.triggers.models import Person, TriggerEvent
from streams.triggers.rules import RuleSet, load_rules

# A Monday, 10:00 UTC (11:00 in Berlin): outside quiet hours everywhere used here.
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RULES = load_rules()


def at(**delta: float) -> datetime:
    """T0 plus a timedelta."""
    return T0 + timedelta(**delta)


def ev(message_id: str, time: datetime = T0, type: str = "track", **kw: Any) -> TriggerEvent:
    """An event; web by default, with the browser's anonymous id."""
    kw.setdefault("source", "web")
    if kw["source"] == "web":
        kw.setdefault("anonymous_id", "anon-web")
    return TriggerEvent(message_id=message_id, time=time, type=type, **kw)


def view(message_id: str, time: datetime = T0, **kw: Any) -> TriggerEvent:
    """A page view (web) or screen view (mobile, when source='mobile')."""
    kind = "screen" if kw.get("source") in ("mobile", "smartwatch") else "page"
    return ev(message_id, time, kind, **kw)


def phone(message_id: str, time: datetime = T0, type: str = "track", **kw: Any) -> TriggerEvent:
    """An event from the phone app (device phone-1)."""
    return ev(message_id, time, type, source="mobile", device_id=kw.pop("device_id", "phone-1"),
              device_type="ios", **kw)


def watch(message_id: str, time: datetime = T0, type: str = "screen", **kw: Any) -> TriggerEvent:
    """An event from the smartwatch (device watch-1)."""
    return ev(message_id, time, type, source="smartwatch", device_id="watch-1",
              device_type="watch", **kw)


def social(message_id: str, name: str, channel: str = "instagram", time: datetime = T0,
           **kw: Any) -> TriggerEvent:
    """A social interaction (track) on a network."""
    return ev(message_id, time, "track", source="social", channel=channel, event=name, **kw)


def person(events: list[TriggerEvent] | tuple = (), **kw: Any) -> Person:
    """A known person: email, phone, watch and instagram handle, consent to all,
    Berlin time, active mostly at 19:00 local."""
    kw.setdefault("profile_id", "00000000-0000-4000-8000-000000000001")
    kw.setdefault("identifiers", ("email:ada@example.com", "anonymous_id:anon-web",
                                  "device_id:phone-1", "device_id:watch-1",
                                  "instagram_handle:ada"))
    kw.setdefault("traits", {"email": "ada@example.com", "firstName": "Ada"})
    kw.setdefault("consent", {"email": True, "push": True, "watch": True, "instagram": True})
    kw.setdefault("timezone", "Europe/Berlin")
    kw.setdefault("hours_local", {19: 10, 11: 2})
    return Person(events=tuple(events), **kw)


def rules_with(**changes: Any) -> RuleSet:
    """The built-in rules with some rules' fields changed: rules_with(welcome={...}),
    or global fields (caps=..., quiet_hours=...)."""
    data = RULES.model_dump()
    for name, value in changes.items():
        if name in data["rules"]:
            data["rules"][name] = {**data["rules"][name], **value}
        else:
            data[name] = value
    return RuleSet.model_validate(data)


def only(name: str, **fields: Any) -> RuleSet:
    """The built-in rule ``name`` alone (others disabled), with fields changed."""
    data = RULES.model_dump()
    for other in data["rules"]:
        data["rules"][other]["enabled"] = other == name
    data["rules"][name].update(fields)
    return RuleSet.model_validate(data)


NAMES = ("Product Viewed", "Order Completed", "Product Added", "Video Started",
         "Video Completed", "Post Liked", "Comment Posted", "Checkout Started")


@st.composite
def event_logs(draw):
    """Events of one person over a few weeks, from every source, with goal events."""
    n = draw(st.integers(1, 30))
    events = []
    for i in range(n):
        time = T0 + timedelta(minutes=draw(st.integers(0, 60 * 24 * 40)))
        maker = draw(st.sampled_from(("view", "phone", "watch", "social", "track")))
        category = draw(st.sampled_from((None, "running", "hiking")))
        item = draw(st.sampled_from((None, "shoe", "tent")))
        name = draw(st.sampled_from(NAMES))
        mid = f"m{i}"
        if maker == "view":
            events.append(view(mid, time, category=category, item=item))
        elif maker == "phone":
            events.append(phone(mid, time, event=name, item=item, category=category))
        elif maker == "watch":
            events.append(watch(mid, time))
        elif maker == "social":
            events.append(social(mid, name, draw(st.sampled_from(("instagram", "twitter"))),
                                 time, item=item))
        else:
            events.append(ev(mid, time, event=name, item=item, category=category))
    if draw(st.booleans()) and len(events) > 1:  # two events at the same moment
        events[1] = replace(events[1], time=events[0].time)
    return events
