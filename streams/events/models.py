"""Records of the event contract: the constants every stage shares (event types, sources,
social channels, kinds), an event that passed validation, a record that did not, a
collector rejection, and a dead letter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

# The Segment event types this product accepts; ``group`` (a person joins an account)
# travels with identify and alias on events.identify.
EVENT_TYPES: tuple[str, ...] = ("track", "page", "screen", "identify", "alias", "group")
# Sources an event can come from; social-channel write keys give ``social``.
SOURCES: tuple[str, ...] = ("web", "mobile", "smartwatch", "social")
SOCIAL_CHANNELS: tuple[str, ...] = ("facebook", "instagram", "twitter", "linkedin")
SOCIAL_ACTIONS: tuple[str, ...] = ("like", "share", "comment", "follow", "mention", "message",
                                   "other")

Kind = Literal["click", "view", "social", "identify"]
KINDS: tuple[Kind, ...] = ("click", "view", "social", "identify")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event of a request was refused: the JSON pointer of the field and the reason.

    ``index`` is its position in a ``/v1/batch`` array (None for single-event calls);
    ``event`` is the event as received, for the dead letter.
    """

    index: int | None
    field: str
    reason: str
    event: object = None
    kind: Kind | None = None


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """A record read from an event topic that passed validation (processing side).

    ``payload`` is the normalized event (``source`` filled in when the producer left it out).
    """

    topic: str
    partition: int
    offset: int
    message_id: str
    key: str | None
    payload: dict
    event_time: datetime
    kind: Kind


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """A record read from an event topic that failed validation, and why (processing side)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record for ``events.dlq``: the original key, a JSON value and naming headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The decoded value of header ``name``, or None."""
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None
