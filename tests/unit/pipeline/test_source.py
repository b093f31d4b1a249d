"""The worker's own consumption (``streams.pipeline.source``): which offsets may be
committed while batches finish out of order, and what a revocation commits."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from streams.pipeline.source import Batch, KafkaSource, OffsetBook

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def record(tp: TopicPartition, offset: int, timestamp: int | None = 1_700_000_000_000):
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset,
                           key=b"k", value=b"{}", timestamp=timestamp)


def batch(*parts: tuple[TopicPartition, range]) -> Batch:
    out = Batch()
    for tp, offsets in parts:
        out.add(tp, [record(tp, o) for o in offsets])
    return out


def test_a_batch_is_raw_records_with_the_span_of_each_partition():
    b = batch((A, range(3, 6)), (B, range(10, 12)), (A, range(6, 8)))
    assert b.spans == {A: [3, 7], B: [10, 11]}
    assert b[0] == ("t", 0, 3, b"k", b"{}", 1_700_000_000.0)
    none = Batch()
    none.add(A, [record(A, 1, timestamp=-1)])
    assert none[0][5] is None  # no Kafka time: the record's time is unknown


def test_offsets_move_only_past_batches_stored_in_order_of_reading():
    book = OffsetBook()
    book.assign([A, B])
    first, second, third = batch((A, range(0, 5))), batch((A, range(5, 9)), (B, range(0, 2))), \
        batch((A, range(9, 12)))
    for b in (first, second, third):
        book.hold(b)
    book.ack(third)  # finished first: nothing before it is stored yet
    assert book.take() == {}
    book.ack(second)
    assert book.take() == {B: 2}  # B's only batch is stored; A still waits on the first
    book.ack(first)
    assert book.take() == {A: 12}  # the first, then the two already done
    assert book.unfinished([A, B]) == 0


def test_a_revoked_partition_forgets_its_batches_and_a_late_ack_commits_nothing():
    book = OffsetBook()
    book.assign([A])
    late = batch((A, range(0, 5)))
    book.hold(late)
    assert book.forget([A]) == 1
    book.assign([A])  # assigned again: read again from the committed offset
    again = batch((A, range(0, 3)))
    book.hold(again)
    book.ack(late)  # the abandoned batch ends: its offsets are not this assignment's
    assert book.take() == {}
    book.ack(again)
    assert book.take() == {A: 3}


def test_a_batch_of_a_partition_no_longer_assigned_is_not_tracked():
    book = OffsetBook()
    book.assign([B])
    b = batch((A, range(0, 2)), (B, range(0, 2)))
    book.hold(b)
    book.ack(b)
    assert book.take() == {B: 2}


def test_failed_commits_are_put_back_unless_revoked_meanwhile():
    book = OffsetBook()
    book.assign([A, B])
    book.put_back({A: 4})
    book.forget([B])
    book.put_back({B: 9})
    assert book.take() == {A: 4}


class FakeConsumer:
    def __init__(self):
        self.commits: list[dict] = []
        self._group_id = "g"

    async def commit(self, offsets):
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})


async def test_a_revocation_waits_for_the_batches_in_flight_then_commits_what_they_stored():
    consumer = FakeConsumer()
    source = KafkaSource(consumer, ["t"], batch_size=10, batch_seconds=0.1,
                         commit_interval=60, revoke_grace=5)
    source.assigned({A, B})
    running = batch((A, range(0, 4)))
    source.hold(running)
    revoking = asyncio.ensure_future(source.revoked({A, B}))
    await asyncio.sleep(0.05)
    assert not revoking.done()  # waiting for the batch in flight
    source.ack(running)
    await asyncio.wait_for(revoking, 2)
    assert consumer.commits == [{A: 4}]
    assert source.book.queues == {}


async def test_a_revocation_gives_up_a_stuck_batch_after_the_grace_uncommitted():
    consumer = FakeConsumer()
    source = KafkaSource(consumer, ["t"], batch_size=10, batch_seconds=0.1,
                         commit_interval=60, revoke_grace=0.2)
    source.assigned({A})
    done, stuck = batch((A, range(0, 3))), batch((A, range(3, 6)))
    source.hold(done)
    source.hold(stuck)
    source.ack(done)
    epoch = source.epoch
    await asyncio.wait_for(source.revoked({A}), 2)
    assert consumer.commits == [{A: 3}]  # up to the stuck batch, not past it
    assert source.epoch == epoch + 1  # what was being gathered is dropped
    source.ack(stuck)  # ends after the revocation: commits nothing
    await source.commit()
    assert consumer.commits == [{A: 3}]


class ScriptedConsumer(FakeConsumer):
    """``getmany`` answers from a script; an entry may be a callable run first (a
    rebalance happening while the call waits)."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)

    async def getmany(self, timeout_ms, max_records=None):
        while self.script:
            step = self.script.pop(0)
            if callable(step):
                await step()
                continue
            return step
        await asyncio.sleep(timeout_ms / 1000)  # nothing more: the wait runs out
        return {}


