"""Validation of event records against the contract: their topic's JSON Schema, the
identifier rule, the type <-> topic mapping; and the limits both ends enforce.

``validate_record`` is what every stage runs on a record it reads from an event topic
(a direct producer can send anything); the collector uses the same schemas and error
messages (``schema_error``, ``type_error``, ``ids_error``) before it writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import jsonschema_rs
import orjson

from streams.events.derive import derive_source, route
from streams.events.models import EVENT_TYPES, InvalidRecord, ValidEvent
from streams.events.schemas import SchemaSet, default_schemas
from streams.events.time import parse_time
from streams.events.topics import TopicKinds


@dataclass(frozen=True)
class Limits:
    """Size limits of the collector (Segment's: 32 KB an event, 500 KB a request)."""

    max_event_bytes: int = 32 * 1024
    max_request_bytes: int = 500 * 1024
    max_batch_events: int = 10_000


DEFAULT_LIMITS = Limits()



def json_type(value: object) -> str:
    """How an error message names the JSON type of ``value`` ("an array", "null"...)."""
    return {list: "an array", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def clip(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pointer(path: Iterable[object]) -> str:
    """A JSON pointer (RFC 6901) for a jsonschema-rs instance path."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else ""




def schema_error(validator: jsonschema_rs.Validator, doc: object) -> tuple[str, str] | None:
    """The first schema violation of ``doc`` as (JSON pointer, message), or None if valid."""
    if validator.is_valid(doc):
        return None
    for error in validator.iter_errors(doc):
        kind = type(error.kind).__name__
        path = list(error.instance_path)
        if kind == "Required":  # point at the missing field, not at its parent
            path.append(error.kind.property)
            message = "is required"
        elif kind in ("AnyOf", "OneOf", "OneOfNotValid", "OneOfMultipleValid"):
            message = "does not match any of the allowed forms"
        else:
            message = clip(error.message)
        pointer = _pointer(path)
        return pointer, f"{pointer or 'event'}: {message}"
    return "", "event: invalid"  # pragma: no cover - is_valid and iter_errors disagree


def ids_error(event: Mapping) -> tuple[str, str] | None:
    """The userId/anonymousId rule with a clearer message than the schema's anyOf."""
    if event.get("type") == "alias":
        return None  # alias needs userId and previousId; the schema says so by name
    user_id, anonymous_id = event.get("userId"), event.get("anonymousId")
    if (isinstance(user_id, str) and user_id) or (isinstance(anonymous_id, str) and anonymous_id):
        return None
    for name, value in (("userId", user_id), ("anonymousId", anonymous_id)):
        if value is not None and not isinstance(value, str):
            return f"/{name}", f"/{name}: must be a string, not {type(value).__name__}"
    return "/userId", "missing both userId and anonymousId: at least one is required"


def type_error(event: Mapping) -> tuple[str, str] | None:
    event_type = event.get("type")
    if event_type in EVENT_TYPES:
        return None
    if event_type is None:
        return "/type", "/type: missing; expected one of " + ", ".join(EVENT_TYPES)
    shown = clip(repr(event_type), 60)
    return "/type", f"/type: unknown type {shown}; expected one of " + ", ".join(EVENT_TYPES)


_DEFAULT_KINDS = TopicKinds()


def validate_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    kinds: TopicKinds | None = None,
    schemas: SchemaSet | None = None,
) -> ValidEvent | InvalidRecord:
    """Validate one record read from an event topic; never raises for bad data.

    Checks that the value is a JSON object valid against the schema of the topic's kind
    (so a page on events.click, or a track without socialChannel on events.social, is
    invalid), fills in ``source`` when the producer left it out, and returns a
    ``ValidEvent`` carrying the event time; otherwise an ``InvalidRecord`` whose reason
    names the field. ``kinds`` maps topic names to kinds (default: by name suffix).
    """
    kinds = kinds or _DEFAULT_KINDS
    schemas = schemas or default_schemas()

    def fail(reason: str, field: str | None = None) -> InvalidRecord:
        return InvalidRecord(topic, partition, offset, key, value, reason, field)

    kind = kinds.kind(topic)
    if kind is None:
        return fail(f"topic {topic!r} is not an event topic")
    if not value:
        return fail("empty value", "")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return fail(f"value is not JSON: {exc}", "")
    if not isinstance(doc, dict):
        return fail(f"value must be a JSON object, not {json_type(doc)}", "")
    problem = type_error(doc) or ids_error(doc)
    if problem is None and route({"type": doc["type"], "socialChannel": None}) != kind and not (
        kind == "social" and doc["type"] == "track"
    ):
        right = route({"type": doc["type"], "socialChannel": None})
        problem = "/type", f"/type: a {doc['type']} event belongs on the {right} topic, not {topic}"
    problem = problem or schema_error(schemas.topics[kind], doc)
    if problem is not None:
        return fail(problem[1], problem[0])
    if "source" not in doc:
        doc["source"] = derive_source(doc, None)
    event_time = parse_time(doc["timestamp"])
    assert event_time is not None  # the schema checked the date-time format
    return ValidEvent(
        topic=topic, partition=partition, offset=offset, message_id=doc["messageId"],
        key=key.decode("utf-8", "replace") if key is not None else None,
        payload=doc, event_time=event_time, kind=kind,
    )

