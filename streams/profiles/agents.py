"""The profile stage: consume the four event topics, fold each batch in one transaction.

Offsets are committed by Faust only for acknowledged events, and ``take_events`` acks a
batch only after the loop body returns, i.e. after the PostgreSQL commit. A crash between
the two replays the batch, which the message-id deduplication absorbs: the database
commit must come first, or a crash could move the offset past an event whose effect was
never stored.

Validation: every record is checked against its topic's JSON Schema by the ingestion
domain's ``validate_record`` (producers writing straight to Kafka can send anything);
invalid records go to the DLQ. When nearly every recent record fails, the worker stops
instead (``SystemicFailureDetector``: a bad deploy upstream, not bad events).

Failures: while the database is unreachable the batch is retried with backoff, forever
(the partition waits; nothing is dropped). Any other failure is retried a few times, then
the batch is split and each event written alone; an event that still fails goes to the
DLQ with headers naming its topic, partition, offset and the reason, so one bad event
never blocks its partition.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import faust
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from streams.db import async_engine
from streams.identity.models import rules_from_settings
from streams.ingest.logic import (
    DlqLimit,
    SystemicFailure,
    SystemicFailureDetector,
    TopicKinds,
    dead_letter_for_record,
    validate_record,
)
from streams.ingest.models import InvalidEvent as InvalidRecord
from streams.ingest.store import topic_kinds, utc_now
from streams.profiles.logic import decode_envelope
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


def decode(record: Consumed, kinds: TopicKinds | None = None) -> FoldEvent | InvalidRecord:
    """The one place a consumed record becomes an event: schema validation for its
    topic, then reduction to what the fold needs; or why it cannot be one."""
    checked = validate_record(record.topic, record.partition, record.offset, record.key,
                              record.value, kinds=kinds)
    if isinstance(checked, InvalidRecord):
        return checked
    folded = decode_envelope(checked.payload, checked.event_time)
    if isinstance(folded, InvalidEvent):
        return invalid(record, folded.reason)
    return folded


def invalid(record: Consumed, reason: str, field: str | None = None) -> InvalidRecord:
    """An InvalidRecord for ``record`` (the DLQ's input) with ``reason``."""
    return InvalidRecord(record.topic, record.partition, record.offset, record.key,
                         record.value, reason, field)


def register(app: faust.App, settings: Settings) -> None:
    """Declare the event topics and the agent that folds them on ``app``."""
    topics = app.topic(
        *settings.event_topics, key_serializer="raw", value_serializer="raw", acks=True
    )
    dlq = app.topic(settings.topic(settings.topic_dlq), key_serializer="raw",
                    value_serializer="raw")
    state: dict[str, ProfileStore] = {}
    kinds = topic_kinds(settings)
    detector = SystemicFailureDetector(DlqLimit(
        settings.dlq_max_invalid_ratio, settings.dlq_window, settings.dlq_min_events))

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
            decoded = [decode(r, kinds) for r in records]
            try:
                # Before any dead letter of this batch is sent: a tripped limit leaves the
                # whole batch unacknowledged, to be read again once the cause is fixed.
                detector.observe(
                    sum(1 for d in decoded if not isinstance(d, InvalidRecord)),
                    [d.reason for d in decoded if isinstance(d, InvalidRecord)],
                )
            except SystemicFailure as exc:
                log.critical("%s", exc)
                # Shutting down would otherwise wait for this unacknowledged batch forever.
                app.conf.stream_wait_empty = False
                exit_if_still_running(SYSTEMIC_EXIT_GRACE)
                await app.crash(exc)  # the worker stops and exits non-zero
                return
            outcome = await process_batch(store(), records, decoded, dlq,
                                          settings.profile_retries)
            log.debug("batch of %d in %.3fs: %s", len(records), time.monotonic() - started,
                      outcome)


# A crashed worker's shutdown can hang in faust's consumer; after this long it exits hard,
# which is safe: the failing batch was never acknowledged, so nothing is lost.
SYSTEMIC_EXIT_GRACE = 20.0


def exit_if_still_running(seconds: float) -> None:
    """Exit the process (status 1) after ``seconds`` unless it has ended by then."""

    def bail() -> None:
        log.critical("shutdown did not finish within %.0fs after a systemic failure; exiting",
                     seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, bail)
    timer.daemon = True
    timer.start()


async def process_batch(store: ProfileStore, records: Sequence[Consumed],
                        decoded: Sequence[FoldEvent | InvalidRecord], dlq,
                        retries: int) -> BatchOutcome | None:
    """Dead-letter the invalid records and write the rest; returns when every record is
    either stored or dead-lettered (blocks while the database is down)."""
    good: list[tuple[Consumed, FoldEvent]] = []
    for record, result in zip(records, decoded, strict=True):
        if isinstance(result, InvalidRecord):
            await dead_letter(dlq, result)
        else:
            good.append((record, result))
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
            await dead_letter(
                dlq, invalid(record, f"processing failed: {type(exc).__name__}: {exc}"))
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


async def dead_letter(dlq, err: InvalidRecord) -> None:
    """Send a record to the DLQ (headers name its topic, partition, offset and the
    reason; the value is an ``events.dlq`` document). Waits for the broker's ack, so the
    batch's offsets are committed only after it."""
    letter = dead_letter_for_record(err, utc_now())
    fut = await dlq.send(key=letter.key, value=letter.value, headers=letter.headers)
    await fut
    log.warning("dead-lettered %s[%d]@%d: %s", err.topic, err.partition, err.offset,
                err.reason)
