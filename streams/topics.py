"""Topic names and their creation. Every component takes names from here, never literals."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings
from streams.settings_groups import KafkaSettings

log = logging.getLogger(__name__)

# Per-topic configuration. The dead-letter topic keeps its records longer: an operator
# has to be able to look at them and replay them after a fix.
_TOPIC_CONFIGS = {
    "dlq": {"retention.ms": str(30 * 24 * 3600 * 1000)},
}


def topic_specs(kafka: KafkaSettings) -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic the product uses -> (partitions, config)."""
    specs = {name: (kafka.partitions, {}) for name in kafka.event_topics}
    specs[kafka.dlq] = (kafka.partitions, _TOPIC_CONFIGS["dlq"])
    specs[kafka.messages] = (kafka.partitions, {})
    return specs


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the product's topics that are missing; returns the names it created.

    Existing topics are left as they are (their partition counts are never changed).
    Raises aiokafka's KafkaError when the cluster cannot be reached.
    """
    kafka = settings.kafka
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, kafka.replication, topic_configs=config)
            for name, (partitions, config) in topic_specs(kafka).items()
            if name not in existing
        ]
        if not missing:
            return []
        try:
            await admin.create_topics(missing)
        except TopicAlreadyExistsError:
            # Another worker created them between our list and create: that is fine.
            pass
        names = [t.name for t in missing]
        log.info("created topics %s", ", ".join(names))
        return names
    finally:
        await admin.close()
