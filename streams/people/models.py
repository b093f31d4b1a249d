"""Records of the person page: what its store reads and what its pure logic turns into
the page's JSON (``streams.people.logic``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Channels a message or a consent can name (the trigger stage's list), in display order.
CONSENT_CHANNELS = ("email", "push", "watch", "web", "facebook", "instagram", "twitter",
                    "linkedin")
TIMELINE_PAGE = 50  # events per timeline page (default)
TIMELINE_PAGE_MAX = 200  # the most one request may ask for
GRAPH_SCAN = 20_000  # earliest events of a person read for the identity graph
MESSAGES_SHOWN = 200  # latest schedule rows read for a person


@dataclass(frozen=True)
class Lookup:
    """What a search asks for: a profile id, or identifiers (``TYPE:VALUE``, normalized)
    tried in order, the first one held by a profile wins."""

    profile_id: str | None = None
    identifiers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cursor:
    """A timeline position: the canonical key (event time, message id) of the last
    event on a page; the next page holds the events strictly before it."""

    time: str
    message_id: str


@dataclass(frozen=True)
class FirstSeen:
    """The earliest event of a person that carried an identifier: the one that linked it
    (its other identifiers are the ones it linked it to)."""

    identifier: str
    message_id: str
    time: str
    type: str
    event: str | None
    source: str
    channel: str | None
    identifiers: tuple[str, ...]


@dataclass(frozen=True)
class MessageRow:
    """One schedule row of the trigger stage, as the person page reads it."""

    message_id: str
    rule: str
    status: str
    reason: str | None
    channel: str | None
    due_at: datetime
    expires_at: datetime
    scheduled_at: datetime
    decided_at: datetime | None
    sent_at: datetime | None
    intent: dict[str, Any]
    message: dict[str, Any] | None


@dataclass(frozen=True)
class PersonRows:
    """Everything read for one person in one transaction (``store.PeopleStore.person``):
    the profile document (as ``ProfileStore`` returns it), the merges it absorbed, the
    first event of each identifier seen in its events, its schedule rows and its first
    timeline page (stored event JSON, newest first)."""

    profile: dict[str, Any]
    merges: list[dict[str, Any]]
    first_seen: list[FirstSeen]
    scanned_all: bool
    messages: list[MessageRow]
    events: list[dict[str, Any]] = field(default_factory=list)
    has_more_events: bool = False
    message_tables: bool = True
