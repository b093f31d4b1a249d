"""Pure logic of the profile stage: no Kafka, no SQLAlchemy, explicit inputs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from streams.profiles.store import LoggedEvent


@dataclass(frozen=True)
class DecodeError:
    """A record that cannot become an event, and why (the reason goes to the DLQ header)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 string as an aware UTC datetime; None when absent or unparseable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def decode_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> LoggedEvent | DecodeError:
    """Decode one Kafka record into an event, or say why it cannot be one."""

    def fail(reason: str) -> DecodeError:
        return DecodeError(topic, partition, offset, key, value, reason)

    if not value:
        return fail("empty value")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return fail(f"value is not JSON: {exc}")
    if not isinstance(doc, dict):
        return fail("value is not a JSON object")
    message_id = doc.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        # Stable across redelivery: derived from the record's content.
        message_id = "h-" + hashlib.sha256(value).hexdigest()[:32]
    return LoggedEvent(
        topic=topic,
        partition=partition,
        offset=offset,
        message_id=message_id,
        key=key.decode("utf-8", "replace") if key is not None else None,
        payload=doc,
        event_time=parse_time(doc.get("timestamp")),
    )
