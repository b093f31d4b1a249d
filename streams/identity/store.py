"""PostgreSQL side of the identity graph: locks and lookups (tables in ``tables.py``).

Locking. Two workers may touch one interaction component at once (identifiers chain
across partitions). A batch takes transaction-level advisory locks, always in the same
order: first one per identifier it carries (sorted), then one per component those
identifiers belong to (sorted), re-reading the identifiers until their components are
all locked. A lock taken out of order after a concurrent merge can deadlock; PostgreSQL
then aborts one transaction and the batch is retried, so progress is kept either way.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.credentials import forget_digest, legacy_digest
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
    "lock_and_map", "forgotten_among", "remember_forgotten", "profile_for_identifier",
    "survivor_of", "merges_of",
]

# Quoted table and column names for the hand-written statements below (and the profile
# store's), read from the tables once at import: the layout is written in one place.
IDS = SqlNames(identifier_to_profile)
FORGOTTEN = SqlNames(forgotten_identifiers)
MERGES = SqlNames(profile_merges)
SURVIVORS = SqlNames(profile_id_to_survivor)

IDENTIFIER_LOCK_CLASS = 0x5F49
COMPONENT_LOCK_CLASS = 0x5F43


def identifier_digest(identifier: str, key: bytes | None) -> bytes:
    """How a forgotten identifier is remembered: HMAC-SHA256 of ``TYPE:VALUE`` under the
    forget key; without a key (tests, tools) the unkeyed SHA-256 of old."""
    return forget_digest(identifier, key) if key is not None else legacy_digest(identifier)


@functools.lru_cache(maxsize=32_768)
def _digests(identifier: str, key: bytes | None) -> tuple[bytes, bytes]:
    """The keyed and the legacy digest of ``identifier``. Every batch asks for those of
    each identifier it carries (about 4.5 us a pair), and a person's identifiers come
    back batch after batch: kept for the most recent (a few MiB at most)."""
    return identifier_digest(identifier, key), legacy_digest(identifier)


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
_REMEMBER_FORGOTTEN = text(
    f"INSERT INTO {FORGOTTEN} ({FORGOTTEN.identifier_sha256}) VALUES (:d) "
    "ON CONFLICT DO NOTHING")
_FORGET_LEGACY = text(
    f"DELETE FROM {FORGOTTEN} WHERE {FORGOTTEN.identifier_sha256} = ANY(ARRAY("
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


# unnest keeps the array's order, so the locks are taken in ascending order.
_LOCK = text("SELECT count(pg_advisory_xact_lock(:cls, CAST(k AS int))) FROM "
             f"unnest({bigint_array('keys')}) k")


def _lock_key(identifier: str) -> int:
    """The advisory lock key of ``identifier``: its CRC-32 as a signed 32-bit int. Only
    spreads identifiers over keys (two sharing one merely wait for each other); CRC-32
    does that at a fifth of BLAKE2b's cost, asked for every identifier of every batch.
    Every process locking identifiers must use the same function: a worker of an
    earlier version (BLAKE2b) cannot share a consumer group with this one."""
    key = zlib.crc32(identifier.encode())
    return key - 0x1_0000_0000 if key & 0x8000_0000 else key


def _component_lock_key(component_id: int) -> int:
    return int(component_id) & 0x7FFFFFFF


async def _lock(conn: AsyncConnection, lock_class: int, keys: Iterable[int]) -> None:
    ordered = sorted(set(keys))
    if not ordered:
        return
    await conn.execute(_LOCK, {"cls": lock_class, "keys": json_list(ordered)})


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


async def forgotten_among(conn: AsyncConnection, identifiers: Iterable[str],
                          key: bytes | None = None) -> frozenset[str]:
    """The identifiers in ``identifiers`` that belong to a forgotten person, found by
    their keyed digest or by the unkeyed SHA-256 that rows forgotten before the forget
    key hold. A row of the old form that matches is re-keyed on the way (its value is
    known at this moment only). Blocks on the database; use within a transaction."""
    identifiers = set(identifiers)
    if not identifiers:
        return frozenset()
    pairs = [(i, _digests(i, key)) for i in identifiers]
    keyed = {d[0]: i for i, d in pairs}
    legacy = {d[1]: i for i, d in pairs} if key is not None else {}
    rows = await conn.execute(
        _FORGOTTEN_AMONG, {"d": json_list(d.hex() for d in (*keyed, *legacy))})
    found = [bytes(r[0]) for r in rows]
    old = [d for d in found if d in legacy and d not in keyed]
    if old:
        await remember_forgotten(conn, [legacy[d] for d in old], key)
        await conn.execute(_FORGET_LEGACY, {"d": json_list(d.hex() for d in old)})
    return frozenset(keyed.get(d) or legacy[d] for d in found)


async def remember_forgotten(conn: AsyncConnection, identifiers: Iterable[str],
                             key: bytes | None) -> None:
    """Keep the digests of forgotten ``identifiers`` (never their values). Blocks."""
    params = [{"d": identifier_digest(i, key)} for i in identifiers]
    if params:
        await conn.execute(_REMEMBER_FORGOTTEN, params)


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
