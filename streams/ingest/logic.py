"""Pure logic of the collector: authentication, parsing a request, normalizing and
routing its events, and the per-key rate limit. No Kafka, no HTTP, no database; every
function that needs the time takes it as an argument.

The collector calls ``authenticate`` -> ``parse_request`` -> ``RateLimiter.take`` ->
``plan_events``, then writes ``RequestPlan.accepted`` and dead-letters
``RequestPlan.rejected`` (``streams.events.dlq.dead_letter_for_rejection``). What an
event is (kinds, schemas, limits, source and channel rules, dead letters) is the event
contract's, in ``streams.events``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from streams.events.derive import (
    derive_social_channel,
    derive_source,
    generate_message_id,
    route,
    social_action,
)
from streams.events.limits import bound_time, content_problem, correct_skew, instant, time_problem
from streams.events.models import EVENT_TYPES, Kind, Rejection
from streams.events.schemas import SchemaSet, default_schemas
from streams.events.time import format_time, parse_time
from streams.events.validate import (
    DEFAULT_LIMITS,
    Limits,
    ids_error,
    json_type,
    schema_error,
    type_error,
)
from streams.ingest.device import enrich_context
from streams.ingest.models import RequestError, RequestPlan, RoutedEvent

# --- authentication ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the write key (a credential: never log or echo it) and the
    source it is bound to."""

    write_key: str = field(repr=False)
    source: str


def authenticate(
    authorization: str | None, write_keys: Mapping[str, str], body_key: object = None
) -> Caller | RequestError:
    """The caller of a request (HTTP Basic, write key as user name), or a 401.

    Without an Authorization header, ``body_key`` (the body's ``writeKey``, as browser
    SDKs send it: ``sendBeacon`` and ``text/plain`` posts cannot set headers) is the
    key. The error never repeats the key.
    """
    if not authorization and isinstance(body_key, str) and body_key:
        source = write_keys.get(body_key)
        if source is None:
            return RequestError(401, "unauthorized", "writeKey", "unknown write key")
        return Caller(body_key, source)
    if not authorization:
        return RequestError(401, "unauthorized", "Authorization",
                            "missing Authorization header: use HTTP Basic auth with the "
                            "write key as user name (or writeKey in the JSON body)")
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
    # The body's writeKey (browser SDKs), taken out of the events: never written anywhere.
    write_key: object = field(default=None, repr=False)


def parse_request(
    body: bytes, path_type: str | None, limits: Limits = DEFAULT_LIMITS
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
                            f"request body must be a JSON object, not {json_type(doc)}")
    write_key = doc.pop("writeKey", None)
    if path_type is not None:
        if len(body) > limits.max_event_bytes:
            return RequestError(413, "event_too_large", "max_event_bytes",
                                f"event is {len(body)} bytes, over the limit of "
                                f"{limits.max_event_bytes} bytes")
        return ParsedRequest(events=[doc], sent_at=doc.get("sentAt"), write_key=write_key)
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
    for event in events:  # a key inside an event is a credential too: never written
        if type(event) is dict and "writeKey" in event:
            key = event.pop("writeKey")
            write_key = write_key or key
    # Each event's size is checked by plan_events on the JSON it serializes anyway.
    sent_at = doc.get("sentAt")
    if sent_at is not None and isinstance(instant(sent_at), str):
        return RequestError(400, "invalid_body", "sentAt",
                            f"sentAt {instant(sent_at)}; for example 2026-11-01T10:00:00.000Z")
    context = doc.get("context")
    return ParsedRequest(events=events, sent_at=doc.get("sentAt"),
                         context=context if isinstance(context, dict) else None, batch=True,
                         write_key=write_key)


