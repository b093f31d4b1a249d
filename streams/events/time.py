"""The one time parser and the one clock of every stage.

Event times are aware UTC datetimes inside the product and RFC 3339 strings on the
wire; ``utc_now`` is the adapters' default clock (pure logic takes ``now`` explicitly).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The wall clock as an aware UTC datetime (the adapters' default clock)."""
    return datetime.now(UTC)


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 / RFC 3339 string as an aware UTC datetime; None when absent or bad.

    A string without an offset is taken as UTC. Never raises: a time that exists on its
    own clock but not in UTC (year 9999 at -01:00) is bad too.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def format_time(moment: datetime) -> str:
    """A UTC datetime as Segment writes it: ``2026-11-01T10:00:00.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
