"""`streams bench --quick`: the harness runs every part against the real Kafka and
PostgreSQL and writes JSON and Markdown holding every figure, measured (finite and
positive), with its baseline; nothing of it is left behind. The reference-code path
(`--against`) runs here with HEAD's own code, which every clone has. No speed is
asserted: the quick mode fails when the harness breaks, never because numbers are slow."""

from __future__ import annotations

import dataclasses
import math

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text

from streams.bench import harness
from streams.bench.report import TARGETS, write
from streams.db import async_engine
from tests.leak_scan import RECORDER

SIZE = harness.QUICK.main

EXPECTED = [
    "raw.producer.rate", "raw.producer.cpu_us", "raw.consumer.rate", "raw.consumer.cpu_us",
    f"noop.rate@{SIZE}", f"noop.cpu_us@{SIZE}",
    f"e2e.rate@{SIZE}", f"e2e.cpu_us.stage@{SIZE}", f"e2e.cpu_us.worker@{SIZE}",
    f"e2e.cpu_us.fold@{SIZE}", f"e2e.cpu_us.postgres@{SIZE}", f"e2e.cpu_us.broker@{SIZE}",
    f"e2e.rss@{SIZE}", f"e2e.bytes_per_profile@{SIZE}", "e2e.p50_ms", "e2e.p99_ms",
    "raw.upsert.rate", "raw.upsert.cpu_us", f"two.rate@{SIZE}",
    f"ref.rate@{SIZE}", f"ref.cpu_us.stage@{SIZE}",
    "collector.raw_rate", "collector.rate", "collector.cpu_us",
    "triggers.off_rate", "triggers.on_rate", "triggers.e2e_ratio", "triggers.burst_rate",
    "triggers.raw_rate", "triggers.spread_p99_ms", "bench.peak_rss", f"bench.rss@{SIZE}",
]


async def test_quick_harness_measures_every_figure_and_cleans_up(make_settings, tmp_path):
    settings = make_settings()
    plan = dataclasses.replace(harness.QUICK, against="HEAD")
    bench = harness.Harness(settings, plan, say=lambda *_a, **_k: None)
    results = await bench.run()

    for key in EXPECTED:
        fig = results.figures.get(key)
        assert fig is not None, f"{key} not measured; have {sorted(results.figures)}"
        assert len(fig.samples) == plan.repeat, (key, fig.samples)
        # The worker and the broker spend about 4 and 2.5 us an event on the stage's
        # consumption: over the quick run's events that is a few of the kernel's 10 ms
        # CPU ticks, or none (the fold processes take dozens).
        low = 0 if key in (f"e2e.cpu_us.worker@{SIZE}", f"e2e.cpu_us.broker@{SIZE}") else 1e-9
        assert all(math.isfinite(s) and s >= low for s in fig.samples), (key, fig.samples)
    # Product figures sit beside their baselines, and the ratios are computed.
    assert results.figures[f"e2e.rate@{SIZE}"].baseline == f"noop.rate@{SIZE}"
    assert math.isfinite(results.ratio(f"e2e.rate@{SIZE}"))
    assert math.isfinite(results.ratio("collector.rate"))
    # The two-worker run and the reference code folded the same events.
    assert results.figures[f"ref.rate@{SIZE}"].samples[0] > 0

    # Its children's logs are kept for the session's leak scan, not thrown away.
    kept = {p.name.split("-")[0] for p in (RECORDER.directory / "bench").glob("*.log")}
    assert {"worker", "collector", "emitter"} <= kept, kept

    json_path, md_path = write(results, tmp_path, "bench-test")
    doc = orjson.loads(json_path.read_bytes())
    assert {f["key"] for f in doc["figures"]} >= set(EXPECTED)
    assert len(doc["targets"]) == len(TARGETS)
    md = md_path.read_text()
    assert "| figure | median |" in md and "| issue | target |" in md
    assert f"profile stage ({SIZE:,} profiles)" in md

    # Nothing of the bench is left: its schemas and its topics.
    prefixes = results.meta["prefixes"]
    assert len(prefixes) == len(plan.sizes)
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            schemas = (await conn.execute(text("SELECT nspname FROM pg_namespace"))).scalars()
            left = [s for s in schemas
                    if any(s.startswith("bench_" + p.removeprefix("bench").rstrip("."))
                           for p in prefixes)]
    finally:
        await engine.dispose()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
    finally:
        await admin.close()
    assert left == [] and topics == [], (left, topics)


async def test_only_stage_measures_the_stage_beside_the_noop_agent_in_rounds(make_settings):
    settings = make_settings()
    plan = dataclasses.replace(harness.QUICK, sizes=(SIZE,), repeat=2, only="stage")
    results = await harness.Harness(settings, plan, say=lambda *_a, **_k: None).run()

    for key in (f"noop.rate@{SIZE}", f"noop.cpu_us@{SIZE}", f"e2e.rate@{SIZE}",
                f"e2e.cpu_us.stage@{SIZE}", f"e2e.cpu_us.fold@{SIZE}",
                f"e2e.bytes_per_profile@{SIZE}"):
        fig = results.figures.get(key)
        assert fig is not None, f"{key} not measured; have {sorted(results.figures)}"
        assert len(fig.samples) == 2 and all(math.isfinite(s) and s > 0 for s in fig.samples)
    assert math.isfinite(results.ratio(f"e2e.rate@{SIZE}"))
    # Only the stage: no collector, trigger or two-worker figures.
    assert not [k for k in results.figures
                if k.startswith(("collector.", "triggers.", "two.", "raw."))]