def _event_too_large(index: int | None, size: int, limits: Limits) -> RequestError:
    if index is None:
        return RequestError(413, "event_too_large", "max_event_bytes",
                            f"event is {size} bytes, over the limit of "
                            f"{limits.max_event_bytes} bytes")
    return RequestError(413, "event_too_large", f"/batch/{index}",
                        f"event {index} is {size} bytes, over the limit of "
                        f"{limits.max_event_bytes} bytes (max_event_bytes)")




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
    limits: Limits = DEFAULT_LIMITS,
    client_ip: str | None = None,
) -> RoutedEvent | Rejection:
    """Turn one received event into what goes on its topic, or say why it cannot.

    Drops null fields, applies the endpoint's type, checks type and identifiers, validates
    against the envelope schema and the time fields it reads (``limits.time_problem``),
    merges the batch context, corrects the timestamp for clock skew and bounds it around
    the receipt (``limits.correct_skew``, ``limits.bound_time``; the device's value is
    kept as ``originalTimestamp``), stamps ``receivedAt``,
    fills ``messageId``, ``source``, ``socialChannel``/``socialAction``, routes and
    serializes; then the contract's content limits (``limits.content_problem``) on what
    would be written. The result is what ``validate_record`` accepts. ``sent_at`` is the
    batch's sentAt (used when the event has none) and ``sent_time`` the same, parsed.
    An empty ``userId`` or ``anonymousId`` counts as absent (browser SDKs send
    ``"userId": ""``). ``client_ip`` fills ``context.ip`` when missing, and a
    ``context.userAgent`` gives browser, os and device (``streams.ingest.device``).
    This runs once per event on the collector's hot path, hence the fast paths.
    """
    schemas = schemas or default_schemas()
    if received_text is None:  # called alone (not from plan_events): make sure of UTC
        received_at = received_at.astimezone(UTC)
    if type(raw) is not dict:
        return Rejection(index, "", f"event must be a JSON object, not {json_type(raw)}", raw)
    event = {k: v for k, v in raw.items() if v is not None} if None in raw.values() \
        else dict(raw)
    if event.get("userId") == "" or event.get("anonymousId") == "":
        for name in ("userId", "anonymousId"):
            if event.get(name) == "":
                del event[name]
    if path_type is not None:
        event["type"] = path_type
    # Fast path: a known type, a string id and a valid envelope; else find what is wrong.
    user_id = event.get("userId")
    if (event.get("type") in EVENT_TYPES
            and (type(user_id) is str or type(event.get("anonymousId")) is str)
            and schemas.envelope.is_valid(event)):
        problem = None
    else:
        problem = (type_error(event) or ids_error(event)
                   or schema_error(schemas.envelope, event))
    # The time fields the collector reads (its own receivedAt replaces the client's; a
    # client's originalTimestamp is kept only without a timestamp). The batch's sentAt
    # was checked with the request.
    problem = problem or time_problem(
        event, ("timestamp", "sentAt") if "timestamp" in event
        else ("sentAt", "originalTimestamp"))
    if problem is not None:
        kind = None
        if event.get("type") in EVENT_TYPES:
            kind = route({"type": event["type"],
                          "socialChannel": derive_social_channel(event, key_source)})
        return Rejection(index, problem[0], problem[1], raw, kind)

    if batch_context:
        own = event.get("context")
        event["context"] = {**batch_context, **own} if isinstance(own, dict) else batch_context
    if client_ip is not None or "context" in event:
        context = enrich_context(event.get("context"), client_ip)
        if context is not None:
            event["context"] = context
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
        event["timestamp"] = bound_time(
            correct_skew(device_time, sent, received_at),  # type: ignore[arg-type]
            received_at, limits)
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
        kind = "view" if event_type in ("page", "screen") else "identify"  # or group
    # The normalized event passes its topic's schema: the envelope was valid and every
    # field added above is the schema's form (a unit test holds this over simulated
    # traffic); validating again would cost a second schema pass per event.
    key = user_id if user_id else event.get("anonymousId") or ""
    try:
        value: bytes | None = orjson.dumps(event, option=_DUMPS)
    except orjson.JSONEncodeError:  # deeper than orjson writes: the walk below names it
        value = None
    problem = content_problem(event, limits, value)
    if problem is None and value is None:  # pragma: no cover - max_depth is under 255
        problem = "", "event cannot be written as JSON"
    if problem is not None:
        return Rejection(index, problem[0], problem[1], raw, kind)
    return RoutedEvent(kind, key, event["messageId"], value)


_DUMPS = orjson.OPT_UTC_Z


def _json_size(raw: object) -> int:
    """The size of ``raw`` as JSON; 0 when orjson cannot write it (nested past its 255
    levels: refused by the depth limit, and the request itself was under its limit)."""
    try:
        return len(orjson.dumps(raw))
    except orjson.JSONEncodeError:
        return 0


def plan_events(
    parsed: ParsedRequest,
    *,
    path_type: str | None,
    key_source: str,
    received_at: datetime,
    schemas: SchemaSet | None = None,
    limits: Limits = DEFAULT_LIMITS,
    client_ip: str | None = None,
) -> RequestPlan | RequestError:
    """Normalize every event of a parsed request (``client_ip``: the caller's address,
    for events without ``context.ip``).

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
            sent_time=sent_time, limits=limits, client_ip=client_ip,
        )
        if isinstance(result, RoutedEvent):
            if len(result.value) > limits.max_event_bytes:
                return _event_too_large(index if parsed.batch else None, len(result.value),
                                        limits)
            accepted.append(result)
            continue
        if len(parsed.events) > 1 or parsed.batch:
            size = _json_size(raw)
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
