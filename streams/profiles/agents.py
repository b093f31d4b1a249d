"""The profile stage: consume the four event topics, write each batch in one transaction.

Offsets are committed by Faust only for acknowledged events, and ``take_events`` acks a
batch only after the loop body returns, i.e. after the PostgreSQL commit. A crash between
the two replays the batch, which the idempotent writes absorb: the database commit must
come first, or a crash could move the offset past an event whose effect was never stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import faust
from sqlalchemy.exc import DBAPIError, OperationalError

from streams.db import async_engine

# --- ingest: processing-side validation and dead letters (streams/ingest) ---
from streams.ingest.logic import (
    DlqLimit,
    InvalidEvent,
    SystemicFailure,
    SystemicFailureDetector,
    dead_letter_for_record,
    validate_record,
    validation_outcomes,
)
from streams.ingest.store import topic_kinds, utc_now

# --- end ingest ---
from streams.profiles.store import ProfileStore
from streams.settings import Settings

log = logging.getLogger(__name__)

RETRY_INITIAL = 0.5
RETRY_MAX = 15.0


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
            state["store"] = ProfileStore(async_engine(settings))
        return state["store"]

    kinds = topic_kinds(settings)
    detector = SystemicFailureDetector(DlqLimit(
        settings.dlq_max_invalid_ratio, settings.dlq_window, settings.dlq_min_events))

    @app.agent(topics, name="fold_events_into_profiles")
    async def fold_events_into_profiles(stream):
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            good, bad = validation_outcomes(
                validate_record(m.topic, m.partition, m.offset, m.key, m.value, kinds=kinds)
                for m in (event.message for event in batch)
            )
            try:
                # Before any dead letter of this batch is sent: a tripped limit leaves the
                # whole batch unacknowledged, to be read again once the cause is fixed.
                detector.observe(len(good), [err.reason for err in bad])
            except SystemicFailure as exc:
                log.critical("%s", exc)
                # Shutting down would otherwise wait for this unacknowledged batch forever;
                # leaving it unacknowledged (so it is read again after the fix) is the point.
                app.conf.stream_wait_empty = False
                exit_if_still_running(SYSTEMIC_EXIT_GRACE)
                await app.crash(exc)  # the worker stops and exits non-zero
                return
            for err in bad:
                await dead_letter(dlq, err)
            await write_with_retry(store(), good)


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


async def dead_letter(dlq: faust.TopicT, err: InvalidEvent) -> None:
    """Send an invalid record to the DLQ with headers naming where it came from and why."""
    letter = dead_letter_for_record(err, utc_now())
    fut = await dlq.send(key=letter.key, value=letter.value, headers=letter.headers)
    await fut  # wait for the broker's ack before the batch's offsets may be committed
    log.warning("dead-lettered %s[%d]@%d: %s", err.topic, err.partition, err.offset, err.reason)


async def write_with_retry(store: ProfileStore, events: list) -> int:
    """Write a batch, pausing and retrying while the database is unreachable; never drops.

    Blocks the partition's progress while the database is down, which is the point: the
    offsets stay where they are until the batch is stored.
    """
    delay = RETRY_INITIAL
    while True:
        try:
            return await store.write_batch(events)
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(
                exc, OperationalError
            ):
                raise
            log.warning("database unavailable (%s); retrying in %.1fs",
                        type(exc.orig).__name__ if exc.orig else type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
