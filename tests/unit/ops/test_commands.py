"""``streams lag``'s table: Kafka's describe columns plus lag seconds and status."""

from __future__ import annotations

import io

from rich.console import Console

from streams.ops.commands import COLUMNS, describe_rows, render
from streams.ops.sampler import LagSampler
from tests.unit.ops.fakes import ScriptedCluster, figures


async def report_doc(owner: bool) -> dict:
    cluster = ScriptedCluster(owner=owner)
    sampler = LagSampler(cluster.observe, interval=1.0, window=3.0, history=10.0,
                         dlq_topic="events.dlq", figures=figures, clock=cluster.now)
    for _ in range(5):
        await sampler.sample_once()
    return sampler.report.as_dict()


async def test_rows_follow_kafka_describe_columns_with_dashes_for_missing():
    rows = describe_rows(await report_doc(owner=False))
    assert COLUMNS[:7] == ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET",
                           "LAG", "LAG-SECONDS")
    assert rows == [
        ["g", "events.view", "0", "100", "150", "50", "25.0", "STOP", "-", "-", "-"],
        ["g", "events.view", "1", "-", "7", "-", "-", "OK", "-", "-", "-"],
    ]
    owned = describe_rows(await report_doc(owner=True))
    assert owned[0][7:] == ["STALL", "m-1", "/127.0.0.1", "client-1"]


async def test_render_prints_summary_table_and_pipeline_line():
    out = io.StringIO()
    render(await report_doc(owner=False), Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "g  STOP for" in text and "lag 50 messages" in text
    assert "CURRENT-OFFSET" in text and "STATUS" in text
    assert "pipeline: dead letters 2.0/s, events stored 42, profiles n/a" in text
