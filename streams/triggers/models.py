"""Records of the trigger stage: what the rules read (events, a person), what they plan
(intents) and what they decide at send time (send, hold, suppress, cancel, hold out).

The inputs are built from the plain dicts the profile stage stores (``from_json`` for a
stored event, ``from_profile`` for a profile document), so the adapter passes database
rows straight in; this package never imports another domain's code.
"""

from __future__ import annotations

import hashlib
import operator
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from streams.events.derive import social_action as derive_social_action
from streams.events.models import SOCIAL_CHANNELS

# Message ids are UUIDv5 in this namespace of the rule and the triggering events.
MESSAGE_NAMESPACE = uuid.UUID("3b0f7a52-8c1e-4f0a-b5f4-6a2d9e1c7b40")
_NAMESPACE_BYTES = MESSAGE_NAMESPACE.bytes
_dumps, _UTC_Z = orjson.dumps, orjson.OPT_UTC_Z

CHANNELS = ("email", "push", "watch", "web", *SOCIAL_CHANNELS)
Channel = Literal["email", "push", "watch", "web", "facebook", "instagram", "twitter",
                  "linkedin"]
KINDS = ("welcome", "browse_abandonment", "cross_device", "re_engagement",
         "social_follow_up")
Kind = Literal["welcome", "browse_abandonment", "cross_device", "re_engagement",
               "social_follow_up"]
SOCIAL_ACTIONS = ("like", "share", "comment", "follow", "mention", "message")
# Why a planned message was not sent. Suppressions are counted per reason; a
# cancellation means the message is no longer wanted at all.
SuppressReason = Literal["forgotten", "expired", "consent", "cap", "quiet_hours",
                         "duplicate"]
CancelReason = Literal["exit", "superseded", "disabled"]
SUPPRESS_REASONS: tuple[str, ...] = SuppressReason.__args__  # type: ignore[attr-defined]
CANCEL_REASONS: tuple[str, ...] = CancelReason.__args__  # type: ignore[attr-defined]

# The channel an event came from: its source, or its social network.
SOURCE_CHANNEL = {"web": "web", "mobile": "push", "smartwatch": "watch"}

def social_action(event_name: str | None) -> str | None:
    """The social action an event name describes (``like``, ``share`` ...), else None.
    The stored event keeps the name but not the collector's ``socialAction``, so it is
    classified again by the contract's own rule (``streams.events.derive``)."""
    action = derive_social_action(event_name)
    return None if action == "other" else action


