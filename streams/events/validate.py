"""Validation of event records against the contract: their topic's JSON Schema, the
identifier rule, the type <-> topic mapping, and the limits both ends enforce
(``streams.events.limits``).

``validate_record`` is THE decision on a record read from an event topic (a direct
producer can send anything): valid with its event time, or dead-lettered with a reason.
The collector runs the same checks and messages (``schema_error``, ``type_error``,
``ids_error``, ``limits.time_problem``, ``limits.content_problem``) before it writes,
so that it refuses exactly what this would dead-letter. Reasons name the field and the
rule, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import jsonschema_rs
import orjson

from streams.events.derive import derive_source, message_id_for_record, route
from streams.events.limits import (
    DEFAULT_LIMITS,
    Limits,
    bound_time,
    content_problem,
    time_problem,
)
from streams.events.models import EVENT_TYPES, InvalidRecord, ValidEvent
from streams.events.schemas import SchemaSet, default_schemas
from streams.events.topics import TopicKinds

__all__ = ["DEFAULT_LIMITS", "Limits", "TopicKinds", "clip", "ids_error", "json_type",
           "check_record", "schema_error", "type_error", "validate_record"]


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




def _rule(kind: object) -> str:
    """What a schema keyword asks, from its parameters only: jsonschema-rs's own
    messages quote the instance, which may be a person's data."""
    name = type(kind).__name__
    params = kind.as_dict() if hasattr(kind, "as_dict") else {}
    limit = params.get("limit")
    if name == "Type":
        types = params.get("types") or []
        return "must be " + " or ".join(str(t) for t in types)
    if name == "MaxLength":
        return f"is longer than {limit} characters"
    if name == "MinLength":
        return f"is shorter than {limit} character" + ("s" if limit != 1 else "")
    if name == "Format":
        return f"is not a valid {params.get('format')}"
    if name == "Enum":
        return "must be one of " + clip(", ".join(str(o) for o in params.get("options", [])),
                                        200)
    if name == "Constant":
        return clip(f"must be {params.get('expected_value')}", 100)
    if name in ("MaxItems", "MaxProperties"):
        return f"has more than {limit} " + ("items" if name == "MaxItems" else "properties")
    if name in ("MinItems", "MinProperties"):
        return f"has fewer than {limit} " + ("items" if name == "MinItems" else "properties")
    if name in ("Not", "FalseSchema"):
        return "is not allowed here"
    if name == "AdditionalProperties":
        return "has properties the schema does not allow"
    return f"does not match the schema ({name})"


def schema_error(validator: jsonschema_rs.Validator, doc: object) -> tuple[str, str] | None:
    """The first schema violation of ``doc`` as (JSON pointer, message), or None if valid.

    The message names the field and the rule, never the value."""
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
            message = _rule(error.kind)
        pointer = clip(_pointer(path), 300)
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


_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z_-]{0,19}")


def type_error(event: Mapping) -> tuple[str, str] | None:
    """The ``type`` rule: one of ``EVENT_TYPES``. An unknown type is named only when it
    looks like a type name (``group``), never echoed otherwise (it could be anything)."""
    event_type = event.get("type")
    if event_type in EVENT_TYPES:
        return None
    if event_type is None:
        return "/type", "/type: missing; expected one of " + ", ".join(EVENT_TYPES)
    shown = repr(event_type) if isinstance(event_type, str) and \
        _TYPE_NAME.fullmatch(event_type) else "type"
    return "/type", f"/type: unknown type {shown}; expected one of " + ", ".join(EVENT_TYPES)


_DEFAULT_KINDS = TopicKinds()
# The topic kind of each event type without a social channel (``derive.route``), once.
_KIND_OF_TYPE = {t: route({"type": t, "socialChannel": None}) for t in EVENT_TYPES}


