"""The profile stage: consume the four event topics, fold each batch in one transaction.

Offsets are committed only after the PostgreSQL commit. Each event's message is held
(``incref``) when its batch is taken, so ``take_events``' own acknowledgement does not
release it; ``finish`` acknowledges the batch once it is stored or dead-lettered. A crash
between the two replays the batch, which the message-id deduplication absorbs: the
database commit must come first, or a crash could move the offset past an event whose
effect was never stored.

Pipelining: batches are folded by ``streams.profiles.folder`` (by default in fold
processes beside the worker) while Faust gathers the next ones; at most
``folder.in_flight`` batches are in flight. Batches in flight together may finish in
any order: the store locks what each batch touches, and Faust commits a partition's
offsets only up to its first unacknowledged event.

Validation: every record is checked against its topic's JSON Schema by the ingestion
domain's ``validate_record`` (producers writing straight to Kafka can send anything);
invalid records go to the DLQ. When nearly every recent record fails, the worker stops
instead (``SystemicFailureDetector``: a bad deploy upstream, not bad events) and the
batch is not acknowledged; its valid events may already be stored, which the
deduplication absorbs when the batch is read again.

Failures: while the database is unreachable the batch is retried with backoff, forever
(the partition waits; nothing is dropped). Any other failure is retried a few times, then
the batch is split and each event written alone; an event that still fails goes to the
DLQ with headers naming its topic, partition, offset and the reason, so one bad event
never blocks its partition.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading

import faust

from streams.ingest.logic import (
    DlqLimit,
    SystemicFailure,
    SystemicFailureDetector,
    dead_letter_for_record,
)
from streams.ingest.models import InvalidEvent as InvalidRecord
from streams.ingest.store import utc_now
from streams.profiles.folder import BatchResult, make_folder
from streams.settings import Settings

log = logging.getLogger(__name__)

# How long a stopping worker waits for the batches in flight to be stored and acknowledged.
STOP_GRACE = 30.0


def register(app: faust.App, settings: Settings) -> None:
    """Declare the event topics and the agent that folds them on ``app``."""
    topics = app.topic(
        *settings.event_topics, key_serializer="raw", value_serializer="raw", acks=True
    )
    dlq = app.topic(settings.topic(settings.topic_dlq), key_serializer="raw",
                    value_serializer="raw")
    detector = SystemicFailureDetector(DlqLimit(
        settings.dlq_max_invalid_ratio, settings.dlq_window, settings.dlq_min_events))

    stopping: list[BaseException] = []  # set once the worker is failing: act no further

    async def finish(stream, batch, raws, folder) -> None:
        """Fold one batch, dead-letter what cannot be stored, then acknowledge it."""
        try:
            result: BatchResult = await folder.fold(raws)
            if stopping:
                return  # another batch failed: leave this one unacknowledged too
            try:
                # Before any dead letter of this batch is sent: a tripped limit leaves the
                # whole batch unacknowledged, to be read again once the cause is fixed.
                detector.observe(result.valid, [r.reason for r in result.invalid])
            except SystemicFailure as exc:
                stopping.append(exc)
                log.critical("%s", exc)
                # Shutting down would otherwise wait for this unacknowledged batch forever.
                app.conf.stream_wait_empty = False
                exit_if_still_running(SYSTEMIC_EXIT_GRACE)
                await app.crash(exc)  # the worker stops and exits non-zero
                return
            for err in (*result.invalid, *result.failed):
                await dead_letter(dlq, err)
            for event in batch:
                await stream.ack(event)
            log.debug("batch of %d: %s", len(batch), result.outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the batch stays unacknowledged
            stopping.append(exc)
            log.exception("folding a batch failed")
            await app.crash(exc)

    @app.agent(topics, name="fold_events_into_profiles")
    async def fold_events_into_profiles(stream):
        folder = make_folder(settings)
        pending: collections.deque[asyncio.Future] = collections.deque()
        try:
            await folder.start()
            batches = stream.take_events(settings.batch_size, within=settings.batch_seconds)
            async for batch in batches:
                raws = []
                for event in batch:
                    message = event.message
                    message.incref()  # released by ``finish``, after the commit
                    raws.append((message.topic, message.partition, message.offset,
                                 message.key, message.value))
                while len(pending) >= folder.in_flight:
                    await pending.popleft()
                pending.append(asyncio.ensure_future(finish(stream, batch, raws, folder)))
        finally:
            unfinished = (await asyncio.wait(pending, timeout=STOP_GRACE))[1] if pending else ()
            if unfinished:
                log.warning("%d batch(es) not stored within %.0fs of stopping; they will be "
                            "read again", len(unfinished), STOP_GRACE)
            folder.close(kill=bool(unfinished))


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


async def dead_letter(dlq, err: InvalidRecord) -> None:
    """Send a record to the DLQ (headers name its topic, partition, offset and the
    reason; the value is an ``events.dlq`` document). Waits for the broker's ack, so the
    batch's offsets are committed only after it."""
    letter = dead_letter_for_record(err, utc_now())
    fut = await dlq.send(key=letter.key, value=letter.value, headers=letter.headers)
    await fut
    log.warning("dead-lettered %s[%d]@%d: %s", err.topic, err.partition, err.offset,
                err.reason)
