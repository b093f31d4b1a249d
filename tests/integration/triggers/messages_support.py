"""Real ``messages.personalized`` documents for the consumer-side tests, rendered by the
trigger stage's own logic (``decide_send``) from the unit tests' factories."""

from __future__ import annotations

import uuid

import orjson
from aiokafka import AIOKafkaProducer

from streams.settings import Settings
from streams.triggers.logic import decide_send, plan_rule
from streams.triggers.models import Send
from tests.unit.triggers.factories import RULES, T0, at, person, rules_with, view

# The built-in rules with no control group, so that every decision is a send.
SENDING = rules_with(**{name: {"control_share": 0.0} for name in RULES.rules})


def welcome_message(n: int) -> dict:
    """A schema-valid welcome message for the ``n``-th person (its own profile and ids)."""
    pid = str(uuid.UUID(int=n + 1, version=4))
    p = person([view(f"first-{n}", T0)], profile_id=pid)
    [intent] = plan_rule(p, SENDING.rule("welcome"))
    decision = decide_send(intent, p, [], SENDING, intent.due_at)
    assert isinstance(decision, Send), decision
    return decision.message


def browse_message() -> dict:
    """A browse-abandonment message sent by email: three views of running shoes."""
    views = [view(f"v{i}", at(minutes=i), category="running", item=f"trail-shoe-{i % 2}")
             for i in range(3)]
    p = person(views, preferences={"categories": ["running"], "locale": "en-GB",
                               "preferredChannel": "email"})
    [intent] = [i for i in plan_rule(p, SENDING.rule("browse_abandonment"))
                if i.facts.get("scope") == "category"]
    decision = decide_send(intent, p, [], SENDING, intent.due_at)
    assert isinstance(decision, Send), decision
    return decision.message


async def produce_messages(settings: Settings, docs: list[dict]) -> None:
    """Produce documents to messages.personalized as the stage does: key = profile id."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for doc in docs:
            await producer.send_and_wait(settings.topic(settings.topic_messages),
                                         orjson.dumps(doc), key=doc["profileId"].encode())
    finally:
        await producer.stop()
