"""The profile domain's published change feed: what a stage that follows profiles (the
trigger stage) may read, and nothing else of the profile store.

Every batch and every forget notes the profiles it touched in ``profile_changes`` in its
own transaction. A follower claims changed ids in its transaction (the rows are deleted
when it commits, and a concurrent change of the same profile waits for that, then notes
it again), reads each profile with its events, and finds where a profile merged away or
replaced by a replay went. All functions run on the caller's connection, whose search
path the caller has set to the profiles' schema; they block on the database.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.db import SqlNames
from streams.identity import store as identity_store
from streams.profiles import tables
from streams.profiles.writes import _BEHAVIOUR_KEYS, _IDENTITY_KEYS, _PROVIDED_KEYS

C = SqlNames(tables.profile_changes)
P = SqlNames(tables.profiles)
E = SqlNames(tables.profile_events)

_CLAIM = text(
    f"DELETE FROM {C} WHERE {C.profile_id} IN (SELECT {C.profile_id} FROM {C} "
    f"ORDER BY {C.changed_at}, {C.profile_id} LIMIT :n FOR UPDATE SKIP LOCKED) "
    f"RETURNING {C.profile_id}")
# Which column of ``profiles`` holds each top-level key of the document.
_COLUMN_OF = {**dict.fromkeys(_IDENTITY_KEYS, P.identity),
              **dict.fromkeys(_PROVIDED_KEYS, P.provided),
              **dict.fromkeys(_BEHAVIOUR_KEYS, P.behaviour)}


def _snapshots_sql(keys: tuple[str, ...] | None):
    """One statement for a batch: one JSON text, [[id, document, [event, ...]], ...].
    One value for the whole batch (decoded by orjson in one call) instead of a row per
    profile and per event, and only the document keys asked for: reading people was
    the emit loop's largest cost."""
    if keys is None:
        doc = f"p.{P.identity} || p.{P.provided} || p.{P.behaviour}"
    else:
        doc = "jsonb_build_object(" + ", ".join(
            f"'{k}', p.{_COLUMN_OF[k]} -> '{k}'" for k in keys) + ")"
    return text(
        f"SELECT coalesce(json_agg(json_build_array(p.{P.profile_id}, {doc}, (SELECT "
        f"coalesce(json_agg(e.{E.event}), '[]'::json) FROM {E} e "
        f"WHERE e.{E.profile_id} = p.{P.profile_id}))), '[]'::json)::text FROM {P} p "
        f"WHERE p.{P.profile_id} = ANY(CAST(:p AS uuid[]))")


_FULL = _snapshots_sql(None)
_PENDING = text(f"SELECT count(*) FROM {C}")


@dataclass(frozen=True)
class ProfileSnapshot:
    """A live profile as committed: its document (the shape of
    ``streams.profiles.logic.new_profile``) and its events in compact form
    (``FoldEvent.to_json``), in no particular order."""

    profile_id: str
    document: dict
    events: tuple[dict, ...]


async def claim_changes(conn: AsyncConnection, limit: int) -> list[str]:
    """Up to ``limit`` changed profile ids, oldest change first, removed from the feed
    when the caller's transaction commits (and put back if it rolls back). Ids another
    transaction has claimed are skipped."""
    return [str(r[0]) for r in await conn.execute(_CLAIM, {"n": limit})]


async def pending_changes(conn: AsyncConnection) -> int:
    """How many changed profiles wait to be claimed."""
    return int((await conn.execute(_PENDING)).scalar_one())


async def snapshots(conn: AsyncConnection, profile_ids: list[str],
                    keys: tuple[str, ...] | None = None) -> dict[str, ProfileSnapshot]:
    """The live profiles among ``profile_ids`` with their events; ids that are not live
    (merged away, replaced, forgotten) are absent. With ``keys``, the document has only
    those top-level keys (and ``id``); a key the profile lacks is None. Raises KeyError
    for a key that is not one of the document's."""
    if not profile_ids:
        return {}
    statement = _FULL if keys is None else _keyed(tuple(keys))
    rows = orjson.loads((await conn.execute(statement, {"p": profile_ids})).scalar_one())
    out = {}
    for pid, doc, events in rows:
        doc["id"] = pid
        out[pid] = ProfileSnapshot(pid, doc, tuple(events))
    return out


@functools.cache
def _keyed(keys: tuple[str, ...]):
    return _snapshots_sql(keys)


async def where_is(conn: AsyncConnection, profile_id: str) -> str | None:
    """The live profile a merged-away or replaced id now answers as; None when there is
    none (the person was forgotten)."""
    return await identity_store.survivor_of(conn, profile_id)
