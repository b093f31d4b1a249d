"""A scripted stand-in for the Kafka source, for tests that need no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.ops.models import GroupState, Member, Observation, PartitionOffsets, PipelineFigure

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class ScriptedCluster:
    """Each ``observe()`` returns the next observation of a stopped group ``g`` whose lag
    grows on ``events.view`` partition 0, one second apart; ``fail`` makes it raise."""

    def __init__(self, owner: bool = False):
        self.calls = 0
        self.fail: Exception | None = None
        self.owner = Member("m-1", "client-1", "/127.0.0.1") if owner else None

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.calls)

    async def observe(self) -> Observation:
        if self.fail is not None:
            raise self.fail
        self.calls += 1
        at = self.now()
        end = 100 + 10 * self.calls
        return Observation(
            at=at,
            groups=(GroupState("g", "Stable" if self.owner else "Empty", int(bool(self.owner))),),
            partitions=(
                PartitionOffsets("g", "events.view", 0, 100, end, self.owner,
                                 oldest_unconsumed_at=T0 - timedelta(seconds=20)),
                PartitionOffsets("g", "events.view", 1, None, 7, self.owner),
            ),
            topic_ends={"events.view": end + 7, "events.dlq": 2 * self.calls},
        )


async def figures() -> list[PipelineFigure]:
    return [
        PipelineFigure("events_stored", "Events stored", 42),
        PipelineFigure("profiles", "Profiles", None, "table profiles does not exist"),
    ]
