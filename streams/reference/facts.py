"""What the reference reads from one record: the event contract's validation decides
whether it is dead-lettered, then the fields ``docs/profiles.md`` lists are read into a
``Fact`` (identifiers normalized, blocked ones included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from streams.events.derive import canonical_channel, derive_source
from streams.events.limits import MESSAGE_ID_MAX_CHARS
from streams.events.validate import validate_record
from streams.reference.rules import normalized, type_named

ITEM_FIELDS = ("product_id", "item_id", "sku", "content_id", "post_id")


@dataclass(frozen=True)
class Fact:
    """One accepted event as the reference needs it. ``time`` is the UTC time as
    ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, so text order is time order."""

    message_id: str
    time: str
    type: str
    identifiers: frozenset[str]
    source: str
    channel: str | None = None
    name: str | None = None
    item: str | None = None
    category: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    preferences: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, bool] = field(default_factory=dict)
    zone: str | None = None
    device: dict[str, str] = field(default_factory=dict)
    group: str | None = None  # a group call's account id
    group_traits: dict[str, Any] = field(default_factory=dict)  # that account's traits

    @property
    def key(self) -> tuple[str, str]:
        """The canonical order: event time, then message id."""
        return (self.time, self.message_id)


def kind_of(doc: object) -> str:
    """The topic kind a test producer sends an envelope to (the collector's routing)."""
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind in ("page", "screen"):
        return "view"
    if kind in ("identify", "alias", "group"):
        return "identify"
    return "social" if isinstance(doc, dict) and doc.get("socialChannel") else "click"


def text(value: object, limit: int = 256) -> str | None:
    """A field as trimmed text cut at ``limit`` (numbers as text); None when empty or
    not a string or number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value.strip()[:limit] or None


def obj(value: object) -> dict:
    """``value`` when it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}


def first_keys(value: object) -> dict[str, Any]:
    """The first 100 entries of an object whose key is a non-empty string (keys cut at
    128 characters)."""
    out: dict[str, Any] = {}
    for k, v in list(obj(value).items())[:100]:
        if isinstance(k, str) and k:
            out[k[:128]] = v
    return out


def known_zone(name: str | None) -> str | None:
    """``name`` when this machine knows it as an IANA zone, else None."""
    if not name:
        return None
    try:
        ZoneInfo(name)
    except Exception:  # noqa: BLE001 - any failure means the machine does not know it
        return None
    return name


def utc_text(moment: datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def identifiers_of(doc: dict) -> frozenset[str]:
    """Every identifier an envelope carries, normalized (see ``docs/profiles.md``)."""
    context = obj(doc.get("context"))
    raw: list[tuple[str, object]] = [("anonymous_id", doc.get("anonymousId")),
                                     ("user_id", doc.get("userId"))]
    if doc.get("type") == "alias":
        raw.append(("anonymous_id", doc.get("previousId")))
    # A group call's own traits describe the account, never the person.
    own = obj(doc.get("traits")) if doc.get("type") != "group" else {}
    for traits in (own, obj(context.get("traits"))):
        raw += [("email", traits.get("email")), ("phone", traits.get("phone"))]
    raw.append(("device_id", obj(context.get("device")).get("id")))
    external = context.get("externalIds")
    for entry in external if isinstance(external, list) else ():
        id_type = type_named(text(obj(entry).get("type"), 64) or "")
        if id_type:
            raw.append((id_type, obj(entry).get("id")))
    return frozenset(i for i in (normalized(t, v) for t, v in raw) if i is not None)


def read_record(doc: object, position: int = 0,
                appended_at: datetime | None = None) -> Fact | str:
    """The ``Fact`` of an envelope sent to its collector topic, or the reason it is
    dead-lettered. The contract's validation (``validate_record``) first; then a message
    id of at most the contract's ``MESSAGE_ID_MAX_CHARS`` (256) after trimming, a userId or
    anonymousId that is not blank, and a group call's ``groupId``. ``appended_at``: the
    record's Kafka time, which bounds the event time of a record without ``receivedAt``."""
    value = orjson.dumps(doc)
    checked = validate_record(f"events.{kind_of(doc)}", 0, position, None, value,
                              appended_at=appended_at)
    if not hasattr(checked, "payload"):
        return checked.reason
    payload = checked.payload
    message_id = text(payload.get("messageId"), MESSAGE_ID_MAX_CHARS + 1)
    if message_id is None:
        return "messageId: missing"
    if len(message_id) > MESSAGE_ID_MAX_CHARS:
        return f"messageId: longer than {MESSAGE_ID_MAX_CHARS} characters"
    if text(payload.get("userId")) is None and text(payload.get("anonymousId")) is None:
        return "userId/anonymousId: at least one is required"
    if payload["type"] == "group" and text(payload.get("groupId")) is None:
        return "groupId: missing (a group call names the account)"
    return read_fields(payload, message_id, utc_text(checked.event_time))


def read_fields(doc: dict, message_id: str, time: str) -> Fact:
    """The facts of a validated envelope."""
    kind = doc["type"]
    context, properties = obj(doc.get("context")), obj(doc.get("properties"))
    # An identify's traits: context.traits (where RudderStack's browser SDK puts them),
    # overridden name by name by the top-level traits.
    traits = ({**first_keys(context.get("traits")), **first_keys(doc.get("traits"))}
              if kind == "identify" else {})
    preferences = first_keys(traits.pop("preferences", None))
    consent = {k: v for k, v in first_keys(traits.pop("consent", None)).items()
               if isinstance(v, bool)}
    device_doc = obj(context.get("device"))
    device = {"id": text(device_doc.get("id")),
              "type": text(device_doc.get("type"), 64),
              "manufacturer": text(device_doc.get("manufacturer"), 64),
              "model": text(device_doc.get("model"), 64),
              "os": text(obj(context.get("os")).get("name"), 64),
              "browser": text(obj(context.get("browser")).get("name"), 64)}
    item = next((v for v in (text(properties.get(f), 128) for f in ITEM_FIELDS) if v), None)
    return Fact(
        message_id=message_id, time=time, type=kind, identifiers=identifiers_of(doc),
        source=derive_source(doc, None), channel=canonical_channel(doc.get("socialChannel")),
        name=text(doc.get("event") if kind == "track" else doc.get("name")),
        item=item,
        category=text(properties.get("category"), 128) or text(properties.get("genre"), 128),
        traits=traits, preferences=preferences, consent=consent,
        zone=known_zone(text(context.get("timezone"), 64)),
        device={k: v for k, v in device.items() if v},
        group=text(doc.get("groupId")) if kind == "group" else None,
        group_traits=first_keys(doc.get("traits")) if kind == "group" else {},
    )
