"""The sampler keeps a bounded window and history, and survives a failing source."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.ops.models import Status
from streams.ops.sampler import LagSampler, watched_groups
from streams.settings import load_settings
from tests.unit.ops.fakes import ScriptedCluster, figures


def make(cluster: ScriptedCluster, **kw) -> LagSampler:
    values = dict(interval=1.0, window=4.0, history=10.0, dlq_topic="events.dlq",
                  figures=figures, clock=cluster.now)
    values.update(kw)
    return LagSampler(cluster.observe, **values)


async def test_window_and_history_stay_bounded_and_status_progresses():
    cluster = ScriptedCluster()
    sampler = make(cluster)
    assert sampler.report.error == "no sample taken yet"
    statuses = []
    for _ in range(40):
        report = await sampler.sample_once()
        statuses.append(report.groups[0].status)
        assert len(sampler._observations) <= 6  # window of 4 s at 1 s, plus one anchor
        assert len(sampler._history) <= 11
    assert statuses[:6] == [Status.OK, Status.STALL, Status.STALL, Status.STALL, Status.STOP,
                            Status.STOP]
    assert sampler.span() == 4.0
    report = sampler.report
    assert report.error is None
    assert report.dlq_rate == 2.0
    assert report.produce_rate["events.view"] == 10.0
    assert [f.value for f in report.figures] == [42, None]
    never = report.groups[0].partitions[1]
    assert never.committed is None and never.lag is None and never.status is Status.OK


async def test_a_failing_source_keeps_the_last_figures_and_says_why():
    cluster = ScriptedCluster(owner=True)
    sampler = make(cluster)
    await sampler.sample_once()
    good = sampler.report
    cluster.fail = KafkaConnectionError("broker at 127.0.0.1:9092 unreachable")
    report = await sampler.sample_once()
    assert report.groups == good.groups
    assert report.error.startswith("cannot read Kafka: KafkaConnectionError")
    cluster.fail = None
    assert (await sampler.sample_once()).error is None


async def test_run_loop_samples_until_stopped():
    cluster = ScriptedCluster()
    sampler = LagSampler(cluster.observe, interval=0.05, window=0.2, history=1.0,
                         dlq_topic="events.dlq")
    sampler.start()
    await sampler.wait_sampled(within=5)
    await sampler.stop()
    taken = sampler.samples_taken
    assert taken >= 1
    assert sampler._task is None


@pytest.mark.parametrize("kw", [dict(interval=0), dict(window=1.5), dict(history=3.0)])
def test_bad_sampler_parameters_are_refused(kw):
    with pytest.raises(ValueError, match="interval > 0, window >= 2"):
        make(ScriptedCluster(), **kw)


def test_watched_groups_default_to_the_pipeline_group_and_star_means_all():
    settings = load_settings(consumer_group="streams-profiles")
    assert watched_groups(settings) == ("streams-profiles",)
    assert watched_groups(settings.model_copy(update={"ops_groups": ("a", "b")})) == ("a", "b")
    assert watched_groups(settings, ["*"]) == ()
    assert watched_groups(settings, ["x"]) == ("x",)


async def test_figures_are_read_at_most_every_figures_every_seconds():
    cluster = ScriptedCluster()
    reads = []

    async def counting_figures():
        reads.append(1)
        return await figures()

    sampler = LagSampler(cluster.observe, interval=1.0, window=4.0, history=10.0,
                         dlq_topic="events.dlq", figures=counting_figures, clock=cluster.now,
                         figures_every=3600)
    for _ in range(5):
        report = await sampler.sample_once()
        assert [f.value for f in report.figures] == [42, None]  # kept between reads
    assert len(reads) == 1
