"""`streams up`: the main job brings up everything, prints where it is, stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import psutil
import psycopg
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from streams.topics import ensure_topics, topic_specs
from tests.helpers import child_env
from tests.integration.test_infra import free_port
from tests.leak_scan import RECORDER, assert_no_secrets, register_secrets


def profile_event_count(settings) -> int:
    t = settings.database
    with psycopg.connect(host=t.host, port=t.port, user=t.user, password=t.password,
                         dbname=t.dbname) as conn:
        return conn.execute("SELECT count(*) FROM profile_events").fetchone()[0]


def message_count(settings) -> int:
    """Messages on the messages topic (read from its start)."""
    from streams.kafka import read_topic

    async def count() -> int:
        topic = settings.topic(settings.topic_messages)
        return len([r async for r in read_topic(settings, topic, idle_seconds=1.0)])

    return asyncio.run(count())


def api_status(url: str, token: str | None = None, method: str = "GET") -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers,
                                                           method=method), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_up_runs_worker_server_and_demo_traffic_then_stops_them(make_settings, tmp_path):
    # No API token and no forget key: `up` makes both (and a second run reuses them).
    settings = make_settings(http_port=free_port(), data_dir=tmp_path / "data",
                             api_tokens=SecretStr(""), forget_key=None)
    before = profile_event_count(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "up", "--demo-rate", "40", "--demo-people", "20"],
        env=child_env(settings),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        process_group=0,  # a terminal of its own, in effect: Ctrl-C goes to the whole group
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "curl -H" in line:
                break
        out = "".join(lines)
        assert "external" in out  # the session's Kafka and PostgreSQL are reused, not started
        assert f"http://127.0.0.1:{settings.http_port}/ops" in out
        # The demo storefront's address comes first, its SDK fetched into the cache.
        assert out.index(f"demo shop   http://127.0.0.1:{settings.http_port}/demo") < \
            out.index("collector   ")
        assert "export STREAMS_KAFKA_BOOTSTRAP=" in out
        t = settings.database
        assert f"{t.user}:{t.password}@" not in out and f"{t.user}:***@" in out
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.http_port}/healthz") as resp:
            assert resp.status == 200
        # The profile API answers the printed token only; the token is in a private file.
        secrets_file = tmp_path / "data" / "secrets.json"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        kept = json.loads(secrets_file.read_text())
        register_secrets([kept["api_token"], kept["forget_key"]])  # for the session's scan
        token = kept["api_token"]
        assert f'curl -H "Authorization: Bearer {token}"' in out
        url = f"http://127.0.0.1:{settings.http_port}/v1/profiles/{uuid.uuid4()}"
        assert api_status(url) == 401
        assert api_status(url, token) == 404
        assert api_status(url, token, method="DELETE") == 404  # scope forget
        children = psutil.Process(proc.pid).children()
        commands = sorted(c.cmdline()[3] for c in children)  # python -m streams <command>
        assert commands == ["demo", "serve", "worker"]
        # Demo traffic goes through the collector and the worker into profiles.
        deadline = time.monotonic() + 90
        while profile_event_count(settings) < before + 20 and time.monotonic() < deadline:
            time.sleep(1)
        assert profile_event_count(settings) >= before + 20, "no demo events reached profiles"
        # ... and the trigger stage answers them: a visible stream of messages (welcomes
        # within seconds for the demo people whose local time is outside quiet hours).
        deadline = time.monotonic() + 60
        while not message_count(settings) and time.monotonic() < deadline:
            time.sleep(1)
        assert message_count(settings) > 0, "no messages from the demo traffic"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    # Ctrl-C ends without an error line (no traceback, no "error:", no click "Aborted!").
    assert rest.strip().splitlines()[-1] == "stopping worker, server, demo...", rest
    assert not any(word in rest for word in ("Traceback", "error", "Aborted")), rest
    logs = sorted((tmp_path / "data" / "logs").glob("*.log"))
    assert [log.name for log in logs] == ["demo.log", "server.log", "worker.log"]
    for log in logs:
        RECORDER.add_file(log, f"streams up: {log.name}")
    made = settings.model_copy(update={
        "api_tokens": SecretStr(f"{kept['api_token']}=forget"),
        "forget_key": SecretStr(kept["forget_key"])})
    for log in logs:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, log.name
        assert_no_secrets(text, made, log.name)  # the token, forget key and write keys
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
    assert partitions == {name: 3 for name in topic_specs(settings.kafka)}