async def test_what_was_gathered_before_a_revocation_is_dropped_what_came_after_kept():
    source = None

    async def rebalance():
        await source.revoked({A})
        source.assigned({A})

    consumer = ScriptedConsumer([
        {A: [record(A, 0), record(A, 1)]},  # gathered, then the partition is revoked
        rebalance,
        {A: [record(A, 0)]},  # read again from the committed offset
        {A: [record(A, 1), record(A, 2)]},
    ])
    source = KafkaSource(consumer, ["t"], batch_size=3, batch_seconds=5, commit_interval=60)
    source.assigned({A})
    gathered = await asyncio.wait_for(anext(source.batches()), 2)
    assert [r[2] for r in gathered] == [0, 1, 2] and gathered.spans == {A: [0, 2]}


async def test_a_batch_takes_an_equal_share_of_every_partition_fetched():
    consumer = ScriptedConsumer([{A: [record(A, o) for o in range(10)],
                                  B: [record(B, o) for o in range(4)]}])
    source = KafkaSource(consumer, ["t"], batch_size=6, batch_seconds=0.05,
                         commit_interval=60)
    source.assigned({A, B})
    batches = source.batches()
    first = await asyncio.wait_for(anext(batches), 2)
    assert first.spans == {A: [0, 2], B: [0, 2]}
    second = await asyncio.wait_for(anext(batches), 2)
    assert second.spans == {A: [3, 7], B: [3, 3]}  # B's last, then A's next
    third = await asyncio.wait_for(anext(batches), 2)
    assert third.spans == {A: [8, 9]}


async def test_records_buffered_before_a_revocation_are_never_batched():
    source = None
    consumer = ScriptedConsumer([{A: [record(A, o) for o in range(4)]}])
    source = KafkaSource(consumer, ["t"], batch_size=2, batch_seconds=0.05,
                         commit_interval=60)
    source.assigned({A})
    batches = source.batches()
    first = await asyncio.wait_for(anext(batches), 2)
    assert first.spans == {A: [0, 1]}
    await source.revoked({A})  # while the first batch is handed over
    source.assigned({A})
    consumer.script.append({A: [record(A, 0)]})  # read again from the committed offset
    again = await asyncio.wait_for(anext(batches), 2)
    assert again.spans == {A: [0, 0]}


async def test_records_returned_by_the_call_spanning_the_first_join_are_kept():
    source = None

    async def first_join():
        await source.revoked(set())
        source.assigned({A})

    consumer = ScriptedConsumer([first_join, {A: [record(A, 0)]}])
    source = KafkaSource(consumer, ["t"], batch_size=1, batch_seconds=5, commit_interval=60)
    gathered = await asyncio.wait_for(anext(source.batches()), 2)
    assert [r[2] for r in gathered] == [0]


class LaggingConsumer(ScriptedConsumer):
    """A scripted consumer whose partitions hold ``highwater`` records on the broker."""

    def __init__(self, script, highwater):
        super().__init__(script)
        self.highwaters = highwater

    def highwater(self, tp):
        return self.highwaters.get(tp)


def timed(tp: TopicPartition, offsets: range, start_ms: int, step_ms: int = 10):
    return [record(tp, o, timestamp=start_ms + (o - offsets.start) * step_ms) for o in offsets]


