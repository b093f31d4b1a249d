"""Pipeline figures from PostgreSQL: profiles, merges, messages scheduled and sent, ...

Other domains own these tables and may not have created them yet (or ever, in a given
deployment), so every figure is read only when its table exists; one that cannot be read
is reported as unavailable with the reason, never as zero. Read-only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Executable, Table, func, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.db import in_schema, qualified
from streams.identity.tables import profile_merges
from streams.ops.models import PipelineFigure, TriggerFigures
from streams.profiles.tables import profile_events, profiles, skipped_events
from streams.triggers.tables import scheduled_messages

if TYPE_CHECKING:
    from streams.triggers.rules import RuleSet

log = logging.getLogger(__name__)

# Bounds a count on a very large table, so a slow figure cannot hold the sampler up.
STATEMENT_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class FigureQuery:
    """Where one pipeline figure comes from: candidate (table, query) pairs, the first
    whose table exists being used (so a figure survives a table's renaming).

    A table is a metadata ``Table`` (read in the configured profiles schema) or, for one
    no metadata defines yet, a name looked up on the connection's search path.
    """

    name: str
    label: str
    sources: tuple[tuple[Table | str, Executable], ...]

    @property
    def tables(self) -> str:
        return ", ".join(_name(table) for table, _ in self.sources)


def _name(table: Table | str) -> str:
    return table.name if isinstance(table, Table) else table


def _count(table: Table, *where) -> Executable:
    return select(func.count()).select_from(table).where(*where)


# The one place naming the other domains' tables. The profile, identity and trigger
# tables come from their metadata; profile_events supersedes 0001's event_log
# (profiles_0001).
FIGURES: tuple[FigureQuery, ...] = (
    FigureQuery("events_stored", "Events stored", (
        (profile_events, _count(profile_events)),
        ("event_log", text("SELECT count(*) FROM event_log")),
    )),
    FigureQuery("profiles", "Profiles", ((profiles, _count(profiles)),)),
    FigureQuery("merges", "Merges", ((profile_merges, _count(profile_merges)),)),
    FigureQuery("messages_scheduled", "Messages scheduled",
                ((scheduled_messages, _count(scheduled_messages)),)),
    FigureQuery("messages_sent", "Messages sent", (
        (scheduled_messages, _count(scheduled_messages, scheduled_messages.c.status == "sent")),
    )),
    # Events carrying a forgotten person's identifier, suppressed by the profile stage.
    FigureQuery("suppressed_events", "Suppressed events", (
        (skipped_events, _count(skipped_events, skipped_events.c.reason == "forgotten")),
    )),
)


async def read_pipeline_figures(
    engine: AsyncEngine, queries: tuple[FigureQuery, ...] = FIGURES, schema: str | None = None,
) -> tuple[PipelineFigure, ...]:
    """Read every figure; absent tables and failing queries give unavailable figures.

    The metadata's tables are read in ``schema`` (STREAMS_PROFILES_SCHEMA; None: the
    search path's); raises ValueError for a schema name that is not a plain word.

    Never raises for a database problem: an unreachable database makes every figure
    unavailable ("database unreachable"). Blocks on the database (async).
    """
    options = in_schema(schema)
    figures: list[PipelineFigure] = []
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**options)
            await conn.execute(text(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            for q in queries:
                source = None
                for table, query in q.sources:
                    if await conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"),
                                         {"t": _where(table, schema)}):
                        source = (table, query)
                        break
                if source is None:
                    what = f"table {q.tables} does not" if len(q.sources) == 1 \
                        else f"none of the tables {q.tables}"
                    figures.append(PipelineFigure(q.name, q.label, None, f"{what} exist"))
                    continue
                table, query = source
                try:
                    async with conn.begin_nested():
                        value = await conn.scalar(query)
                except DBAPIError as exc:
                    # A column renamed or a timeout: say which figure, not the whole SQL.
                    reason = type(exc.orig).__name__ if exc.orig is not None else "error"
                    figures.append(PipelineFigure(q.name, q.label, None,
                                                  f"query on {_name(table)} failed ({reason})"))
                    continue
                figures.append(PipelineFigure(q.name, q.label, int(value or 0)))
            await conn.rollback()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("pipeline figures unavailable: %s", type(exc).__name__)
        done = {f.name for f in figures}
        figures.extend(PipelineFigure(q.name, q.label, None, "database unreachable")
                       for q in queries if q.name not in done)
    return tuple(figures)


def _where(table: Table | str, schema: str | None) -> str:
    """The name ``to_regclass`` looks ``table`` up by: in ``schema`` for a metadata table."""
    return qualified(table, schema) if isinstance(table, Table) else table


async def read_trigger_figures(engine: AsyncEngine, schema: str | None = None,
                               rules: RuleSet | None = None) -> TriggerFigures:
    """The trigger stage's per-rule figures (``streams.triggers.reads``), read in
    ``schema`` within STATEMENT_TIMEOUT_MS; every rule of ``rules`` is listed even with
    nothing scheduled.

    Never raises for a database problem: a missing table, a failing query or an
    unreachable database give figures that say why they are unavailable. Blocks on the
    database (async).
    """
    from streams.triggers.reads import ScheduleMissing, read_rule_stats

    try:
        stats = await read_rule_stats(engine, schema, rules, timeout_ms=STATEMENT_TIMEOUT_MS)
    except ScheduleMissing as exc:
        return TriggerFigures((), str(exc))
    except DBAPIError as exc:
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate is not None and not sqlstate.startswith("08"):  # 08: connection
            reason = type(exc.orig).__name__
            log.warning("trigger figures unavailable: %s", reason)
            return TriggerFigures((), f"query on {scheduled_messages.name} failed ({reason})")
        log.warning("trigger figures unavailable: %s", type(exc.orig).__name__)
        return TriggerFigures((), "database unreachable")
    except (SQLAlchemyError, OSError) as exc:
        log.warning("trigger figures unavailable: %s", type(exc).__name__)
        return TriggerFigures((), "database unreachable")
    return TriggerFigures(tuple(s.to_json() for s in stats), None)
