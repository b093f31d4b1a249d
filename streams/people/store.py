"""Reads of the person page: find a person, read everything shown about them in one
read-only transaction, read one more page of their timeline.

Every method blocks on the database (async) and raises SQLAlchemy's DBAPIError when a
query fails (a statement over ``timeout_ms`` included). Statements take their names from
the metadata and name no schema: each transaction sets the search path to the
configured profile schema, where the trigger stage's schedule lives too.

Bounded work per request: the timeline reads one page off the index on (profile id,
event time, message id); the identity graph reads the identifier lists of at most
``GRAPH_SCAN`` of the person's earliest events; the schedule at most ``MESSAGES_SHOWN``
rows, newest due first.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.db import SqlNames, check_schema_name
from streams.identity import store as identity_store
from streams.people.models import (
    GRAPH_SCAN,
    MESSAGES_SHOWN,
    Cursor,
    FirstSeen,
    Lookup,
    MessageRow,
    PersonRows,
)
from streams.profiles import tables as profile_tables
from streams.profiles.codec import event_doc
from streams.profiles.models import iso
from streams.profiles.store import row_to_profile
from streams.triggers.tables import scheduled_messages

P = SqlNames(profile_tables.profiles)
E = SqlNames(profile_tables.profile_events)
S = SqlNames(scheduled_messages)

_PROFILE = text(f"SELECT {P.profile_id}, {P.document} "
                f"FROM {P} WHERE {P.profile_id} = CAST(:p AS uuid)")
_EVENT = f"{E.message_id}, {E.event_time}, {E.event}"
# Newest first, strictly before the cursor: a row comparison the index answers in order.
_PAGE = text(f"SELECT {_EVENT} FROM {E} WHERE {E.profile_id} = CAST(:p AS uuid) "
             f"ORDER BY {E.event_time} DESC, {E.message_id} DESC LIMIT :n")
_PAGE_BEFORE = text(
    f"SELECT {_EVENT} FROM {E} WHERE {E.profile_id} = CAST(:p AS uuid) "
    f"AND ({E.event_time}, {E.message_id}) < (CAST(:t AS timestamptz), CAST(:m AS text)) "
    f"ORDER BY {E.event_time} DESC, {E.message_id} DESC LIMIT :n")
# The person's first :cap events in canonical order, for the identity graph (each
# identifier's earliest event is found in Python: the events are stored compact).
_FIRST_EVENTS = text(
    f"SELECT {_EVENT} FROM {E} WHERE {E.profile_id} = CAST(:p AS uuid) "
    f"ORDER BY {E.event_time}, {E.message_id} LIMIT :cap")
_SCHEDULE_EXISTS = text(f"SELECT to_regclass('{S}') IS NOT NULL")
_MESSAGES = text(
    f"SELECT {S.message_id}, {S.rule}, {S.status}, {S.reason}, {S.channel}, {S.due_at}, "
    f"{S.expires_at}, {S.scheduled_at}, {S.decided_at}, {S.sent_at}, {S.intent}, "
    f"{S.message} FROM {S} WHERE {S.profile_id} = CAST(:p AS uuid) "
    f"ORDER BY {S.due_at} DESC, {S.message_id} DESC LIMIT :n")


def _time_param(t: str) -> str:
    """A cursor's canonical event time as PostgreSQL reads it (years under 1000 padded,
    as the store writes them)."""
    return t if len(t) >= 27 else t.rjust(27, "0")


class PeopleStore:
    """Read-only access to people for the person page (forgetting goes through
    ``streams.profiles.store.ProfileStore``). ``schema`` as in ``ProfileStore``."""

    def __init__(self, engine: AsyncEngine, schema: str | None = None,
                 timeout_ms: int = 5000):
        self.engine = engine
        self._set_path = (text(f'SET LOCAL search_path TO "{check_schema_name(schema)}"')
                          if schema else None)
        self._timeout = text(f"SET LOCAL statement_timeout = {int(timeout_ms)}")

    async def _begin(self, conn: AsyncConnection) -> None:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        await conn.execute(self._timeout)
        if self._set_path is not None:
            await conn.execute(self._set_path)

    async def locate(self, lookup: Lookup) -> tuple[str, str | None] | None:
        """(live profile id, the identifier that found it or None) for ``lookup``: a
        merged-away or replaced profile id answers with its survivor. None when no
        profile matches (or the person was forgotten)."""
        async with self.engine.connect() as conn, conn.begin():
            await self._begin(conn)
            if lookup.profile_id is not None:
                pid = await self._live(conn, lookup.profile_id)
                return (pid, None) if pid else None
            for identifier in lookup.identifiers:
                owner = await identity_store.profile_for_identifier(conn, identifier)
                if owner and (pid := await self._live(conn, owner)):
                    return pid, identifier
            return None

    async def _live(self, conn: AsyncConnection, profile_id: str) -> str | None:
        if (await conn.execute(_PROFILE, {"p": profile_id})).first():
            return profile_id
        return await identity_store.survivor_of(conn, profile_id)

    async def person(self, profile_id: str, page: int) -> PersonRows | None:
        """Everything the page shows about the live profile ``profile_id`` (its first
        timeline page of ``page`` events included), read in one snapshot; None when
        there is no such live profile."""
        async with self.engine.connect() as conn, conn.begin():
            await self._begin(conn)
            row = (await conn.execute(_PROFILE, {"p": profile_id})).first()
            if row is None:
                return None
            profile = row_to_profile(row[0], row[1])
            merges = await identity_store.merges_of(conn, profile_id)
            seen, scanned = await self._first_seen(conn, profile_id)
            events = await self._page(conn, profile_id, None, page + 1)
            has_schedule = bool(await conn.scalar(_SCHEDULE_EXISTS))
            messages = await self._messages(conn, profile_id) if has_schedule else []
        return PersonRows(profile=profile, merges=merges, first_seen=seen,
                          scanned_all=scanned < GRAPH_SCAN, messages=messages,
                          events=events, has_more_events=len(events) > page,
                          message_tables=has_schedule)

    async def timeline(self, profile_id: str, before: Cursor | None,
                       n: int) -> list[dict]:
        """Up to ``n`` stored events (``FoldEvent.to_json`` form) of ``profile_id``,
        newest first, strictly before ``before`` when given."""
        async with self.engine.connect() as conn, conn.begin():
            await self._begin(conn)
            return await self._page(conn, profile_id, before, n)

    async def _page(self, conn: AsyncConnection, profile_id: str, before: Cursor | None,
                    n: int) -> list[dict]:
        if before is None:
            rows = await conn.execute(_PAGE, {"p": profile_id, "n": n})
        else:
            rows = await conn.execute(_PAGE_BEFORE, {"p": profile_id, "n": n,
                                                     "t": _time_param(before.time),
                                                     "m": before.message_id})
        return [event_doc(m, iso(t), data) for m, t, data in rows]

    async def _first_seen(self, conn: AsyncConnection,
                          profile_id: str) -> tuple[list[FirstSeen], int]:
        rows = (await conn.execute(_FIRST_EVENTS, {"p": profile_id, "cap": GRAPH_SCAN})).all()
        seen: dict[str, FirstSeen] = {}
        for message_id, time, data in rows:  # canonical order: the first one wins
            doc = event_doc(message_id, iso(time), data)
            identifiers = tuple(doc["i"])
            for identifier in identifiers:
                if identifier not in seen:
                    seen[identifier] = FirstSeen(
                        identifier=identifier, message_id=message_id, time=doc["t"],
                        type=doc["y"], event=doc.get("e"), source=doc.get("s") or "unknown",
                        channel=doc.get("c"), identifiers=identifiers)
        return [seen[i] for i in sorted(seen)], len(rows)

    async def _messages(self, conn: AsyncConnection, profile_id: str) -> list[MessageRow]:
        rows = await conn.execute(_MESSAGES, {"p": profile_id, "n": MESSAGES_SHOWN})
        return [MessageRow(message_id=r[0], rule=r[1], status=r[2], reason=r[3], channel=r[4],
                           due_at=r[5], expires_at=r[6], scheduled_at=r[7], decided_at=r[8],
                           sent_at=r[9], intent=r[10] or {}, message=r[11])
                for r in rows]

    async def explain_page(self, profile_id: str, before: Cursor, n: int) -> dict:
        """PostgreSQL's plan (EXPLAIN ANALYZE, JSON) of one timeline page: tests use it to
        check that a page is read off the index, not by sorting the person's events."""
        async with self.engine.connect() as conn, conn.begin():
            await self._begin(conn)
            statement = text(f"EXPLAIN (ANALYZE, FORMAT JSON) {_PAGE_BEFORE.text}")
            plan = await conn.scalar(statement, {"p": profile_id, "n": n,
                                                 "t": _time_param(before.time),
                                                 "m": before.message_id})
            return plan[0]["Plan"]
