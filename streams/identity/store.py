"""PostgreSQL side of the identity graph: locks and lookups (tables in ``tables.py``).

Locking. Two workers may touch one interaction component at once (identifiers chain
across partitions). A batch takes transaction-level advisory locks, always in the same
order: first one per identifier it carries (sorted), then one per component those
identifiers belong to (sorted), re-reading the identifiers until their components are
all locked. A lock taken out of order after a concurrent merge can deadlock; PostgreSQL
then aborts one transaction and the batch is retried, so progress is kept either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.db import SqlNames, metadata
from streams.identity.tables import (
    component_id_seq,
    components,
    forgotten_identifiers,
    identifier_to_profile,
    profile_id_to_survivor,
    profile_merges,
)

__all__ = [
    # The tables (defined in streams.identity.tables) and their quoted names.
    "metadata", "component_id_seq", "components", "identifier_to_profile", "profile_merges",
    "profile_id_to_survivor", "forgotten_identifiers", "IDS", "FORGOTTEN", "MERGES",
    "SURVIVORS",
    "IDENTIFIER_LOCK_CLASS", "COMPONENT_LOCK_CLASS", "identifier_digest", "json_list",
    "text_array", "bigint_array", "lock_identifiers", "lock_components", "components_of",
    "lock_and_map", "forgotten_among", "profile_for_identifier", "survivor_of", "merges_of",
]

# Quoted table and column names for the hand-written statements below (and the profile
# store's), read from the tables once at import: the layout is written in one place.
IDS = SqlNames(identifier_to_profile)
FORGOTTEN = SqlNames(forgotten_identifiers)
MERGES = SqlNames(profile_merges)
SURVIVORS = SqlNames(profile_id_to_survivor)

IDENTIFIER_LOCK_CLASS = 0x5F49
COMPONENT_LOCK_CLASS = 0x5F43


def identifier_digest(identifier: str) -> bytes:
    """SHA-256 of ``TYPE:VALUE``: how a forgotten identifier is remembered."""
    return hashlib.sha256(identifier.encode()).digest()


# Hot-path list parameters travel as one JSON array (dumped by orjson in C) and are
# unpacked by PostgreSQL: psycopg adapts a Python list element by element in Python,
# which cost several milliseconds per statement on 1,000-element batches.
def json_list(values: Iterable) -> str:
    """``values`` as a JSON array, for ``text_array`` and ``bigint_array`` below."""
    return orjson.dumps(list(values)).decode()


def text_array(name: str) -> str:
    """SQL for a text[] built from the JSON-array parameter ``name``."""
    return f"ARRAY(SELECT jsonb_array_elements_text(CAST(:{name} AS jsonb)))"


def bigint_array(name: str) -> str:
    """SQL for a bigint[] built from the JSON-array parameter ``name``."""
    return f"ARRAY(SELECT CAST(jsonb_array_elements(CAST(:{name} AS jsonb)) AS bigint))"


# The lookups, built once.
_COMPONENTS_OF = text(
    f"SELECT {IDS.identifier}, {IDS.component_id} FROM {IDS} "
    f"WHERE {IDS.identifier} = ANY({text_array('ids')})")
_FORGOTTEN_AMONG = text(
    f"SELECT {FORGOTTEN.identifier_sha256} FROM {FORGOTTEN} "
    f"WHERE {FORGOTTEN.identifier_sha256} = ANY(ARRAY("
    "SELECT decode(jsonb_array_elements_text(CAST(:d AS jsonb)), 'hex')))")
_PROFILE_FOR_IDENTIFIER = text(
    f"SELECT {IDS.profile_id} FROM {IDS} WHERE {IDS.identifier} = :i")
_SURVIVOR_OF = text(
    f"SELECT {SURVIVORS.profile_id} FROM {SURVIVORS} "
    f"WHERE {SURVIVORS.old_id} = CAST(:p AS uuid)")
_MERGES_OF = text(
    f"SELECT {MERGES.survivor_id}, {MERGES.merged_id}, {MERGES.message_id}, {MERGES.rule}, "
    f"{MERGES.event_time} FROM {MERGES} WHERE {MERGES.survivor_id} = CAST(:p AS uuid) "
    f"OR {MERGES.survivor_id} IN (SELECT {SURVIVORS.old_id} FROM {SURVIVORS} "
    f"WHERE {SURVIVORS.profile_id} = CAST(:p AS uuid)) "
    f"ORDER BY {MERGES.event_time}, {MERGES.message_id}")


def _lock_key(identifier: str) -> int:
    return int.from_bytes(hashlib.blake2b(identifier.encode(), digest_size=4).digest(),
                          "big", signed=True)


def _component_lock_key(component_id: int) -> int:
    return int(component_id) & 0x7FFFFFFF


async def _lock(conn: AsyncConnection, lock_class: int, keys: Iterable[int]) -> None:
    ordered = sorted(set(keys))
    if not ordered:
        return
    # unnest keeps the array's order, so the locks are taken in ascending order.
    await conn.execute(
        text("SELECT count(pg_advisory_xact_lock(:cls, CAST(k AS int))) FROM "
             f"unnest({bigint_array('keys')}) k"),
        {"cls": lock_class, "keys": json_list(ordered)},
    )


async def lock_identifiers(conn: AsyncConnection, identifiers: Iterable[str]) -> None:
    """Take the transaction's advisory locks on ``identifiers`` (blocks until granted)."""
    await _lock(conn, IDENTIFIER_LOCK_CLASS, (_lock_key(i) for i in identifiers))


