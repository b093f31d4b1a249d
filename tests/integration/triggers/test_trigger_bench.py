"""`streams bench triggers --quick` runs end to end: every figure is measured (finite),
the trigger stage really scheduled and sent messages with the rules on, the report
names each figure, and the bench's schemas and topics are removed. (No speed is
asserted: targets are the bench's business.)"""

from __future__ import annotations

import math

from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from sqlalchemy import text

from streams.bench.triggers import QUICK, report, run_bench
from streams.db import async_engine


async def test_bench_triggers_quick_reports_every_figure_and_cleans_up(make_settings):
    settings = make_settings()
    e2e, due = await run_bench(settings, per_profile=2, emitters=2, say=lambda _m: None,
                               **QUICK)

    # End to end: both runs timed, the stage busy in the second (rows and sends).
    assert e2e.events == 2 * QUICK["people"]
    assert 0 < e2e.off_rate < math.inf and 0 < e2e.on_rate < math.inf
    assert e2e.ratio == e2e.on_rate / e2e.off_rate
    assert e2e.statuses.get("sent", 0) > 0, e2e.statuses  # the welcomes went out
    assert sum(e2e.statuses.values()) >= QUICK["people"]  # at least one row a person
    assert e2e.drain_seconds is not None

    # Due-loop: every message of both phases sent, read back and timed.
    assert due.spread_sent == due.burst_sent == QUICK["messages"]
    for figure in (due.delay_p50, due.delay_p99, due.delay_max, due.sent_at_p99,
                   due.burst_seconds, due.burst_record_seconds, due.raw_seconds):
        assert math.isfinite(figure), due
    assert due.delay_p50 <= due.delay_p99 <= due.delay_max
    assert due.delay_p50 >= -0.001  # nothing is emitted before it is due (ms stamps)
    assert due.burst_rate > 0 and due.raw_rate > 0 and due.raw_messages == QUICK["messages"]
    assert due.message_bytes > 200  # real rendered messages, not placeholders

    console = Console(width=400, record=True)
    console.print(report(e2e, due, settings))
    out = console.export_text()
    for label in ("end to end, triggers off", "end to end, triggers on", "ratio on / off",
                  "rows scheduled with triggers on", "delay past due p50 / p99 / max",
                  "all due at once: emitted per second", "raw aiokafka producer"):
        assert label in out, out
    assert "nan" not in out and "n/a" not in out, out

    # Nothing of the bench is left: schemas and topics.
    tag = e2e.topic_prefix.removeprefix("bench").rstrip(".")
    assert tag
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            left = (await conn.execute(text(
                "SELECT count(*) FROM pg_namespace WHERE nspname LIKE :s"),
                {"s": f"bench_{tag}%"})).scalar_one()
        assert left == 0
    finally:
        await engine.dispose()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        assert not [t for t in await admin.list_topics() if t.startswith(e2e.topic_prefix)]
    finally:
        await admin.close()

