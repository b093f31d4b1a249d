"""Source, social channel, social action, topic kind, key and message id of an event.

One set of rules, used by the collector when it normalizes an event and by every stage
when it reads one (see schemas/README.md, "Source and social channel").
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import datetime

import orjson

from streams.events.models import SOCIAL_CHANNELS, SOURCES, Kind
from streams.events.time import format_time

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
    """Which topic kind an event goes to: page/screen -> view; identify/alias/group ->
    identify; track -> social when it carries a social channel, else click.

    Raises KeyError for an unknown type (callers check the type first).
    """
    event_type = event["type"]
    if event_type in ("page", "screen"):
        return "view"
    if event_type in ("identify", "alias", "group"):
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



def message_id_for_record(value: bytes) -> str:
    """The messageId of a record a direct producer wrote without one: derived from the
    record's bytes, so a redelivered or re-sent copy of the same record gets the same id
    and is counted once (two records differing in any byte are two events)."""
    digest = hashlib.sha256(b"record:" + value).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


_CLAIM = b'"messageId"'
# The common shape after the key: a plain string (no escapes), read without parsing.
_PLAIN_CLAIM = re.compile(rb'\s*:\s*"([^"\\]*)"')


def claimed_message_id(value: bytes | None) -> str | None:
    """The messageId a record's value claims, as the stages read it (a string or number,
    trimmed), or None when it claims none (its id is then derived from its bytes, so only
    an identical copy shares it) or is not a JSON object. Does not validate the record:
    for telling which records may be copies of one event. Pure.

    Cheap where it can be (the worker asks it of every record): when the key occurs once
    and holds a plain string, that string is read without parsing the record. That may
    name a key for a record that turns out not to be valid JSON, or whose only
    ``messageId`` is nested: such a key can only make the runner order two batches it did
    not need to, never leave two copies unordered."""
    if not value:
        return None
    at = value.find(_CLAIM)
    if at >= 0 and value.find(_CLAIM, at + len(_CLAIM)) < 0:
        plain = _PLAIN_CLAIM.match(value, at + len(_CLAIM))
        if plain is not None:
            return plain.group(1).decode("utf-8", "replace").strip() or None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    claimed = doc.get("messageId") if isinstance(doc, dict) else None
    if isinstance(claimed, bool) or not isinstance(claimed, str | int | float):
        return None
    return str(claimed).strip() or None
