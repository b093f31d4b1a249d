"""Where the profile stage folds its batches: in fold processes beside the worker
(``STREAMS_FOLD_PROCESSES``, default 2) or in the worker's own event loop (0).

Why other processes. Per event, a worker spends about as much CPU in Faust itself
(fetching, events, acknowledgements) as in validating, resolving and folding. In one
process the two add up on one core while the machine's other core waits. With fold
processes they overlap: Faust gathers the next batch while earlier ones are folded; and
with two, one folds while the other waits on PostgreSQL. The cost is an interpreter per
fold process (its own memory and connection pool) and pickling the raw records across
(a few microseconds per event).

The fold processes are a ``ProcessPoolExecutor``, started with ``spawn`` (the worker has
threads; forking it would copy their locks). They ignore SIGINT and SIGTERM: the worker
stops them when it shuts down, so a batch is never cut short by a Ctrl-C aimed at the
worker. They die with the worker (``PR_SET_PDEATHSIG``), so a SIGKILLed worker leaves no
process behind; a transaction in progress then either commits or rolls back, and the
batch's offsets were not committed in either case, so it is read again and deduplicated.
If a fold process dies on its own, new ones are started and the batch is folded again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from streams.db import async_engine
from streams.ingest.logic import TopicKinds, validate_record
from streams.ingest.models import InvalidEvent as InvalidRecord
from streams.ingest.store import topic_kinds
from streams.profiles.logic import decode_envelope
from streams.profiles.models import FoldEvent, InvalidEvent
from streams.profiles.store import BatchOutcome, ProfileStore
from streams.settings import Settings, configure_logging

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


async def write_decoded(store: ProfileStore, good: Sequence[tuple[Consumed, FoldEvent]],
                        retries: int) -> tuple[BatchOutcome | None, list[InvalidRecord]]:
    """Store valid events in one transaction; returns (outcome, the records that could
    not be stored, with why). Blocks while the database is unreachable. A batch that
    keeps failing for another reason is split and each event written alone, so that
    only the events that fail by themselves are given up."""
    try:
        return await write_with_retry(store, [e for _, e in good], retries), []
    except Exception as exc:  # noqa: BLE001 - any non-transient failure: isolate it
        log.warning("batch of %d failed (%s); writing its events one by one", len(good), exc)
    failed = []
    for record, event in good:
        try:
            await write_with_retry(store, [event], retries)
        except Exception as exc:  # noqa: BLE001 - this event cannot be processed
            failed.append(invalid(record, f"processing failed: {type(exc).__name__}: {exc}"))
    return None, failed


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

# A record as it crosses to the fold process: (topic, partition, offset, key, value).
# Plain tuples pickle several times faster than dataclass instances.
Raw = tuple[str, int, int, bytes | None, bytes | None]


@dataclass
class BatchResult:
    """What folding a batch did, for the worker to act on (detector, DLQ, acks)."""

    valid: int = 0
    invalid: list[InvalidRecord] = field(default_factory=list)  # failed validation
    failed: list[InvalidRecord] = field(default_factory=list)  # valid, but not storable
    outcome: BatchOutcome | None = None


async def fold_batch(store: ProfileStore, raws: Sequence[Raw], retries: int,
                     kinds: TopicKinds | None = None) -> BatchResult:
    """Validate and decode ``raws``, store the valid ones in one transaction (retried,
    then split; see ``write_decoded``) and say what could not be stored. Blocks while the
    database is unreachable; never raises for a bad record."""
    records = [Consumed(*r) for r in raws]
    decoded = [decode(r, kinds) for r in records]
    result = BatchResult()
    good: list[tuple[Consumed, FoldEvent]] = []
    for record, item in zip(records, decoded, strict=True):
        if isinstance(item, InvalidRecord):
            result.invalid.append(item)
        else:
            good.append((record, item))
    result.valid = len(good)
    if good:
        result.outcome, result.failed = await write_decoded(store, good, retries)
    return result


class InProcessFolder:
    """Folds in the calling process's event loop: the worker's (no fold processes), or
    a fold process's own."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.in_flight = 1
        self.kinds = topic_kinds(settings)
        self._store: ProfileStore | None = None

    def store(self) -> ProfileStore:
        if self._store is None:
            self._store = ProfileStore.for_settings(self.settings, async_engine(self.settings))
        return self._store

    async def fold(self, raws: Sequence[Raw]) -> BatchResult:
        return await fold_batch(self.store(), raws, self.settings.profile_retries, self.kinds)

    async def start(self) -> None:
        pass

    def close(self, kill: bool = False) -> None:
        pass


class ProcessFolder:
    """Folds in child processes (see the module's docstring), one batch per process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.in_flight = settings.fold_processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._closed = False

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.in_flight, mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init, initargs=(self.settings, os.getpid()))
        return self._pool

    async def start(self) -> None:
        """Start every fold process now rather than on the first batches (each takes a
        second or two to import its modules), so that they do not delay the first
        events and are there from the start (as a worker's memory, for instance)."""
        loop = asyncio.get_running_loop()
        pool = self._start()
        # The pool starts a process per task submitted while none is idle; the pause
        # keeps each task busy until all have been handed out.
        await asyncio.gather(*(loop.run_in_executor(pool, _child_ready, 0.2)
                               for _ in range(self.in_flight)))

    async def fold(self, raws: Sequence[Raw]) -> BatchResult:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise RuntimeError("the folder is closed")
            pool = self._start()
            try:
                return await loop.run_in_executor(pool, _child_fold, list(raws))
            except BrokenProcessPool:
                if self._closed:
                    raise
                # The fold process died (killed, out of memory). Whatever it did with this
                # batch either committed or rolled back; folding it again is safe.
                log.error("a fold process died; starting new ones and folding the "
                          "batch again")
                if self._pool is pool:  # not already replaced for another batch
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                await asyncio.sleep(0.5)

    def close(self, kill: bool = False) -> None:
        """Stop the fold processes after their current batches (does not block); with
        ``kill``, at once: for batches that cannot finish (the database is down), whose
        offsets were not committed, so nothing is lost."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:
            # Python 3.14 has pool.kill_workers(); before it, the pool's own table.
            processes = list((getattr(pool, "_processes", None) or {}).values())
            for process in processes:
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def make_folder(settings: Settings) -> InProcessFolder | ProcessFolder:
    return ProcessFolder(settings) if settings.fold_processes else InProcessFolder(settings)


# --- in the fold process ---------------------------------------------------------------
_child: dict = {}
PR_SET_PDEATHSIG = 1


def _child_init(settings: Settings, parent: int) -> None:
    """Runs once in the fold process: die with the worker, ignore the signals meant for
    it, then build the event loop and the in-process folder that every batch uses."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pool's own pipe still ends us
        pass
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings, "fold")
    from streams.app import tune_gc

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _child.update(loop=loop, folder=InProcessFolder(settings))
    tune_gc()


def _child_ready(pause: float) -> int:
    time.sleep(pause)
    return os.getpid()


def _child_fold(raws: list[Raw]) -> BatchResult:
    return _child["loop"].run_until_complete(_child["folder"].fold(raws))
