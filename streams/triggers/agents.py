"""The trigger stage in the worker: its plan and emit loops run as a Faust task beside
the profile stage's agent, in every worker (they share the work through row locks)."""

from __future__ import annotations

import asyncio
import logging

import faust
from aiokafka import AIOKafkaProducer

from streams.settings import Settings

log = logging.getLogger(__name__)


def make_message_producer(settings: Settings) -> AIOKafkaProducer:
    """The producer of ``messages.personalized``: idempotent, acks=all, so an
    acknowledged message is on every in-sync replica and a retried send is not
    duplicated by the broker."""
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                            enable_idempotence=True, linger_ms=5)


def register(app: faust.App, settings: Settings) -> None:
    """Run the trigger stage's loops in ``app``'s workers (unless
    ``STREAMS_TRIGGERS_ENABLED`` is false). The rules file is read now, so a bad one
    stops the worker at start with errors naming each rule and field."""
    if not settings.triggers_enabled:
        return
    from streams.db import async_engine
    from streams.triggers.rules import load_rules
    from streams.triggers.stage import TriggerStage

    rules = load_rules(settings.triggers_file)

    @app.task
    async def send_personalized_messages() -> None:
        producer = make_message_producer(settings)
        engine = async_engine(settings, pool_size=2, max_overflow=0)
        await producer.start()
        stop = asyncio.Event()
        try:
            log.info("triggers: %d rule(s) from %s", len(rules.enabled()), rules.source)
            await TriggerStage(settings, engine, producer, rules).run(stop)
        finally:
            await producer.stop()
            await engine.dispose()
