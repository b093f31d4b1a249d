"""Prometheus exposition of the lag report. Metric names are kept here, in one place.

Names are dotted in the code and written with underscores for Prometheus. Each scrape
reads the sampler's latest report, so /metrics never touches Kafka itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

from streams.ops.models import LagReport, Status

METRICS = {
    "partition_lag": "streams.ops.partition.lag",
    "partition_lag_seconds": "streams.ops.partition.lag.seconds",
    "partition_committed": "streams.ops.partition.committed.offset",
    "partition_end": "streams.ops.partition.end.offset",
    "partition_status": "streams.ops.partition.status",
    "group_lag": "streams.ops.group.lag",
    "group_lag_seconds": "streams.ops.group.lag.seconds",
    "group_status": "streams.ops.group.status",
    "group_members": "streams.ops.group.members",
    "group_consume_rate": "streams.ops.group.consume.rate",
    "topic_produce_rate": "streams.ops.topic.produce.rate",
    "dlq_rate": "streams.ops.dlq.rate",
    # Not ".count": Prometheus reserves the _count suffix for histograms and summaries.
    "pipeline_figure": "streams.ops.pipeline.figure",
    "pipeline_available": "streams.ops.pipeline.available",
    # The trigger stage's schedule, per rule (gauges: forgetting a person deletes rows).
    "triggers_messages": "streams.triggers.messages",
    "triggers_by_reason": "streams.triggers.messages.by.reason",
    "triggers_conversions": "streams.triggers.conversions",
    "triggers_lift": "streams.triggers.lift",
    "triggers_available": "streams.triggers.available",
    "last_sample": "streams.ops.last.sample.timestamp.seconds",
    "sample_ok": "streams.ops.sample.ok",
}


def prometheus_name(key: str) -> str:
    """The Prometheus name of a metric in :data:`METRICS`."""
    return METRICS[key].replace(".", "_")


class LagCollector(Collector):
    """Turns the latest report into metric families at scrape time."""

    def __init__(self, report: Callable[[], LagReport]):
        self._report = report

    def collect(self) -> Iterator[Metric]:
        report = self._report()
        n = prometheus_name
        part_labels = ["group", "topic", "partition"]
        lag = GaugeMetricFamily(n("partition_lag"), "Messages between committed and end offset",
                                labels=part_labels)
        age = GaugeMetricFamily(n("partition_lag_seconds"),
                                "Age of the oldest unconsumed record, seconds", labels=part_labels)
        committed = GaugeMetricFamily(n("partition_committed"), "Committed offset",
                                      labels=part_labels)
        end = GaugeMetricFamily(n("partition_end"), "Log-end offset", labels=part_labels)
        pstatus = StateSetMetricFamily(n("partition_status"),
                                       "Burrow-style status over the window", labels=part_labels)
        glag = GaugeMetricFamily(n("group_lag"), "Total lag of the group, messages",
                                 labels=["group"])
        gage = GaugeMetricFamily(n("group_lag_seconds"),
                                 "Age of the group's oldest unconsumed record, seconds",
                                 labels=["group"])
        gstatus = StateSetMetricFamily(n("group_status"), "Worst partition status of the group",
                                       labels=["group"])
        members = GaugeMetricFamily(n("group_members"), "Live members of the group",
                                    labels=["group"])
        consume = GaugeMetricFamily(n("group_consume_rate"),
                                    "Committed offsets per second", labels=["group"])
        for g in report.groups:
            glag.add_metric([g.group], g.lag)
            if g.lag_seconds is not None:
                gage.add_metric([g.group], g.lag_seconds)
            gstatus.add_metric([g.group], {s.value: s is g.status for s in Status})
            members.add_metric([g.group], g.members)
            if g.consume_rate is not None:
                consume.add_metric([g.group], g.consume_rate)
            for p in g.partitions:
                labels = [g.group, p.topic, str(p.partition)]
                end.add_metric(labels, p.end)
                if p.committed is not None:
                    committed.add_metric(labels, p.committed)
                if p.lag is not None:
                    lag.add_metric(labels, p.lag)
                if p.lag_seconds is not None:
                    age.add_metric(labels, p.lag_seconds)
                pstatus.add_metric(labels, {s.value: s is p.status for s in Status})
        produce = GaugeMetricFamily(n("topic_produce_rate"), "Records written per second",
                                    labels=["topic"])
        for topic, value in sorted(report.produce_rate.items()):
            if value is not None:
                produce.add_metric([topic], value)
        dlq = GaugeMetricFamily(n("dlq_rate"), "Dead letters written per second",
                                labels=["topic"])
        if report.dlq_rate is not None:
            dlq.add_metric([report.dlq_topic], report.dlq_rate)
        count = GaugeMetricFamily(n("pipeline_figure"), "Pipeline figures from PostgreSQL",
                                  labels=["figure"])
        available = GaugeMetricFamily(n("pipeline_available"),
                                      "1 when the pipeline figure could be read", labels=["figure"])
        for f in report.figures:
            available.add_metric([f.name], 0 if f.value is None else 1)
            if f.value is not None:
                count.add_metric([f.name], f.value)
        triggers = list(_trigger_families(report))
        last = GaugeMetricFamily(n("last_sample"), "When the report was built (Unix time)")
        last.add_metric([], report.generated_at.timestamp())
        ok = GaugeMetricFamily(n("sample_ok"), "1 when the last sample read Kafka")
        ok.add_metric([], 0 if report.error else 1)
        yield from (lag, age, committed, end, pstatus, glag, gage, gstatus, members, consume,
                    produce, dlq, count, available, *triggers, last, ok)


# The statuses a scheduled message ends in (pending until decided), and their keys in
# the trigger domain's per-rule figures.
_TRIGGER_STATUSES = (("pending", "pending"), ("sent", "sent"), ("held_out", "heldOut"))


def _trigger_families(report: LagReport) -> Iterator[Metric]:
    n = prometheus_name
    messages = GaugeMetricFamily(
        n("triggers_messages"), "Scheduled messages by rule and status (pending, sent, "
        "held_out, suppressed, cancelled)", labels=["rule", "status"])
    by_reason = GaugeMetricFamily(
        n("triggers_by_reason"), "Suppressed and cancelled messages by rule and reason",
        labels=["rule", "status", "reason"])
    conversions = GaugeMetricFamily(
        n("triggers_conversions"), "Messages followed by the rule's goal, among the sent "
        "and among the held out (control group)", labels=["rule", "group"])
    lift = GaugeMetricFamily(
        n("triggers_lift"), "Conversion rate of the sent minus that of the held out",
        labels=["rule"])
    available = GaugeMetricFamily(n("triggers_available"),
                                  "1 when the trigger figures could be read")
    available.add_metric([], 0 if report.triggers.unavailable else 1)
    for r in report.triggers.rules:
        rule = str(r["rule"])
        for status, key in _TRIGGER_STATUSES:
            messages.add_metric([rule, status], r[key])
        for status in ("suppressed", "cancelled"):
            reasons = r[status]
            messages.add_metric([rule, status], sum(reasons.values()))
            for reason, count in sorted(reasons.items()):
                by_reason.add_metric([rule, status, reason], count)
        conversions.add_metric([rule, "sent"], r["convertedSent"])
        conversions.add_metric([rule, "held_out"], r["convertedHeldOut"])
        if r["lift"] is not None:
            lift.add_metric([rule], r["lift"])
    yield from (messages, by_reason, conversions, lift, available)


def exposition(report: Callable[[], LagReport]) -> bytes:
    """The Prometheus text format for the report, followed by whatever the process
    registered in prometheus_client's default registry (process metrics, and any other
    domain's own metrics), so that /metrics is the one place to scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LagCollector(report))
    return generate_latest(registry) + generate_latest(REGISTRY)
