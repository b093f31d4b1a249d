"""Through the running pipeline: the profile API (tokens and scopes, read, find,
merged-away ids, forget and suppression), `streams profile get`, `streams rebuild` (its
schema dropped), and dead letters on Kafka."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import orjson
import psycopg
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.profiles.models import profile_id_for
from streams.server import create_web_app
from streams.topics import ensure_topics
from tests.helpers import API_READ_TOKEN, api_auth, child_env
from tests.leak_scan import assert_no_secrets
from tests.profiles_helpers import (
    drop_profiles_schema,
    group_caught_up,
    produce,
    wait_until,
    with_profiles_schema,
)

EVENTS = [
    {"type": "page", "messageId": "m1", "anonymousId": "a1", "name": "Home",
     "timestamp": "2026-03-01T10:00:00Z", "source": "web",
     "properties": {"product_id": "sku-1", "category": "shoes"}},
    {"type": "screen", "messageId": "m2", "anonymousId": "a2", "name": "Shoe",
     "timestamp": "2026-03-01T10:01:00Z", "source": "mobile",
     "context": {"device": {"id": "phone-1"}}},
    {"type": "identify", "messageId": "m3", "anonymousId": "a2", "userId": "u1",
     "timestamp": "2026-03-01T10:02:00Z",
     "traits": {"email": "Ann@Example.test", "plan": "pro", "consent": {"email": True}}},
    {"type": "alias", "messageId": "m4", "previousId": "a1", "userId": "u1",
     "timestamp": "2026-03-01T10:03:00Z"},
    {"type": "page", "messageId": "m5", "anonymousId": "b1", "userId": "u2", "name": "Home",
     "timestamp": "2026-03-01T10:04:00Z"},
]


READ = api_auth("read")


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams", *args], env=child_env(settings),
                          capture_output=True, text=True, timeout=180)


async def test_profile_api_forget_rebuild_and_dlq(make_settings, spawn_worker, caplog):
    caplog.set_level(logging.INFO)
    s = await with_profiles_schema(make_settings(topic_partitions=2))
    await ensure_topics(s)
    worker = spawn_worker(s)
    outputs: list[str] = []
    # As `streams serve` runs it: without an access log (it would hold ?token= values).
    server = TestServer(create_web_app(s))
    await server.start_server(access_log=None)
    client = TestClient(server)
    await client.start_server()
    try:
        await produce(s, EVENTS)
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        await producer.start()
        await producer.send_and_wait(s.topic(s.topic_click), b"{broken", key=b"x")
        await producer.stop()
        await wait_until(lambda: group_caught_up(s), limit_s=90, what="worker caught up")

        # Find by a normalized identifier; the oldest profile (m1's) survived the merges.
        resp = await client.get("/v1/profiles", headers=READ,
                                params={"identifier": "email: ANN@example.test"})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        survivor = profile_id_for("m1")
        assert body["id"] == survivor
        assert {i["type"] for i in body["identifiers"]} == {
            "anonymous_id", "user_id", "email", "device_id"}
        assert body["traits"] == {"plan": "pro", "email": "Ann@Example.test"}
        assert body["consent"] == {"email": True}
        assert body["behaviour"]["counts"]["total"] == 4
        # identify and alias carry no device hints: web, as validation derives it
        assert body["behaviour"]["counts"]["source"] == {"web": 3, "mobile": 1}
        assert [m["merged"] for m in body["merge_history"]] == [profile_id_for("m2")]

        # A merged-away id answers with the survivor.
        resp = await client.get(f"/v1/profiles/{profile_id_for('m2')}", headers=READ)
        assert resp.status == 200 and (await resp.json())["id"] == survivor

        # Bad input is named; unknown is 404.
        resp = await client.get("/v1/profiles", params={"identifier": "email:nope"}, headers=READ)
        assert resp.status == 400 and (await resp.json())["field"] == "identifier"
        resp = await client.get("/v1/profiles/not-a-uuid", headers=READ)
        assert resp.status == 400 and (await resp.json())["field"] == "profile_id"
        resp = await client.get(f"/v1/profiles/{profile_id_for('nobody')}", headers=READ)
        assert resp.status == 404

        # The CLI reads the same profile.
        out = cli(s, "profile", "get", "user_id:u1")
        outputs.append(out.stdout + out.stderr)
        assert out.returncode == 0, out.stderr
        assert orjson.loads(out.stdout)["id"] == survivor
        assert cli(s, "profile", "get", "user_id:nobody").returncode == 1

        # Forget the person; a later event with one of their identifiers is suppressed.
        # A read token cannot forget; no token, or an unknown one, is a 401.
        resp = await client.delete(f"/v1/profiles/{survivor}", headers=READ)
        assert resp.status == 403 and (await resp.json())["field"] == "scope"
        assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
        resp = await client.delete(f"/v1/profiles/{survivor}")
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        resp = await client.delete(f"/v1/profiles/{survivor}",
                                   headers={"Authorization": "Bearer not-a-token"})
        assert resp.status == 401 and "invalid_token" in resp.headers["WWW-Authenticate"]
        assert "not-a-token" not in await resp.text()
        resp = await client.get(f"/v1/profiles/{survivor}")
        assert resp.status == 401
        resp = await client.get(f"/v1/profiles/{survivor}", params={"token": API_READ_TOKEN})
        assert resp.status == 401  # the API takes the header only (pages take ?token=)
        resp = await client.delete(f"/v1/profiles/{survivor}", headers=api_auth("forget"))
        assert resp.status == 200
        assert (await resp.json())["forgotten"]["events"] == 4
        resp = await client.get(f"/v1/profiles/{survivor}", headers=READ)
        assert resp.status == 404
        await produce(s, [{"type": "track", "messageId": "m6", "anonymousId": "fresh",
                           "userId": "u1", "event": "Post Liked",
                           "timestamp": "2026-03-02T10:00:00Z"}])
        await wait_until(lambda: group_caught_up(s), limit_s=60, what="worker caught up")
        resp = await client.get("/v1/profiles", headers=READ,
                                params={"identifier": "anonymous_id:fresh"})
        assert resp.status == 404
        from streams.db import async_engine
        from streams.profiles.store import ProfileStore
        engine = async_engine(s, pool_size=1, max_overflow=0)
        try:
            counts = await ProfileStore(engine, schema=s.profiles_schema).counts()
        finally:
            await engine.dispose()
        assert counts["skipped_forgotten"] == 1 and counts["profiles"] == 1

        # Rebuilding from the topics gives the live profiles back.
        out = cli(s, "rebuild", "--check")
        outputs.append(out.stdout + out.stderr)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "no differences" in out.stdout
        # ... and drops its schema once compared: it must not keep people forgotten later.
        schema = re.search(r"rebuilt into schema (rebuild_\w+)", out.stdout).group(1)
        t = s.database
        with psycopg.connect(host=t.host, port=t.port, user=t.user, password=t.password,
                             dbname=t.dbname) as conn:
            assert conn.execute("SELECT count(*) FROM information_schema.schemata "
                                "WHERE schema_name = %s", (schema,)).fetchone()[0] == 0

        # The broken record is in the DLQ with where it came from and why.
        consumer = AIOKafkaConsumer(s.topic(s.topic_dlq), bootstrap_servers=s.kafka_bootstrap,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=10_000)
            records = [r for rs in batch.values() for r in rs]
        finally:
            await consumer.stop()
        assert len(records) == 1
        headers = dict(records[0].headers)
        assert orjson.loads(records[0].value)["raw"] == "{broken"  # an events.dlq document
        assert headers["x-original-topic"] == s.topic(s.topic_click).encode()
        assert headers["x-original-offset"] == b"0"
        assert headers["x-reason"].startswith(b"value is not JSON")

        # No token, write key, forget key or password in any log line of the server (this
        # process, wrong tokens and all), the worker, or the commands' output.
        assert_no_secrets(caplog.text, s, "server logs")
        assert_no_secrets(worker.log_path.read_text(errors="replace"), s, "worker log")
        assert_no_secrets("".join(outputs), s, "command output")
    finally:
        await client.close()
        await drop_profiles_schema(s)


async def test_profile_api_rate_is_per_token_and_taken_before_the_store(make_settings):
    s = make_settings(api_rate=0.01, api_burst=2)
    server = TestServer(create_web_app(s))
    await server.start_server(access_log=None)
    client = TestClient(server)
    await client.start_server()
    try:
        nobody = f"/v1/profiles/{profile_id_for('nobody')}"
        for _ in range(2):
            assert (await client.get(nobody, headers=READ)).status == 404
        resp = await client.get(nobody, headers=READ)
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        # The forget token has its own bucket; the read token stays limited.
        resp = await client.delete(nobody, headers=api_auth("forget"))
        assert resp.status == 404
        assert (await client.get(nobody, headers=READ)).status == 429
    finally:
        await client.close()
