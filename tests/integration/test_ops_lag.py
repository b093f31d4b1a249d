"""Lag and status against the real broker: a `streams worker` group is stopped while
traffic continues (its partitions go from OK to STALL/STOP and lag grows), then restarted
(it recovers); while quiescent, the figures equal Kafka's own consumer-groups tool."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from streams.infra.kafka import LocalKafka, java_bin
from streams.ops.models import GroupReport, LagReport, Status
from streams.ops.sampler import LagSampler, open_sampler
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.helpers import child_env, eventually
from tests.integration.ops_support import PARTITIONS, Traffic


async def kafka_describe(settings: Settings, group: str) -> dict[tuple[str, int], dict]:
    """Kafka's own ``kafka-consumer-groups --describe``, run from the broker's jars."""
    proc = await asyncio.create_subprocess_exec(
        java_bin(), "-cp", LocalKafka(settings).classpath(),
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server", settings.kafka_bootstrap, "--describe", "--group", group,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [ln.split() for ln in out.decode().splitlines() if ln.strip()]
    header_at = next(i for i, cols in enumerate(lines) if cols[:2] == ["GROUP", "TOPIC"])
    header = lines[header_at]
    rows = {}
    for cols in lines[header_at + 1:]:
        row = dict(zip(header, cols, strict=True))
        rows[(row["TOPIC"], int(row["PARTITION"]))] = row
    return rows


async def exited(proc: subprocess.Popen, within: float) -> int:
    """Wait for a child without a thread (the no_leaks guard counts threads)."""

    async def done():
        return proc.poll() is not None

    await eventually(done, timeout=within, what=f"process {proc.pid} to exit")
    return proc.returncode


async def streams_lag_table(settings: Settings, group: str) -> dict[tuple[str, int], dict]:
    """``streams lag`` as a user runs it, its table parsed by column."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams", "lag", "--group", group, "--seconds", "1.5",
        "--interval", "0.5", env=child_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = out.decode().splitlines()
    header_at = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["GROUP", "TOPIC"])
    header = lines[header_at].split()
    rows = {}
    for line in lines[header_at + 1:]:
        cols = line.split()
        if len(cols) != len(header):
            continue  # the rule under the header, the pipeline line
        row = dict(zip(header, cols, strict=True))
        rows[(row["TOPIC"], int(row["PARTITION"]))] = row
    assert f"{group}  STOP for" in out.decode(), out.decode()
    return rows


def describe(trace) -> str:
    return "\n".join(f"{phase}: {' '.join(s.value for s in statuses)} lag={lag}"
                     for phase, statuses, lag in trace)


def group_of(sampler: LagSampler, group: str) -> GroupReport | None:
    return next((g for g in sampler.report.groups if g.group == group), None)


def dash(value: object) -> str:
    return "-" if value is None else str(value)


async def report_after(sampler: LagSampler, moment: datetime) -> LagReport:
    """Wait for a report built from an observation taken after ``moment``."""

    async def fresh():
        return sampler.report if sampler.report.generated_at > moment else None

    return await eventually(fresh, timeout=30, what="a fresh sample")


async def assert_matches_kafka_tool(settings: Settings, sampler: LagSampler, group: str,
                                    members: bool) -> None:
    expected = await kafka_describe(settings, group)
    report = await report_after(sampler, datetime.now(UTC))
    ours = next(g for g in report.groups if g.group == group)
    got = {(p.topic, p.partition): p for p in ours.partitions}
    assert set(got) == set(expected), (set(got), set(expected))
    for key, row in expected.items():
        p = got[key]
        assert (dash(p.committed), str(p.end), dash(p.lag)) == (
            row["CURRENT-OFFSET"], row["LOG-END-OFFSET"], row["LAG"]), (key, row, p)
        if members:
            assert p.owner is not None
            assert (p.owner.member_id, p.owner.host, p.owner.client_id) == (
                row["CONSUMER-ID"], row["HOST"], row["CLIENT-ID"]), (key, row, p.owner)
        else:
            assert p.owner is None and row["CONSUMER-ID"] == "-"


