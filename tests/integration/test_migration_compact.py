"""profiles_0003 on a database that holds data: rows written in the JSONB layout of
profiles_0002 read back unchanged through the compact layout after the upgrade, and the
downgrade gives the JSONB rows back byte for byte (as JSON values)."""

from __future__ import annotations

import asyncio

import orjson
from alembic import command
from sqlalchemy import text

from streams import db
from streams.identity.models import IdentityRules
from streams.people.models import Cursor
from streams.people.store import PeopleStore
from streams.profiles.codec import unpack_event
from streams.profiles.logic import replay
from streams.profiles.models import FoldEvent, iso
from streams.profiles.store import ProfileStore
from tests.helpers import scratch_database

EVENTS = [
    FoldEvent("m1", "2026-03-01T10:00:00.000000Z", "page", ("anonymous_id:a1",), "web",
              item="sku-1", category="shoes", timezone="Europe/Paris"),
    FoldEvent("m2", "2026-03-01T10:05:00.000001Z", "identify",
              ("anonymous_id:a1", "user_id:u1", "email:a@example.test"), "mobile",
              traits={"plan": "pro", "name": "Ann"}, consent={"email": True}),
    FoldEvent("m3", "2026-03-02T08:00:00.000000Z", "track", ("user_id:u1",), "social",
              channel="instagram", event="Post Liked", device={"type": "mobile"}),
    # A year under 1000: its canonical text is shorter; its order is still by time.
    FoldEvent("m0", "999-01-02T03:04:05.000006Z", "identify", ("anonymous_id:a2",), "web",
              traits={"plan": "free"}),
]
_IDENTITY = ("created", "identifiers", "merges", "notes")
_PROVIDED = ("traits", "preferences", "consent", "timezone", "groups")


def _old_rows(graph) -> tuple[list[dict], list[dict]]:
    """The rows profiles_0002's layout held for ``graph``: three JSONB columns per
    profile, the whole ``to_json`` per event."""
    profiles = []
    for pid, doc in graph.profiles.items():
        profiles.append({
            "p": pid,
            "i": orjson.dumps({k: doc[k] for k in _IDENTITY}).decode(),
            "v": orjson.dumps({k: doc[k] for k in _PROVIDED}).decode(),
            "b": orjson.dumps({k: v for k, v in doc.items()
                               if k not in _IDENTITY + _PROVIDED + ("id",)}).decode()})
    events = [{"m": e.message_id, "p": graph.final_profile_of(e.message_id),
               "e": orjson.dumps(e.to_json()).decode()} for e in EVENTS]
    return profiles, events


def test_upgrade_keeps_every_profile_and_event_and_downgrade_restores_them(session_settings):
    with scratch_database(session_settings) as settings:
        db.upgrade(settings, "profiles_0002")
        graph = replay(EVENTS, IdentityRules())
        expected = {pid: dict(doc) for pid, doc in graph.profiles.items()}
        profiles, events = _old_rows(graph)
        engine = db.sync_engine(settings)
        with engine.begin() as conn:
            for p in profiles:
                conn.execute(text(
                    "INSERT INTO profiles (profile_id, component_id, identity, provided, "
                    "behaviour) VALUES (CAST(:p AS uuid), 1, CAST(:i AS jsonb), "
                    "CAST(:v AS jsonb), CAST(:b AS jsonb))"), p)
            for e in events:
                conn.execute(text(
                    "INSERT INTO profile_events (message_id, profile_id, event) "
                    "VALUES (:m, CAST(:p AS uuid), CAST(:e AS jsonb))"), e)
        db.upgrade(settings)

        async def read():
            aengine = db.async_engine(settings, pool_size=1, max_overflow=0)
            try:
                store = ProfileStore(aengine)
                stored = await store.all_profiles()
                people = PeopleStore(aengine)
                pid = graph.final_profile_of("m2")
                newest = await people.timeline(pid, None, 10)
                older = await people.timeline(pid, Cursor(newest[0]["t"], newest[0]["m"]), 10)
                alone = graph.final_profile_of("m0")
                return stored, newest, older, await people.timeline(alone, None, 10)
            finally:
                await aengine.dispose()

        stored, newest, older, alone = asyncio.run(read())
        assert stored == expected
        docs = {e.message_id: e.to_json() for e in EVENTS}
        assert [e["m"] for e in newest] == ["m3", "m2", "m1"]
        assert newest == [docs["m3"], docs["m2"], docs["m1"]]
        assert older == [docs["m2"], docs["m1"]]
        assert alone == [docs["m0"]]
        # The time column holds the event's time (a short year padded on the way in).
        with engine.connect() as conn:
            row = conn.execute(text(
                "SELECT event_time, event FROM profile_events WHERE message_id = 'm0'")).one()
        assert iso(row[0]) == EVENTS[3].time
        assert unpack_event("m0", iso(row[0]), row[1]) == EVENTS[3]

        command.downgrade(db.alembic_config(settings), "profiles_0002")
        with engine.connect() as conn:
            back = conn.execute(text(
                "SELECT profile_id, identity, provided, behaviour FROM profiles")).all()
            back_events = dict(conn.execute(text(
                "SELECT message_id, event FROM profile_events")).all())
        assert {str(r[0]): {"id": str(r[0]), **r[1], **r[2], **r[3]} for r in back} == expected
        assert back_events == docs
        engine.dispose()
