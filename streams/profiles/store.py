"""PostgreSQL writes for the profile stage: one transaction per batch, idempotent upserts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = MetaData()

event_log = Table(
    "event_log",
    metadata,
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("message_id", Text, nullable=False),
    Column("key", Text),
    Column("payload", JSONB, nullable=False),
    Column("event_time", DateTime(timezone=True)),
    Column("stored_at", DateTime(timezone=True)),
)


@dataclass(frozen=True)
class LoggedEvent:
    """One consumed record as it is stored: where it came from and what it said."""

    topic: str
    partition: int
    offset: int
    message_id: str
    key: str | None
    payload: dict
    event_time: datetime | None


class ProfileStore:
    """Writes batches of consumed events. Every method blocks on the database (async)."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def write_batch(self, events: Sequence[LoggedEvent]) -> int:
        """Store a batch in one transaction; returns rows newly inserted.

        Redelivered records (same topic/partition/offset) insert nothing, so a batch that
        is replayed after a crash between this commit and the Kafka offset commit has
        no second effect. Raises SQLAlchemy's DBAPIError when the database fails.
        """
        if not events:
            return 0
        rows = [
            {
                "topic": e.topic, "partition": e.partition, "offset": e.offset,
                "message_id": e.message_id, "key": e.key, "payload": e.payload,
                "event_time": e.event_time,
            }
            for e in events
        ]
        stmt = insert(event_log).values(rows).on_conflict_do_nothing()
        async with self.engine.begin() as conn:
            result = await conn.execute(stmt)
        return result.rowcount or 0

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
