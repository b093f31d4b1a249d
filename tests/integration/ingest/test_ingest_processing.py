"""The processing side validates what direct producers wrote to the event topics: invalid
records go to the DLQ with headers naming their origin; a stream of nearly only bad
records stops the worker instead. Then `streams dlq list` and `streams dlq replay`."""

from __future__ import annotations

import asyncio
import secrets
import sys

import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from streams.topics import ensure_topics
from tests.helpers import child_env, eventually

from .support import read_all, read_dlq, read_events

TS = "2026-11-01T10:00:00Z"


def valid_view(message_id: str) -> bytes:
    return orjson.dumps({"type": "page", "name": "Home", "anonymousId": "anon-direct",
                         "messageId": message_id, "timestamp": TS})


async def produce(settings, base_topic: str, values: list[tuple[bytes | None, bytes]]):
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        return [await producer.send_and_wait(settings.topic(base_topic), value, key=key)
                for key, value in values]
    finally:
        await producer.stop()


async def stored_message_ids(settings) -> list[str]:
    t = settings.database
    async with await psycopg.AsyncConnection.connect(
            host=t.host, port=t.port, user=t.user, password=t.password, dbname=t.dbname) as conn:
        # Message ids carry the test's unique topic prefix, so only this test's rows match.
        cur = await conn.execute("SELECT message_id FROM profile_events WHERE message_id LIKE %s",
                                 (settings.topic_prefix + "%",))
        return sorted(row[0].removeprefix(settings.topic_prefix) for row in await cur.fetchall())


async def test_invalid_direct_records_are_dead_lettered_with_origin_headers(
        make_settings, spawn_worker):
    settings = make_settings()
    await ensure_topics(settings)
    worker = spawn_worker(settings)
    sent = await produce(settings, settings.topic_view, [
        (b"anon-direct", valid_view(settings.topic_prefix + "direct-1")),
        (b"anon-direct", b"{not json"),
        (b"anon-direct", valid_view(settings.topic_prefix + "direct-2")),
        # A track event written to the view topic: valid JSON, wrong topic.
        (b"u", orjson.dumps({"type": "track", "event": "x", "userId": "u", "messageId": "m",
                             "timestamp": TS})),
    ])
    letters = await eventually(lambda: _dlq_with(settings, 2), timeout=90,
                               what="two dead letters")
    by_offset = {int(h["x-original-offset"]): (letter, h) for letter, h in letters}
    assert set(by_offset) == {sent[1].offset, sent[3].offset}
    letter, headers = by_offset[sent[1].offset]
    assert headers["x-original-topic"] == settings.topic(settings.topic_view).encode()
    assert headers["x-original-partition"] == str(sent[1].partition).encode()
    assert headers["x-origin"] == b"processing"
    assert b"not JSON" in headers["x-reason"]
    assert letter.raw == "{not json" and letter.key == "anon-direct"
    letter, headers = by_offset[sent[3].offset]
    assert headers["x-field"] == b"/type" and b"belongs on the click topic" in headers["x-reason"]
    assert letter.event["messageId"] == "m"

    ids = await eventually(lambda: _ids_if(settings, 2), timeout=60, what="valid events stored")
    assert ids == ["direct-1", "direct-2"]
    assert worker.poll() is None


async def _dlq_with(settings, count: int):
    letters = await read_dlq(settings)
    return letters if len(letters) >= count else None


async def _ids_if(settings, count: int):
    ids = await stored_message_ids(settings)
    return ids if len(ids) >= count else None


async def test_worker_stops_instead_of_dead_lettering_everything(make_settings, spawn_worker):
    settings = make_settings(dlq_min_events=20, dlq_window=100, dlq_max_invalid_ratio=0.9,
                             batch_size=50, batch_seconds=1.0)
    await ensure_topics(settings)
    garbage = [(b"k", b"\x00\x01 not an event %d" % i) for i in range(120)]
    await produce(settings, settings.topic_click, garbage)
    worker = spawn_worker(settings)

    async def exited():
        return worker.poll() is not None

    await eventually(exited, timeout=120, what="worker exit")
    log = worker.log_path.read_text()
    assert worker.returncode != 0, log[-2000:]
    assert "stopping:" in log and "STREAMS_DLQ_MAX_INVALID_RATIO" in log and "not JSON" in log
    dead = await read_all(settings, settings.topic_dlq)
    assert len(dead) < len(garbage)  # stopped rather than dead-lettering all of them


