"""Pure logic of ingestion: parsing, normalizing, validating and routing events, rate limits,
dead-letter records and the systemic-failure stop. No Kafka, no HTTP, no database; every
function that needs the time takes it as an argument.

Two entry points:

- the collector calls ``authenticate`` -> ``parse_request`` -> ``RateLimiter.take`` ->
  ``plan_events``, then writes ``RequestPlan.accepted`` and dead-letters
  ``RequestPlan.rejected`` (``dead_letter_for_rejection``);
- the processing stage calls ``validate_record`` for every record it reads from an event
  topic, feeds the outcomes of a batch to ``SystemicFailureDetector.observe`` and
  dead-letters the invalid ones (``dead_letter_for_record``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import jsonschema_rs
import orjson

from streams.ingest.models import (
    EVENT_TYPES,
    SOCIAL_CHANNELS,
    SOURCES,
    DeadLetter,
    InvalidEvent,
    Kind,
    Rejection,
    RequestError,
    RequestPlan,
    RoutedEvent,
    ValidEvent,
)
from streams.ingest.schemas import SchemaSet, default_schemas

# --- limits ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Size limits of the collector (Segment's: 32 KB an event, 500 KB a request)."""

    max_event_bytes: int = 32 * 1024
    max_request_bytes: int = 500 * 1024
    max_batch_events: int = 10_000


# --- time -----------------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 / RFC 3339 string as an aware UTC datetime; None when absent or bad.

    A string without an offset is taken as UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """A UTC datetime as Segment writes it: ``2026-11-01T10:00:00.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def correct_timestamp(
    timestamp: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """The event time corrected for the device's clock skew, as Segment does.

    The device's clock is off by ``sentAt - receivedAt`` (network latency aside), so
    ``timestamp = receivedAt - (sentAt - originalTimestamp)``. Without ``sentAt`` the
    device's timestamp is kept; without a timestamp the event happened when received.
    """
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    return received_at - (sent_at - timestamp)


# --- source, social channel and routing -------------------------------------------------

# Spellings of the social networks seen in the wild, mapped to the schema's names.
_CHANNEL_ALIASES = {
    "facebook": "facebook", "fb": "facebook", "facebook.com": "facebook", "meta": "facebook",
    "instagram": "instagram", "ig": "instagram", "instagram.com": "instagram",
    "twitter": "twitter", "x": "twitter", "x.com": "twitter", "twitter.com": "twitter",
    "linkedin": "linkedin", "li": "linkedin", "linkedin.com": "linkedin",
}
_WATCH_DEVICE_TYPES = {"watch", "smartwatch", "wearable"}
_WATCH_OS_NAMES = {"watchos", "wear os", "wearos", "wear"}
_MOBILE_DEVICE_TYPES = {"ios", "android", "mobile", "phone", "tablet"}
_MOBILE_OS_NAMES = {"ios", "ipados", "android"}
# Words of a track event name that make a social interaction a given action.
_ACTION_WORDS = (
    ("like", ("like", "liked", "likes", "favorite", "favorited", "reaction", "reacted")),
    ("share", ("share", "shared", "shares", "repost", "reposted", "retweet", "retweeted")),
    ("comment", ("comment", "commented", "comments", "reply", "replied")),
    ("follow", ("follow", "followed", "follows", "subscribed", "connect", "connected")),
    ("mention", ("mention", "mentioned", "mentions", "tagged")),
    ("message", ("dm", "message", "messaged", "direct")),
)


def canonical_channel(value: object) -> str | None:
    """A social network name in the schema's spelling, or None when it is not one."""
    if not isinstance(value, str):
        return None
    return _CHANNEL_ALIASES.get(value.strip().lower())


def _lower(mapping: object, key: str) -> str:
    if isinstance(mapping, dict):
        value = mapping.get(key)
        if isinstance(value, str):
            return value.strip().lower()
    return ""


def derive_source(event: Mapping, key_source: str | None) -> str:
    """The event's source (web, mobile, smartwatch, social); see schemas/README.md.

    The write key decides when there is one (a key is bound to its source, so the event
    cannot claim another); otherwise an explicit valid ``source`` field, a social channel,
    then hints in ``context`` (device type, os name, app) and the event type.
    """
    if key_source is not None:
        return "social" if key_source in SOCIAL_CHANNELS else key_source
    explicit = event.get("source")
    if isinstance(explicit, str) and explicit in SOURCES:
        return explicit
    if canonical_channel(event.get("socialChannel")):
        return "social"
    context = event.get("context")
    device_type = _lower(context.get("device") if isinstance(context, dict) else None, "type")
    os_name = _lower(context.get("os") if isinstance(context, dict) else None, "name")
    if device_type in _WATCH_DEVICE_TYPES or os_name in _WATCH_OS_NAMES:
        return "smartwatch"
    has_app = isinstance(context, dict) and isinstance(context.get("app"), dict)
    if (device_type in _MOBILE_DEVICE_TYPES or os_name in _MOBILE_OS_NAMES or has_app
            or event.get("type") == "screen"):
        return "mobile"
    return "web"


