"""The trigger stage on the real PostgreSQL and Kafka, with a clock the test moves: the
feed written by the profile store is planned, due messages are emitted once, merges and
forgetting are followed."""

from __future__ import annotations

import pytest

from streams.events.schemas import default_schemas
from streams.triggers import store
from tests.helpers import unique
from tests.profiles_helpers import drop_profiles_schema, with_profiles_schema

from .support import Clock, Rig, at, rules

WELCOME = """
quiet_hours = { start = "22:00", end = "08:00" }
[rules.welcome]
kind = "welcome"
template = "welcome-v1"
delay = "5s"
expires_after = "1d"
prefer_origin = true
control_share = 0.0
"""


@pytest.fixture
async def settings(make_settings):
    s = await with_profiles_schema(make_settings(topic_prefix=unique("tr") + "."))
    yield s
    await drop_profiles_schema(s)


def page(mid: str, anon: str, t: float, **extra) -> dict:
    return {"type": "page", "messageId": mid, "anonymousId": anon, "name": "Home",
            "timestamp": at(t), "source": "web", **extra}


async def newcomers_planned(rig, n: int, start: float = 0) -> None:
    """Fold ``n`` newcomers (one page view each, ``start + i`` seconds in) and plan them
    all."""
    await rig.fold(*(page(f"m{i}", f"anon-{i}", start + i) for i in range(n)))
    while await rig.stage.plan_once():
        pass


async def rows(rig) -> list:
    async with rig.engine.begin() as conn:
        await rig.stage._begin(conn)
        return sorted(await store.rows_of(conn, await _all_profiles(conn)),
                      key=lambda r: r.message_id)


async def _all_profiles(conn):
    from sqlalchemy import text

    return [str(r[0]) for r in await conn.execute(
        text("SELECT DISTINCT profile_id FROM scheduled_messages"))]


async def test_a_newcomer_gets_one_welcome_when_due_and_never_twice(settings):
    clock = Clock()
    async with Rig(settings, rules(WELCOME), clock) as rig:
        await rig.fold(page("m1", "anon-1", 0))
        await rig.settle()
        assert await rig.messages() == []  # scheduled, not yet due
        (row,) = await rows(rig)
        assert row.status == "pending" and row.rule == "welcome"
        clock.advance(seconds=6)
        await rig.settle()
        (message,) = await rig.messages()
        assert default_schemas().message.is_valid(message)
        assert message["rule"] == "welcome" and message["channel"] == "web"
        assert message["destination"]["value"] == "anon-1"
        assert message["messageId"] == row.message_id
        # Another event of the same person, later: no second welcome.
        await rig.fold(page("m2", "anon-1", 30))
        clock.advance(minutes=5)
        await rig.settle()
        assert len(await rig.messages()) == 1
        (row,) = await rows(rig)
        assert row.status == "sent" and row.sent_at == clock.now - __import__(
            "datetime").timedelta(minutes=5)


async def test_a_newcomer_merged_into_a_known_person_before_sending_gets_no_welcome(settings):
    clock = Clock()
    async with Rig(settings, rules(WELCOME), clock) as rig:
        await rig.fold({"type": "identify", "messageId": "k1", "userId": "u-1",
                        "anonymousId": "anon-old", "timestamp": at(-3600), "source": "web",
                        "traits": {"email": "ada@example.test"}})
        clock.now = clock.now  # the known person's welcome is long expired below
        await rig.fold(page("n1", "anon-new", 0))
        await rig.settle()
        before = {r.message_id: r for r in await rows(rig)}
        newcomer = [r for r in before.values() if "n1" in r.intent.trigger_events]
        assert newcomer and newcomer[0].status == "pending"
        # Before it is due, the newcomer logs in: the same user.
        await rig.fold({"type": "identify", "messageId": "n2", "userId": "u-1",
                        "anonymousId": "anon-new", "timestamp": at(2), "source": "web"})
        clock.advance(seconds=10)
        await rig.settle()
        after = {r.message_id: r for r in await rows(rig)}
        assert after[newcomer[0].message_id].status == "cancelled"
        assert after[newcomer[0].message_id].reason == "superseded"
        sent = await rig.messages()
        assert [m["messageId"] for m in sent] != [newcomer[0].message_id]
        assert newcomer[0].message_id not in {m["messageId"] for m in sent}


async def test_forgetting_a_person_deletes_their_messages(settings):
    clock = Clock()
    async with Rig(settings, rules(WELCOME), clock) as rig:
        await rig.fold(page("f1", "anon-f", 0))
        await rig.settle()
        (row,) = await rows(rig)
        assert await rig.profiles.forget(row.profile_id)
        clock.advance(seconds=10)
        await rig.settle()
        assert await rows(rig) == []
        assert await rig.messages() == []


