"""The trigger stage's per-rule figures in the ops report: read at the pipeline figures'
cadence, in /ops/lag.json, and as Prometheus gauges that pass promtool's lint."""

from __future__ import annotations

from streams.ops.metrics import exposition
from streams.ops.models import TriggerFigures
from streams.ops.sampler import LagSampler
from tests.promtool import promtool_findings
from tests.unit.ops.fakes import ScriptedCluster, figures

WELCOME = {"rule": "welcome", "scheduled": 20, "pending": 2, "sent": 10, "heldOut": 4,
           "cancelled": {"superseded": 1}, "suppressed": {"consent": 2, "cap": 1},
           "convertedSent": 5, "convertedHeldOut": 1, "lift": 0.25}
QUIET = {"rule": "re_engagement", "scheduled": 0, "pending": 0, "sent": 0, "heldOut": 0,
         "cancelled": {}, "suppressed": {}, "convertedSent": 0, "convertedHeldOut": 0,
         "lift": None}


class CountingTriggers:
    def __init__(self, result: TriggerFigures):
        self.calls, self.result = 0, result

    async def __call__(self) -> TriggerFigures:
        self.calls += 1
        return self.result


def sampler_with(triggers, figures_every: float = 15.0) -> LagSampler:
    cluster = ScriptedCluster()
    return LagSampler(cluster.observe, interval=1.0, window=3.0, history=10.0,
                      dlq_topic="events.dlq", figures=figures, clock=cluster.now,
                      figures_every=figures_every, triggers=triggers)


async def test_trigger_figures_are_read_with_the_pipeline_figures_and_reported():
    reader = CountingTriggers(TriggerFigures((WELCOME, QUIET), None))
    sampler = sampler_with(reader)
    assert sampler.report.as_dict()["triggers"] == {"rules": [], "unavailable": "not read yet"}
    for _ in range(4):
        await sampler.sample_once()
    assert reader.calls == 1  # at the figures' cadence (15 s), not every 1 s sample
    doc = sampler.report.as_dict()
    assert doc["triggers"]["unavailable"] is None
    assert [r["rule"] for r in doc["triggers"]["rules"]] == ["welcome", "re_engagement"]
    assert doc["triggers"]["rules"][0]["suppressed"] == {"consent": 2, "cap": 1}
    assert doc["figures"][0]["name"] == "events_stored"  # the pipeline figures still there


async def test_a_failed_kafka_sample_keeps_the_last_trigger_figures():
    sampler = sampler_with(CountingTriggers(TriggerFigures((WELCOME,), None)), figures_every=0)
    await sampler.sample_once()
    sampler._observe = _failing  # noqa: SLF001 - the cluster goes away
    report = await sampler.sample_once()
    assert report.error and report.triggers.rules == (WELCOME,)


async def _failing():
    raise OSError("no broker")


async def test_trigger_gauges_per_rule_status_reason_and_conversions_pass_promtool():
    sampler = sampler_with(CountingTriggers(TriggerFigures((WELCOME, QUIET), None)))
    await sampler.sample_once()
    body = exposition(lambda: sampler.report)
    lines = body.decode().splitlines()
    for line in (
        'streams_triggers_messages{rule="welcome",status="sent"} 10.0',
        'streams_triggers_messages{rule="welcome",status="pending"} 2.0',
        'streams_triggers_messages{rule="welcome",status="held_out"} 4.0',
        'streams_triggers_messages{rule="welcome",status="suppressed"} 3.0',
        'streams_triggers_messages{rule="welcome",status="cancelled"} 1.0',
        'streams_triggers_messages{rule="re_engagement",status="sent"} 0.0',
        'streams_triggers_messages_by_reason{reason="consent",rule="welcome",'
        'status="suppressed"} 2.0',
        'streams_triggers_messages_by_reason{reason="superseded",rule="welcome",'
        'status="cancelled"} 1.0',
        'streams_triggers_conversions{group="sent",rule="welcome"} 5.0',
        'streams_triggers_conversions{group="held_out",rule="welcome"} 1.0',
        'streams_triggers_lift{rule="welcome"} 0.25',
        "streams_triggers_available 1.0",
    ):
        assert line in lines, line
    # No lift without both groups: no series rather than a made-up 0.
    assert not any(line.startswith('streams_triggers_lift{rule="re_engagement"}')
                   for line in lines)
    assert promtool_findings(body) == ""


async def test_unavailable_trigger_figures_say_so_in_json_and_metrics():
    sampler = sampler_with(CountingTriggers(TriggerFigures((), "database unreachable")))
    await sampler.sample_once()
    assert sampler.report.as_dict()["triggers"] == {"rules": [],
                                                    "unavailable": "database unreachable"}
    lines = exposition(lambda: sampler.report).decode().splitlines()
    assert "streams_triggers_available 0.0" in lines
    assert not any(line.startswith("streams_triggers_messages{") for line in lines)
