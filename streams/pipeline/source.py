"""A stage's records straight from aiokafka: batches of raw records, their offsets
committed only once stored.

Why not a Faust agent. Measured per event (``docs/pipeline.md``), Faust's consumer path
(its fetcher, an Event and a Message object per record, acknowledgements, offset
tracking per message) cost the worker about 70 µs of CPU, as much as the fold itself,
where ``AIOKafkaConsumer.getmany`` returning raw bytes costs about 2. So the stage
consumes with its own ``AIOKafkaConsumer`` in the consumer group of the Faust app
(``settings.consumer_group``: the group whose committed offsets the ops dashboard reads),
inside the Faust application: ``StageService`` is a service of the app, started and
stopped with it by ``streams worker``.

Offsets (``OffsetBook``). A batch holds, per partition, the span of offsets it read.
Spans of a partition are kept in the order they were read; when a batch is stored (or
dead-lettered) its spans are marked done, and a partition's offset to commit moves to
the end of its longest done prefix: never past an event of an unfinished batch, even
though batches in flight finish in any order. The ready offsets are committed every
``settings.commit_interval`` seconds, when partitions are revoked, and when the stage
stops.

Rebalances (``on_partitions_revoked``). aiokafka's protocol is eager: every rebalance
revokes every partition, and a partition assigned again is read from its committed
offset. So on a revocation the records gathered but not yet in a batch are dropped, the
batches in flight get ``REVOKE_GRACE`` seconds to be stored, what they stored is
committed, and the book forgets the revoked partitions: a batch still running after
that (the database is down) commits nothing when it ends, and its events are read again
by whoever holds the partition next (the stage's writes are idempotent).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import heapq
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)

# How long a revocation waits for the batches in flight of the revoked partitions to be
# stored before giving them up (their offsets then stay uncommitted).
REVOKE_GRACE = 10.0
# How long one getmany waits for a first record (then the loop looks again).
IDLE_POLL_MS = 500
# How many batches' worth of records may wait in the buffers for a lagging partition's
# fetch before batches are cut without waiting (see ``KafkaSource.batches``).
BUFFER_BATCHES = 8


class Batch(list):
    """Raw records (``streams.pipeline.stage.Raw`` tuples) read together, with the span
    of offsets they cover per partition (``spans``: partition -> [first, last])."""

    __slots__ = ("spans", "held")

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[TopicPartition, list[int]] = {}
        self.held: list[tuple[TopicPartition, collections.deque, list]] = []

    def add(self, tp: TopicPartition, records: list[Any]) -> None:
        """Append aiokafka ``ConsumerRecord``s of partition ``tp`` (in offset order)."""
        if not records:
            return
        self.extend([(r.topic, r.partition, r.offset, r.key, r.value,
                      r.timestamp / 1000.0 if r.timestamp is not None and r.timestamp >= 0
                      else None) for r in records])
        span = self.spans.get(tp)
        if span is None:
            self.spans[tp] = [records[0].offset, records[-1].offset]
        else:
            span[1] = records[-1].offset


def _shares(room: int, available: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """``room`` split into equal shares of what each partition has ``available``, a
    share left unused by one going to the others, in partition order. Pure."""
    out = dict.fromkeys(available, 0)
    left = {tp: n for tp, n in available.items() if n}
    while room and left:
        share = max(1, room // len(left))
        for tp in list(left):
            n = min(share, left[tp], room)
            out[tp] += n
            room -= n
            left[tp] -= n
            if not left[tp]:
                del left[tp]
            if not room:
                break
    return out


class _Buffers:
    """Fetched records not yet in a batch, per partition, each with its time key (ms):
    the Kafka timestamp, no later than the fetch and no earlier than the key before it
    in the partition (so a partition's keys never decrease). ``highwater`` is the
    consumer's: a partition fetched short of it has more records on the broker."""

    def __init__(self, highwater: Callable[[TopicPartition], int | None]):
        self.highwater = highwater
        self.records: dict[TopicPartition, list] = {}
        self.keys: dict[TopicPartition, list[int]] = {}
        # Per partition fetched since the last clear: (next offset, last key).
        self.fetched: dict[TopicPartition, tuple[int, int]] = {}
        self.count = 0

    def clear(self) -> None:
        self.records.clear()
        self.keys.clear()
        self.fetched.clear()
        self.count = 0

    def extend(self, got: dict[TopicPartition, list]) -> None:
        now = int(time.time() * 1000)
        for tp, records in got.items():
            if not records:
                continue
            last = self.fetched.get(tp, (0, -1))[1]
            keys = self.keys.setdefault(tp, [])
            for r in records:
                t = r.timestamp
                if t is not None and t > last:
                    last = t if t < now else max(now, last)
                keys.append(last)
            self.records.setdefault(tp, []).extend(records)
            self.fetched[tp] = (records[-1].offset + 1, last)
            self.count += len(records)

    def cut(self) -> float:
        """The time up to which every partition still behind its high watermark has
        been fetched (infinite when none is behind)."""
        cut = math.inf
        for tp, (next_offset, last) in self.fetched.items():
            high = self.highwater(tp)
            if high is not None and next_offset < high and last < cut:
                cut = last
        return cut

    def backlog(self) -> int:
        """Records buffered plus those on the broker past what was fetched, over the
        partitions fetched since the last clear (a partition whose high watermark is
        unknown counts its buffered records only)."""
        behind = self.count
        for tp, (next_offset, _) in self.fetched.items():
            high = self.highwater(tp)
            if high is not None and high > next_offset:
                behind += high - next_offset
        return behind

    def ready(self, cut: float) -> int:
        """How many buffered records are at or before ``cut``."""
        if cut == math.inf:
            return self.count
        return sum(bisect.bisect_right(k, cut) for k in self.keys.values())

    def take(self, size: int) -> Batch:
        """Up to ``size`` records: the earliest up to the cut, then, if there is room,
        an equal share of every partition that has records left."""
        batch = Batch()
        cut = self.cut()
        counts = {tp: (len(k) if cut == math.inf else bisect.bisect_right(k, cut))
                  for tp, k in self.keys.items()}
        if sum(counts.values()) > size:
            # The ``size`` earliest: every key before the size-th, then its ties shared.
            last = next(itertools.islice(heapq.merge(
                *(k[:n] for tp, k in self.keys.items() if (n := counts[tp]))), size - 1, None))
            counts = {tp: bisect.bisect_left(k, last) for tp, k in self.keys.items()}
            ties = {tp: bisect.bisect_right(k, last) - counts[tp]
                    for tp, k in self.keys.items()}
            for tp, n in _shares(size - sum(counts.values()), ties).items():
                counts[tp] += n
        for tp, n in counts.items():
            self._move(batch, tp, n)
        left = {tp: len(r) for tp, r in self.records.items()}
        for tp, n in _shares(size - len(batch), left).items():
            self._move(batch, tp, n)
        return batch

    def _move(self, batch: Batch, tp: TopicPartition, n: int) -> int:
        """Move the first ``n`` records of ``tp`` into ``batch``; returns how many."""
        if not n:
            return 0
        records = self.records[tp]
        batch.add(tp, records[:n])
        n = min(n, len(records))
        if n == len(records):
            del self.records[tp], self.keys[tp]
        else:
            del records[:n], self.keys[tp][:n]
        self.count -= n
        return n


class OffsetBook:
    """Which offsets of each assigned partition may be committed (see the module
    docstring). Not thread-safe; used from the worker's event loop only."""

    def __init__(self) -> None:
        # Per assigned partition, the spans held in read order: [last offset, done].
        self.queues: dict[TopicPartition, collections.deque[list]] = {}
        self.ready: dict[TopicPartition, int] = {}  # next offset to read, not committed yet
        self.progress = asyncio.Event()  # set whenever a batch is acknowledged

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.queues.setdefault(tp, collections.deque())

    def forget(self, tps: Iterable[TopicPartition]) -> int:
        """Stop tracking ``tps``; returns how many of their spans were unfinished."""
        left = 0
        for tp in tps:
            q = self.queues.pop(tp, None)
            left += len(q) if q else 0
            self.ready.pop(tp, None)
        return left

    def unfinished(self, tps: Iterable[TopicPartition]) -> int:
        return sum(len(self.queues.get(tp) or ()) for tp in tps)

    def hold(self, batch: Batch) -> None:
        """Track ``batch``'s spans (of the partitions still assigned) until ``ack``."""
        held = batch.held
        for tp, (_first, last) in batch.spans.items():
            q = self.queues.get(tp)
            if q is None:  # revoked since it was read: its offsets are not ours to commit
                continue
            span = [last, False]
            q.append(span)
            held.append((tp, q, span))

    def ack(self, batch: Batch) -> None:
        """``batch`` is stored: move each of its partitions' ready offset to the end of
        the partition's done prefix. A partition forgotten since has no effect."""
        queues, ready = self.queues, self.ready
        for tp, q, span in batch.held:
            span[1] = True
            if queues.get(tp) is not q:
                continue
            while q and q[0][1]:
                ready[tp] = q.popleft()[0] + 1
        batch.held = []
        self.progress.set()

    def take(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """The ready offsets (of ``tps``, or all), removed from the book."""
        if tps is None:
            taken, self.ready = self.ready, {}
            return taken
        return {tp: self.ready.pop(tp) for tp in list(tps) if tp in self.ready}

    def put_back(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets whose commit failed, to be tried again (if still assigned)."""
        for tp, offset in offsets.items():
            if tp in self.queues:
                self.ready[tp] = max(offset, self.ready.get(tp, offset))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource):
        self.source = source

    async def on_partitions_revoked(self, revoked):  # noqa: ANN001 - aiokafka's
        await self.source.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned):  # noqa: ANN001 - aiokafka's
        self.source.assigned(set(assigned))


# The sources consuming in this process (a worker runs one per stage), for a peer that
# yields to their backlog (the trigger stage: ``backlog``).
_RUNNING: set[KafkaSource] = set()


def backlog() -> int:
    """The events the stages consuming in this process have not taken yet, together."""
    return sum(source.backlog() for source in _RUNNING)


class KafkaSource:
    """The stage's consumer: batches of raw records (``batches``), ``hold``/``ack`` for
    the runner, and the offset commits (see the module docstring)."""

    def __init__(self, consumer: AIOKafkaConsumer, topics: Iterable[str], *, batch_size: int,
                 batch_seconds: float, commit_interval: float, name: str = "stage",
                 revoke_grace: float = REVOKE_GRACE,
                 halted: Callable[[], bool] = lambda: False):
        self.consumer, self.topics, self.name = consumer, tuple(topics), name
        # True once the runner drains (the worker stops): a revocation then waits for no
        # batch (none will run).
        self.halted = halted
        self.batch_size, self.batch_seconds = batch_size, batch_seconds
        self.commit_interval, self.revoke_grace = commit_interval, revoke_grace
        self.book = OffsetBook()
        self.epoch = 0  # moved by every revocation: a batch being gathered is dropped
        self._buffers: _Buffers | None = None  # ``batches``' buffers once it runs
        self.stopping = False
        self._committer: asyncio.Task | None = None

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        self._committer = asyncio.ensure_future(self._commit_every())
        _RUNNING.add(self)
        log.info("%s: consuming %s as group %s", self.name, ", ".join(self.topics),
                 self.consumer._group_id)  # noqa: SLF001 - for the log line only

    async def stop(self) -> None:
        """Commit what was stored, then leave the group. Blocks while the broker
        answers (the worker's shutdown deadline bounds it)."""
        self.stopping = True
        _RUNNING.discard(self)
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        await self.commit()
        await self.consumer.stop()

    # --- the runner's side ----------------------------------------------------------------
    def hold(self, batch: Batch) -> None:
        self.book.hold(batch)

    def ack(self, batch: Batch) -> None:
        self.book.ack(batch)

    async def batches(self) -> AsyncIterator[Batch]:
        """Batches of up to ``batch_size`` records, each gathered for at most
        ``batch_seconds`` after its first record, in the order the records were
        appended across partitions. Runs until cancelled.

        Why that order. One person's events are spread over several topics, and the
        fold stores them cheaply only when they come in their order: an event older
        than what its person already holds costs a replay of the person's stored
        events (``streams.profiles.logic.needs_replay``). ``getmany`` hands over what
        was fetched partition by partition, and during a backlog one topic's
        partitions can be fetched well ahead of another's; batches cut from them in
        any fixed share drift apart in time (measured on the bench's backlog: one
        group in four replayed). So what ``getmany`` returns waits in a buffer per
        partition (``_Buffers``), and a batch takes the buffered records up to a cut:
        the time up to which every partition still behind its high watermark has been
        fetched. Records after the cut wait for the lagging partitions' next fetch;
        when the batch is not full by ``batch_seconds`` (or ``BUFFER_BATCHES``
        batches' worth are buffered), the rest is filled with an equal share of every
        partition that has records, so a partition with odd timestamps never stalls.
        The time of a record is its Kafka timestamp, never later than when it was
        fetched, and never earlier than the records before it in its partition.

        What ``getmany`` returns belongs to the assignment current when it returns
        (aiokafka returns nothing while a reassignment is in progress and drops what it
        fetched for an earlier one); what was buffered before a revocation does not
        (the partitions are read again from their committed offsets), so it is
        dropped."""
        size, within = self.batch_size, self.batch_seconds
        cap = size * BUFFER_BATCHES
        getmany = self.consumer.getmany
        buffers = self._buffers = _Buffers(self._highwater)
        epoch = self.epoch

        async def fetch(timeout_ms: int) -> None:
            nonlocal epoch
            got = await getmany(timeout_ms=timeout_ms)
            if epoch != self.epoch:  # revoked meanwhile: the buffer is stale
                buffers.clear()
                epoch = self.epoch
            buffers.extend(got)

        while not self.stopping:
            if buffers.count < size:
                await fetch(0 if buffers.count else IDLE_POLL_MS)
                if not buffers.count:
                    continue
            deadline = time.monotonic() + within
            while buffers.count < cap and buffers.ready(buffers.cut()) < size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await fetch(max(1, int(left * 1000)))
            if epoch != self.epoch:  # revoked while the last batch was handed over
                buffers.clear()
                epoch = self.epoch
            if not buffers.count:
                continue
            yield buffers.take(size)

    def backlog(self) -> int:
        """Events this stage has not taken into a batch yet: buffered, or on the broker
        past what it fetched (0 before the first fetch). Never blocks."""
        return self._buffers.backlog() if self._buffers is not None else 0

    def _highwater(self, tp: TopicPartition) -> int | None:
        """The consumer's high watermark of ``tp``; None when unknown, or when ``tp`` is
        no longer assigned (aiokafka asserts that it is: a rebalance under way)."""
        highwater = getattr(self.consumer, "highwater", None)
        if highwater is None:
            return None
        try:
            return highwater(tp)
        except AssertionError:
            return None

    # --- commits and rebalances -----------------------------------------------------------
    async def commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Commit the ready offsets (of ``tps``, or all); on failure keep them for the
        next try. Never raises for a broker or group error."""
        offsets = self.book.take(tps)
        if not offsets:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in
                                        offsets.items()})
        except (KafkaError, AssertionError) as exc:
            # IllegalStateError (a partition no longer assigned) is a KafkaError too.
            log.warning("%s: committing offsets failed (%s); trying again later",
                        self.name, exc.__class__.__name__)
            self.book.put_back(offsets)

    async def _commit_every(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval)
            await self.commit()

    def assigned(self, tps: set[TopicPartition]) -> None:
        self.book.assign(tps)
        log.info("%s: assigned %d partition(s)", self.name, len(tps))

    async def revoked(self, tps: set[TopicPartition]) -> None:
        """Drop what was read and not yet held, give the batches in flight of ``tps``
        ``revoke_grace`` seconds, commit what they stored, and forget ``tps``."""
        if not tps:
            return  # a first join revokes nothing
        self.epoch += 1
        if self._buffers is not None:  # what was read and not yet batched is stale now
            self._buffers.clear()
        deadline = time.monotonic() + self.revoke_grace
        while not self.stopping and not self.halted() and self.book.unfinished(tps):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.book.progress.clear()
            try:
                await asyncio.wait_for(self.book.progress.wait(), left)
            except TimeoutError:
                break
        await self.commit(tps)
        left = self.book.forget(tps)
        if left:
            log.warning("%s: %d batch span(s) of revoked partitions not stored within "
                        "%.0fs; left uncommitted, they will be read again", self.name, left,
                        self.revoke_grace)


def make_consumer(settings: Any, group: str, client_id: str,
                  fetch_max_wait_ms: int) -> AIOKafkaConsumer:
    """The stage's consumer: in ``group``, offsets committed by hand, from the earliest
    record of a partition the group never committed."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, client_id=client_id,
        enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        # A killed worker's partitions go to the others ``session_timeout`` after its last
        # heartbeat (Faust's 60 s made a restarted worker wait up to a minute to join);
        # a live member slow to rejoin a rebalance still gets a minute.
        session_timeout_ms=int(settings.session_timeout * 1000), heartbeat_interval_ms=3_000,
        rebalance_timeout_ms=60_000,
        # One batch is one database transaction, which can wait on a slow disk.
        max_poll_interval_ms=300_000)

