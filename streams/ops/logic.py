"""Pure logic of the ops domain: lag, Burrow-style status, rates and the report.

No Kafka, no SQLAlchemy, no clock: every function takes typed values and an explicit
``now``. The adapter (``kafka.py``) reads offsets, the sampler (``sampler.py``) keeps the
window, and these functions judge it.

The status rules follow LinkedIn Burrow's evaluation, with one refinement: Kafka's
OffsetFetch does not say *when* an offset was committed, so "no commits for longer than
the window" (STOP) is read as "the offset has not moved for the whole window and no live
member of the group owns the partition". A partition whose offset is still while a live
member owns it is STALL: someone is there, but not making progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import pairwise

from streams.ops.models import (
    GroupReport,
    HistoryPoint,
    LagReport,
    Observation,
    OffsetSample,
    PartitionKey,
    PartitionOffsets,
    PartitionReport,
    PartitionWindow,
    PipelineFigure,
    Status,
)

Since = Mapping[tuple, tuple[Status, datetime]]

# How much of the window an offset must stay still, with lag, to be STALL: long enough
# that a consumer committing less often than we sample is not taken for a stuck one.
STALL_FRACTION = 0.25


def _lag(committed: int | None, end: int) -> int | None:
    """Messages between the committed offset and the log end; None if never committed.

    Never negative: a committed offset past the end (possible for an instant while
    metadata catches up) counts as caught up.
    """
    if committed is None:
        return None
    return max(0, end - committed)


def lag_seconds(
    committed: int | None, end: int, oldest_unconsumed_at: datetime | None, now: datetime
) -> float | None:
    """How old the oldest unconsumed record is, in seconds.

    0 when caught up; None when the partition was never committed or the record's
    timestamp is unknown. A record stamped in the future (producer clock skew) counts 0.
    """
    lag = _lag(committed, end)
    if lag is None:
        return None
    if lag == 0:
        return 0.0
    if oldest_unconsumed_at is None:
        return None
    return max(0.0, (now - oldest_unconsumed_at).total_seconds())


def lag_status(window: PartitionWindow, now: datetime) -> Status:
    """Judge one partition over its window, in Burrow's order: STOP, REWIND, STALL, WARNING.

    - No current lag (caught up, or never committed): OK, whatever came before.
    - STOP: the offset has not moved in any sample of a window that covers the whole
      window length, and no live member owns the partition.
    - REWIND: the committed offset went backwards between two samples.
    - STALL: lag persisted and the offset did not move over the latest samples (at least
      two), for at least a quarter of the window (:data:`STALL_FRACTION`).
    - WARNING: over the run of samples since lag was last zero, when it covers the whole
      window (and at least three samples), the offset moved but the lag never shrank and
      ended higher than it began: the consumer falls behind.
    - otherwise OK.
    """
    samples = window.samples
    if not samples:
        return Status.OK
    latest = samples[-1]
    if not _lag(latest.committed, latest.end):
        return Status.OK

    offsets = [s.committed for s in samples if s.committed is not None]
    whole_window = samples[0].at <= now - window.length
    never_moved = len(offsets) == len(samples) and len(set(offsets)) == 1
    if never_moved and whole_window and not latest.owned:
        return Status.STOP

    if any(later < earlier for earlier, later in pairwise(offsets)):
        return Status.REWIND

    # A zero lag anywhere in the window means the consumer kept up (Burrow's first rule),
    # so only the samples since the last zero count for STALL and WARNING.
    run: list[OffsetSample] = []
    for sample in reversed(samples):
        if not _lag(sample.committed, sample.end):
            break
        run.append(sample)
    run.reverse()
    # STALL: the trailing samples kept lag and the same offset for long enough that a
    # commit interval longer than the sampling interval cannot explain it.
    still = 0
    for sample in reversed(run):
        if sample.committed != latest.committed:
            break
        still += 1
    if still >= 2 and latest.at - run[-still].at >= window.length * STALL_FRACTION:
        return Status.STALL
    # Growth is only judged over a whole window of lag, as Burrow does: over a few
    # samples, lag read between two commits jitters and would raise false alarms.
    if len(run) >= 3 and run[0].at <= now - window.length:
        lags = [_lag(s.committed, s.end) or 0 for s in run]
        if all(later >= earlier for earlier, later in pairwise(lags)) and lags[-1] > lags[0]:
            return Status.WARNING
    return Status.OK


def group_status(statuses: Iterable[Status]) -> Status:
    """A group's status: its worst partition's (OK for a group with no partitions)."""
    return max(statuses, key=lambda s: s.severity, default=Status.OK)


def rate(
    earlier_total: int | None, earlier_at: datetime, later_total: int | None, later_at: datetime
) -> float | None:
    """Messages per second between two counter readings; None when it cannot be told.

    A counter that went down (a rewind, a recreated topic) gives 0, never a negative rate.
    """
    if earlier_total is None or later_total is None:
        return None
    seconds = (later_at - earlier_at).total_seconds()
    if seconds <= 0:
        return None
    return max(0.0, (later_total - earlier_total) / seconds)


def trim_window(
    observations: Sequence[Observation], now: datetime, length: timedelta
) -> list[Observation]:
    """The observations a window of ``length`` ending at ``now`` needs: those inside it
    plus the newest one at or before its start (so a whole still window can be told)."""
    kept = list(observations)
    start = now - length
    while len(kept) >= 2 and kept[1].at <= start:
        kept.pop(0)
    return kept


def partition_window(
    indexed: Sequence[tuple[datetime, Mapping[PartitionKey, PartitionOffsets]]],
    key: PartitionKey,
    length: timedelta,
) -> PartitionWindow:
    """The window of one partition from indexed observations (those lacking it skipped)."""
    samples = tuple(
        OffsetSample(at=at, committed=p.committed, end=p.end, owned=p.owner is not None)
        for at, by_key in indexed
        if (p := by_key.get(key)) is not None
    )
    return PartitionWindow(samples=samples, length=length)


def advance_since(
    previous: Since, current: Mapping[tuple, Status], now: datetime
) -> dict[tuple, tuple[Status, datetime]]:
    """When each current status began: kept from ``previous`` while unchanged, else ``now``.

    Keys no longer present are dropped, so the mapping stays as small as the cluster.
    """
    since: dict[tuple, tuple[Status, datetime]] = {}
    for key, status in current.items():
        before = previous.get(key)
        since[key] = before if before is not None and before[0] == status else (status, now)
    return since


def history_point(
    previous: Observation | None, current: Observation, dlq_topic: str
) -> HistoryPoint:
    """One chart point: per group lag, oldest-event age and consume rate; per topic
    produce rate; the dead-letter topic's produce rate. Rates need ``previous``."""
    lag: dict[str, int] = {}
    age: dict[str, float | None] = {}
    for p in current.partitions:
        lag[p.group] = lag.get(p.group, 0) + (_lag(p.committed, p.end) or 0)
        seconds = lag_seconds(p.committed, p.end, p.oldest_unconsumed_at, current.at)
        if seconds is not None:
            age[p.group] = max(seconds, age.get(p.group) or 0.0)
        else:
            age.setdefault(p.group, None)
    for g in current.groups:
        lag.setdefault(g.group, 0)
        age.setdefault(g.group, None)

    consume: dict[str, float | None] = dict.fromkeys(lag)
    produce: dict[str, float | None] = dict.fromkeys(current.topic_ends)
    if previous is not None:
        before = {p.key: p.committed for p in previous.partitions}
        totals: dict[str, tuple[int, int]] = {}
        for p in current.partitions:
            then = before.get(p.key)
            if then is not None and p.committed is not None:
                a, b = totals.get(p.group, (0, 0))
                totals[p.group] = (a + then, b + p.committed)
        for group, (then_total, now_total) in totals.items():
            consume[group] = rate(then_total, previous.at, now_total, current.at)
        for topic, end_total in current.topic_ends.items():
            produce[topic] = rate(previous.topic_ends.get(topic), previous.at, end_total,
                                  current.at)
    return HistoryPoint(
        at=current.at, lag=lag, lag_seconds=age, consume_rate=consume, produce_rate=produce,
        dlq_rate=produce.get(dlq_topic),
    )


