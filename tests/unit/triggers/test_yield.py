"""The trigger stage's loops yield to the profile stage's backlog: over
``triggers_yield_backlog`` events, a round per loop every ``triggers_yield_seconds``;
otherwise rounds follow each other while they find work."""

from __future__ import annotations

import asyncio

from streams.settings import load_settings
from streams.triggers.rules import load_rules
from streams.triggers.stage import TriggerStage


def stage(behind: list[int] | None, **settings) -> TriggerStage:
    s = load_settings().model_copy(update={"triggers_poll_seconds": 0.01, **settings})
    backlog = (lambda: behind[0]) if behind is not None else None
    return TriggerStage(s, engine=None, producer=object(), rules=load_rules(),
                        backlog=backlog)


def busy_rounds() -> tuple[list[int], object]:
    """A round that always finds work, and the count of its calls (``done[0]``)."""
    done = [0]

    async def round_once() -> int:
        done[0] += 1
        await asyncio.sleep(0.001)
        return 1

    return done, round_once


async def rounds_within(trigger: TriggerStage, seconds: float) -> int:
    """How many rounds one loop runs in ``seconds`` when every round finds work."""
    done, round_once = busy_rounds()
    stop = asyncio.Event()
    loop = asyncio.ensure_future(trigger._loop(round_once, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(loop, 2)
    return done[0]


async def test_a_backlog_over_the_limit_spaces_the_rounds_out():
    behind = [5000]
    trigger = stage(behind, triggers_yield_backlog=1000, triggers_yield_seconds=0.3)
    assert trigger.yielding()
    # One round at once (the loop stays alive), then one per 0.3 s: 2 in 0.45 s.
    assert 2 <= await rounds_within(trigger, 0.45) <= 3  # (3 only if the sleep overran)


async def test_no_backlog_a_zero_limit_or_an_unknown_backlog_never_yield():
    for trigger in (stage([10], triggers_yield_backlog=1000),
                    stage([10**9], triggers_yield_backlog=0),
                    stage(None, triggers_yield_backlog=1000)):
        assert not trigger.yielding()
        assert await rounds_within(trigger, 0.2) > 20


async def test_rounds_resume_once_the_fold_catches_up():
    behind = [5000]
    trigger = stage(behind, triggers_yield_backlog=1000, triggers_yield_seconds=60)
    done, round_once = busy_rounds()
    stop = asyncio.Event()
    loop = asyncio.ensure_future(trigger._loop(round_once, stop))
    await asyncio.sleep(0.2)
    assert done[0] == 1  # held back for the next 60 s
    behind[0] = 0
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(loop, 2)
    assert done[0] > 20