def derive_social_channel(event: Mapping, key_source: str | None) -> str | None:
    """The social network of the event, or None: the write key's channel first, then an
    explicit ``socialChannel``, then ``properties.socialChannel``, ``.channel``, ``.network``.
    """
    if key_source in SOCIAL_CHANNELS:
        return key_source
    channel = canonical_channel(event.get("socialChannel"))
    if channel:
        return channel
    props = event.get("properties")
    if isinstance(props, dict):
        for name in ("socialChannel", "channel", "network"):
            channel = canonical_channel(props.get(name))
            if channel:
                return channel
    return None


def social_action(event_name: object) -> str:
    """The kind of social interaction a track event's name describes (``other`` if none)."""
    if not isinstance(event_name, str):
        return "other"
    words = event_name.lower().replace("_", " ").replace("-", " ").split()
    for action, vocabulary in _ACTION_WORDS:
        if any(word in vocabulary for word in words):
            return action
    return "other"


def route(event: Mapping) -> Kind:
    """Which topic kind an event goes to: page/screen -> view; identify/alias -> identify;
    track -> social when it carries a social channel, else click.

    Raises KeyError for an unknown type (callers check the type first).
    """
    event_type = event["type"]
    if event_type in ("page", "screen"):
        return "view"
    if event_type in ("identify", "alias"):
        return "identify"
    if event_type == "track":
        return "social" if event.get("socialChannel") else "click"
    raise KeyError(event_type)


def event_key(event: Mapping) -> str | None:
    """The Kafka key: userId when known, else anonymousId.

    A known person's events from every device then share a partition, which keeps their
    profile's updates on one worker; anonymous activity is keyed by its device id.
    """
    for name in ("userId", "anonymousId"):
        value = event.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def generate_message_id(event: Mapping, source: str, received_at: datetime) -> str:
    """A messageId for an event that came without one, stable across client retries.

    Derived from the event's content (which includes its device timestamp) so that a
    retried request yields the same id and deduplicates downstream. An event with neither
    timestamp nor sentAt has nothing stable to go by, so the receive time is mixed in.
    """
    digest = hashlib.sha256(source.encode())
    digest.update(orjson.dumps(event, option=orjson.OPT_SORT_KEYS))
    if not event.get("timestamp") and not event.get("sentAt"):
        digest.update(format_time(received_at).encode())
    return str(uuid.UUID(bytes=digest.digest()[:16], version=5))


# --- validation errors -----------------------------------------------------------------


def _pointer(path: Iterable[object]) -> str:
    """A JSON pointer (RFC 6901) for a jsonschema-rs instance path."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else ""


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
            message = _clip(error.message)
        pointer = _pointer(path)
        return pointer, f"{pointer or 'event'}: {message}"
    return "", "event: invalid"  # pragma: no cover - is_valid and iter_errors disagree


def _ids_error(event: Mapping) -> tuple[str, str] | None:
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


def _type_error(event: Mapping) -> tuple[str, str] | None:
    event_type = event.get("type")
    if event_type in EVENT_TYPES:
        return None
    if event_type is None:
        return "/type", "/type: missing; expected one of " + ", ".join(EVENT_TYPES)
    shown = _clip(repr(event_type), 60)
    return "/type", f"/type: unknown type {shown}; expected one of " + ", ".join(EVENT_TYPES)


# --- authentication ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the write key (a credential: never log or echo it) and the
    source it is bound to."""

    write_key: str = field(repr=False)
    source: str


def authenticate(
    authorization: str | None, write_keys: Mapping[str, str]
) -> Caller | RequestError:
    """The caller of a request (HTTP Basic, write key as user name), or a 401.

    The error never repeats the key.
    """
    if not authorization:
        return RequestError(401, "unauthorized", "Authorization",
                            "missing Authorization header: use HTTP Basic auth with the "
                            "write key as user name")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        return RequestError(401, "unauthorized", "Authorization",
                            "Authorization must use the Basic scheme with the write key as "
                            "user name")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return RequestError(401, "unauthorized", "Authorization",
                            "Authorization Basic credentials are not valid base64")
    write_key = decoded.partition(":")[0]
    source = write_keys.get(write_key)
    if source is None:
        return RequestError(401, "unauthorized", "Authorization", "unknown write key")
    return Caller(write_key, source)


# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A well-formed request body: its events and the batch-level sentAt and context."""

    events: list
    sent_at: object = None
    context: dict | None = None
    batch: bool = False


def parse_request(
    body: bytes, path_type: str | None, limits: Limits = Limits()
) -> ParsedRequest | RequestError:
    """Parse a collector request body. ``path_type`` is the endpoint's type, None for batch.

    Returns a 400 for malformed JSON or a wrong shape, a 413 for a body or event over its
    limit; nothing of such a request may be written.
    """
    if len(body) > limits.max_request_bytes:
        return RequestError(413, "request_too_large", "max_request_bytes",
                            f"request body is {len(body)} bytes, over the limit of "
                            f"{limits.max_request_bytes} bytes")
    if not body.strip():
        return RequestError(400, "malformed_json", "body", "request body is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return RequestError(400, "malformed_json", "body", f"request body is not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return RequestError(400, "invalid_body", "body",
                            f"request body must be a JSON object, not {_json_type(doc)}")
    if path_type is not None:
        if len(body) > limits.max_event_bytes:
            return RequestError(413, "event_too_large", "max_event_bytes",
                                f"event is {len(body)} bytes, over the limit of "
                                f"{limits.max_event_bytes} bytes")
        return ParsedRequest(events=[doc], sent_at=doc.get("sentAt"))
    events = doc.get("batch")
    if not isinstance(events, list):
        return RequestError(400, "invalid_body", "batch",
                            "batch must be a JSON array of events" if "batch" in doc
                            else "missing batch: /v1/batch takes {\"batch\": [events...]}")
    if not events:
        return RequestError(400, "invalid_body", "batch", "batch is empty")
    if len(events) > limits.max_batch_events:
        return RequestError(413, "batch_too_long", "max_batch_events",
                            f"batch has {len(events)} events, over the limit of "
                            f"{limits.max_batch_events}")
    # Each event's size is checked by plan_events on the JSON it serializes anyway.
    sent_at = doc.get("sentAt")
    if sent_at is not None and parse_time(sent_at) is None:
        return RequestError(400, "invalid_body", "sentAt",
                            "sentAt must be an ISO-8601 date-time, for example "
                            "2026-11-01T10:00:00.000Z")
    context = doc.get("context")
    return ParsedRequest(events=events, sent_at=doc.get("sentAt"),
                         context=context if isinstance(context, dict) else None, batch=True)


def _event_too_large(index: int | None, size: int, limits: Limits) -> RequestError:
    if index is None:
        return RequestError(413, "event_too_large", "max_event_bytes",
                            f"event is {size} bytes, over the limit of "
                            f"{limits.max_event_bytes} bytes")
    return RequestError(413, "event_too_large", f"/batch/{index}",
                        f"event {index} is {size} bytes, over the limit of "
                        f"{limits.max_event_bytes} bytes (max_event_bytes)")


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def normalize_event(
    raw: object,
    *,
    index: int | None,
    path_type: str | None,
    key_source: str | None,
    received_at: datetime,
    sent_at: object = None,
    batch_context: dict | None = None,
    schemas: SchemaSet | None = None,
    received_text: str | None = None,
    sent_time: datetime | None = None,
) -> RoutedEvent | Rejection:
    """Turn one received event into what goes on its topic, or say why it cannot.

    Drops null fields, applies the endpoint's type, checks type and identifiers, validates
    against the envelope schema, merges the batch context, corrects the timestamp for
    clock skew (keeping the device's as ``originalTimestamp``), stamps ``receivedAt``,
    fills ``messageId``, ``source``, ``socialChannel``/``socialAction``, routes and
    serializes; the result is valid against its topic's schema. ``sent_at`` is the
    batch's sentAt (used when the event has none) and ``sent_time`` the same, parsed.
    This runs once per event on the collector's hot path, hence the fast paths.
    """
    schemas = schemas or default_schemas()
    if received_text is None:  # called alone (not from plan_events): make sure of UTC
        received_at = received_at.astimezone(UTC)
    if type(raw) is not dict:
        return Rejection(index, "", f"event must be a JSON object, not {_json_type(raw)}", raw)
    event = {k: v for k, v in raw.items() if v is not None} if None in raw.values() \
        else dict(raw)
    if path_type is not None:
        event["type"] = path_type
    # Fast path: a known type, a string id and a valid envelope; else find what is wrong.
    user_id = event.get("userId")
    if (event.get("type") in EVENT_TYPES
            and (type(user_id) is str or type(event.get("anonymousId")) is str)
            and schemas.envelope.is_valid(event)):
        problem = None
    else:
        problem = (_type_error(event) or _ids_error(event)
                   or schema_error(schemas.envelope, event))
    if problem is not None:
        kind = None
        if event.get("type") in EVENT_TYPES:
            kind = route({"type": event["type"],
                          "socialChannel": derive_social_channel(event, key_source)})
        return Rejection(index, problem[0], problem[1], raw, kind)

    if batch_context:
        own = event.get("context")
        event["context"] = {**batch_context, **own} if isinstance(own, dict) else batch_context
    original = event.get("timestamp")
    own_sent = event.get("sentAt")
    if own_sent is None and sent_at is not None:
        event["sentAt"] = own_sent = sent_at  # the batch's, as the client wrote it
    if original is not None:
        event["originalTimestamp"] = original
        device_time = parse_time(original)
        if own_sent is None:
            sent = None
        elif own_sent is sent_at and sent_time is not None:
            sent = sent_time  # the batch's, parsed once per request
        else:
            sent = parse_time(own_sent)
        # A datetime: orjson writes it (RFC 3339, UTC as Z) in C, cheaper than isoformat.
        event["timestamp"] = received_at - (sent - device_time) if sent is not None \
            else device_time
    else:
        event["timestamp"] = received_text or format_time(received_at)
    event["receivedAt"] = received_text or format_time(received_at)

    source = derive_source(event, key_source)
    if not event.get("messageId"):
        event["messageId"] = generate_message_id(raw, key_source or source, received_at)
    event["source"] = source
    event_type = event["type"]
    if event_type == "track":
        channel = derive_social_channel(event, key_source)
        if channel:
            event["socialChannel"] = channel
            event["socialAction"] = social_action(event.get("event"))
            kind: Kind = "social"
        else:
            event.pop("socialChannel", None)
            kind = "click"
    else:
        event.pop("socialChannel", None)
        kind = "view" if event_type in ("page", "screen") else "identify"
    # The normalized event passes its topic's schema: the envelope was valid and every
    # field added above is the schema's form (a unit test holds this over simulated
    # traffic); validating again would cost a second schema pass per event.
    key = user_id if user_id else event.get("anonymousId") or ""
    return RoutedEvent(kind, key, event["messageId"], orjson.dumps(event, option=_DUMPS))


_DUMPS = orjson.OPT_UTC_Z


def plan_events(
    parsed: ParsedRequest,
    *,
    path_type: str | None,
    key_source: str,
    received_at: datetime,
    schemas: SchemaSet | None = None,
    limits: Limits = Limits(),
) -> RequestPlan | RequestError:
    """Normalize every event of a parsed request.

    A single-event call whose event is invalid is a 400 naming the field (nothing is
    written); a batch keeps its valid events and lists the others as rejections, which the
    caller dead-letters. An event over ``limits.max_event_bytes`` (measured on the JSON
    that would be written, or as received for an invalid one) makes the whole request a
    413, naming its index.
    """
    accepted: list[RoutedEvent] = []
    rejected: list[Rejection] = []
    received_at = received_at.astimezone(UTC)
    received_text = format_time(received_at)
    sent_time = parse_time(parsed.sent_at)
    for index, raw in enumerate(parsed.events):
        result = normalize_event(
            raw, index=index if parsed.batch else None, path_type=path_type,
            key_source=key_source, received_at=received_at, sent_at=parsed.sent_at,
            batch_context=parsed.context, schemas=schemas, received_text=received_text,
            sent_time=sent_time,
        )
        if isinstance(result, RoutedEvent):
            if len(result.value) > limits.max_event_bytes:
                return _event_too_large(index if parsed.batch else None, len(result.value),
                                        limits)
            accepted.append(result)
            continue
        if len(parsed.events) > 1 or parsed.batch:
            size = len(orjson.dumps(raw))
            if size > limits.max_event_bytes:
                return _event_too_large(index, size, limits)
        if parsed.batch and isinstance(raw, dict) and (parsed.sent_at or parsed.context):
            # Keep what the batch said about this event, so a replay sees all of it.
            kept = dict(raw)
            if parsed.sent_at and not raw.get("sentAt"):
                kept["sentAt"] = parsed.sent_at
            if parsed.context:
                own = raw.get("context")
                kept["context"] = {**parsed.context, **own} if isinstance(own, dict) \
                    else parsed.context
            result = Rejection(result.index, result.field, result.reason, kept, result.kind)
        rejected.append(result)
    if not parsed.batch and rejected:
        first = rejected[0]
        return RequestError(400, "invalid_event", first.field or "body", first.reason)
    return RequestPlan(accepted, rejected)


# --- rate limiting ------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per write key, counted in events.

    A request is let through while its key's bucket is not empty, and takes as many
    tokens as it has events (the bucket may go into debt, so a batch larger than the
    burst is still served once, then the key waits). Holds state but does no I/O; the
    caller passes a monotonic ``now`` in seconds. ``rate`` <= 0 disables limiting.
    """

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, events: int, now: float) -> float:
        """Take ``events`` tokens for ``key``; returns 0.0 when allowed, else the seconds
        to wait before the bucket has a token again."""
        if self.rate <= 0:
            return 0.0
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - events, now)
        return 0.0


def rate_limited(key_source: str, wait: float, rate: float) -> RequestError:
    """The 429 answer for a key over its rate; Retry-After in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(wait))
    return RequestError(429, "rate_limited", "rate",
                        f"write key for source {key_source!r} is over its rate of "
                        f"{rate:g} events/s; retry after {seconds}s", retry_after=seconds)