def parse_utc(value: str) -> datetime:
    """An ISO-8601 time as an aware UTC datetime (naive means UTC). Raises ValueError."""
    parsed = datetime.fromisoformat(value)  # "Z" included, since Python 3.11
    if parsed.tzinfo is UTC:  # what this module writes: no conversion
        return parsed
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(ts: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` of an aware datetime. Raises ValueError if naive."""
    if ts.tzinfo is not UTC:
        if ts.tzinfo is None:
            raise ValueError("naive datetime: times must be timezone-aware")
        ts = ts.astimezone(UTC)
    # orjson's RFC 3339 (0.3 us; isoformat 1.0 and strftime more: a message renders
    # about ten of these). It leaves out a zero fraction: put it back.
    try:
        text = _dumps(ts, option=_UTC_Z)
    except TypeError:  # a datetime subclass, which orjson does not write
        return ts.isoformat(timespec="microseconds")[:-6] + "Z"
    if len(text) == 22:  # '"YYYY-MM-DDTHH:MM:SSZ"'
        return text[1:-2].decode() + ".000000Z"
    return text[1:-1].decode()


def message_id_for(rule: str, scope: str, event_ids: Iterable[str]) -> str:
    """The stable id of a decision: UUIDv5 of the rule, a scope (what the rule keyed on,
    e.g. ``category:running``) and the sorted ids of the triggering events. It never
    involves the profile id, which changes when profiles merge."""
    name = "\x1f".join((rule, scope, *sorted(set(event_ids))))
    # uuid.uuid5 by hand (RFC 4122: SHA-1 of namespace + name, version and variant bits),
    # without building a UUID object: the emit loop re-plans a rule for every message.
    # The bits are set on the hex digits: the 13th is the version (5), the 17th's two
    # high bits are the variant (10).
    h = hashlib.sha1(_NAMESPACE_BYTES + name.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def frozen_record(cls: type, values: dict[str, Any]) -> Any:
    """An instance of the frozen dataclass ``cls`` from a value for every field, without
    its ``__init__`` (which sets each field through ``object.__setattr__``: a microsecond
    or two a record, and the emit loop builds several records a message). The caller
    gives every field and keeps the class's invariants (``__post_init__`` is not run)."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


EventKey = tuple[datetime, str]


@dataclass(frozen=True)
class TriggerEvent:
    """One event of a person, reduced to what the rules read.

    ``channel`` is the social network of a social interaction; ``origin`` (a property)
    is the message channel the event came from.
    """

    message_id: str
    time: datetime
    type: str
    source: str = "unknown"
    channel: str | None = None
    event: str | None = None
    category: str | None = None
    item: str | None = None
    device_id: str | None = None
    device_type: str | None = None
    anonymous_id: str | None = None

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError(f"event {self.message_id}: time must be timezone-aware")

    @property
    def key(self) -> EventKey:
        """The canonical order of events: time, then message id."""
        return (self.time, self.message_id)

    @property
    def origin(self) -> str | None:
        """The message channel this event came from (``web``, ``push``, ``watch`` or a
        social network), None for server-side or unknown sources."""
        if self.source == "social":
            return self.channel
        return SOURCE_CHANNEL.get(self.source)

    @property
    def behavioural(self) -> bool:
        """True for what a person did (track, page, screen), not what they stated."""
        return self.type in ("track", "page", "screen")

    @property
    def viewed(self) -> bool:
        """True for a page or screen view, or a track event named as a view."""
        return self.type in ("page", "screen") or (
            self.type == "track" and "view" in (self.event or "").lower())

    @property
    def action(self) -> str | None:
        """The social action of a social interaction, else None."""
        return social_action(self.event) if self.channel and self.type == "track" else None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TriggerEvent:
        """From the compact form the profile stage stores per event (``FoldEvent.to_json``:
        m, t, y, i, s, c, e, g, p, d ...). Raises KeyError or ValueError when malformed."""
        device = doc.get("d") or _NO_DEVICE
        anonymous = None  # the least of the event's anonymous ids
        for i in doc.get("i") or ():
            if i.startswith("anonymous_id:") and (anonymous is None or i[13:] < anonymous):
                anonymous = i[13:]
        # parse_utc's times are aware: what __post_init__ checks holds.
        return frozen_record(cls, {
            "message_id": doc["m"], "time": parse_utc(doc["t"]), "type": doc["y"],
            "source": doc.get("s") or "unknown", "channel": doc.get("c"),
            "event": doc.get("e"), "category": doc.get("g"), "item": doc.get("p"),
            "device_id": device.get("id"), "device_type": device.get("type"),
            "anonymous_id": anonymous,
        })

    def to_why(self) -> dict[str, Any]:
        """The event as a message's ``why.events`` entry."""
        doc: dict[str, Any] = {"messageId": self.message_id, "type": self.type,
                               "time": iso(self.time), "source": self.source}
        # Those that are set, in this order (one test each: a message has one per
        # triggering event).
        if self.event:
            doc["event"] = self.event
        if self.channel:
            doc["channel"] = self.channel
        if self.category:
            doc["category"] = self.category
        if self.item:
            doc["item"] = self.item
        if self.device_type:
            doc["deviceType"] = self.device_type
        return doc


def _values(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """A profile's last-writer-wins map ({name: [value, time, msg]}) as {name: value}."""
    out: dict[str, Any] = {}
    if not section:
        return out
    for name, entry in section.items():
        # (list, tuple): ``list | tuple`` would build a union at every entry.
        out[name] = entry[0] if isinstance(entry, (list, tuple)) and len(entry) == 3 else entry
    return out


def _hours(counts: Mapping[str, int] | None) -> dict[int, int]:
    """A profile's hour histogram ({"19": n}) with integer hours."""
    return {int(h): n for h, n in counts.items()} if counts else {}


def canonical_events(events: Iterable[TriggerEvent]) -> tuple[TriggerEvent, ...]:
    """Events in canonical order (time, message id), one per message id (the first kept)."""
    seen: dict[str, TriggerEvent] = {}
    for event in events:
        seen.setdefault(event.message_id, event)
    if len(seen) < 2:
        return tuple(seen.values())
    return tuple(sorted(seen.values(), key=_EVENT_KEY))


_NO_DEVICE: Mapping[str, Any] = {}  # read only
# ``TriggerEvent.key`` as one C call (a sort key per event of every person built).
_EVENT_KEY = operator.attrgetter("time", "message_id")


# The profile document's keys ``Person.from_profile`` reads (what a reader of people
# asks the profile feed for, and no more).
PERSON_KEYS = ("identifiers", "traits", "preferences", "consent", "timezone", "hours",
               "affinity", "recent")


@dataclass(frozen=True)
class Person:
    """What the rules know of one person: their profile's facts and all their events.

    ``identifiers`` are ``TYPE:VALUE`` strings; ``consent`` maps a channel name to the
    person's stated choice; ``hours_local`` / ``hours_utc`` are the profile's active-hours
    counts (events with their own zone, and events without one counted in UTC).
    ``events`` are kept in canonical order without duplicates, whatever was passed.
    """

    profile_id: str
    identifiers: tuple[str, ...] = ()
    traits: dict[str, Any] = field(default_factory=dict)
    preferences: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, bool] = field(default_factory=dict)
    timezone: str | None = None
    hours_local: dict[int, int] = field(default_factory=dict)
    hours_utc: dict[int, int] = field(default_factory=dict)
    category_affinity: dict[str, int] = field(default_factory=dict)
    item_affinity: dict[str, int] = field(default_factory=dict)
    recent_items: tuple[str, ...] = ()
    events: tuple[TriggerEvent, ...] = ()
    forgotten: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", canonical_events(self.events))
        object.__setattr__(self, "identifiers", tuple(sorted(set(self.identifiers))))

    def identifiers_of(self, id_type: str) -> list[str]:
        """The values of this person's identifiers of one type, sorted."""
        prefix = id_type + ":"
        return [i[len(prefix):] for i in self.identifiers if i.startswith(prefix)]

    @property
    def locale(self) -> str | None:
        """The locale the person stated (traits or preferences ``locale``/``language``)."""
        for section in (self.preferences, self.traits):
            if not section:
                continue
            for name in ("locale", "language"):
                value = section.get(name)
                if isinstance(value, str) and value:
                    return value
        return None

    @property
    def name(self) -> str | None:
        """The person's name as they gave it (``name``, else first name), when known."""
        traits = self.traits
        if not traits:
            return None
        for key in ("name", "firstName", "first_name"):
            value = traits.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    @classmethod
    def from_profile(cls, doc: Mapping[str, Any],
                     events: Iterable[Mapping[str, Any] | TriggerEvent] = (),
                     *, forgotten: bool = False) -> Person:
        """From a profile document (the shape of ``streams.profiles.logic.new_profile``)
        and the person's stored events (compact dicts or ``TriggerEvent``s).
        Raises KeyError or ValueError on a malformed document."""
        hours = doc.get("hours") or {}
        affinity = doc.get("affinity") or {}
        recent = doc.get("recent")
        if recent:
            recent = sorted(recent.items(), key=lambda kv: (tuple(kv[1]), kv[0]),
                            reverse=True)
        timezone = doc.get("timezone")
        from_json = TriggerEvent.from_json
        # What __post_init__ does (canonical events, sorted unique identifiers), done here.
        return frozen_record(cls, {
            "profile_id": str(doc["id"]),
            "identifiers": tuple(sorted(set(doc.get("identifiers") or ()))),
            "traits": _values(doc.get("traits")),
            "preferences": _values(doc.get("preferences")),
            "consent": {k: v for k, v in _values(doc.get("consent")).items()
                        if isinstance(v, bool)},
            "timezone": timezone[0] if isinstance(timezone, (list, tuple)) else timezone,
            "hours_local": _hours(hours.get("local")),
            "hours_utc": _hours(hours.get("utc")),
            "category_affinity": dict(affinity.get("category") or {}),
            "item_affinity": dict(affinity.get("item") or {}),
            "recent_items": tuple([item for item, _ in recent]) if recent else (),
            "events": canonical_events([e if isinstance(e, TriggerEvent) else from_json(e)
                                        for e in events]),
            "forgotten": forgotten,
        })

    @classmethod
    def gone(cls, profile_id: str) -> Person:
        """A forgotten person, of whom nothing is left but the id of their messages."""
        return cls(profile_id=profile_id, forgotten=True)


@dataclass(frozen=True)
class Intent:
    """A message a rule wants for a person: what the store keeps in its schedule table.

    ``trigger_events`` are the message ids of the events that caused it (sorted);
    ``exit_after`` the key (time, message id) of the event after which a goal event is
    an exit;
    ``origin`` the channel and device the trigger came from; ``facts`` what the rule
    saw (JSON-able), for the message's ``why`` block.
    """

    message_id: str
    rule: str
    kind: str
    profile_id: str
    trigger_events: tuple[str, ...]
    trigger_time: datetime
    due_at: datetime
    expires_at: datetime
    exit_after: EventKey
    origin_channel: str | None = None
    origin_device: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict for a JSONB column; ``from_json`` reverses it."""
        return {"messageId": self.message_id, "rule": self.rule, "kind": self.kind,
                "profileId": self.profile_id, "triggerEvents": list(self.trigger_events),
                "triggerTime": iso(self.trigger_time), "dueAt": iso(self.due_at),
                "expiresAt": iso(self.expires_at),
                "exitAfter": [iso(self.exit_after[0]), self.exit_after[1]],
                "originChannel": self.origin_channel,
                "originDevice": self.origin_device, "facts": self.facts}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Intent:
        """Rebuild an intent stored with ``to_json``. Raises KeyError or ValueError."""
        trigger, exit_after = doc["triggerTime"], doc["exitAfter"]
        trigger_time = parse_utc(trigger)
        return frozen_record(cls, {
            "message_id": doc["messageId"], "rule": doc["rule"], "kind": doc["kind"],
            "profile_id": doc["profileId"], "trigger_events": tuple(doc["triggerEvents"]),
            "trigger_time": trigger_time, "due_at": parse_utc(doc["dueAt"]),
            "expires_at": parse_utc(doc["expiresAt"]),
            # Usually the triggering event itself: the same text, parsed once.
            "exit_after": (trigger_time if exit_after[0] == trigger
                           else parse_utc(exit_after[0]), exit_after[1]),
            "origin_channel": doc.get("originChannel"),
            "origin_device": doc.get("originDevice"), "facts": dict(doc.get("facts") or {}),
        })


@dataclass(frozen=True)
class SentRecord:
    """One message already sent to the person (any rule, any channel): the history that
    frequency caps and re-eligibility are counted from."""

    sent_at: datetime
    channel: str
    rule: str
    message_id: str


@dataclass(frozen=True)
class Send:
    """Send now: ``message`` is the ``messages.personalized`` document."""

    channel: str
    destination: dict[str, str]
    message: dict[str, Any]


@dataclass(frozen=True)
class Hold:
    """Not yet: look again at ``until`` (``reason``: due, best_hour or quiet_hours)."""

    until: datetime
    reason: str


@dataclass(frozen=True)
class Suppress:
    """Never send this message, and count it under ``reason``."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Cancel:
    """The message is no longer wanted: the person did what it was for (``exit``), a
    later fact replaced it (``superseded``), or its rule is gone or off (``disabled``)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class HoldOut:
    """The person is in the rule's control group: record, do not send. ``at`` is the
    held-out moment, from which a conversion is counted; ``channel`` the one that
    would have been used."""

    at: datetime
    channel: str


Decision = Send | Hold | Suppress | Cancel | HoldOut
