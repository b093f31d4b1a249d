"""The profile stage: consume the four event topics, fold each batch in one transaction.

Offsets are committed by Faust only for acknowledged events, and ``take_events`` acks a
batch only after the loop body returns, i.e. after the PostgreSQL commit. A crash between
the two replays the batch, which the message-id deduplication absorbs: the database
commit must come first, or a crash could move the offset past an event whose effect was
never stored.

Failures: while the database is unreachable the batch is retried with backoff, forever
(the partition waits; nothing is dropped). Any other failure is retried a few times, then
the batch is split and each event written alone; an event that still fails goes to the
DLQ with headers naming its topic, partition, offset and the reason, so one bad event
never blocks its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import faust
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from streams.db import async_engine
from streams.identity.models import rules_from_settings
from streams.profiles.logic import decode_record
from streams.profiles.models import FoldEvent, InvalidEvent
from streams.profiles.store import BatchOutcome, ProfileStore
from streams.settings import Settings

log = logging.getLogger(__name__)

RETRY_INITIAL = 0.5
RETRY_MAX = 15.0


@dataclass(frozen=True)
class Consumed:
    """Where a record came from: enough to dead-letter it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def decode(record: Consumed) -> FoldEvent | InvalidEvent:
    """The one place a consumed record becomes an event (swap in the ingestion
    domain's validator here: it must return a FoldEvent or an InvalidEvent)."""
    return decode_record(record.value)


def register(app: faust.App, settings: Settings) -> None:
    """Declare the event topics and the agent that folds them on ``app``."""
    topics = app.topic(
        *settings.event_topics, key_serializer="raw", value_serializer="raw", acks=True
    )
    dlq = app.topic(settings.topic(settings.topic_dlq), key_serializer="raw",
                    value_serializer="raw")
    state: dict[str, ProfileStore] = {}

    def store() -> ProfileStore:
        if "store" not in state:
            state["store"] = ProfileStore(
                async_engine(settings), rules_from_settings(settings),
                schema=settings.profiles_schema or None)
        return state["store"]

    @app.agent(topics, name="fold_events_into_profiles")
    async def fold_events_into_profiles(stream):
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            started = time.monotonic()
            records = [Consumed(e.message.topic, e.message.partition, e.message.offset,
                                e.message.key, e.message.value) for e in batch]
            outcome = await process_batch(store(), records, dlq, settings.profile_retries)
            log.debug("batch of %d in %.3fs: %s", len(records), time.monotonic() - started,
                      outcome)


async def process_batch(store: ProfileStore, records: Sequence[Consumed], dlq,
                        retries: int) -> BatchOutcome | None:
    """Decode, dead-letter the undecodable, and write the rest; returns when every
    record is either stored or dead-lettered (blocks while the database is down)."""
    good: list[tuple[Consumed, FoldEvent]] = []
    for record in records:
        decoded = decode(record)
        if isinstance(decoded, InvalidEvent):
            await dead_letter(dlq, record, decoded.reason)
        else:
            good.append((record, decoded))
    if not good:
        return None
    try:
        return await write_with_retry(store, [e for _, e in good], retries)
    except Exception as exc:  # noqa: BLE001 - any non-transient failure: isolate it
        log.warning("batch of %d failed (%s); writing its events one by one",
                    len(good), exc)
    for record, event in good:
        try:
            await write_with_retry(store, [event], retries)
        except Exception as exc:  # noqa: BLE001 - this event cannot be processed
            await dead_letter(dlq, record, f"processing failed: {type(exc).__name__}: {exc}")
    return None


def database_unavailable(exc: BaseException) -> bool:
    """True for errors that mean "cannot reach the database" (retry forever), as opposed
    to errors about this batch (retry a few times, then dead-letter)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, ConnectionError | OSError)


async def write_with_retry(store: ProfileStore, events: list[FoldEvent],
                           retries: int) -> BatchOutcome:
    """Write a batch. While the database is unreachable: pause and retry, never drop
    (the offsets stay where they are until the batch is stored). Any other error is
    retried ``retries`` times, then raised."""
    delay = RETRY_INITIAL
    failures = 0
    while True:
        try:
            return await store.write_batch(events)
        except Exception as exc:
            if database_unavailable(exc):
                log.warning("database unavailable (%s); retrying in %.1fs",
                            type(getattr(exc, "orig", None) or exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            failures += 1
            if failures >= retries:
                raise
            log.warning("batch write failed (%s: %s); retry %d/%d", type(exc).__name__, exc,
                        failures, retries)
            await asyncio.sleep(0.05 * failures)


async def dead_letter(dlq, record: Consumed, reason: str) -> None:
    """Send a record to the DLQ with headers naming where it came from and why; waits
    for the broker's ack, so the batch's offsets are committed only after it."""
    headers = {
        "x-original-topic": record.topic.encode(),
        "x-original-partition": str(record.partition).encode(),
        "x-original-offset": str(record.offset).encode(),
        "x-reason": reason.encode()[:1000],
    }
    fut = await dlq.send(key=record.key, value=record.value or b"", headers=headers)
    await fut
    log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset,
                reason)