@pytest.mark.timeout(420)
async def test_stopped_group_stalls_stops_recovers_and_matches_kafka_tool(
    make_settings, spawn_worker, tmp_path
):
    # data_dir: the worker's Faust datadir lives under it, and must exist.
    # Without the trigger stage: its welcomes for the traffic's new people would compete
    # for the two cores with the consumer whose lag is being judged healthy.
    settings = make_settings(topic_partitions=PARTITIONS, ops_interval=1.0, ops_window=5.0,
                             ops_history=120.0, data_dir=tmp_path, triggers_enabled=False)
    group = settings.consumer_group
    await ensure_topics(settings)
    topic = settings.topic(settings.topic_view)
    trace: list[tuple[str, tuple[Status, ...], int]] = []

    async with Traffic(settings, topic) as traffic, \
            open_sampler(settings, groups=[group]) as sampler:
        sampler.start()

        def partitions_in(phase: str, wanted: set[Status], count: int = PARTITIONS):
            async def check():
                g = group_of(sampler, group)
                if g is None:  # recorded, so a failure says why
                    trace.append((phase + ": group missing from the report", (), -1))
                    return None
                statuses = tuple(p.status for p in g.partitions)
                committed = [p for p in g.partitions if p.committed is not None]
                if len(committed) != count:
                    trace.append((f"{phase}: {len(committed)} of {count} committed",
                                  statuses, g.lag))
                elif not trace or trace[-1][1:] != (statuses, g.lag):
                    trace.append((phase, statuses, g.lag))
                return g if len(committed) == count and set(statuses) <= wanted else None
            return check

        # 1. A running worker keeps up: every partition committed and OK.
        traffic.running.set()
        worker = spawn_worker(settings)
        running = await eventually(partitions_in("running", {Status.OK}), timeout=120,
                                   what="worker group OK on every partition")
        assert running.members == 1 and running.state == "Stable"
        # Healthy stays healthy: no STALL, STOP or REWIND over a few windows. A brief
        # WARNING is tolerated, as in the dashboard test: on a loaded 2-core machine a
        # consumer 20 events/s behind for a window (commits stretched) meets its rule.
        for _ in range(8):
            await asyncio.sleep(settings.ops_interval)
            assert await partitions_in("running", {Status.OK, Status.WARNING})(), \
                describe(trace[-3:])

        # 2. Stop the worker while traffic continues: STALL, then STOP; lag grows.
        worker.send_signal(signal.SIGTERM)
        stalled = await eventually(partitions_in("stopped", {Status.STALL, Status.STOP}),
                                   timeout=60, what="partitions STALL or STOP")
        assert stalled.lag > 0
        await exited(worker, 60)
        stop_check = partitions_in("stopped", {Status.STOP})

        async def stopped_with_more_lag():
            g = await stop_check()
            return g if g is not None and g.lag > stalled.lag else None

        stopped = await eventually(stopped_with_more_lag, timeout=60,
                                   what="partitions STOP with growing lag")
        assert stopped.status is Status.STOP and stopped.members == 0
        assert all(p.lag_seconds and p.lag_seconds > 0 for p in stopped.partitions)
        history = sampler.report.history
        assert history[-1].lag[group] > history[-4].lag[group]
        phases = [(phase, statuses) for phase, statuses, _ in trace if phase == "stopped"]
        assert any(Status.STALL in s for _, s in phases), describe(trace)  # STALL before STOP

        # 3. Quiescent and lagging: our figures equal Kafka's tool (no active members),
        # on the dashboard's sampler and in `streams lag`'s table.
        await traffic.pause()
        await assert_matches_kafka_tool(settings, sampler, group, members=False)
        expected = await kafka_describe(settings, group)
        table = await streams_lag_table(settings, group)
        assert set(table) == set(expected)
        for key, row in expected.items():
            mine = table[key]
            for column in ("CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                           "CLIENT-ID"):
                assert mine[column] == row[column], (key, column, mine, row)
            assert mine["STATUS"] == "STOP" and float(mine["LAG-SECONDS"]) > 0

        # 4. Restart with traffic: the group catches up and is OK again.
        traffic.running.set()
        spawn_worker(settings, name="restarted")
        recovered = await eventually(partitions_in("restarted", {Status.OK}), timeout=120,
                                     what="restarted group OK again")
        assert recovered.members == 1

        # 5. Quiescent and caught up: figures and members equal Kafka's tool.
        await traffic.pause()

        async def caught_up():
            g = group_of(sampler, group)
            return g if g and g.lag == 0 and all(p.status is Status.OK for p in g.partitions) \
                else None

        idle = await eventually(caught_up, timeout=60, what="group caught up")
        assert idle.lag_seconds == 0.0
        await assert_matches_kafka_tool(settings, sampler, group, members=True)
