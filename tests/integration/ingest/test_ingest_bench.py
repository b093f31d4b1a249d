"""`streams bench collector` runs end to end on a small count: both paths measured, every
event accepted, its throwaway topics removed. (No speed is asserted here: targets are
the bench's business.)"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from streams.bench.collector import run_bench


async def test_bench_collector_measures_both_paths_and_cleans_up(make_settings):
    settings = make_settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        result = await run_bench(settings, events=2000, batch_size=100, concurrency=4,
                                 time_cap=60, say=lambda _msg: None)
        assert result.collector_accepted == 2000 and result.collector_failed_requests == 0
        assert result.raw_events_per_second > 0 and result.collector_events_per_second > 0
        assert result.ratio == result.collector_events_per_second / result.raw_events_per_second
        assert result.collector_cpu_us_per_event > 0
        assert result.topic_prefix.startswith("bench")
        assert not [t for t in await admin.list_topics() if t.startswith(result.topic_prefix)]
    finally:
        await admin.close()