async def lock_components(conn: AsyncConnection, component_ids: Iterable[int]) -> None:
    """Take the transaction's advisory locks on components (blocks until granted)."""
    await _lock(conn, COMPONENT_LOCK_CLASS, (_component_lock_key(c) for c in component_ids))


async def components_of(conn: AsyncConnection, identifiers: list[str]) -> dict[str, int]:
    """identifier -> component id, for the identifiers that have one."""
    if not identifiers:
        return {}
    rows = await conn.execute(_COMPONENTS_OF, {"ids": json_list(identifiers)})
    return {r[0]: r[1] for r in rows}


async def lock_and_map(conn: AsyncConnection, identifiers: list[str]) -> dict[str, int]:
    """Lock ``identifiers`` and every component they belong to; returns identifier ->
    component as it stands under the locks (stable until the transaction ends)."""
    await lock_identifiers(conn, identifiers)
    locked: set[int] = set()
    while True:
        mapping = await components_of(conn, identifiers)
        missing = set(mapping.values()) - locked
        if not missing:
            return mapping
        await lock_components(conn, missing)
        locked |= missing


async def forgotten_among(conn: AsyncConnection, identifiers: Iterable[str]) -> frozenset[str]:
    """The identifiers in ``identifiers`` that belong to a forgotten person."""
    by_digest = {identifier_digest(i): i for i in identifiers}
    if not by_digest:
        return frozenset()
    rows = await conn.execute(_FORGOTTEN_AMONG, {"d": json_list(d.hex() for d in by_digest)})
    return frozenset(by_digest[bytes(r[0])] for r in rows)


async def profile_for_identifier(conn: AsyncConnection, identifier: str) -> str | None:
    """The profile id holding ``identifier``, or None."""
    row = (await conn.execute(_PROFILE_FOR_IDENTIFIER, {"i": identifier})).first()
    return str(row[0]) if row and row[0] else None


async def survivor_of(conn: AsyncConnection, profile_id: str) -> str | None:
    """The live profile a merged-away or replaced profile id now answers as, or None."""
    row = (await conn.execute(_SURVIVOR_OF, {"p": profile_id})).first()
    return str(row[0]) if row else None


async def merges_of(conn: AsyncConnection, profile_id: str) -> list[dict]:
    """The merge history of a profile (merges it survived), oldest event first."""
    rows = await conn.execute(_MERGES_OF, {"p": profile_id})
    return [{"survivor": str(r[0]), "merged": str(r[1]), "message_id": r[2], "rule": r[3],
             "event_time": r[4]} for r in rows]
