"""Which channel a message goes on, and its destination there. Pure; ``now`` explicit.

Email, push, watch and social DMs need the person's consent for that channel; web
in-app is allowed unless they opted out. Among the allowed channels with a destination,
the origin channel comes first where the rule says so, then the channel the person said
they prefer, then the one where they are most active (events in the last 30 days, then
all events, then the most recent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from streams.triggers.models import CHANNELS, SOCIAL_CHANNELS, Intent, Person, frozen_record, iso

ENGAGEMENT_WINDOW = timedelta(days=30)
# Consent keys read for each channel, first found wins ("social" covers every network).
_CONSENT_KEYS: dict[str, tuple[str, ...]] = {
    "email": ("email",), "push": ("push",), "watch": ("watch", "smartwatch"),
    "web": ("web", "in_app", "inApp"),
    **{c: (c, "social") for c in SOCIAL_CHANNELS},
}
_SOURCE_OF = {"push": "mobile", "watch": "smartwatch"}


def stated_consent(channel: str, consent: dict[str, bool]) -> bool | None:
    """What the person stated for ``channel`` (None when nothing)."""
    if not consent:
        return None
    for key in _CONSENT_KEYS.get(channel, (channel,)):
        if isinstance(consent.get(key), bool):
            return consent[key]
    return None


def allowed(channel: str, consent: dict[str, bool]) -> bool:
    """True when the person's consent allows the channel: an explicit yes, or for web
    in-app anything but an explicit no."""
    return _allows(channel, stated_consent(channel, consent))


def _allows(channel: str, stated: bool | None) -> bool:
    return stated is not False if channel == "web" else stated is True


def destination(channel: str, person: Person, *, prefer: str | None = None,
                avoid: str | None = None) -> dict[str, str] | None:
    """Where a message on ``channel`` goes: ``{"type", "value"}`` (email address, device
    id, anonymous id for web in-app, social id or handle), or None when the person has
    none. For push, watch and web the device or browser used last is taken, ``prefer``
    first when it is one of them, never ``avoid``."""
    if channel == "email":
        emails = person.identifiers_of("email")
        stated = person.traits.get("email")
        if isinstance(stated, str) and stated.strip().lower() in emails:
            return {"type": "email", "value": stated.strip().lower()}
        return {"type": "email", "value": emails[0]} if emails else None
    if channel in ("push", "watch", "web"):
        web = channel == "web"
        used: list[tuple[datetime, str]] = []
        for event in person.events:
            if event.origin != channel:
                continue
            value = event.anonymous_id if web else event.device_id
            if value:
                used.append((event.time, value))
        if len(used) > 1:
            used.sort(reverse=True)
        # The ids, the latest used first, once each (a dict keeps the first place).
        values = {v: None for _, v in used if v != avoid}
        if web:  # no web event kept its id: any anonymous id of the person
            for i in person.identifiers:
                if i.startswith("anonymous_id:") and i[13:] != avoid:
                    values.setdefault(i[13:])
        if not values:
            return None
        return {"type": "anonymous_id" if web else "device_id",
                "value": prefer if prefer in values else next(iter(values))}
    if channel in SOCIAL_CHANNELS:
        for kind in (f"{channel}_id", f"{channel}_handle"):
            values = person.identifiers_of(kind)
            if values:
                return {"type": kind, "value": values[0]}
    return None


def engagement(person: Person, now: datetime) -> dict[str, dict[str, Any]]:
    """Per channel with any activity: events from it in the last 30 days, in all, and
    when it was last used (the figures a message's ``why.channel`` shows)."""
    figures: dict[str, dict[str, Any]] = {}
    last: dict[str, datetime] = {}
    since = now - ENGAGEMENT_WINDOW
    for event in person.events:
        channel = event.origin
        if channel is None or not event.behavioural:
            continue
        entry = figures.get(channel)
        if entry is None:
            entry = figures[channel] = {"recent": 0, "total": 0, "lastSeen": None}
        entry["total"] += 1
        if since <= event.time <= now:
            entry["recent"] += 1
        if channel not in last or event.time > last[channel]:
            last[channel] = event.time
    for channel, seen in last.items():  # formatted once, not per event
        figures[channel]["lastSeen"] = iso(seen)
    return figures


@dataclass(frozen=True)
class ChannelChoice:
    """The chosen channel (None when no channel is allowed) and why: consent per
    channel the rule allows, engagement figures, and why others were left out."""

    chosen: str | None
    destination: dict[str, str] | None
    reason: str
    consent: dict[str, bool | None] = field(default_factory=dict)
    engagement: dict[str, dict[str, Any]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)

    def to_why(self) -> dict[str, Any]:
        """The ``why.channel`` block of a message."""
        return {"chosen": self.chosen, "reason": self.reason, "consent": self.consent,
                "engagement": self.engagement, "excluded": self.excluded}


def choose_channel(channels: list[str], prefer_origin: bool, intent: Intent,
                   person: Person, now: datetime) -> ChannelChoice:
    """Pick the channel and destination for ``intent`` among the rule's ``channels``.
    A cross-device intent never goes back to the device (or browser) it started on."""
    stated_by = person.consent
    consent = ({c: stated_consent(c, stated_by) for c in channels} if stated_by
               else dict.fromkeys(channels))  # nothing stated: None for each
    figures = engagement(person, now)
    excluded: dict[str, str] = {}
    destinations: dict[str, dict[str, str]] = {}
    cross = intent.kind == "cross_device"
    prefer = intent.origin_device if prefer_origin and not cross else None
    avoid = intent.origin_device if cross else None
    for channel in channels:
        said = consent[channel]
        if not _allows(channel, said):
            excluded[channel] = "no consent" if said is None else "opted out"
            continue
        if cross and channel == intent.origin_channel and channel not in _SOURCE_OF:
            excluded[channel] = "the device it started on"
            continue
        target = destination(channel, person, prefer=prefer, avoid=avoid)
        if target is None:
            excluded[channel] = "no destination"
            continue
        destinations[channel] = target
    if not destinations:
        return _choice(None, None, "no channel allowed", consent, figures, excluded)
    stated = person.preferences.get("preferredChannel") or person.preferences.get("channel")
    if prefer_origin and intent.origin_channel in destinations:
        chosen, reason = intent.origin_channel, "the channel the trigger came from"
    elif isinstance(stated, str) and stated in destinations:
        chosen, reason = stated, "the channel the person prefers"
    else:
        def rank(channel: str) -> tuple:
            entry = figures.get(channel, {})
            return (-entry.get("recent", 0), -entry.get("total", 0),
                    _negated(entry.get("lastSeen")), CHANNELS.index(channel))
        chosen = min(destinations, key=rank)
        reason = ("the channel the person is most active on" if chosen in figures
                  else "the first allowed channel (no activity on any)")
    return _choice(chosen, destinations[chosen], reason, consent, figures, excluded)


def _choice(chosen: str | None, target: dict[str, str] | None, reason: str,
            consent: dict[str, bool | None], figures: dict[str, dict[str, Any]],
            excluded: dict[str, str]) -> ChannelChoice:
    return frozen_record(ChannelChoice, {
        "chosen": chosen, "destination": target, "reason": reason, "consent": consent,
        "engagement": figures, "excluded": excluded})


def _negated(text: str | None) -> tuple:
    # Later times rank first: compare the negated code points of the ISO text.
    return tuple(-ord(ch) for ch in text) if text else (1,)
