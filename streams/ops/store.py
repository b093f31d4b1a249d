"""Pipeline figures from PostgreSQL: profiles, merges, messages scheduled and sent, ...

Other domains own these tables and may not have created them yet (or ever, in a given
deployment), so every figure is read only when its table exists; one that cannot be read
is reported as unavailable with the reason, never as zero. Read-only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.ops.models import PipelineFigure

log = logging.getLogger(__name__)

# Bounds a count on a very large table, so a slow figure cannot hold the sampler up.
STATEMENT_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class FigureQuery:
    """Where one pipeline figure comes from: candidate (table, query) pairs, the first
    whose table exists being used (so a figure survives a table's renaming)."""

    name: str
    label: str
    sources: tuple[tuple[str, str], ...]

    @property
    def tables(self) -> str:
        return ", ".join(table for table, _ in self.sources)


# The one place naming the other domains' tables; align here when a schema changes.
# profile_events supersedes 0001's event_log in the profiles branch (profiles_0001).
FIGURES: tuple[FigureQuery, ...] = (
    FigureQuery("events_stored", "Events stored", (
        ("profile_events", "SELECT count(*) FROM profile_events"),
        ("event_log", "SELECT count(*) FROM event_log"),
    )),
    FigureQuery("profiles", "Profiles", (("profiles", "SELECT count(*) FROM profiles"),)),
    FigureQuery("merges", "Merges",
                (("profile_merges", "SELECT count(*) FROM profile_merges"),)),
    FigureQuery("messages_scheduled", "Messages scheduled",
                (("scheduled_messages", "SELECT count(*) FROM scheduled_messages"),)),
    FigureQuery("messages_sent", "Messages sent", (
        ("scheduled_messages",
         "SELECT count(*) FROM scheduled_messages WHERE sent_at IS NOT NULL"),
    )),
    # Events carrying a forgotten person's identifier, suppressed by the profile stage.
    FigureQuery("suppressed_events", "Suppressed events", (
        ("skipped_events", "SELECT count(*) FROM skipped_events WHERE reason = 'forgotten'"),
    )),
)


async def read_pipeline_figures(
    engine: AsyncEngine, queries: tuple[FigureQuery, ...] = FIGURES
) -> tuple[PipelineFigure, ...]:
    """Read every figure; absent tables and failing queries give unavailable figures.

    Never raises for a database problem: an unreachable database makes every figure
    unavailable ("database unreachable"). Blocks on the database (async).
    """
    figures: list[PipelineFigure] = []
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            for q in queries:
                source = None
                for table, query in q.sources:
                    if await conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"),
                                         {"t": table}):
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
                        value = await conn.scalar(text(query))
                except DBAPIError as exc:
                    # A column renamed or a timeout: say which figure, not the whole SQL.
                    reason = type(exc.orig).__name__ if exc.orig is not None else "error"
                    figures.append(PipelineFigure(q.name, q.label, None,
                                                  f"query on {table} failed ({reason})"))
                    continue
                figures.append(PipelineFigure(q.name, q.label, int(value or 0)))
            await conn.rollback()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("pipeline figures unavailable: %s", type(exc).__name__)
        done = {f.name for f in figures}
        figures.extend(PipelineFigure(q.name, q.label, None, "database unreachable")
                       for q in queries if q.name not in done)
    return tuple(figures)