async def _cli(settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams", *args, env=child_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_dlq_list_and_replay_of_fixed_events(make_settings, start_collector, tmp_path):
    settings = make_settings()
    client = await start_collector(settings)
    status, answer, _ = await client.post("/v1/batch", {"batch": [
        {"type": "track", "event": "Clicked", "userId": "u1", "messageId": "fine"},
        {"type": "track", "event": "Clicked", "userId": "u1", "messageId": "late",
         "timestamp": "tomorrow morning"},
        {"type": "page", "messageId": "anonymous"},
    ]})
    assert status == 200 and answer["deadLettered"] == 2

    code, out, err = await _cli(settings, "dlq", "list")
    assert code == 0, err
    assert "2 of 2 dead letters" in out and "/timestamp" in out and "/userId" in out

    code, out, err = await _cli(settings, "dlq", "list", "--json")
    assert code == 0, err
    listed = [orjson.loads(line) for line in out.splitlines()]
    assert sorted(d["field"] for d in listed) == ["/timestamp", "/userId"]

    # Replaying without a fix changes nothing: both still fail.
    code, out, err = await _cli(settings, "dlq", "replay")
    assert code == 0, err
    assert "0 replayed, 2 still invalid" in out

    # The operator fixes one and replays it.
    late = next(d for d in listed if d["field"] == "/timestamp")
    late["event"]["timestamp"] = "2026-11-01T09:00:00Z"
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_bytes(orjson.dumps(late) + b"\n")
    code, out, err = await _cli(settings, "dlq", "replay", "--fixed", str(fixed))
    assert code == 0, err
    assert "1 replayed, 0 still invalid" in out

    clicks = await read_all(settings, settings.topic_click)
    replayed = [r for r in clicks if orjson.loads(r.value)["messageId"] == "late"]
    assert len(replayed) == 1
    assert dict(replayed[0].headers)["x-replayed-from"] == \
        f"{late['partition']}:{late['offset']}".encode()
    assert orjson.loads(replayed[0].value)["originalTimestamp"] == "2026-11-01T09:00:00Z"
    events = await read_events(settings)
    assert sorted(e["messageId"] for e in events["click"]) == ["fine", "late"]

    # A fix file naming a dead letter that does not exist is refused, naming it.
    (tmp_path / "wrong.jsonl").write_bytes(orjson.dumps({**late, "offset": 999}) + b"\n")
    code, out, err = await _cli(settings, "dlq", "replay", "--fixed", str(tmp_path / "wrong.jsonl"))
    assert code != 0 and "999" in err


async def test_data_faults_in_the_profile_store_are_dead_lettered_and_the_partition_moves(
        make_settings, spawn_worker):
    # Found by a hostile user: a 3,000-character email was accepted, PostgreSQL refused its
    # index entry (54000), the worker took that for "database down" and stalled the
    # partition forever. A \u0000 in a trait makes jsonb refuse the row (22P05). Both are
    # now refused by the event contract's limits before PostgreSQL sees them (the runner's
    # SQLSTATE classes, the net under the limits, are tested in test_pipeline_runner.py).
    settings = make_settings(topic_partitions=1, fold_processes=0)
    await ensure_topics(settings)
    worker = spawn_worker(settings)
    prefix = settings.topic_prefix
    long_email = secrets.token_hex(1500) + "@example.test"  # random: TOAST cannot shrink it
    sent = await produce(settings, settings.topic_identify, [
        (b"u1", orjson.dumps({"type": "identify", "userId": "u1", "messageId": prefix + "long",
                              "traits": {"email": long_email}, "timestamp": TS})),
        (b"u2", orjson.dumps({"type": "identify", "userId": "u2", "messageId": prefix + "nul",
                              "traits": {"nickname": "a\u0000b"}, "timestamp": TS})),
        (b"u3", orjson.dumps({"type": "identify", "userId": "u3", "messageId": prefix + "ok",
                              "traits": {"plan": "pro"}, "timestamp": TS})),
    ])
    letters = await eventually(lambda: _dlq_with(settings, 2), timeout=90,
                               what="two dead letters")
    by_offset = {int(h["x-original-offset"]): h["x-reason"].decode() for _, h in letters}
    assert by_offset.keys() == {sent[0].offset, sent[1].offset}
    assert by_offset[sent[0].offset] == \
        "/traits/email: longer than 512 characters (max_identifier_chars)"
    assert by_offset[sent[1].offset] == "/traits/nickname: contains NUL (U+0000)"
    assert all(long_email[:20] not in reason for reason in by_offset.values())
    ids = await eventually(lambda: _ids_if(settings, 1), timeout=60, what="the valid event")
    assert ids == ["ok"]
    assert worker.poll() is None
