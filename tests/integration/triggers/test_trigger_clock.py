"""The trigger stage under a clock that jumps forward and back (a stepped NTP correction,
a VM resumed, a host with a wrong clock fixed): no message is lost, none is emitted before
it is due by the clock at that moment, and none is emitted twice (issue #14, 6.10)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streams.triggers.models import parse_utc
from tests.helpers import unique
from tests.profiles_helpers import drop_profiles_schema, with_profiles_schema

from .support import START, Clock, Rig, at, rules

# Quiet hours on (22:00-08:00 UTC: the people state no zone), so that a jump into them
# turns a due message into a hold, which a jump back must neither lose nor send early.
WELCOME = """
quiet_hours = { start = "22:00", end = "08:00" }
[rules.welcome]
kind = "welcome"
template = "welcome-v1"
delay = "5s"
expires_after = "2d"
prefer_origin = true
control_share = 0.0
"""
PEOPLE = ("a", "b", "c", "d", "e")  # first events at START + 0, 1, 2, 3, 4 s: due 5-9 s


@pytest.fixture
async def settings(make_settings):
    s = await with_profiles_schema(make_settings(topic_prefix=unique("tc") + "."))
    yield s
    await drop_profiles_schema(s)


def page(mid: str, anon: str, t: float) -> dict:
    return {"type": "page", "messageId": mid, "anonymousId": anon, "name": "Home",
            "timestamp": at(t), "source": "web"}


async def test_a_clock_jumping_back_and_forth_loses_nothing_sends_nothing_early_or_twice(
        settings):
    clock = Clock(START)
    seen: dict[str, dict] = {}  # message id -> message, as first read
    emitted_at: dict[str, object] = {}  # message id -> the clock when it was emitted

    async with Rig(settings, rules(WELCOME), clock) as rig:
        async def step(**delta) -> set[str]:
            """Move the clock, run the stage until it is idle; the people newly sent."""
            clock.now = START + timedelta(**delta)
            await rig.settle()
            new = set()
            for message in await rig.messages():
                mid = message["messageId"]
                if mid in seen:
                    assert message == seen[mid]  # a redelivery would carry the same id
                    continue
                seen[mid] = message
                emitted_at[mid] = clock.now
                new.add(message["destination"]["value"])
            return new

        await rig.fold(*(page(f"m-{p}", f"anon-{p}", i) for i, p in enumerate(PEOPLE)))
        assert await step() == set()  # planned, nothing due
        assert await step(hours=-2) == set()  # back: still nothing due
        assert await step(seconds=7) == {"anon-a", "anon-b", "anon-c"}  # due 5, 6, 7 s
        # A day back, before every event: new events of a sent and an unsent person
        # re-plan them; nothing is due by this clock, and a sent welcome stays sent.
        await rig.fold(page("m-a2", "anon-a", 20), page("m-d2", "anon-d", 20))
        assert await step(days=-1) == set()
        # Forward into quiet hours (22:00): d and e are due but held until 08:00.
        assert await step(hours=10) == set()
        # Back to just after their due times: the holds stand (late, never early)...
        assert await step(seconds=10) == set()
        # ...and end at 08:00 the next day.
        assert await step(hours=20, seconds=1) == {"anon-d", "anon-e"}
        # Back and forth once more: nothing else, ever.
        assert await step(days=-3) == set()
        assert await step(days=1, hours=1) == set()

    # Nothing lost: one welcome per person, each id once; none early.
    assert sorted(m["destination"]["value"] for m in seen.values()) == \
        [f"anon-{p}" for p in PEOPLE]
    for mid, message in seen.items():
        assert parse_utc(message["emittedAt"]) == emitted_at[mid]
        assert parse_utc(message["dueAt"]) <= emitted_at[mid], message
