"""``streams rebuild``: fold every event in the topics into a fresh schema and compare
the result with the live profiles.

The rebuilt schema is dropped once compared (also when the rebuild fails): kept, it
would hold people forgotten after it was made, out of reach of every later forget.

Forgotten people. The topics still hold their events, and when each forget happened
relative to them is not in the topics. The forgotten identifiers are copied first, and
an event carrying one is placed as the forget left it in the live schema: one of
another person's events stored before the forget still counts, folded without the
forgotten identifiers; one the live schema skipped as ``forgotten`` (it came later, or
was left with no identifier) is skipped; the forgotten person's own events, deleted with
them, are left out. Everything else is folded from the topics alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.db import async_engine, check_schema_name, qualified
from streams.events.topics import TopicKinds
from streams.identity.store import forgotten_among
from streams.identity.tables import forgotten_identifiers
from streams.pipeline.policy import RetryPolicy
from streams.profiles.models import FoldEvent
from streams.profiles.stage import decode
from streams.profiles.store import ProfileStore, create_schema, drop_schema, event_partitions
from streams.profiles.tables import profile_events, skipped_events
from streams.profiles.writes import EVENTS, SKIPPED
from streams.settings import Settings


@dataclass
class RebuildReport:
    """What a rebuild read and how the rebuilt profiles differ from the live ones."""

    schema: str
    records: int = 0
    invalid: int = 0
    rebuilt: int = 0
    live: int = 0
    only_live: list[str] = field(default_factory=list)
    only_rebuilt: list[str] = field(default_factory=list)
    different: dict[str, list[str]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not (self.only_live or self.only_rebuilt or self.different)


def compare(live: dict[str, dict], rebuilt: dict[str, dict], report: RebuildReport) -> None:
    """Fill ``report`` with the differences, per profile and top-level field. Pure."""
    report.live, report.rebuilt = len(live), len(rebuilt)
    report.only_live = sorted(set(live) - set(rebuilt))
    report.only_rebuilt = sorted(set(rebuilt) - set(live))
    for pid in sorted(set(live) & set(rebuilt)):
        fields = sorted(k for k in live[pid].keys() | rebuilt[pid].keys()
                        if live[pid].get(k) != rebuilt[pid].get(k))
        if fields:
            report.different[pid] = fields


async def placed_by_forgets(engine: AsyncEngine, events: list[FoldEvent], schema: str,
                            live_schema: str | None, key: bytes | None
                            ) -> tuple[list[FoldEvent], frozenset[str]]:
    """``events`` without the forgotten people's own (those carrying a forgotten
    identifier, by the digests in ``schema``, that ``live_schema`` neither counts nor
    skipped), and the message ids among the rest that count despite carrying one (the
    live schema counts them). Reads both schemas; blocks."""
    async with engine.begin() as conn:
        await conn.execute(text(f'SET LOCAL search_path TO "{check_schema_name(schema)}"'))
        forgotten = await forgotten_among(
            conn, {i for e in events for i in e.identifiers}, key)
        touched = [e.message_id for e in events if forgotten.intersection(e.identifiers)]
        if not touched:
            return events, frozenset()
        rows = await conn.execute(text(
            f"SELECT {EVENTS.message_id} FROM {qualified(profile_events, live_schema)} "
            f"WHERE {EVENTS.message_id} = ANY(:m)"), {"m": touched})
        counted = frozenset(r[0] for r in rows)
        rows = await conn.execute(text(
            f"SELECT {SKIPPED.message_id} FROM {qualified(skipped_events, live_schema)} "
            f"WHERE {SKIPPED.message_id} = ANY(:m) AND {SKIPPED.reason} = 'forgotten'"),
            {"m": touched})
        gone = set(touched) - counted - {r[0] for r in rows}
    return [e for e in events if e.message_id not in gone], counted


async def rebuild(settings: Settings, progress: Callable[[int, int], None] | None = None,
                  batch: int = 1000, keep: bool = False) -> RebuildReport:
    """Read every event topic from its start to its current end, fold into a new schema
    ``rebuild_<utc time>`` (forgotten identifiers copied over first, so forgotten people
    stay forgotten), compare with the live profiles, and drop the schema (``keep``: leave
    it, for a test that inspects it and drops it itself). Blocks for the whole read."""
    # Microseconds and a random tail: two rebuilds started in one second get two schemas.
    schema = ("rebuild_" + datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
              + secrets.token_hex(2))
    report = RebuildReport(schema=schema)
    engine = async_engine(settings)
    live_schema = settings.profiles_schema or None
    kinds = TopicKinds.for_settings(settings)
    created = False
    try:
        await create_schema(engine, schema)
        created = True
        async with engine.begin() as conn:
            await conn.execute(text(
                f"INSERT INTO {qualified(forgotten_identifiers, schema)} SELECT * FROM "
                f"{qualified(forgotten_identifiers, live_schema)}"))
        rebuilt_store = ProfileStore.for_settings(
            settings.model_copy(update={"profiles_schema": schema, "triggers_enabled": False}),
            engine)
        policy = RetryPolicy(tries=settings.profile_retries)
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = await event_partitions(settings)
            ends = await consumer.end_offsets(tps)
            total = sum(ends.values())
            todo = {tp for tp in tps if ends[tp] > 0}
            consumer.assign(list(todo))
            await consumer.seek_to_beginning(*todo)
            pending: list[FoldEvent] = []
            while todo:
                got = await consumer.getmany(*todo, timeout_ms=1000, max_records=batch)
                for tp, records in got.items():
                    for r in records:
                        if r.offset >= ends[tp]:
                            continue
                        report.records += 1
                        # The worker's own decoding: schema validation, then the fold's view.
                        event = decode((r.topic, r.partition, r.offset, r.key, r.value),
                                       kinds)
                        if isinstance(event, FoldEvent):
                            pending.append(event)
                        else:
                            report.invalid += 1
                    if await consumer.position(tp) >= ends[tp]:
                        todo.discard(tp)
                if len(pending) >= batch or (not todo and pending):
                    batch_events, counted = await placed_by_forgets(
                        engine, pending, schema, live_schema, rebuilt_store.forget_key)
                    pending = []
                    await policy.call(
                        lambda: rebuilt_store.write_batch(batch_events, counted))  # noqa: B023
                if progress:
                    progress(report.records, total)
        finally:
            await consumer.stop()
        live = await ProfileStore(engine, schema=live_schema).all_profiles()
        compare(live, await rebuilt_store.all_profiles(), report)
        return report
    finally:
        try:
            if created and not keep:
                await drop_schema(engine, schema)
        finally:
            await engine.dispose()
