"""Decoding for the profile stage: a validated envelope reduced to a ``FoldEvent`` (the
identifiers it carries, normalized; what the fold reads), or the reason it cannot be one.
Pure: no Kafka, no SQL."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from streams.events.derive import canonical_channel, derive_source, message_id_for_record
from streams.events.limits import (
    DEFAULT_LIMITS,
    MESSAGE_ID_MAX_CHARS,
    Limits,
    bound_time,
    content_problem,
    identifier_fields,
    instant,
    time_problem,
)
from streams.identity.logic import canonical_type, normalize_value
from streams.identity.models import ANONYMOUS_ID, DEVICE_ID, EMAIL, PHONE, USER_ID, id_key
from streams.profiles.models import EVENT_TYPES, FoldEvent, InvalidEvent, iso

MAX_MESSAGE_ID = MESSAGE_ID_MAX_CHARS  # the schema's, one limit at both ends
_LABELS = {"anonymous_id": ANONYMOUS_ID, "user_id": USER_ID, "email": EMAIL, "phone": PHONE,
           "device_id": DEVICE_ID}
# Identifier types whose normalized value is the string trimmed (``normalize_value``).
_TRIMMED = frozenset((ANONYMOUS_ID, USER_ID, DEVICE_ID))
_ITEM_FIELDS = ("product_id", "item_id", "sku", "content_id", "post_id")
_EMPTY: dict = {}  # an absent context; only read


def _str(value: object, limit: int = 256) -> str | None:
    if type(value) is str:  # perf: the common case first
        value = value.strip()
        return value[:limit] or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] or None


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def derive_source_channel(doc: dict) -> tuple[str, str | None]:
    """(source, social channel) of an event, by the ingestion domain's rules (see
    schemas/README.md), so the worker, the oracle and a rebuild read the same values.

    A validated event carries ``source`` (processing-side validation fills it in with
    the same ``derive_source``); the channel is the event's ``socialChannel``, which
    only social interactions (on ``events.social``) carry.
    """
    return derive_source(doc, None), canonical_channel(doc.get("socialChannel"))


def extract_identifiers(doc: dict, fields: Iterable[tuple[str, str, object]] | None = None
                        ) -> tuple[str, ...]:
    """Every normalized identifier an envelope carries (blocked values included).

    Read from the event contract's ``identifier_fields`` (the places its limits check):
    anonymousId, userId, alias ``previousId`` (as an anonymous_id), ``traits`` and
    ``context.traits`` email and phone (not a group call's traits: the account's),
    ``context.device.id``, and every ``context.externalIds[]`` entry (social channel ids
    and handles, custom types).
    ``fields``: ``identifier_fields(doc)`` when the caller already listed them.
    """
    keys = set()
    for _, label, raw in identifier_fields(doc) if fields is None else fields:
        if raw is None:
            continue  # most fields are absent (normalize_value's answer too)
        id_type = _LABELS.get(label)
        if id_type is None:  # "external:" + the entry's own type
            id_type = canonical_type(_str(label[len("external:"):], 64) or "")
            if not id_type:
                continue
        if id_type in _TRIMMED and type(raw) is str:
            value = raw.strip()[:512]  # normalize_value's rule for these, without a call
        else:
            value = normalize_value(id_type, raw)
            if value is None:
                continue
        keys.add(id_key(id_type, value))
    return tuple(sorted(keys))


def _scalar_map(value: object, limit: int = 100) -> dict[str, Any]:
    """Keep JSON scalars and small lists/dicts; the key count is bounded."""
    if not value or not isinstance(value, dict):
        return {}
    items = value.items() if len(value) <= limit else list(value.items())[:limit]
    return {k[:128]: v for k, v in items if isinstance(k, str) and k}


def decode_envelope(doc: object, when: datetime | None = None,
                    fields: Iterable[tuple[str, str, object]] | None = None,
                    ) -> FoldEvent | InvalidEvent:
    """A Segment-spec envelope (already parsed JSON) as a ``FoldEvent``, or why not.

    This is the single swap point for the ingestion domain's validator: whatever
    validates the envelope must hand back a dict for this function to reduce.
    ``when``: the event time when the validator already parsed ``timestamp`` (saves
    parsing it twice on the hot path); otherwise it is read from the envelope.
    ``fields``: the envelope's ``identifier_fields`` when the validator already listed
    them (``limits.identifier_problem``'s ``found``).
    """
    if not isinstance(doc, dict):
        return InvalidEvent("event is not a JSON object")
    kind = doc.get("type")
    if kind not in EVENT_TYPES:
        return InvalidEvent(f"type: must be one of {', '.join(EVENT_TYPES)}")
    message_id = _str(doc.get("messageId"), MAX_MESSAGE_ID + 1)
    if message_id is None:
        return InvalidEvent("messageId: missing")
    if len(message_id) > MAX_MESSAGE_ID:
        return InvalidEvent(f"messageId: longer than {MAX_MESSAGE_ID} characters")
    if _str(doc.get("userId")) is None and _str(doc.get("anonymousId")) is None:
        return InvalidEvent("userId/anonymousId: at least one is required")
    if when is None:
        for name in ("timestamp", "originalTimestamp", "receivedAt", "sentAt"):
            if doc.get(name) is not None:
                moment = instant(doc[name])
                if isinstance(moment, str):
                    return InvalidEvent(f"{name}: {moment}")
                received = instant(doc.get("receivedAt"))
                when = bound_time(moment, received if isinstance(received, datetime)
                                  else None, DEFAULT_LIMITS)
                break
        else:
            return InvalidEvent("timestamp: missing (and no receivedAt or sentAt)")
    group_id = None
    if kind == "group":
        group_id = _str(doc.get("groupId"))
        if group_id is None:
            return InvalidEvent("groupId: missing (a group call names the account)")
    # perf: the hot path; an absent or non-object part is an empty one.
    context = doc.get("context")
    if not isinstance(context, dict):
        context = _EMPTY
    if kind == "identify":
        # RudderStack's browser SDK sends an identify's traits in context.traits only.
        traits = {**_scalar_map(context.get("traits")), **_scalar_map(doc.get("traits"))}
        preferences = _scalar_map(traits.pop("preferences", None)) if traits else {}
        consent_raw = traits.pop("consent", None) if traits else None
        consent = {k: v for k, v in _scalar_map(consent_raw).items() if isinstance(v, bool)}
    else:
        traits, preferences, consent = {}, {}, {}
    device_ctx, os_ctx, browser = (context.get("device"), context.get("os"),
                                   context.get("browser")) if context else (None, None, None)
    device = {}
    if device_ctx or os_ctx or browser:
        device_ctx, os_ctx, browser = _dict(device_ctx), _dict(os_ctx), _dict(browser)
        if device_ctx or os_ctx or browser:
            device = {k: v for k, v in (
                ("id", _str(device_ctx.get("id"))),
                ("type", _str(device_ctx.get("type"), 64)),
                ("manufacturer", _str(device_ctx.get("manufacturer"), 64)),
                ("model", _str(device_ctx.get("model"), 64)),
                ("os", _str(os_ctx.get("name"), 64)),
                # Web events: the browser the collector read from the user agent.
                ("browser", _str(browser.get("name"), 64)),
            ) if v}
    tz = _str(context.get("timezone"), 64) if context else None
    item = category = None
    properties = doc.get("properties")
    if properties and isinstance(properties, dict):
        for name in _ITEM_FIELDS:
            item = _str(properties.get(name), 128)
            if item:
                break
        category = _str(properties.get("category"), 128) or \
            _str(properties.get("genre"), 128)
    # Positional (the field order of FoldEvent): a third of the keyword call's cost.
    return FoldEvent(
        message_id, iso(when), kind, extract_identifiers(doc, fields),
        derive_source(doc, None), canonical_channel(doc.get("socialChannel")),
        _str(doc.get("event")) if kind == "track" else _str(doc.get("name")),
        category, item, traits, preferences, consent,
        tz if valid_timezone(tz) else None, device, group_id,
        _scalar_map(doc.get("traits")) if group_id else {},
    )


def decode_record(value: bytes | None,
                  limits: Limits = DEFAULT_LIMITS) -> FoldEvent | InvalidEvent:
    """A Kafka record value as a ``FoldEvent``, or the reason it cannot be one: the
    event contract's time and content limits, then ``decode_envelope`` (no topic, so no
    schema; ``streams.events.validate.validate_record`` is the whole decision).

    A missing messageId is derived from the record's bytes, as ``validate_record`` does,
    so that a redelivered copy of the same record still deduplicates.
    """
    if not value:
        return InvalidEvent("empty value")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return InvalidEvent(f"value is not JSON: {exc}")
    if not isinstance(doc, dict):
        return InvalidEvent("event is not a JSON object")
    if doc.get("messageId") is None or doc.get("messageId") == "":
        doc["messageId"] = message_id_for_record(value)
    problem = time_problem(doc) or content_problem(doc, limits, value)
    if problem is not None:
        return InvalidEvent(problem[1])
    return decode_envelope(doc)


@functools.lru_cache(maxsize=512)
def zone_named(name: str) -> ZoneInfo | None:
    """The IANA zone ``name``, or None when this machine does not know it (cached)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def valid_timezone(name: str | None) -> bool:
    """True when ``name`` is an IANA time zone this machine knows."""
    return bool(name) and zone_named(name) is not None  # type: ignore[arg-type]


def local_hour(time: str, tz: str | None) -> int | None:
    """Hour of day of ``time`` in zone ``tz``; None when there is no usable zone."""
    zone = zone_named(tz) if tz else None
    if zone is None:
        return None
    return datetime.fromisoformat(time.replace("Z", "+00:00")).astimezone(zone).hour
