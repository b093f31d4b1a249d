"""The README's example consumer (docs/examples/dedup_consumer.py), run as it is against
the real Kafka: a message delivered twice is handled once."""

from __future__ import annotations

import asyncio
import importlib.util

from streams.topics import ensure_topics
from tests.helpers import REPO, eventually, unique

from .messages_support import browse_message, produce_messages, welcome_message

EXAMPLE = REPO / "docs" / "examples" / "dedup_consumer.py"


def load_example():
    spec = importlib.util.spec_from_file_location("dedup_consumer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_consumer_handles_a_redelivered_message_once(make_settings):
    example = load_example()
    settings = make_settings(topic_prefix=unique("dd") + ".")
    await ensure_topics(settings)
    first, other = browse_message(), welcome_message(1)
    # The same decision produced twice (as after a crash between the produce and the
    # commit of the decision), and one other message.
    await produce_messages(settings, [first, first, other])
    handled: list[dict] = []

    async def handle(message: dict) -> None:
        handled.append(message)

    seen, stop = example.SeenIds(), asyncio.Event()
    task = asyncio.create_task(example.consume(
        settings.kafka_bootstrap, settings.topic(settings.topic_messages), unique("sender-"),
        handle, seen, stop))
    try:
        await eventually(lambda: _true(len(handled) == 2 and seen.duplicates == 1),
                         timeout=60, what="two distinct messages and one duplicate")
        await asyncio.sleep(1.0)  # nothing more arrives
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert sorted(m["messageId"] for m in handled) == sorted(
        [first["messageId"], other["messageId"]])
    assert seen.duplicates == 1 and len(handled) == 2


async def _true(value: bool) -> bool:
    return value

