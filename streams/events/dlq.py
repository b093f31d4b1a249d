"""Dead letters: the ``events.dlq`` record (headers and JSON value), written by the
collector for events it refused from a batch and by every stage for records it could
not process, and read back by ``streams dlq list|replay``.

Building a dead letter never raises: a value that cannot be embedded as JSON (too deep,
not UTF-8, not an object) goes as its raw bytes beside the reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from streams.events.derive import event_key
from streams.events.models import DeadLetter, InvalidRecord, Rejection
from streams.events.time import format_time
from streams.events.validate import clip

HEADER_ORIGIN = "x-origin"
HEADER_TOPIC = "x-original-topic"
HEADER_PARTITION = "x-original-partition"
HEADER_OFFSET = "x-original-offset"
HEADER_REASON = "x-reason"
HEADER_FIELD = "x-field"
HEADER_REPLAYED = "x-replayed-from"
_MAX_HEADER_REASON = 1000
# A direct producer may write records up to the broker's limit (1 MB by default); its
# dead letter, holding the record and more, would be over it, the send would fail and
# the partition would stall on it. Past this size only the start of the value is kept
# (the whole record stays on its topic, at the offset the headers name).
MAX_EMBEDDED_BYTES = 64 * 1024


def dlq_headers(
    origin: str, topic: str | None, partition: int, offset: int, reason: str,
    field: str | None,
) -> list[tuple[str, bytes]]:
    """Headers naming where a dead letter came from and why (the reason is clipped)."""
    headers = [
        (HEADER_ORIGIN, origin.encode()),
        (HEADER_TOPIC, (topic or "").encode()),
        (HEADER_PARTITION, str(partition).encode()),
        (HEADER_OFFSET, str(offset).encode()),
        (HEADER_REASON, reason.encode("utf-8", "replace")[:_MAX_HEADER_REASON]),
    ]
    if field is not None:
        headers.append((HEADER_FIELD, field.encode("utf-8", "replace")[:200]))
    return headers


def _dlq_value(
    *, origin: str, reason: str, field: str | None, topic: str | None, partition: int,
    offset: int, key: str | None, now: datetime, original: object = None,
    raw: bytes | None = None, source: str | None = None, batch_index: int | None = None,
) -> bytes:
    doc: dict = {
        "version": 1, "origin": origin, "reason": clip(reason, 2000), "field": field,
        "original": {"topic": topic, "partition": partition, "offset": offset, "key": key},
        "deadLetteredAt": format_time(now), "source": source, "batchIndex": batch_index,
    }
    if raw is not None and len(raw) > MAX_EMBEDDED_BYTES:
        doc["rawTruncatedFrom"] = len(raw)
        original, raw = None, raw[:MAX_EMBEDDED_BYTES]
    if isinstance(original, dict):
        doc["event"] = original
        try:
            return orjson.dumps(doc)
        except (orjson.JSONEncodeError, TypeError):
            # Deeper than orjson writes (255 levels) or not encodable: keep the raw form.
            del doc["event"]
            if raw is None:
                raw = _raw_json(original)
    elif raw is None:
        raw = _raw_json(original)
    try:
        doc["raw"], doc["rawEncoding"] = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        doc["raw"], doc["rawEncoding"] = base64.b64encode(raw).decode(), "base64"
    return orjson.dumps(doc)


def _raw_json(value: object) -> bytes:
    """``value`` as JSON bytes: by orjson, else by the standard library (no 255-level
    limit), else a placeholder (deeper than Python recurses). Never raises."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return json.dumps(value, ensure_ascii=False, default=repr).encode("utf-8", "replace")
    except (RecursionError, ValueError, TypeError):
        return b'"(an event too deeply nested to write)"'