async def test_a_late_cancellation_never_overwrites_a_sent_message(settings):
    # A plan round's cancel that waited behind an emit round's row lock comes in after
    # the row was marked sent: the row stays sent.
    clock = Clock()
    async with Rig(settings, rules(WELCOME), clock) as rig:
        await rig.fold(page("s1", "anon-s", 0))
        await rig.settle()
        clock.advance(seconds=6)
        await rig.settle()
        (row,) = await rows(rig)
        assert row.status == "sent"
        async with rig.engine.begin() as conn:
            await rig.stage._begin(conn)
            await store.decide(conn, [{"m": row.message_id, "s": "cancelled",
                                       "r": "superseded", "at": clock.now, "sent": None,
                                       "msg": None}])
        (after,) = await rows(rig)
        assert after.status == "sent" and after.sent_at == row.sent_at


async def test_two_claims_at_once_take_different_people_and_lock_only_those(settings):
    from sqlalchemy import text

    clock = Clock()
    async with Rig(settings, rules(WELCOME), clock) as rig:
        await newcomers_planned(rig, 6)
        clock.advance(minutes=1)
        async with rig.engine.connect() as a, rig.engine.connect() as b:
            await a.begin()
            await b.begin()
            for conn in (a, b):
                await rig.stage._begin(conn)
            first = (await store.claim_due(a, clock.now, 2)).rows
            second = (await store.claim_due(b, clock.now, 2)).rows
            # The second worker takes the next people instead of coming back empty.
            assert len({r.profile_id for r in first}) == 2
            assert len({r.profile_id for r in second}) == 2
            assert not {r.profile_id for r in first} & {r.profile_id for r in second}
            # The earliest due first, and only the people taken are locked.
            assert [r.due_at for r in first] <= [r.due_at for r in second]
            held = (await a.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"))).scalar_one()
            assert held == 2
            await a.rollback()
            await b.rollback()


async def test_a_claim_after_a_start_skips_earlier_rows_and_the_loop_still_sends_them(settings):
    # Rounds of one person are always full, so the emit loop's claims start where the
    # previous one saw the first pending row; a person planned later whose welcome falls
    # due before that is still sent, in the same drain.
    clock = Clock()
    async with Rig(settings.model_copy(update={"triggers_batch": 1}), rules(WELCOME),
                   clock) as rig:
        await newcomers_planned(rig, 3, start=10)
        clock.advance(minutes=1)
        assert await rig.stage.emit_once() == 1
        assert rig.stage._floor is not None  # a full round: the next claim starts there
        await rig.fold(page("m-early", "anon-early", 0))  # due before every other one
        while await rig.stage.plan_once():
            pass
        async with rig.engine.connect() as conn:
            await conn.begin()
            await rig.stage._begin(conn)
            claim = await store.claim_due(conn, clock.now, 10, after=rig.stage._floor)
            early = {r.message_id for r in await rows(rig)
                     if r.intent.trigger_events == ("m-early",)}
            assert len(early) == 1 and not early & {r.message_id for r in claim.rows}
            assert claim.start is not None and claim.start >= rig.stage._floor
            everything = await store.claim_due(conn, clock.now, 10)
            assert early <= {r.message_id for r in everything.rows}
            assert everything.start == min((r.due_at, r.message_id) for r in everything.rows)
            await conn.rollback()
        await rig.settle()
        sent = [m["why"]["events"][0]["messageId"] for m in await rig.messages()]
        assert sorted(sent) == ["m-early", "m0", "m1", "m2"]


async def test_after_a_full_round_the_next_claim_starts_at_the_last_row_it_locked(settings):
    clock = Clock()
    async with Rig(settings.model_copy(update={"triggers_batch": 2}), rules(WELCOME),
                   clock) as rig:
        await newcomers_planned(rig, 3)
        clock.advance(minutes=1)
        assert await rig.stage.emit_once() == 2
        sent = sorted((r.due_at, r.message_id) for r in await rows(rig) if r.status == "sent")
        assert len(sent) == 2 and rig.stage._floor == sent[-1]
        assert await rig.stage.emit_once() == 1  # the third person, from there
        assert not rig.stage._floor  # not a full round: the next looks from the start


async def test_a_batch_never_waits_for_a_plan_round_and_one_person_is_planned_once_at_a_time(
        settings):
    import asyncio

    from streams.profiles import feed

    clock = Clock()
    async with Rig(settings, rules(WELCOME), clock) as rig:
        await rig.fold(page("m1", "anon-1", 0))
        async with rig.engine.connect() as a:
            await a.begin()
            await rig.stage._begin(a)
            (person,) = await feed.claim_changes(a, 10)
            await store.lock_people(a, [person])
            # A plan round holds the person's change: the next batch about them appends
            # its own change at once (it waited for the round's commit before).
            await asyncio.wait_for(rig.fold(page("m2", "anon-1", 1)), timeout=5)
            # Another round takes that change but waits for the person's lock.
            second = asyncio.create_task(rig.stage.plan_once())
            await asyncio.sleep(0.5)
            assert not second.done()
            await a.commit()
        assert await asyncio.wait_for(second, timeout=5) == 1
        assert await rig.stage.plan_once() == 0
        (row,) = await rows(rig)
        assert row.profile_id == person and row.status == "pending"


TWO_WELCOMES = WELCOME + WELCOME.split("\n", 2)[2].replace("[rules.welcome]",
                                                              "[rules.welcome_too]")


async def test_a_claim_counts_a_person_once_per_due_row_it_read_and_takes_all_their_rows(
        settings):
    # The claim try-locks the person of each due row as it reads the due index, until
    # ``limit`` locks are taken: a person with two rows first in due order takes both
    # locks of a claim of 2 (their lock is re-entrant), and that claim is full.
    from sqlalchemy import text

    clock = Clock()
    async with Rig(settings, rules(TWO_WELCOMES), clock) as rig:
        await newcomers_planned(rig, 3)
        clock.advance(minutes=1)
        async with rig.engine.connect() as a, rig.engine.connect() as b:
            await a.begin()
            await b.begin()
            for conn in (a, b):
                await rig.stage._begin(conn)
            first = await store.claim_due(a, clock.now, 2)
            assert first.full
            assert len(first.rows) == 2 and len({r.profile_id for r in first.rows}) == 1
            assert {r.rule for r in first.rows} == {"welcome", "welcome_too"}
            held = (await a.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"))).scalar_one()
            assert held == 1
            # The rest, in another transaction: both other people, all their rows, in
            # due order; fewer people than asked for, so not full.
            rest = await store.claim_due(b, clock.now, 10)
            assert not rest.full
            assert len(rest.rows) == 4 and len({r.profile_id for r in rest.rows}) == 2
            assert not {r.profile_id for r in first.rows} & {r.profile_id for r in rest.rows}
            keys = [(r.due_at, r.message_id) for r in rest.rows]
            assert keys == sorted(keys) and first.rows[0].due_at <= keys[0][0]
            # The window's start is the first pending row, whoever holds it.
            assert rest.start == first.start == min(
                (r.due_at, r.message_id) for r in first.rows)
            await a.rollback()
            await b.rollback()


async def test_the_rounds_read_by_index_whatever_the_statistics_say(settings):
    # Statistics taken while every row was parked far in the future, then every row
    # made due at once (a burst, the end of quiet hours): the planner believes nothing
    # is due. A round's statements must still read the due index in order and the
    # people's rows off the profile index, not scan or bitmap the whole schedule.
    from sqlalchemy import text

    clock = Clock()
    async with Rig(settings, rules(WELCOME), clock) as rig:
        await newcomers_planned(rig, 60)
        async with rig.engine.begin() as conn:
            await rig.stage._begin(conn)
            await conn.execute(text("UPDATE scheduled_messages SET due_at = 'infinity'"))
            await conn.execute(text("ANALYZE scheduled_messages"))
            await conn.execute(text("UPDATE scheduled_messages SET due_at = :t"),
                               {"t": clock.now})
        people = [r.profile_id for r in await rows(rig)][:10]
        async with rig.engine.connect() as conn:
            await conn.begin()
            await rig.stage._begin(conn)
            plans = {}
            for name, statement, params in (
                    ("claim", store._CLAIM_DUE, {"now": clock.now, "n": 5, "window": 20,
                                                 "fd": store._START[0], "fm": ""}),
                    ("history", store._HISTORY, {"p": "{" + ",".join(people) + "}",
                                                 "since": clock.now})):
                plans[name] = "\n".join(r[0] for r in await conn.execute(
                    text("EXPLAIN " + statement.text), params))
            await conn.rollback()
        for name, plan in plans.items():
            assert "Seq Scan" not in plan and "Bitmap" not in plan, (name, plan)
        assert "Index Scan using scheduled_messages_due" in plans["claim"]
        assert "Index Scan using scheduled_messages_profile" in plans["claim"]
        assert "scheduled_messages_profile" in plans["history"]
