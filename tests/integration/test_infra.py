"""`streams infra` lifecycle on its own ports and data folder, beside the session's infra."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import psutil
import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.infra import InfraError, infra_down, infra_status, infra_up
from streams.infra.kafka import LocalKafka
from streams.settings import load_settings
from tests.helpers import child_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def our_processes(data_dir) -> list[psutil.Process]:
    """Kafka or PostgreSQL processes whose command line names this data folder."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmd:
            found.append(proc)
    return found


@pytest.fixture
def own_infra(tmp_path, infra_settings):
    """Settings for a second, private Kafka + PostgreSQL (jars shared through the cache)."""
    settings = load_settings(
        data_dir=tmp_path / "data",
        cache_dir=infra_settings.cache_dir,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        database_url=f"postgresql+psycopg://app:s3cret@127.0.0.1:{free_port()}/appdb",
        kafka_heap="384m",
        pg_shared_buffers="32MB",
    )
    yield settings
    infra_down(settings)


def by_name(states):
    return {s.name: s for s in states}


async def topics(bootstrap: str, create: str | None = None) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(create, 1, 1)])
        return await admin.list_topics()
    finally:
        await admin.close()


def query(settings, sql: str):
    t = settings.database
    with psycopg.connect(host=t.host, port=t.port, user=t.user, password=t.password,
                         dbname=t.dbname, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def test_up_twice_down_up_keeps_data_and_leaves_nothing_behind(own_infra):
    s = own_infra
    first = by_name(infra_up(s))
    assert first["kafka"].state == first["postgres"].state == "running"
    assert first["kafka"].started and first["postgres"].started
    assert first["kafka"].version == f"Apache Kafka {s.kafka_version}"
    assert first["postgres"].version.startswith("PostgreSQL ")

    asyncio.run(topics(s.kafka_bootstrap, create="kept.topic"))
    query(s, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")

    second = by_name(infra_up(s))  # idempotent: finds both running
    assert not second["kafka"].started and not second["postgres"].started
    assert second["kafka"].pid == first["kafka"].pid
    assert second["postgres"].pid == first["postgres"].pid
    assert {x.state for x in infra_status(s)} == {"running"}

    infra_down(s)
    assert our_processes(s.data_dir.resolve()) == []
    status = by_name(infra_status(s))
    assert status["kafka"].state == status["postgres"].state == "stopped"

    third = by_name(infra_up(s))
    assert third["kafka"].started and third["postgres"].started
    assert "kept.topic" in asyncio.run(topics(s.kafka_bootstrap))
    assert query(s, "SELECT v FROM kept") == [("still here",)]

    infra_down(s)
    assert our_processes(s.data_dir.resolve()) == []


def test_fresh_wipes_data(own_infra):
    s = own_infra
    infra_up(s)
    query(s, "CREATE TABLE gone (v int)")
    infra_up(s, fresh=True)
    assert query(s, "SELECT to_regclass('gone') IS NULL") == [(True,)]


def test_port_in_use_fails_with_one_line_and_nonzero_exit(own_infra):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        s = own_infra.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
        with pytest.raises(InfraError, match=f"port {port} is already in use"):
            infra_up(s)
        proc = subprocess.run(
            [sys.executable, "-m", "streams", "infra", "up"], env=child_env(s),
            capture_output=True, text=True, timeout=120,
        )
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"port {port} is already in use" in lines[0], proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr


def test_unresolvable_kafka_version_names_the_artifact(tmp_path):
    s = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", kafka_version="0.0.404")
    with pytest.raises(InfraError) as info:
        LocalKafka(s).resolve()
    assert "org.apache.kafka:kafka_2.13:0.0.404" in str(info.value)
    assert not (tmp_path / "cache" / "kafka-0.0.404" / ".complete").exists()


def test_existing_servers_are_used_not_started(infra_settings, tmp_path):
    """Pointing the settings at servers that already answer: infra starts nothing."""
    s = infra_settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    states = by_name(infra_up(s))
    assert states["kafka"].state == "external" and states["postgres"].state == "external"
    assert not (tmp_path / "elsewhere").exists()