def dead_letter_for_record(invalid: InvalidRecord, now: datetime) -> DeadLetter:
    """The ``events.dlq`` record for a record that failed on the processing side.

    Its key is the original key; headers name the original topic, partition, offset and
    the reason; the value (schema ``events.dlq``) embeds the original event, or its raw
    bytes when it was not a JSON object (or could not be embedded). Never raises.
    """
    original: object = None
    if invalid.value and len(invalid.value) <= MAX_EMBEDDED_BYTES:
        try:
            original = orjson.loads(invalid.value)
        except orjson.JSONDecodeError:
            original = None
    key = invalid.key.decode("utf-8", "replace") if invalid.key is not None else None
    value = _dlq_value(
        origin="processing", reason=invalid.reason, field=invalid.field, topic=invalid.topic,
        partition=invalid.partition, offset=invalid.offset, key=key, now=now,
        original=original if isinstance(original, dict) else None,
        raw=invalid.value or b"",
    )
    return DeadLetter(invalid.key, value, dlq_headers(
        "processing", invalid.topic, invalid.partition, invalid.offset, invalid.reason,
        invalid.field))


def dead_letter_for_rejection(
    rejection: Rejection, *, topic: str | None, key_source: str, now: datetime
) -> DeadLetter:
    """The ``events.dlq`` record for an event the collector refused from a batch.

    ``topic`` is where the event would have gone (None when its type is unknown); it never
    reached a topic, so partition and offset are -1.
    """
    event = rejection.event
    key = event_key(event) if isinstance(event, dict) else None
    value = _dlq_value(
        origin="collector", reason=rejection.reason, field=rejection.field, topic=topic,
        partition=-1, offset=-1, key=key, now=now, original=event, source=key_source,
        batch_index=rejection.index,
    )
    return DeadLetter(key.encode() if key else None, value, dlq_headers(
        "collector", topic, -1, -1, rejection.reason, rejection.field))


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as read back from ``events.dlq`` (for ``streams dlq list|replay``)."""

    partition: int
    offset: int
    key: str | None
    origin: str
    reason: str
    field: str | None
    original_topic: str | None
    original_partition: int
    original_offset: int
    dead_lettered_at: str | None
    event: dict | None
    raw: str | None
    document: dict | None


def read_dead_letter(
    partition: int, offset: int, key: bytes | None, value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> StoredDeadLetter:
    """Decode a record of ``events.dlq``; tolerates records other writers put there (the
    headers are then the only source of truth)."""
    hdr = {k: v.decode("utf-8", "replace") for k, v in headers or ()}
    doc: dict | None = None
    try:
        parsed = orjson.loads(value) if value else None
        doc = parsed if isinstance(parsed, dict) and parsed.get("version") == 1 else None
    except orjson.JSONDecodeError:
        doc = None
    original = (doc or {}).get("original") or {}

    def as_int(text: object) -> int:
        try:
            return int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return -1

    event = doc.get("event") if doc else None
    raw = doc.get("raw") if doc else (value.decode("utf-8", "replace") if value else None)
    if doc is None and raw:
        try:  # a foreign dead letter whose value is the original event itself
            candidate = orjson.loads(raw)
            event = candidate if isinstance(candidate, dict) else None
        except orjson.JSONDecodeError:
            event = None
    return StoredDeadLetter(
        partition=partition, offset=offset,
        key=key.decode("utf-8", "replace") if key is not None else None,
        origin=(doc or {}).get("origin") or hdr.get(HEADER_ORIGIN, "unknown"),
        reason=(doc or {}).get("reason") or hdr.get(HEADER_REASON, ""),
        field=(doc or {}).get("field", hdr.get(HEADER_FIELD)),
        original_topic=original.get("topic") or hdr.get(HEADER_TOPIC) or None,
        original_partition=as_int(original.get("partition", hdr.get(HEADER_PARTITION))),
        original_offset=as_int(original.get("offset", hdr.get(HEADER_OFFSET))),
        dead_lettered_at=(doc or {}).get("deadLetteredAt"),
        event=event if isinstance(event, dict) else None,
        raw=raw if isinstance(raw, str) else None,
        document=doc,
    )
