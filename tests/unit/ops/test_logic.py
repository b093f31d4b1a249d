"""The status rules and the report, driven through every state with synthetic windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.ops.logic import (
    _lag,
    advance_since,
    build_report,
    group_status,
    history_point,
    lag_seconds,
    lag_status,
    rate,
    trim_window,
)
from streams.ops.models import (
    GroupState,
    Member,
    Observation,
    OffsetSample,
    PartitionOffsets,
    PartitionWindow,
    PipelineFigure,
    Status,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=10)
LENGTH = timedelta(seconds=60)


def make_window(points, owned=True, length=LENGTH, step=STEP):
    """points: (committed, end) per sample, ``step`` apart from T0; returns (window, now)."""
    samples = tuple(
        OffsetSample(at=T0 + i * step, committed=c, end=e,
                     owned=owned[i] if isinstance(owned, list) else owned)
        for i, (c, e) in enumerate(points)
    )
    return PartitionWindow(samples=samples, length=length), samples[-1].at if samples else T0


def status_of(points, **kw) -> Status:
    window, now = make_window(points, **kw)
    return lag_status(window, now)


# --- lag ---------------------------------------------------------------------------------
def test_lag_is_end_minus_committed_never_negative_and_none_when_never_committed():
    assert _lag(90, 100) == 10
    assert _lag(100, 100) == 0
    assert _lag(105, 100) == 0
    assert _lag(None, 100) is None


def test_lag_seconds_is_age_of_oldest_unconsumed_record():
    now = T0 + timedelta(seconds=75)
    assert lag_seconds(10, 20, T0, now) == 75.0
    assert lag_seconds(20, 20, T0, now) == 0.0  # caught up: no age, whatever the timestamp
    assert lag_seconds(None, 20, T0, now) is None  # never committed
    assert lag_seconds(10, 20, None, now) is None  # lagging but the record was not read
    assert lag_seconds(10, 20, now + timedelta(seconds=5), now) == 0.0  # producer clock skew


# --- OK ----------------------------------------------------------------------------------
def test_empty_window_is_ok():
    assert lag_status(PartitionWindow(samples=(), length=LENGTH), T0) is Status.OK


def test_caught_up_consumer_is_ok():
    assert status_of([(10, 10), (20, 20), (35, 35), (50, 50)]) is Status.OK


def test_idle_caught_up_group_without_members_is_not_lagging():
    # No traffic, no consumer, offsets still for far longer than the window: nothing to do.
    assert status_of([(500, 500)] * 10, owned=False) is Status.OK


def test_never_committed_partition_is_ok_not_lagging():
    assert status_of([(None, 40), (None, 80), (None, 120)], owned=False) is Status.OK


def test_consumer_catching_up_is_ok():
    assert status_of([(0, 100), (40, 110), (80, 120), (115, 125)]) is Status.OK


def test_a_zero_lag_in_the_window_forgives_one_still_sample():
    # Idle and caught up, then a burst arrives just before the latest sample.
    assert status_of([(100, 100), (100, 100), (100, 100), (100, 130)]) is Status.OK


def test_lag_jittering_while_offsets_move_is_ok():
    assert status_of([(0, 20), (30, 45), (50, 60), (70, 95), (100, 110)]) is Status.OK


# --- WARNING -----------------------------------------------------------------------------
def test_lag_growing_while_offsets_move_is_warning():
    points = [(10 * i, 10 + 20 * i) for i in range(7)]  # 60 s: the whole window
    assert status_of(points) is Status.WARNING


def test_warning_needs_lag_growing_over_a_whole_window():
    assert status_of([(10 * i, 10 + 20 * i) for i in range(6)]) is Status.OK  # 50 s of 60
    # Lag was zero at the start: not lagging for the whole window.
    assert status_of([(5, 5)] + [(10 * i, 10 + 20 * i) for i in range(1, 7)]) is Status.OK
    # Three samples a whole window apart are enough.
    assert status_of([(0, 10), (10, 30), (20, 50)], step=timedelta(seconds=30)) is Status.WARNING
    assert status_of([(0, 10), (10, 30)], step=LENGTH) is Status.OK


def test_lag_jittering_between_commits_is_not_warning():
    points = [(10 * i, 10 * i + lag) for i, lag in enumerate([3, 5, 5, 2, 4, 6, 1, 3])]
    assert status_of(points) is Status.OK


def test_constant_lag_while_moving_is_not_warning():
    assert status_of([(10 * i, 10 * i + 10) for i in range(7)]) is Status.OK


# --- STALL -------------------------------------------------------------------------------
def test_offset_still_while_lag_exists_and_owned_is_stall():
    assert status_of([(40, 50), (40, 60), (40, 70)]) is Status.STALL


def test_owned_partition_still_for_longer_than_the_window_stays_stall():
    # A live member that makes no progress (e.g. waiting on a database) is stuck, not gone.
    assert status_of([(40, 50 + i) for i in range(10)], owned=True) is Status.STALL


def test_ownerless_partition_still_for_less_than_the_window_is_stall():
    assert status_of([(40, 40), (40, 50), (40, 60), (40, 70)], owned=False) is Status.STALL


def test_consumer_that_stops_moving_is_stall_after_a_quarter_of_the_window():
    moving = [(0, 5), (10, 15), (20, 25)]
    assert status_of(moving + [(20, 35)]) is Status.OK  # still for 10 s of a 60 s window
    assert status_of(moving + [(20, 35), (20, 45)]) is Status.STALL  # 20 s >= 15 s
    # Same with commits rarer than samples: still for one sample interval is not enough.
    assert status_of([(0, 5), (0, 15), (20, 25), (20, 35)]) is Status.OK


def test_stall_even_when_lag_does_not_grow():
    assert status_of([(40, 60), (40, 60), (40, 60)]) is Status.STALL


# --- STOP --------------------------------------------------------------------------------
def test_ownerless_partition_still_for_the_whole_window_with_lag_is_stop():
    points = [(40, 40 + 5 * i) for i in range(7)]  # 7 samples, 60 s: covers the window
    assert status_of(points, owned=False) is Status.STOP


def test_stop_needs_the_whole_window():
    points = [(40, 40 + 5 * i) for i in range(6)]  # 50 s of a 60 s window
    assert status_of(points, owned=False) is Status.STALL


def test_stop_when_the_offset_moved_no_more_since_the_window_began_even_if_lag_was_zero():
    # Consumer died caught up; traffic came back after: nobody is consuming it.
    points = [(40, 40)] * 6 + [(40, 70)]
    assert status_of(points, owned=False) is Status.STOP


def test_a_move_inside_the_window_is_not_stop():
    # Moved once, then still: stuck, but not for a whole window yet.
    points = [(30, 40)] + [(40, 50 + i) for i in range(6)]
    assert status_of(points, owned=False) is Status.STALL


def test_stop_is_judged_before_rewind():
    points = [(40, 60)] * 7
    assert status_of(points, owned=[True] * 6 + [False]) is Status.STOP


# --- REWIND ------------------------------------------------------------------------------
def test_offset_going_backwards_is_rewind():
    assert status_of([(50, 60), (60, 70), (20, 75), (30, 80)]) is Status.REWIND


def test_rewind_with_lag_gone_is_ok():
    assert status_of([(50, 60), (10, 60), (60, 60)]) is Status.OK


# --- the lifecycle through a report ------------------------------------------------------
def obs(at, committed, end, owner=True, group="g", state="Stable"):
    member = Member("m-1", "client-1", "/127.0.0.1") if owner else None
    parts = tuple(
        PartitionOffsets(group, "events.view", i, c, e, member,
                         oldest_unconsumed_at=at - timedelta(seconds=30) if c is not None and c < e
                         else None)
        for i, (c, e) in enumerate(zip(committed, end, strict=True))
    )
    return Observation(
        at=at, groups=(GroupState(group, state, 1 if owner else 0),), partitions=parts,
        topic_ends={"events.view": sum(end), "events.dlq": 7},
    )


def test_report_walks_ok_stall_stop_ok_with_since_and_group_rollup():
    window = timedelta(seconds=30)
    observations: list[Observation] = []
    since: dict = {}
    seen: list[tuple[Status, Status, Status]] = []
    timeline = (
        # consumer running, keeping up on both partitions
        [obs(T0 + i * STEP, [10 * i, 10 * i], [10 * i, 10 * i]) for i in range(3)]
        # consumer gone at i=3; traffic continues on partition 0 only
        + [obs(T0 + i * STEP, [20, 20], [20 + 10 * (i - 2), 20], owner=False, state="Empty")
           for i in range(3, 9)]
        # consumer back, caught up
        + [obs(T0 + i * STEP, [100, 20], [100, 20]) for i in range(9, 11)]
    )
    reports = []
    for o in timeline:
        observations = trim_window([*observations, o], o.at, window)
        report, since = build_report(
            observations, now=o.at, window=window, interval=10, dlq_topic="events.dlq",
            since=since,
        )
        group = report.groups[0]
        seen.append((group.status, *(p.status for p in group.partitions)))
        reports.append(report)
    group_path = [s[0] for s in seen]
    assert group_path == [
        Status.OK, Status.OK, Status.OK,  # running
        Status.OK,                         # first lagging sample: not judged on one point
        Status.STALL,                      # still, but not yet for a whole window
        Status.STOP, Status.STOP, Status.STOP, Status.STOP,  # last move 30 s (a window) ago
        Status.OK, Status.OK,              # recovered
    ]
    # Partition 1 had no traffic: caught up and idle all along, never lagging.
    assert all(s[2] is Status.OK for s in seen)
    assert reports[4].groups[0].status_since == T0 + 4 * STEP
    stop = reports[6].groups[0]
    assert stop.status_since == T0 + 5 * STEP
    assert reports[8].groups[0].status_since == T0 + 5 * STEP  # unchanged while STOP lasts
    assert stop.lag == 40 and stop.partitions[0].lag == 40 and stop.partitions[1].lag == 0
    assert stop.lag_seconds == 30.0
    assert stop.state == "Empty" and stop.members == 0
    assert reports[-1].groups[0].status_since == T0 + 9 * STEP


def test_groups_sorted_worst_first_and_rollup_is_worst_partition():
    assert group_status([Status.OK, Status.WARNING, Status.STALL]) is Status.STALL
    assert group_status([Status.REWIND, Status.WARNING]) is Status.REWIND
    assert group_status([Status.STOP, Status.STALL]) is Status.STOP
    assert group_status([]) is Status.OK
    a = obs(T0, [5], [5], group="a")
    b = obs(T0, [5], [9], owner=False, group="b")
    merged = Observation(T0, a.groups + b.groups, a.partitions + b.partitions, a.topic_ends)
    later = Observation(T0 + LENGTH, merged.groups, merged.partitions, merged.topic_ends)
    report, _ = build_report([merged, later], now=later.at, window=LENGTH, interval=10,
                             dlq_topic="events.dlq", since={})
    assert [(g.group, g.status) for g in report.groups] == [("b", Status.STOP), ("a", Status.OK)]


# --- rates, history and the JSON form ----------------------------------------------------
def test_rate_is_per_second_and_never_negative():
    assert rate(100, T0, 160, T0 + timedelta(seconds=30)) == 2.0
    assert rate(100, T0, 40, T0 + timedelta(seconds=30)) == 0.0
    assert rate(None, T0, 40, T0 + STEP) is None
    assert rate(1, T0, 2, T0) is None


def test_history_point_rates_and_dlq():
    a = obs(T0, [10, 10], [20, 10])
    b = Observation(
        T0 + STEP, a.groups,
        tuple(PartitionOffsets(p.group, p.topic, p.partition, p.committed + 20, p.end + 30,
                               p.owner) for p in a.partitions),
        {"events.view": 90, "events.dlq": 12},
    )
    point = history_point(a, b, "events.dlq")
    assert point.consume_rate == {"g": 4.0}
    assert point.produce_rate == {"events.view": 6.0, "events.dlq": 0.5}
    assert point.dlq_rate == 0.5
    assert point.lag == {"g": 30}
    first = history_point(None, a, "events.dlq")
    assert first.consume_rate == {"g": None} and first.dlq_rate is None


def test_trim_window_keeps_one_anchor_at_or_before_the_start():
    series = [obs(T0 + i * STEP, [1], [1]) for i in range(10)]
    kept = trim_window(series, series[-1].at, timedelta(seconds=35))
    assert [o.at for o in kept] == [T0 + i * STEP for i in range(5, 10)]
    assert trim_window(series[:1], T0 + LENGTH * 10, LENGTH) == series[:1]


def test_advance_since_keeps_start_while_unchanged_and_forgets_gone_keys():
    since = advance_since({}, {"a": Status.OK, "b": Status.STALL}, T0)
    since = advance_since(since, {"a": Status.OK, "b": Status.STOP}, T0 + STEP)
    assert since == {"a": (Status.OK, T0), "b": (Status.STOP, T0 + STEP)}
    assert advance_since(since, {"a": Status.OK}, T0 + 2 * STEP) == {"a": (Status.OK, T0)}


def test_report_as_dict_is_json_ready():
    a, b = obs(T0, [10], [15]), obs(T0 + STEP, [12], [20])
    report, _ = build_report(
        [a, b], now=b.at, window=LENGTH, interval=10, dlq_topic="events.dlq", since={},
        figures=[PipelineFigure("profiles", "Profiles", None, "table profiles does not exist")],
        history=[history_point(None, a, "events.dlq"), history_point(a, b, "events.dlq")],
    )
    doc = orjson.loads(orjson.dumps(report.as_dict()))
    part = doc["groups"][0]["partitions"][0]
    assert part == {
        "topic": "events.view", "partition": 0, "committed": 12, "end": 20, "lag": 8,
        "lag_seconds": 30.0, "status": "OK", "status_since": "2026-11-01T12:00:10Z",
        "consumer_id": "m-1", "host": "/127.0.0.1", "client_id": "client-1",
    }
    assert doc["history"]["lag"] == {"g": [5, 8]}
    assert doc["history"]["consume_rate"] == {"g": [None, 0.2]}
    assert doc["figures"][0]["value"] is None
    assert doc["figures"][0]["unavailable"] == "table profiles does not exist"


@pytest.mark.parametrize("status", list(Status))
def test_every_status_has_a_distinct_severity(status):
    assert [s.severity for s in Status].count(status.severity) == 1