def build_report(
    observations: Sequence[Observation],
    *,
    now: datetime,
    window: timedelta,
    interval: float,
    dlq_topic: str,
    since: Since,
    figures: Sequence[PipelineFigure] = (),
    history: Sequence[HistoryPoint] = (),
    error: str | None = None,
) -> tuple[LagReport, dict[tuple, tuple[Status, datetime]]]:
    """Judge every partition of the newest observation over the window and roll the
    statuses up per group. Returns the report and the updated status-since mapping."""
    base = dict(
        generated_at=now, window_seconds=window.total_seconds(), interval_seconds=interval,
        dlq_topic=dlq_topic, figures=tuple(figures), history=tuple(history), error=error,
    )
    if not observations:
        return LagReport(groups=(), produce_rate={}, dlq_rate=None, **base), {}
    latest = observations[-1]
    indexed = [(o.at, {p.key: p for p in o.partitions}) for o in observations]
    statuses: dict[tuple, Status] = {
        p.key: lag_status(partition_window(indexed, p.key, window), now)
        for p in latest.partitions
    }
    by_group: dict[str, list[PartitionOffsets]] = {g.group: [] for g in latest.groups}
    for p in latest.partitions:
        by_group.setdefault(p.group, []).append(p)
    for group, parts in by_group.items():
        statuses[("group", group)] = group_status(statuses[p.key] for p in parts)
    new_since = advance_since(since, statuses, now)

    states = {g.group: g for g in latest.groups}
    last_point = history[-1] if history else None
    groups = []
    for group, parts in by_group.items():
        rows = tuple(
            PartitionReport(
                group=p.group, topic=p.topic, partition=p.partition, committed=p.committed,
                end=p.end, lag=_lag(p.committed, p.end),
                lag_seconds=lag_seconds(p.committed, p.end, p.oldest_unconsumed_at, latest.at),
                status=statuses[p.key], status_since=new_since[p.key][1], owner=p.owner,
            )
            for p in sorted(parts, key=lambda p: (p.topic, p.partition))
        )
        ages = [r.lag_seconds for r in rows if r.lag_seconds is not None]
        state = states.get(group)
        groups.append(GroupReport(
            group=group,
            state=state.state if state else "Unknown",
            members=state.members if state else 0,
            status=statuses[("group", group)],
            status_since=new_since[("group", group)][1],
            lag=sum(r.lag or 0 for r in rows),
            lag_seconds=max(ages) if ages else None,
            consume_rate=last_point.consume_rate.get(group) if last_point else None,
            partitions=rows,
        ))
    groups.sort(key=lambda g: (-g.status.severity, g.group))
    produce = dict(last_point.produce_rate) if last_point else dict.fromkeys(latest.topic_ends)
    report = LagReport(
        groups=tuple(groups), produce_rate=produce,
        dlq_rate=last_point.dlq_rate if last_point else None, **base,
    )
    return report, new_since
