"""Records of the ops domain: what Kafka says about consumer groups, and what we make of it.

Observations are what one pass over the cluster read; windows and reports are what the
pure logic in ``logic.py`` derives from them. Every datetime is timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """The state of a partition (or, rolled up, of a group), after LinkedIn's Burrow.

    - OK: caught up, or catching up.
    - WARNING: the consumer commits, but its lag keeps growing (it is too slow).
    - REWIND: the committed offset went backwards (a reset or a replay).
    - STALL: lag exists and the committed offset does not move, though the partition is
      still assigned to a live consumer (or has not yet been still for a whole window).
    - STOP: lag exists and nothing committed for longer than the window, with no live
      consumer owning the partition.
    """

    OK = "OK"
    WARNING = "WARNING"
    REWIND = "REWIND"
    STALL = "STALL"
    STOP = "STOP"

    @property
    def severity(self) -> int:
        """Orders statuses from harmless (0) to worst; a group shows its worst partition."""
        return _SEVERITY[self]


_SEVERITY = {Status.OK: 0, Status.WARNING: 1, Status.REWIND: 2, Status.STALL: 3, Status.STOP: 4}


@dataclass(frozen=True)
class Member:
    """A live member of a consumer group, as Kafka describes it."""

    member_id: str
    client_id: str
    host: str


@dataclass(frozen=True)
class GroupState:
    """A consumer group's coordinator state (Stable, Empty, PreparingRebalance, ...)."""

    group: str
    state: str
    members: int


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition of one consumer group, read from Kafka at one moment.

    ``committed`` is None when the group never committed on the partition (it is then
    only known because a member has it assigned). ``oldest_unconsumed_at`` is the
    timestamp of the first record at or after ``committed``, read only while there is lag.
    """

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    owner: Member | None = None
    oldest_unconsumed_at: datetime | None = None

    @property
    def key(self) -> PartitionKey:
        return (self.group, self.topic, self.partition)


PartitionKey = tuple[str, str, int]


@dataclass(frozen=True)
class Observation:
    """Everything one pass over the cluster read, at one moment.

    ``topic_ends`` holds, per watched topic, the sum of its partitions' end offsets: the
    number of records ever written to it, whose change over time is its produce rate.
    """

    at: datetime
    groups: tuple[GroupState, ...]
    partitions: tuple[PartitionOffsets, ...]
    topic_ends: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OffsetSample:
    """One partition's offsets at one moment, as the status rules see them."""

    at: datetime
    committed: int | None
    end: int
    owned: bool = False


@dataclass(frozen=True)
class PartitionWindow:
    """The samples of one partition over the sliding window, oldest first.

    ``length`` is the window the rules judge over; the sampler keeps one sample at or
    before the window's start, so that "not moved for the whole window" can be told.
    """

    samples: tuple[OffsetSample, ...]
    length: timedelta


@dataclass(frozen=True)
class PipelineFigure:
    """A pipeline count read from PostgreSQL; ``value`` is None when it is unavailable
    (its table does not exist yet, or the database cannot be reached) and ``unavailable``
    then says why."""

    name: str
    label: str
    value: int | None
    unavailable: str | None = None


@dataclass(frozen=True)
class TriggerFigures:
    """The trigger stage's per-rule figures, as its domain reports them (one JSON-able
    dict per rule: scheduled, pending, sent, heldOut, cancelled and suppressed by reason,
    convertedSent, convertedHeldOut, lift); ``unavailable`` says why there are none
    (not read yet, no schedule table, database unreachable)."""

    rules: tuple[Mapping[str, Any], ...] = ()
    unavailable: str | None = "not read yet"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"rules": [dict(r) for r in self.rules], "unavailable": self.unavailable}


@dataclass(frozen=True)
class PartitionReport:
    """One row of the per-partition detail."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None
    lag_seconds: float | None
    status: Status
    status_since: datetime
    owner: Member | None


@dataclass(frozen=True)
class GroupReport:
    """A consumer group rolled up: its worst partition's status, total lag, oldest event."""

    group: str
    state: str
    members: int
    status: Status
    status_since: datetime
    lag: int
    lag_seconds: float | None
    consume_rate: float | None
    partitions: tuple[PartitionReport, ...]


@dataclass(frozen=True)
class HistoryPoint:
    """One point of the charts: per group lag and consume rate, per topic produce rate."""

    at: datetime
    lag: Mapping[str, int]
    lag_seconds: Mapping[str, float | None]
    consume_rate: Mapping[str, float | None]
    produce_rate: Mapping[str, float | None]
    dlq_rate: float | None


@dataclass(frozen=True)
class LagReport:
    """Everything the dashboard, /ops/lag.json, /metrics and ``streams lag`` show; the
    trigger figures are read with the pipeline figures, at the same cadence."""

    generated_at: datetime
    window_seconds: float
    interval_seconds: float
    dlq_topic: str
    groups: tuple[GroupReport, ...]
    produce_rate: Mapping[str, float | None]
    dlq_rate: float | None
    figures: tuple[PipelineFigure, ...]
    history: tuple[HistoryPoint, ...]
    error: str | None = None
    triggers: TriggerFigures = TriggerFigures()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO-8601 UTC strings)."""
        return {
            "generated_at": _iso(self.generated_at),
            "window_seconds": self.window_seconds,
            "interval_seconds": self.interval_seconds,
            "dlq_topic": self.dlq_topic,
            "error": self.error,
            "groups": [
                {
                    "group": g.group,
                    "state": g.state,
                    "members": g.members,
                    "status": g.status.value,
                    "status_since": _iso(g.status_since),
                    "lag": g.lag,
                    "lag_seconds": g.lag_seconds,
                    "consume_rate": g.consume_rate,
                    "partitions": [
                        {
                            "topic": p.topic,
                            "partition": p.partition,
                            "committed": p.committed,
                            "end": p.end,
                            "lag": p.lag,
                            "lag_seconds": p.lag_seconds,
                            "status": p.status.value,
                            "status_since": _iso(p.status_since),
                            "consumer_id": p.owner.member_id if p.owner else None,
                            "host": p.owner.host if p.owner else None,
                            "client_id": p.owner.client_id if p.owner else None,
                        }
                        for p in g.partitions
                    ],
                }
                for g in self.groups
            ],
            "produce_rate": dict(self.produce_rate),
            "dlq_rate": self.dlq_rate,
            "figures": [
                {"name": f.name, "label": f.label, "value": f.value, "unavailable": f.unavailable}
                for f in self.figures
            ],
            "triggers": self.triggers.as_dict(),
            "history": {
                "at": [_iso(h.at) for h in self.history],
                "lag": _series(self.history, "lag"),
                "lag_seconds": _series(self.history, "lag_seconds"),
                "consume_rate": _series(self.history, "consume_rate"),
                "produce_rate": _series(self.history, "produce_rate"),
                "dlq_rate": [h.dlq_rate for h in self.history],
            },
        }


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _series(history: tuple[HistoryPoint, ...], attr: str) -> dict[str, list[Any]]:
    """Column-wise series aligned with the time axis (None where a name was absent)."""
    names: dict[str, None] = {}
    for point in history:
        names.update(dict.fromkeys(getattr(point, attr)))
    return {name: [getattr(p, attr).get(name) for p in history] for name in names}
