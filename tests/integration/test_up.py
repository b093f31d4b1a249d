"""`streams up`: the main job brings up everything, prints where it is, stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request

import psutil
from aiokafka.admin import AIOKafkaAdminClient

from streams.topics import ensure_topics, topic_specs
from tests.helpers import child_env
from tests.integration.test_infra import free_port


def test_up_runs_worker_and_server_and_stops_them(make_settings, tmp_path):
    settings = make_settings(http_port=free_port(), data_dir=tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "up"], env=child_env(settings),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "dashboard" in line:
                break
        out = "".join(lines)
        assert "external" in out  # the session's Kafka and PostgreSQL are reused, not started
        assert f"http://127.0.0.1:{settings.http_port}/ops" in out
        assert "export STREAMS_KAFKA_BOOTSTRAP=" in out
        t = settings.database
        assert f"{t.user}:{t.password}@" not in out and f"{t.user}:***@" in out
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.http_port}/healthz") as resp:
            assert resp.status == 200
        children = psutil.Process(proc.pid).children()
        commands = sorted(" ".join(c.cmdline()[-1:]) for c in children)
        assert commands == ["serve", "worker"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


async def test_topics_are_created_with_configured_partitions(make_settings):
    settings = make_settings(topic_partitions=3)
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(settings.all_topics)
    assert await ensure_topics(settings) == []  # idempotent
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(settings.all_topics))
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described}
    assert partitions == {name: 3 for name in topic_specs(settings)}