# --- processing side -----------------------------------------------------------------------


class TopicKinds:
    """Maps (prefixed) event topic names to their kind (click, view, social, identify)."""

    def __init__(self, topics: Mapping[str, Kind] | None = None):
        self._topics = dict(topics or {})

    @classmethod
    def from_names(cls, click: str, view: str, social: str, identify: str) -> TopicKinds:
        """From the full topic names, as ``Settings.topic(settings.topic_click)`` gives."""
        return cls({click: "click", view: "view", social: "social", identify: "identify"})

    def kind(self, topic: str) -> Kind | None:
        """The kind of ``topic``; without a mapping, by its default suffix (events.click...)."""
        if self._topics:
            return self._topics.get(topic)
        for kind in ("click", "view", "social", "identify"):
            if topic == f"events.{kind}" or topic.endswith(f".events.{kind}"):
                return kind  # type: ignore[return-value]
        return None

    def topic(self, kind: Kind) -> str | None:
        """The topic name of ``kind`` (None without a mapping)."""
        for topic, k in self._topics.items():
            if k == kind:
                return topic
        return None


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
) -> ValidEvent | InvalidEvent:
    """Validate one record read from an event topic; never raises for bad data.

    Checks that the value is a JSON object valid against the schema of the topic's kind
    (so a page on events.click, or a track without socialChannel on events.social, is
    invalid), fills in ``source`` when the producer left it out, and returns a
    ``ValidEvent`` carrying the event time; otherwise an ``InvalidEvent`` whose reason
    names the field. ``kinds`` maps topic names to kinds (default: by name suffix).
    """
    kinds = kinds or _DEFAULT_KINDS
    schemas = schemas or default_schemas()

    def fail(reason: str, field: str | None = None) -> InvalidEvent:
        return InvalidEvent(topic, partition, offset, key, value, reason, field)

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
        return fail(f"value must be a JSON object, not {_json_type(doc)}", "")
    problem = _type_error(doc) or _ids_error(doc)
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


