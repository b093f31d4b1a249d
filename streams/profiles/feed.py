"""The profile domain's published change feed: what a stage that follows profiles (the
trigger stage) may read, and nothing else of the profile store.

Every batch and every forget notes the profiles it touched in ``profile_changes`` in its
own transaction, appending to a log. A follower claims the oldest rows in its
transaction (they are deleted when it commits; a change noted meanwhile is a new row,
left for the next claim, so a batch never waits for a follower), reads each profile with
its events, and finds where a profile merged away or replaced by a replay went. Two
followers may hold changes of the same profile at once: a follower that must not act on
one person twice at a time serializes that itself (the trigger stage locks each person).
All functions run on the caller's connection, whose search path the caller has set to
the profiles' schema; they block on the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.db import SqlNames, uuid_array
from streams.identity import store as identity_store
from streams.profiles import tables
from streams.profiles.codec import event_doc, unpack
from streams.profiles.logic import new_profile
from streams.profiles.models import iso

C = SqlNames(tables.profile_changes)
P = SqlNames(tables.profiles)
E = SqlNames(tables.profile_events)

# The oldest rows off the seq index (the primary key), skipping rows another follower holds.
_CLAIM = text(
    f"DELETE FROM {C} WHERE {C.seq} IN (SELECT {C.seq} FROM {C} "
    f"ORDER BY {C.seq} LIMIT :n FOR UPDATE SKIP LOCKED) "
    f"RETURNING {C.seq}, {C.profile_id}::text")
# Two statements for a batch of people, whatever its size: their documents, then their
# events (compact forms, decoded here: ``streams.profiles.codec``).
# Ids as text: psycopg would build a uuid.UUID for each, which the caller makes a string.
_DOCUMENTS = text(f"SELECT {P.profile_id}::text, {P.document} FROM {P} "
                  f"WHERE {P.profile_id} = ANY(CAST(:p AS uuid[]))")
_EVENTS = text(f"SELECT {E.profile_id}::text, {E.message_id}, {E.event_time}, {E.event} FROM {E} "
               f"WHERE {E.profile_id} = ANY(CAST(:p AS uuid[]))")
_PENDING = text(f"SELECT count(DISTINCT {C.profile_id}) FROM {C}")


@dataclass(frozen=True)
class ProfileSnapshot:
    """A live profile as committed: its document (the shape of
    ``streams.profiles.logic.new_profile``) and its events in compact form
    (``FoldEvent.to_json``), in no particular order."""

    profile_id: str
    document: dict
    events: tuple[dict, ...]


async def claim_changes(conn: AsyncConnection, limit: int) -> list[str]:
    """The profile ids of up to ``limit`` changes, oldest change first, each id once,
    removed from the feed when the caller's transaction commits (and put back if it
    rolls back). Changes another transaction has claimed are skipped."""
    rows = sorted(await conn.execute(_CLAIM, {"n": limit}))
    return list(dict.fromkeys(pid for _, pid in rows))


async def pending_changes(conn: AsyncConnection) -> int:
    """How many changed profiles wait to be claimed (each once)."""
    return int((await conn.execute(_PENDING)).scalar_one())


async def snapshots(conn: AsyncConnection, profile_ids: list[str],
                    keys: tuple[str, ...] | None = None) -> dict[str, ProfileSnapshot]:
    """The live profiles among ``profile_ids`` with their events; ids that are not live
    (merged away, replaced, forgotten) are absent. With ``keys``, the document has only
    those top-level keys (and ``id``); a key the profile lacks is None. Raises KeyError
    for a key that is not one of the document's."""
    if keys is not None and not _DOCUMENT_KEYS.issuperset(keys):
        raise KeyError(f"not keys of a profile document: {sorted(set(keys) - _DOCUMENT_KEYS)}")
    if not profile_ids:
        return {}
    rows = (await conn.execute(_DOCUMENTS, {"p": uuid_array(profile_ids)})).all()
    if not rows:
        return {}
    documents = {}
    for pid, data in rows:
        doc = unpack(data)
        if keys is not None:
            doc = {k: doc.get(k) for k in keys}
        doc["id"] = pid
        documents[pid] = doc
    events: dict[str, list[dict]] = {pid: [] for pid in documents}
    for pid, message_id, time, data in await conn.execute(_EVENTS,
                                                          {"p": uuid_array(documents)}):
        events[pid].append(event_doc(message_id, iso(time), data))
    return {pid: ProfileSnapshot(pid, doc, tuple(events[pid])) for pid, doc in documents.items()}


# The document's top-level keys (``logic.new_profile``), for ``snapshots(keys=...)``.
_DOCUMENT_KEYS = frozenset(new_profile("", ("", ""))) - {"id"}


async def where_is(conn: AsyncConnection, profile_id: str) -> str | None:
    """The live profile a merged-away or replaced id now answers as; None when there is
    none (the person was forgotten)."""
    return await identity_store.survivor_of(conn, profile_id)
