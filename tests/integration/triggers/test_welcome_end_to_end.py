"""End to end on the real services, with the built-in rules: an event posted to the
collector for a brand-new person yields a welcome on messages.personalized within
seconds, emitted once."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer

from streams.events.schemas import default_schemas
from streams.profiles.models import profile_id_for
from streams.topics import ensure_topics
from streams.triggers.logic import in_control_group
from streams.triggers.rules import load_rules
from tests.helpers import unique


def daytime_zone(now: datetime) -> str:
    """A fixed-offset zone where it is early afternoon now: outside any quiet hours, so
    the built-in rules send at once whatever time the suite runs."""
    offset = (14 - now.hour) % 24
    offset = offset - 24 if offset > 12 else offset
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"  # Etc/GMT-3 is UTC+3


def newcomer_not_held_out(share: float) -> tuple[str, str]:
    """A message id and anonymous id whose profile is not in the welcome's control group."""
    while True:
        mid, anon = unique("welcome-"), unique("anon-")
        if not in_control_group(profile_id_for(mid), "welcome", share):
            return mid, anon


async def test_a_brand_new_person_gets_a_welcome_within_seconds(
        make_settings, spawn_worker, start_collector):
    settings = make_settings()
    await ensure_topics(settings)
    worker = spawn_worker(settings)
    client = await start_collector(settings)
    welcome = load_rules(None).rule("welcome")
    mid, anon = newcomer_not_held_out(welcome.control_share)
    consumer = AIOKafkaConsumer(settings.topic(settings.topic_messages),
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        status, body, _ = await client.post("/v1/page", {
            "messageId": mid, "anonymousId": anon, "name": "Home",
            "context": {"timezone": daytime_zone(datetime.now(UTC)),
                        "page": {"url": "https://shop.example/"}}})
        assert status == 200, body
        posted = time.monotonic()
        found: list[dict] = []
        while time.monotonic() - posted < 60 and not found:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    doc = orjson.loads(record.value)
                    if doc["profileId"] == profile_id_for(mid):
                        found.append(doc)
                        assert record.key == doc["profileId"].encode()
            assert worker.poll() is None
        elapsed = time.monotonic() - posted
        assert found, "no welcome within 60 s"
        (message,) = found
        assert message["rule"] == "welcome" and message["channel"] == "web"
        assert message["destination"] == {"type": "anonymous_id", "value": anon}
        assert default_schemas().message.is_valid(message)
        # Within seconds: the rule's 5 s delay, a batch window and two polling rounds.
        assert elapsed < welcome.delay.total_seconds() + 15, elapsed
        # Emitted once: nothing more for this person over a few more seconds.
        more = await consumer.getmany(timeout_ms=3000)
        again = [r for rs in more.values() for r in rs
                 if orjson.loads(r.value)["profileId"] == profile_id_for(mid)]
        assert not again
    finally:
        await consumer.stop()