# --- dead letters ---------------------------------------------------------------------------

HEADER_ORIGIN = "x-origin"
HEADER_TOPIC = "x-original-topic"
HEADER_PARTITION = "x-original-partition"
HEADER_OFFSET = "x-original-offset"
HEADER_REASON = "x-reason"
HEADER_FIELD = "x-field"
HEADER_REPLAYED = "x-replayed-from"
_MAX_HEADER_REASON = 1000


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
        "version": 1, "origin": origin, "reason": _clip(reason, 2000), "field": field,
        "original": {"topic": topic, "partition": partition, "offset": offset, "key": key},
        "deadLetteredAt": format_time(now), "source": source, "batchIndex": batch_index,
    }
    if isinstance(original, dict):
        doc["event"] = original
    elif raw is not None:
        try:
            doc["raw"], doc["rawEncoding"] = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            doc["raw"], doc["rawEncoding"] = base64.b64encode(raw).decode(), "base64"
    else:
        doc["raw"], doc["rawEncoding"] = orjson.dumps(original).decode(), "utf-8"
    return orjson.dumps(doc)


def dead_letter_for_record(invalid: InvalidEvent, now: datetime) -> DeadLetter:
    """The ``events.dlq`` record for a record that failed on the processing side.

    Its key is the original key; headers name the original topic, partition, offset and
    the reason; the value (schema ``events.dlq``) embeds the original event, or its raw
    bytes when it was not a JSON object.
    """
    original: object = None
    if invalid.value:
        try:
            original = orjson.loads(invalid.value)
        except orjson.JSONDecodeError:
            original = None
    key = invalid.key.decode("utf-8", "replace") if invalid.key is not None else None
    value = _dlq_value(
        origin="processing", reason=invalid.reason, field=invalid.field, topic=invalid.topic,
        partition=invalid.partition, offset=invalid.offset, key=key, now=now,
        original=original if isinstance(original, dict) else None,
        raw=None if isinstance(original, dict) else (invalid.value or b""),
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
    problem = _type_error(event)
    if problem is not None:
        return Rejection(None, problem[0], problem[1], event)
    kind = route({"type": event["type"], "socialChannel": event.get("socialChannel")})
    topic = topics[kind]
    value = orjson.dumps(event)
    key = (dead_letter.key or event_key(event) or "").encode() or None
    checked = validate_record(topic, -1, -1, key, value,
                              kinds=TopicKinds({t: k for k, t in topics.items()}),  # type: ignore[misc]
                              schemas=schemas)
    if isinstance(checked, InvalidEvent):
        return Rejection(None, checked.field or "", checked.reason, event)
    return Replay(dead_letter, topic, key, value)


# --- systemic failure (arroyo-style DLQ ratio limit) --------------------------------------


@dataclass(frozen=True)
class DlqLimit:
    """When dead-lettering stops being the answer: a share of invalid events at or above
    ``max_invalid_ratio`` among the last ``window`` events, once ``min_events`` were seen."""

    max_invalid_ratio: float = 0.95
    window: int = 1000
    min_events: int = 200


class SystemicFailure(RuntimeError):
    """Nearly every event fails: a bad deploy or a producer writing the wrong format.

    Raised instead of dead-lettering the batch; the worker should stop without committing.
    """


class SystemicFailureDetector:
    """Tracks validation outcomes over a sliding window of recent events (no I/O)."""

    def __init__(self, limit: DlqLimit = DlqLimit()):
        self.limit = limit
        self._window: deque[bool] = deque(maxlen=max(limit.window, 1))
        self._invalid = 0

    @property
    def invalid_ratio(self) -> float:
        """The share of invalid events in the current window (0 when empty)."""
        return self._invalid / len(self._window) if self._window else 0.0

    def observe(self, valid: int, invalid_reasons: Sequence[str]) -> None:
        """Add one batch's outcomes; raise SystemicFailure when the window trips the limit.

        Call it before dead-lettering the batch, so that a tripped limit dead-letters
        nothing of it.
        """
        outcomes = [True] * valid + [False] * len(invalid_reasons)
        for ok in outcomes:
            if len(self._window) == self._window.maxlen and not self._window[0]:
                self._invalid -= 1
            self._window.append(ok)
            if not ok:
                self._invalid += 1
        seen = len(self._window)
        if seen < self.limit.min_events or not invalid_reasons:
            return
        ratio = self._invalid / seen
        if ratio >= self.limit.max_invalid_ratio:
            common = Counter(r.split(":", 1)[0] if r.startswith("/") else r
                             for r in invalid_reasons).most_common(3)
            reasons = "; ".join(f"{_clip(r, 120)} (x{n})" for r, n in common)
            raise SystemicFailure(
                f"stopping: {self._invalid} of the last {seen} events ({ratio:.0%}) failed "
                f"validation, at or above the limit of {self.limit.max_invalid_ratio:.0%} "
                "(STREAMS_DLQ_MAX_INVALID_RATIO). That looks like a bad deploy or a producer "
                "writing the wrong format, not a few bad events, so this batch was neither "
                f"dead-lettered nor committed. Most common reasons: {reasons}"
            )


def validation_outcomes(
    results: Iterable[ValidEvent | InvalidEvent],
) -> tuple[list[ValidEvent], list[InvalidEvent]]:
    """Split validation results into oks and errs (bytewax style)."""
    good: list[ValidEvent] = []
    bad: list[InvalidEvent] = []
    for result in results:
        (good if isinstance(result, ValidEvent) else bad).append(result)
    return good, bad

