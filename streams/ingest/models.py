"""Records of the collector: a routed event ready to write, a request refused whole,
and the plan for one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from streams.events.models import Kind, Rejection


class RoutedEvent(NamedTuple):
    """A normalized event ready to be written: its kind (hence topic), key and JSON value.

    A named tuple: one is made per event on the collector's hot path, and a tuple is the
    cheapest immutable record to build."""

    kind: Kind
    key: str
    message_id: str
    value: bytes


@dataclass(frozen=True, slots=True)
class RequestError:
    """A whole request refused with an HTTP status; nothing of it is written.

    ``error`` is a short machine-readable code, ``field`` names the field or limit at
    fault, ``retry_after`` (seconds) is set for 429.
    """

    status: int
    error: str
    field: str
    message: str
    retry_after: int | None = None

    def body(self) -> dict:
        """The JSON error body; never contains a credential."""
        doc = {"success": False, "error": self.error, "field": self.field,
               "message": self.message}
        if self.retry_after is not None:
            doc["retryAfter"] = self.retry_after
        return doc


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """What to do with one well-formed request: events to write and events to dead-letter."""

    accepted: list[RoutedEvent]
    rejected: list[Rejection]
