"""Test support for the ops integration tests: steady traffic into a topic."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import orjson
from aiokafka import AIOKafkaProducer

from streams.settings import Settings

PARTITIONS = 2


class Traffic:
    """Page views to both partitions of a topic at a steady rate, until paused."""

    def __init__(self, settings: Settings, topic: str, per_second: float = 20.0):
        self.topic = topic
        self.period = 1.0 / per_second
        self.running = asyncio.Event()
        self.sent = 0
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                         enable_idempotence=True)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Traffic:
        await self.producer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.producer.stop()

    async def _run(self) -> None:
        for n in itertools.count():
            await self.running.wait()
            event = {"type": "page", "messageId": f"ops-{n}", "anonymousId": f"anon-{n % 7}",
                     "name": "Home", "timestamp": "2026-11-01T10:00:00Z"}
            await self.producer.send_and_wait(self.topic, orjson.dumps(event),
                                              key=f"anon-{n % 7}".encode(),
                                              partition=n % PARTITIONS)
            self.sent += 1
            await asyncio.sleep(self.period)

    async def pause(self) -> None:
        """Stop sending; returns once the last send was acknowledged."""
        self.running.clear()
        sent = self.sent
        await asyncio.sleep(3 * self.period)
        while self.sent != sent:  # a send was in flight
            sent = self.sent
            await asyncio.sleep(3 * self.period)
