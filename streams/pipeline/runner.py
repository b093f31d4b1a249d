"""The runner: a stage's batches from Kafka to the store and back to acknowledgements.

Offsets are committed only after the stage's database commit. A batch is held when it is
taken (``source.KafkaSource.hold``: its offsets cannot be committed); the runner
acknowledges it once it is stored or dead-lettered. A crash between the two replays the
batch, which the stage's idempotent write absorbs: the database commit must come first,
or a crash could move the offset past an event whose effect was never stored.

Pipelining: batches run in the executor (by default in fold processes beside the worker)
while the source gathers the next ones; at most ``executor.in_flight`` batches are in
flight. Batches in flight together may finish in any order: the stage locks what each
batch touches, and a partition's offsets are committed only up to its first
unacknowledged event (``source.OffsetBook``). One exception: when a stage's result
depends on which of two records is stored first (``StageSpec.order_key``: for profiles,
two copies of one message id, of which the first in the log must count), a batch holding
a record whose key an earlier batch in flight also holds starts only once that batch is
stored, and is left unacknowledged if that batch was not. Locks alone cannot do it: they
keep two such batches apart, but let either go first.

Stopping (``streams.pipeline.shutdown``): when the worker is told to stop, ``drain`` gives
the batches in flight ``DRAIN_GRACE`` seconds to be stored and acknowledged; batches still
running then (stuck on a lock, or the database gone) are cancelled and their fold
processes killed, unacknowledged: their events are read again by the next worker.

Failures: invalid records and events at fault are dead-lettered with headers naming
their topic, partition, offset and the reason, so one bad record never blocks its
partition; while the database is unavailable a batch waits (``policy``). When nearly
every recent record fails validation the stage stops instead (``systemic``): the batch
is neither dead-lettered nor acknowledged.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, Protocol

from streams.errors import describe_failure
from streams.events.dlq import dead_letter_for_record
from streams.events.models import DeadLetter, InvalidRecord
from streams.events.time import utc_now
from streams.metrics import (
    RETRY_CLASSES,
    count_dead_letter,
    count_events,
    count_retry,
    observe_batch,
)
from streams.pipeline.batch import BatchResult
from streams.pipeline.stage import Raw, StageSpec
from streams.pipeline.systemic import DlqLimit, SystemicFailure, SystemicFailureDetector
from streams.settings import Settings

log = logging.getLogger(__name__)

# How long a stopping worker waits for the batches in flight to be stored and acknowledged
# (within the worker's shutdown bound, ``streams.pipeline.shutdown.SHUTDOWN_BOUND``).
STOP_GRACE = DRAIN_GRACE = 10.0
# A crashed worker's shutdown can hang in faust's consumer; after this long it exits hard,
# which is safe: the failing batch was never acknowledged, so nothing is lost.
SYSTEMIC_EXIT_GRACE = 20.0


class DeadLetterSink(Protocol):
    """Where dead letters go. ``send`` returns once the broker acknowledged the record."""

    async def send(self, letter: DeadLetter) -> None: ...


class Executor(Protocol):
    in_flight: int

    async def start(self) -> None: ...

    async def run(self, raws: Sequence[Raw]) -> BatchResult: ...

    def close(self, kill: bool = False) -> None: ...


class FaustTopicSink:
    """Dead letters through a Faust topic (the worker's producer)."""

    def __init__(self, topic: Any):
        self.topic = topic

    async def send(self, letter: DeadLetter) -> None:
        fut = await self.topic.send(key=letter.key, value=letter.value, headers=letter.headers)
        await fut


class ProducerSink:
    """Dead letters through an aiokafka producer to ``topic``."""

    def __init__(self, producer: Any, topic: str):
        self.producer, self.topic = producer, topic

    async def send(self, letter: DeadLetter) -> None:
        fut = await self.producer.send(self.topic, letter.value, key=letter.key,
                                       headers=letter.headers)
        await fut


def record_batch(stage: str, size: int, result: BatchResult, ack_seconds: float) -> None:
    """The worker's metrics of one stored and acknowledged batch (``streams.metrics``)."""
    observe_batch(stage, size, result.write_seconds, ack_seconds)
    dead = len(result.invalid) + len(result.failed)
    duplicates = getattr(result.outcome, "duplicates", 0) or 0
    skipped = sum((getattr(result.outcome, "skipped", None) or {}).values())
    count_events(stage, "stored", max(0, result.valid - len(result.failed) - duplicates
                                      - skipped))
    for outcome, n in (("duplicate", duplicates), ("skipped", skipped),
                       ("dead_lettered", dead)):
        if n:
            count_events(stage, outcome, n)
    if result.invalid:
        count_dead_letter(stage, "invalid", len(result.invalid))
    for cls in result.failed_classes:
        count_dead_letter(stage, "data_fault" if cls == "data_fault" else "failed")
    for cls, n in result.retries.items():
        if cls in RETRY_CLASSES:  # an unknown failure's retries end in a dead letter
            for _ in range(n):
                count_retry(stage, cls)


def raw_of(event: Any) -> Raw:
    """The raw record of a Faust event (its message's coordinates, key, value and Kafka
    timestamp in epoch seconds)."""
    m = event.message
    return (m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)


class StageRunner:
    """Runs a stage's batches and acts on their results. Knows nothing of its source
    beyond a few callables, so its paths are unit-tested against fakes:

    - ``hold(event)`` keeps an event's offset from being committed, ``ack(event)``
      releases it after its batch is stored; or, for a source whose batches are raw
      records tracked per batch (``source.KafkaSource``, what the worker uses),
      ``hold_batch(batch)`` and ``ack_batch(batch)``;
    - ``crash(exc)`` stops the worker (``app.crash``) without acknowledging.
    """

    def __init__(self, spec: StageSpec, executor: Executor, sink: DeadLetterSink,
                 detector: SystemicFailureDetector, *,
                 hold: Callable[[Any], None] | None = None,
                 ack: Callable[[Any], Awaitable[Any]] | None = None,
                 crash: Callable[[BaseException], Awaitable[None]],
                 clock: Callable[[], datetime] = utc_now,
                 raw: Callable[[Any], Raw] = raw_of,
                 hold_batch: Callable[[Sequence[Any]], None] | None = None,
                 ack_batch: Callable[[Sequence[Any]], None] | None = None):
        self.spec, self.executor, self.sink, self.detector = spec, executor, sink, detector
        self.hold, self.ack, self.crash, self.clock, self.raw = hold, ack, crash, clock, raw
        # A source that tracks offsets per batch (``source.KafkaSource``) holds and
        # acknowledges a batch of raw records at once instead of event by event.
        self.hold_batch, self.ack_batch = hold_batch, ack_batch
        self.stopping: list[BaseException] = []  # set once failing: act no further
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        # The ``order_key``s of each pending batch's records (only with an order key).
        self.keys: dict[asyncio.Future, frozenset[Hashable]] = {}
        self.draining = False  # set once the worker stops: run no further batch

    async def handle(self, batch: Sequence[Any], raws: Sequence[Raw],
                     after: Sequence[asyncio.Future] = ()) -> BatchResult | None:
        """Run one batch once the batches ``after`` are done, dead-letter what cannot be
        stored, then acknowledge it. On a systemic failure or an unexpected error, crash
        instead (nothing acknowledged); when a batch of ``after`` was not stored, leave
        this one unacknowledged without running it (the worker is stopping)."""
        try:
            if after:
                await asyncio.wait(after)
                if self.stopping or any(f.cancelled() or f.result() is None for f in after):
                    # Stored now, a record of this batch would win over the earlier copy
                    # that batch holds: both are read again, in order, by the next worker.
                    return None
            result = await self.executor.run(raws)
            if self.stopping:
                return None  # another batch failed: leave this one unacknowledged too
            try:
                # Before any dead letter of this batch is sent: a tripped limit leaves the
                # whole batch unacknowledged, to be read again once the cause is fixed.
                self.detector.observe(result.valid, [r.reason for r in result.invalid])
            except SystemicFailure as exc:
                self.stopping.append(exc)
                log.critical("%s", exc)
                await self.crash(exc)
                return None
            stored = time.perf_counter()
            for err in (*result.invalid, *result.failed):
                await self.dead_letter(err)
            if self.ack_batch is not None:
                self.ack_batch(batch)
            else:
                for event in batch:
                    await self.ack(event)
            acked = time.perf_counter() - stored
            record_batch(self.spec.label, len(batch), result, acked)
            log.debug("%s: batch of %d: %s (acked in %.3fs)", self.spec.label, len(batch),
                      result.outcome, acked)
            return result
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the batch stays unacknowledged
            if self.draining:  # its fold process was stopped with the worker
                log.info("%s: a batch was left unacknowledged at shutdown (%s)",
                         self.spec.label, type(exc).__name__)
                return None
            self.stopping.append(exc)
            log.error("%s: a batch failed: %s", self.spec.label, describe_failure(exc))
            await self.crash(exc)
            return None

    async def dead_letter(self, err: InvalidRecord) -> None:
        """Send a record to the DLQ and wait for the broker's ack, so the batch's offsets
        are committed only after it. The log names where and why, never the data."""
        await self.sink.send(dead_letter_for_record(err, self.clock()))
        log.warning("dead-lettered %s[%d]@%d: %s", err.topic, err.partition, err.offset,
                    err.reason[:300])

    async def submit(self, batch: Sequence[Any]) -> None:
        """Hold the batch's events and start running it once fewer than ``in_flight``
        batches are running."""
        # Released by ``handle``, after the commit. A batch taken while the worker stops
        # is held and never run: its offsets stay uncommitted, for the next worker.
        if self.hold_batch is not None:
            self.hold_batch(batch)
            raws: Sequence[Raw] = batch  # already raw records
        else:
            raws = []
            for event in batch:
                self.hold(event)
                raws.append(self.raw(event))
        while not self.draining and len(self.pending) >= self.executor.in_flight:
            head = self.pending[0]
            await asyncio.wait([head])
            if self.pending and self.pending[0] is head:  # ``drain`` may have cleared it
                self.keys.pop(self.pending.popleft(), None)
        if self.draining:
            return
        keys: frozenset[Hashable] = frozenset()
        after: list[asyncio.Future] = []
        if self.spec.order_key is not None:
            keys = frozenset(k for k in map(self.spec.order_key, raws) if k is not None)
            after = [f for f in self.pending if keys & self.keys[f]]
            if after:
                log.debug("%s: a batch waits for %d earlier one(s) holding copies of its "
                          "records", self.spec.label, len(after))
        future = asyncio.ensure_future(self.handle(batch, raws, after))
        self.pending.append(future)
        if self.spec.order_key is not None:
            self.keys[future] = keys

    async def drain(self, grace: float = DRAIN_GRACE) -> int:
        """Stop running batches: wait up to ``grace`` seconds for those in flight to be
        stored and acknowledged, then cancel the rest and kill the executor's processes
        (their offsets were never committed, so their events are read again). Returns
        how many batches were left unacknowledged. Blocks at most ``grace`` seconds."""
        self.draining = True
        pending = [f for f in self.pending if not f.done()]
        unfinished = (await asyncio.wait(pending, timeout=grace))[1] if pending else set()
        for future in unfinished:
            future.cancel()  # before the kill: a killed pool would look like a crash
        self.executor.close(kill=bool(unfinished))
        if unfinished:
            await asyncio.wait(unfinished, timeout=5)
            log.warning("%s: %d batch(es) not stored within %.0fs of stopping; left "
                        "unacknowledged, they will be read again", self.spec.label,
                        len(unfinished), grace)
        self.pending.clear()
        self.keys.clear()
        return len(unfinished)

    async def run(self, batches: AsyncIterable[Sequence[Any]]) -> None:
        """Start the executor, run every batch, and on the way out wait up to
        ``STOP_GRACE`` for the batches in flight (killing the executor's processes if
        they are stuck: their offsets were not committed, so they are read again)."""
        try:
            await self.executor.start()
            async for batch in batches:
                await self.submit(batch)
        finally:
            await asyncio.shield(self.drain(STOP_GRACE))


def register_stage(app: Any, settings: Settings, spec: StageSpec) -> None:
    """Declare ``spec``'s stage on ``app``: a service of the app (started and stopped with
    the worker) consuming ``spec.topics`` with its own aiokafka consumer in the app's
    consumer group (``streams.pipeline.source``), in batches of ``settings.batch_size``
    gathered within ``settings.batch_seconds``, run by a ``StageRunner`` in
    ``spec.processes`` fold processes. The app's Faust consumer is then not needed by the
    stage (``create_app`` leaves it off)."""
    from mode import Service

    from streams.compat import FETCH_MAX_WAIT_MS
    from streams.pipeline.executor import make_executor
    from streams.pipeline.shutdown import exit_if_still_running, track
    from streams.pipeline.source import KafkaSource, make_consumer

    dlq = app.topic(settings.topic(settings.topic_dlq), key_serializer="raw",
                    value_serializer="raw")
    detector = SystemicFailureDetector(DlqLimit(
        settings.dlq_max_invalid_ratio, settings.dlq_window, settings.dlq_min_events))

    async def crash(exc: BaseException) -> None:
        if isinstance(exc, SystemicFailure):
            exit_if_still_running(SYSTEMIC_EXIT_GRACE, "after a systemic failure")
        await app.crash(exc)  # the worker stops and exits non-zero

    class StageService(Service):
        """The stage in the worker: its consumer, its runner and the runner's task."""

        source: KafkaSource | None = None
        task: asyncio.Future | None = None

        async def on_start(self) -> None:
            source = KafkaSource(
                make_consumer(settings, settings.consumer_group, spec.name, FETCH_MAX_WAIT_MS),
                spec.topics, batch_size=settings.batch_size,
                batch_seconds=settings.batch_seconds,
                commit_interval=settings.commit_interval, name=spec.name)
            runner = StageRunner(
                spec, make_executor(settings, spec.factory, spec.processes),
                FaustTopicSink(dlq), detector, crash=crash,
                hold_batch=source.hold, ack_batch=source.ack)
            source.halted = lambda: runner.draining
            track(app, runner)  # drained by the worker when it stops (``shutdown``)
            await source.start()
            self.source = source
            self.task = asyncio.ensure_future(self._run(runner, source))

        async def _run(self, runner: StageRunner, source: KafkaSource) -> None:
            try:
                await runner.run(source.batches())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the consumer failed: stop the worker
                log.error("%s: consuming failed: %s", spec.label, describe_failure(exc))
                await crash(exc)

        async def on_stop(self) -> None:
            """After the worker drained the runner: stop consuming, commit what was
            stored and leave the group."""
            if self.task is not None:
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)
            if self.source is not None:
                await self.source.stop()

    StageService.__name__ = spec.name  # how mode's logs name it (not __qualname__: mode's key)
    app.service(StageService)
