"""The whole state as PostgreSQL holds it, read in the reference's shape (``State``), so
that a test compares every table the profile stage writes, not only the profiles.

Plain SQL on the table names ``docs/profiles.md`` lists ("Tables"); the schema drift
test keeps those names true. A profile's document is stored compact; it is read back
with the store's own decoder (``streams.profiles.codec``), the one thing shared.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.profiles.codec import unpack_profile
from streams.reference.world import State

_QUERIES = {
    "profiles": "SELECT profile_id, document FROM {s}profiles",
    "owners": "SELECT identifier, profile_id FROM {s}identifier_to_profile",
    "merges": "SELECT survivor_id, merged_id, message_id, rule, event_time "
              "FROM {s}profile_merges",
    "events": "SELECT message_id, profile_id FROM {s}profile_events",
    "skipped": "SELECT message_id, reason FROM {s}skipped_events",
    "redirects": "SELECT old_id, profile_id FROM {s}profile_id_to_survivor",
    "forgotten": "SELECT identifier_sha256 FROM {s}forgotten_identifiers",
}


def _str(value: object) -> str | None:
    return None if value is None else str(value)


async def stored_state(engine: AsyncEngine, schema: str | None = None) -> State:
    """Every table of the profile stage in ``schema`` (None: the search path's) as a
    ``State`` (no dead letters: they are in Kafka). Blocks on the database; raises
    SQLAlchemy's DBAPIError."""
    if schema is not None and not schema.replace("_", "").isalnum():
        raise ValueError(f"schema {schema!r} is not a plain name")
    prefix = f'"{schema}".' if schema else ""
    rows = {}
    async with engine.connect() as conn:
        for name, sql in _QUERIES.items():
            rows[name] = (await conn.execute(text(sql.format(s=prefix)))).all()
    state = State()
    state.profiles = {str(r[0]): unpack_profile(r[0], r[1]) for r in rows["profiles"]}
    state.owners = {r[0]: _str(r[1]) for r in rows["owners"]}
    state.merges = sorted((str(a), str(b), c, d, e) for a, b, c, d, e in rows["merges"])
    state.events = {r[0]: str(r[1]) for r in rows["events"]}
    state.skipped = {r[0]: r[1] for r in rows["skipped"]}
    state.redirects = {str(r[0]): str(r[1]) for r in rows["redirects"]}
    state.forgotten = {bytes(r[0]) for r in rows["forgotten"]}
    return state
