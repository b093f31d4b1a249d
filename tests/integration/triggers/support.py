"""Shared pieces of the trigger stage's integration tests: a clock tests move by hand,
events folded by the real profile store, the stage on the real PostgreSQL and Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer

from streams.db import async_engine
from streams.kafka import read_topic
from streams.profiles.decode import decode_envelope
from streams.profiles.store import ProfileStore
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.triggers.rules import RuleSet, parse_rules
from streams.triggers.stage import TriggerStage

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, midday UTC


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def at(offset_s: float) -> str:
    return (START + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


def rules(text: str) -> RuleSet:
    return parse_rules(text, "<test>")


class Rig:
    """The profile store (writing the change feed) and the trigger stage on one schema."""

    def __init__(self, settings: Settings, ruleset: RuleSet, clock: Clock):
        self.settings, self.rules, self.clock = settings, ruleset, clock

    async def __aenter__(self) -> Rig:
        await ensure_topics(self.settings)
        self.engine = async_engine(self.settings, pool_size=2, max_overflow=0)
        self.profiles = ProfileStore.for_settings(self.settings, self.engine)
        assert self.profiles.feed
        self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                         acks="all", enable_idempotence=True)
        await self.producer.start()
        self.stage = TriggerStage(self.settings, self.engine, self.producer, self.rules,
                                  clock=self.clock)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.producer.stop()
        await self.engine.dispose()

    async def fold(self, *docs: dict) -> None:
        events = [decode_envelope(d) for d in docs]
        await self.profiles.write_batch(events)

    async def settle(self) -> None:
        """Plan until the feed is empty, then emit what is due now."""
        while await self.stage.plan_once():
            pass
        while await self.stage.emit_once():
            pass

    async def messages(self) -> list[dict]:
        topic = self.settings.topic(self.settings.topic_messages)
        return [orjson.loads(r.value) async for r in read_topic(self.settings, topic)]
