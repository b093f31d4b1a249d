"""A downstream sender reading messages.personalized, dropping redeliveries by messageId.

    pip install aiokafka
    python dedup_consumer.py 127.0.0.1:9092 messages.personalized my-email-sender
"""

import asyncio
import json
import sys
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer


class SeenIds:
    """The message ids handled lately. A redelivery comes soon after the first copy and
    on the same partition (the key is the profile id), so a bounded window in this
    consumer is enough; a sender that must never repeat itself across its own restarts
    records the id in its database instead, in the transaction that records the send."""

    def __init__(self, size: int = 100_000):
        self.size, self.ids, self.duplicates = size, OrderedDict(), 0

    def first_time(self, message_id: str) -> bool:
        if message_id in self.ids:
            self.ids.move_to_end(message_id)
            self.duplicates += 1
            return False
        self.ids[message_id] = None
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)
        return True


async def consume(bootstrap, topic, group, handle, seen, stop=None):
    """Hand each message to ``handle`` once; commit offsets only after handling them
    (at least once here too: a crash before the commit re-reads, and ``seen`` drops)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    message = json.loads(record.value)
                    if seen.first_time(message["messageId"]):
                        await handle(message)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


async def send(message):
    """Your sender: pick the template, fill it from personalization, deliver."""
    where = message["destination"]["type"]
    print(f"{message['channel']} to {where}: {message['template']} ({message['messageId']})")


if __name__ == "__main__":
    bootstrap, topic, group = sys.argv[1:4]
    asyncio.run(consume(bootstrap, topic, group, send, SeenIds()))
