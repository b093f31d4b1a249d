"""Replaying dead letters (``streams dlq replay``): whether a dead letter, or the
operator's fixed version of its event, may go back to its topic, and with what."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson

from streams.events.derive import event_key, route
from streams.events.dlq import StoredDeadLetter
from streams.events.models import SOCIAL_CHANNELS, SOURCES, InvalidRecord, Rejection
from streams.events.schemas import SchemaSet
from streams.events.time import parse_time
from streams.events.validate import TopicKinds, type_error, validate_record
from streams.ingest.logic import normalize_event


@dataclass(frozen=True, slots=True)
class Replay:
    """A dead letter that passes validation now: the topic it goes back to, with what."""

    dead_letter: StoredDeadLetter
    topic: str
    key: bytes | None
    value: bytes


def plan_replay(
    dead_letter: StoredDeadLetter, *, topics: Mapping[str, str], fixed_event: dict | None = None,
    now: datetime, schemas: SchemaSet | None = None,
) -> Replay | Rejection:
    """Whether a dead letter (or the operator's fixed version of its event) can go back.

    ``topics`` maps kinds (click, view, social, identify) to topic names. A collector
    reject is normalized as the collector would have done when it arrived (its write
    key's source, its receive time, so the clock-skew correction is unchanged); a
    processing reject was already on a topic and must now pass that topic's validation.
    The ``messageId`` is kept, so replaying twice deduplicates downstream.
    """
    event = fixed_event if fixed_event is not None else dead_letter.event
    if not isinstance(event, dict):
        return Rejection(None, "", "the dead letter holds no JSON object event to replay; "
                         "supply a fixed one with --fixed")
    doc = dead_letter.document or {}
    if dead_letter.origin == "collector":
        received = parse_time(doc.get("deadLetteredAt")) or now
        source = doc.get("source")
        routed = normalize_event(
            event, index=None, path_type=None,
            key_source=source if isinstance(source, str) and source in (
                *SOURCES, *SOCIAL_CHANNELS) and source != "social" else None,
            received_at=received, schemas=schemas)
        if isinstance(routed, Rejection):
            return routed
        return Replay(dead_letter, topics[routed.kind], routed.key.encode() or None,
                      routed.value)
    problem = type_error(event)
    if problem is not None:
        return Rejection(None, problem[0], problem[1], event)
    kind = route({"type": event["type"], "socialChannel": event.get("socialChannel")})
    topic = topics[kind]
    value = orjson.dumps(event)
    key = (dead_letter.key or event_key(event) or "").encode() or None
    checked = validate_record(topic, -1, -1, key, value,
                              kinds=TopicKinds({t: k for k, t in topics.items()}),  # type: ignore[misc]
                              schemas=schemas)
    if isinstance(checked, InvalidRecord):
        return Rejection(None, checked.field or "", checked.reason, event)
    return Replay(dead_letter, topic, key, value)

