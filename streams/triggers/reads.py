"""Read-only views of the trigger stage's schedule for operators: per-rule stats for
``streams triggers stats``, the /ops page and /metrics.

Blocks on the database (async); raises SQLAlchemy's DBAPIError for a failing query and
``ScheduleMissing`` when the schema has no schedule table (never migrated).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.db import SqlNames, check_schema_name
from streams.triggers import store
from streams.triggers.logic import RuleStats, tally
from streams.triggers.rules import RuleSet
from streams.triggers.tables import scheduled_messages

S = SqlNames(scheduled_messages)

_EXISTS = text(f"SELECT to_regclass('{S}') IS NOT NULL")


class ScheduleMissing(LookupError):
    """The configured schema has no ``scheduled_messages`` table (run ``streams db
    upgrade``, or point STREAMS_PROFILES_SCHEMA at the right schema)."""


async def rule_stats(conn: AsyncConnection, rules: RuleSet | None = None) -> list[RuleStats]:
    """Per-rule stats of the schedule on ``conn`` (search path already set), every rule
    of ``rules`` included even with nothing scheduled; by rule name."""
    return tally(await store.stats_rows(conn), rules)


async def read_rule_stats(engine: AsyncEngine, schema: str | None,
                          rules: RuleSet | None = None,
                          timeout_ms: int | None = None) -> list[RuleStats]:
    """Per-rule stats read in ``schema`` (None: the search path's) in one read-only
    transaction, each statement bounded by ``timeout_ms`` when given. Raises
    ScheduleMissing when the table does not exist, ValueError for a schema name that is
    not a plain word, SQLAlchemy's errors when the database fails."""
    async with engine.connect() as conn, conn.begin():
        await conn.execute(text("SET TRANSACTION READ ONLY"))
        if schema:
            await conn.execute(text(f'SET LOCAL search_path TO "{check_schema_name(schema)}"'))
        if timeout_ms:
            await conn.execute(text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
        if not await conn.scalar(_EXISTS):
            raise ScheduleMissing(f"table {scheduled_messages.name} does not exist")
        return await rule_stats(conn, rules)