async def test_batches_follow_the_records_times_across_partitions():
    # A was fetched far ahead of B: A up to t0+90, B only up to t0+10 of its 10 records.
    t0 = 1_700_000_000_000
    consumer = LaggingConsumer(
        [{A: timed(A, range(10), t0), B: timed(B, range(2), t0)},
         {B: timed(B, range(2, 10), t0 + 20)}],
        highwater={A: 10, B: 10})
    source = KafkaSource(consumer, ["t"], batch_size=8, batch_seconds=1, commit_interval=60)
    source.assigned({A, B})
    batches = source.batches()
    first = await asyncio.wait_for(anext(batches), 2)
    # The 8 earliest of both: B's next fetch awaited rather than A's later records taken.
    assert first.spans == {A: [0, 3], B: [0, 3]}
    second = await asyncio.wait_for(anext(batches), 2)
    assert second.spans == {A: [4, 7], B: [4, 7]}


async def test_a_lagging_partition_holds_later_records_only_until_the_batch_time_ends():
    t0 = 1_700_000_000_000
    consumer = LaggingConsumer([{A: timed(A, range(6), t0), B: timed(B, range(2), t0)}],
                               highwater={A: 6, B: 100})  # B's next fetch never comes
    source = KafkaSource(consumer, ["t"], batch_size=6, batch_seconds=0.1,
                         commit_interval=60)
    source.assigned({A, B})
    first = await asyncio.wait_for(anext(source.batches()), 2)
    # Up to B's last fetched time (A's 0-1, B's 0-1), then the rest shared equally.
    assert first.spans == {A: [0, 3], B: [0, 1]}


async def test_a_timestamp_from_the_future_never_holds_its_partition_back():
    t0 = 1_700_000_000_000
    future = record(A, 0, timestamp=2**60)
    consumer = LaggingConsumer(
        [{A: [future, *timed(A, range(1, 4), t0)], B: timed(B, range(4), t0)}],
        highwater={A: 4, B: 4})
    source = KafkaSource(consumer, ["t"], batch_size=8, batch_seconds=0.1,
                         commit_interval=60)
    source.assigned({A, B})
    first = await asyncio.wait_for(anext(source.batches()), 2)
    assert first.spans == {A: [0, 3], B: [0, 3]}


class RevokingConsumer(LaggingConsumer):
    """aiokafka's ``highwater`` asserts that the partition is assigned."""

    def __init__(self, script, highwater):
        super().__init__(script, highwater)
        self.assigned: set = set()

    def highwater(self, tp):
        assert tp in self.assigned, "Partition is not assigned"
        return super().highwater(tp)


async def test_a_partition_revoked_while_records_are_buffered_never_breaks_the_batches():
    t0 = 1_700_000_000_000
    consumer = RevokingConsumer([{A: timed(A, range(4), t0), B: timed(B, range(2), t0)}],
                                highwater={A: 4, B: 10})
    consumer.assigned = {A, B}
    source = KafkaSource(consumer, ["t"], batch_size=2, batch_seconds=0.1,
                         commit_interval=60)
    source.assigned({A, B})
    batches = source.batches()
    first = await asyncio.wait_for(anext(batches), 2)
    assert len(first) == 2  # four records still buffered
    # A rebalance while the runner holds the first batch: nothing is assigned for a while.
    consumer.assigned = set()
    await source.revoked({A, B})
    consumer.assigned = {A}
    source.assigned({A})
    consumer.script.append({A: timed(A, range(2), t0)})  # read again from offset 0
    again = await asyncio.wait_for(anext(batches), 2)
    assert again.spans == {A: [0, 1]}  # the stale buffer is gone, and nothing raised


async def test_the_backlog_counts_what_is_buffered_and_what_waits_on_the_broker():
    from streams.pipeline import source as sources

    t0 = 1_700_000_000_000
    consumer = LaggingConsumer([{A: timed(A, range(6), t0), B: timed(B, range(2), t0)}],
                               highwater={A: 6, B: 100})
    source = KafkaSource(consumer, ["t"], batch_size=4, batch_seconds=0.05,
                         commit_interval=60)
    source.assigned({A, B})
    assert source.backlog() == 0  # nothing fetched yet
    first = await asyncio.wait_for(anext(source.batches()), 2)
    # 8 fetched, 4 batched: 4 buffered, and B has 98 more on the broker.
    assert len(first) == 4 and source.backlog() == 4 + 98
    assert sources.backlog() == 0  # not started: not among the sources running
    sources._RUNNING.add(source)
    try:
        assert sources.backlog() == 102
    finally:
        sources._RUNNING.discard(source)
