"""The thin Kafka adapter of the ops domain: read offsets, judge nothing.

An admin client lists and describes consumer groups and fetches their committed offsets;
a group-less consumer reads end offsets and, for lagging partitions, the timestamp of the
first unconsumed record (which gives lag in seconds). Read-only: it never joins a group
and never commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.compat import describe_group
from streams.events.time import utc_now
from streams.ops.models import GroupState, Member, Observation, PartitionOffsets

log = logging.getLogger(__name__)

# Group protocol types whose offsets mean "records consumed": classic consumer groups
# ("consumer"), and groups that only commit offsets without joining ("").
_CONSUMER_PROTOCOLS = ("consumer", "")



class KafkaLagSource:
    """Reads one :class:`Observation` per call of :meth:`observe`.

    ``groups`` limits the groups read (empty: every consumer group on the cluster);
    ``topics`` are topics whose produce rate is wanted even when no group reads them
    (the dead-letter topic, say). Every method blocks on the network; errors are
    aiokafka's ``KafkaError`` subclasses or ``asyncio.TimeoutError``.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        groups: Sequence[str] = (),
        topics: Sequence[str] = (),
        clock: Callable[[], datetime] = utc_now,
        request_timeout_ms: int = 10_000,
        fetch_timeout: float = 2.0,
    ):
        self.bootstrap = bootstrap
        self.groups = tuple(groups)
        self.topics = tuple(topics)
        self.clock = clock
        self.fetch_timeout = fetch_timeout
        self.request_timeout_ms = request_timeout_ms
        # (topic, partition, offset) -> timestamp of the first record at or after offset.
        # A stopped group's offset does not move, so its record is read once.
        self._timestamps: dict[tuple[str, int, int], datetime | None] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect both clients (raises KafkaConnectionError when the cluster is down).

        :meth:`observe` calls it when not connected, so a source outlives a broker outage.
        """
        if self._reader is not None:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=self.request_timeout_ms,
            client_id="streams-ops",
        )
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", request_timeout_ms=self.request_timeout_ms,
            client_id="streams-ops", fetch_max_wait_ms=100, max_partition_fetch_bytes=64 * 1024,
        )
        await admin.start()
        try:
            await reader.start()
        except BaseException:
            await admin.close()
            raise
        self._admin, self._reader = admin, reader

    async def close(self) -> None:
        """Disconnect; safe to call twice."""
        admin, reader = self._admin, self._reader
        self._admin = self._reader = None
        if reader is not None:
            await reader.stop()
        if admin is not None:
            await admin.close()

    async def __aenter__(self) -> KafkaLagSource:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- one observation -----------------------------------------------------------
    async def observe(self) -> Observation:
        """Read every watched group's offsets, members and end offsets, now.

        Connects first when needed; after a failure the clients are dropped, so the next
        call reconnects.
        """
        await self.start()
        try:
            return await self._observe()
        except BaseException:
            await self.close()
            raise

    async def _observe(self) -> Observation:
        assert self._admin is not None and self._reader is not None
        group_ids = await self._group_ids()
        states: list[GroupState] = []
        committed: dict[tuple[str, TopicPartition], int | None] = {}
        owners: dict[tuple[str, TopicPartition], Member] = {}
        for group in group_ids:
            state, assigned = await self._describe(group)
            states.append(state)
            for tp, member in assigned.items():
                owners[(group, tp)] = member
                committed.setdefault((group, tp), None)
            offsets = await self._admin.list_consumer_group_offsets(group)
            for tp, meta in offsets.items():
                committed[(group, tp)] = meta.offset if meta.offset >= 0 else None

        existing = set(await self._admin.list_topics())
        wanted = {tp.topic for _, tp in committed} | set(self.topics)
        partitions = await self._partitions(sorted(wanted & existing))
        ends = await self._reader.end_offsets(partitions) if partitions else {}
        at = self.clock()

        # Several groups may read one partition, each at its own offset.
        lagging = {
            (tp, offset)
            for (_group, tp), offset in committed.items()
            if offset is not None and tp in ends and offset < ends[tp]
        }
        oldest = await self._oldest_unconsumed(lagging)
        rows = tuple(
            PartitionOffsets(
                group=group, topic=tp.topic, partition=tp.partition, committed=offset,
                end=ends[tp], owner=owners.get((group, tp)),
                oldest_unconsumed_at=oldest.get((tp.topic, tp.partition, offset))
                if offset is not None else None,
            )
            for (group, tp), offset in sorted(committed.items())
            # Offsets left behind on a deleted topic have no end to measure against.
            if tp in ends
        )
        topic_ends: dict[str, int] = {}
        for tp, end in ends.items():
            topic_ends[tp.topic] = topic_ends.get(tp.topic, 0) + end
        return Observation(at=at, groups=tuple(states), partitions=rows, topic_ends=topic_ends)

    async def _group_ids(self) -> list[str]:
        if self.groups:
            return list(self.groups)
        listed = await self._admin.list_consumer_groups()
        return sorted({g[0] for g in listed if len(g) < 2 or g[1] in _CONSUMER_PROTOCOLS})

    async def _describe(self, group: str) -> tuple[GroupState, dict[TopicPartition, Member]]:
        described = await describe_group(self._admin, group)
        if described.state is None:
            return GroupState(group, "Unknown", 0), {}
        if described.undecoded:
            log.debug("cannot decode the assignment of %d member(s) of %s",
                      described.undecoded, group)
        assigned: dict[TopicPartition, Member] = {}
        for m in described.members:
            member = Member(member_id=m.member_id, client_id=m.client_id, host=m.host)
            for tp in m.partitions:
                assigned[tp] = member
        return GroupState(group, described.state, len(described.members)), assigned

    async def _partitions(self, topics: list[str]) -> list[TopicPartition]:
        if not topics:
            return []
        described = await self._admin.describe_topics(topics)
        return [
            TopicPartition(t["topic"], p["partition"])
            for t in described
            if not t.get("error_code")
            for p in t["partitions"]
        ]

    async def _oldest_unconsumed(
        self, lagging: set[tuple[TopicPartition, int]]
    ) -> dict[tuple[str, int, int], datetime | None]:
        """Timestamps of the records at the committed offsets (cached per offset)."""
        keys = {(tp.topic, tp.partition, off) for tp, off in lagging}
        self._timestamps = {k: v for k, v in self._timestamps.items() if k in keys}
        missing = sorted((tp, off) for tp, off in lagging
                         if (tp.topic, tp.partition, off) not in self._timestamps)
        while missing:
            # One position per partition at a time: the reader seeks once per partition.
            round_: dict[TopicPartition, int] = {}
            rest = []
            for tp, off in missing:
                if tp in round_:
                    rest.append((tp, off))
                else:
                    round_[tp] = off
            found = await self._first_records(round_)
            for tp, off in round_.items():
                if tp in found:
                    self._timestamps[(tp.topic, tp.partition, off)] = found[tp]
            missing = rest
        return dict(self._timestamps)

    async def _first_records(
        self, positions: dict[TopicPartition, int]
    ) -> dict[TopicPartition, datetime]:
        reader = self._reader
        assert reader is not None
        # aiokafka logs every assignment at INFO; ours changes each sample and would fill
        # the server's log. assign() is synchronous, so only its own message is muted.
        subscription_log = logging.getLogger("aiokafka.consumer.subscription_state")
        level = subscription_log.level
        subscription_log.setLevel(logging.WARNING)
        try:
            reader.assign(list(positions))
        finally:
            subscription_log.setLevel(level)
        for tp, offset in positions.items():
            reader.seek(tp, offset)
        found: dict[TopicPartition, datetime] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.fetch_timeout
        try:
            while len(found) < len(positions):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                pending = [tp for tp in positions if tp not in found]
                batch = await reader.getmany(*pending, timeout_ms=int(remaining * 1000))
                for tp, records in batch.items():
                    if records and tp not in found and records[0].timestamp >= 0:
                        found[tp] = datetime.fromtimestamp(records[0].timestamp / 1000, UTC)
                        reader.pause(tp)
        finally:
            # Nothing more is wanted from these partitions until the next observation.
            reader.pause(*positions)
        return found