def validate_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    kinds: TopicKinds | None = None,
    schemas: SchemaSet | None = None,
    limits: Limits | None = None,
    appended_at: datetime | None = None,
) -> ValidEvent | InvalidRecord:
    """Validate one record read from an event topic; never raises for bad data.

    In this order, the first failure deciding the reason: the topic is an event topic;
    the value is at most ``max_event_bytes`` (the collector's 413 for an event); it is a
    JSON object; a missing (absent, null or empty) ``messageId`` is
    derived from the record's bytes (``derive.message_id_for_record``); ``type`` is
    known, one of ``userId``/``anonymousId`` is given, the type belongs on this topic;
    the topic's schema; every time field is a valid instant in range
    (``limits.time_problem``); identifier values and structure (``limits.content_problem``).
    Then ``source`` is filled in when the producer left it out, and the event time is
    ``timestamp`` bounded around ``receivedAt`` (``limits.bound_time``), or around
    ``appended_at`` (the record's Kafka timestamp) when the record has no ``receivedAt``.

    Returns a ``ValidEvent``, or an ``InvalidRecord`` whose reason names the field and
    the rule. ``kinds`` maps topic names to kinds (default: by name suffix); ``limits``
    defaults to ``DEFAULT_LIMITS`` (a stage passes ``Limits.from_settings``).
    """
    checked = check_record(topic, partition, offset, key, value, kinds=kinds, schemas=schemas,
                           limits=limits, appended_at=appended_at)
    if isinstance(checked, InvalidRecord):
        return checked
    doc, event_time, kind = checked
    return ValidEvent(
        topic=topic, partition=partition, offset=offset, message_id=doc["messageId"],
        key=key.decode("utf-8", "replace") if key is not None else None,
        payload=doc, event_time=event_time, kind=kind,
    )


def check_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    kinds: TopicKinds | None = None,
    schemas: SchemaSet | None = None,
    limits: Limits | None = None,
    appended_at: datetime | float | None = None,
    found: list[tuple[str, str, object]] | None = None,
) -> tuple[dict, datetime, str] | InvalidRecord:
    """``validate_record``'s decision without building a ``ValidEvent``: the normalized
    event, its event time and its topic kind, or the same ``InvalidRecord`` (the profile
    stage's hot path, which reduces the event at once). ``appended_at`` may also be
    given as epoch seconds (a Kafka record's timestamp), converted only when the event
    has no ``receivedAt`` and its time is near a bound. ``found``, when given, receives
    the event's ``limits.identifier_fields`` entries as they were checked."""
    kind = (kinds or _DEFAULT_KINDS).kind(topic)
    limits = limits or DEFAULT_LIMITS
    if kind is None:
        return InvalidRecord(topic, partition, offset, key, value,
                             f"topic {topic!r} is not an event topic", None)
    if not value:
        return InvalidRecord(topic, partition, offset, key, value, "empty value", "")
    if len(value) > limits.max_event_bytes:
        return InvalidRecord(topic, partition, offset, key, value,
                             f"event is {len(value)} bytes, over the limit of "
                             f"{limits.max_event_bytes} bytes (max_event_bytes)", "")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return InvalidRecord(topic, partition, offset, key, value,
                             f"value is not JSON: {exc}", "")
    if type(doc) is not dict:
        return InvalidRecord(topic, partition, offset, key, value,
                             f"value must be a JSON object, not {json_type(doc)}", "")
    message_id = doc.get("messageId")
    if message_id is None or message_id == "":
        doc["messageId"] = message_id_for_record(value)
    problem = type_error(doc) or ids_error(doc)
    if problem is None:
        event_type = doc["type"]
        right = _KIND_OF_TYPE[event_type]
        if right != kind and not (kind == "social" and event_type == "track"):
            problem = "/type", f"/type: a {event_type} event belongs on the {right} topic, " \
                               f"not {topic}"
    times: dict[str, datetime] = {}
    problem = (problem or schema_error((schemas or default_schemas()).topics[kind], doc)
               or time_problem(doc, parsed=times) or content_problem(doc, limits, value, found))
    if problem is not None:
        return InvalidRecord(topic, partition, offset, key, value, problem[1], problem[0])
    if "source" not in doc:
        doc["source"] = derive_source(doc, None)
    moment = times["timestamp"]
    received = times.get("receivedAt")
    if received is None:
        if appended_at is None or isinstance(appended_at, datetime):
            received = appended_at
        else:  # epoch seconds; perf: most times are far inside their bounds
            at = moment.timestamp()
            if appended_at - limits.max_past.total_seconds() + 1 < at < \
                    appended_at + limits.max_future.total_seconds() - 1:
                return doc, moment, kind  # bound_time would return it as it is
            received = datetime.fromtimestamp(appended_at, UTC)
    return doc, bound_time(moment, received, limits), kind
