"""When a message may go: the person's zone, quiet hours, best hour. Pure; no clock.

All inputs and outputs are aware UTC datetimes; local time is only ever computed here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.triggers.models import Person, frozen_record


@functools.lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo | None:
    """The IANA zone of that name, or None when unknown or empty."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@dataclass(frozen=True)
class Quiet:
    """Quiet hours in local time; ``start`` after ``end`` spans midnight, equal means
    none. ``stated`` is True when the person gave them (traits ``quietHours``)."""

    start: time
    end: time
    stated: bool = False

    def contains(self, local: time) -> bool:
        """True when the local time of day falls in the quiet hours (end excluded)."""
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def to_json(self) -> dict[str, Any]:
        """``{"start": "22:00", "end": "08:00", "stated": false}``."""
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M"),
                "stated": self.stated}


def _hhmm(value: object) -> time | None:
    if not isinstance(value, str) or len(value.strip()) != 5 or value.strip()[2] != ":":
        return None
    try:
        hours, minutes = int(value[:2]), int(value[3:])
    except ValueError:
        return None
    return time(hours, minutes) if 0 <= hours < 24 and 0 <= minutes < 60 else None


def quiet_for(person: Person, start: time, end: time) -> Quiet:
    """The person's own quiet hours when their traits state valid ones (``quietHours``:
    {start, end} as "HH:MM"), else the rules' ``start``-``end``."""
    stated = person.traits.get("quietHours")
    if isinstance(stated, dict):
        s, e = _hhmm(stated.get("start")), _hhmm(stated.get("end"))
        if s is not None and e is not None:
            return Quiet(s, e, stated=True)
    return Quiet(start, end)


def zone_of(person: Person, default: str) -> tuple[str, ZoneInfo]:
    """The person's zone (name, zone) when known, else ``default`` (UTC if unknown)."""
    for name in (person.timezone, default):
        found = zone(name)
        if found is not None:
            return name, found  # type: ignore[return-value]
    return "UTC", ZoneInfo("UTC")


def _at(day: date, clock: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def quiet_end(moment: datetime, tz: ZoneInfo, quiet: Quiet) -> datetime | None:
    """When the quiet hours that ``moment`` falls in end (UTC), or None when it is not
    in quiet hours."""
    local = moment.astimezone(tz)
    if not quiet.contains(local.time().replace(tzinfo=None)):
        return None
    day = local.date()
    if quiet.start > quiet.end and local.time().replace(tzinfo=None) >= quiet.start:
        day += timedelta(days=1)  # the evening part: they end tomorrow morning
    return max(_at(day, quiet.end, tz), moment)


def active_hours(person: Person, tz: ZoneInfo, now: datetime) -> list[int]:
    """The person's 24-hour activity histogram in their zone. Events counted in UTC (no
    zone of their own) are shifted by the zone's whole-hour offset at ``now``."""
    hours = [0] * 24
    for h, n in person.hours_local.items():
        hours[int(h) % 24] += n
    delta = now.astimezone(tz).utcoffset()
    offset = int(delta.total_seconds() // 3600) if delta else 0
    for h, n in person.hours_utc.items():
        hours[(int(h) + offset) % 24] += n
    return hours


def best_hour(hours: list[int], quiet: Quiet | None) -> int | None:
    """The local hour the person is most active in, outside quiet hours (the earliest on
    a tie); None when nothing is known."""
    best = None
    for h, n in enumerate(hours):
        if n <= 0 or (quiet is not None and quiet.contains(time(h, 0))):
            continue
        if best is None or n > hours[best]:
            best = h
    return best


def next_hour_at(start: datetime, tz: ZoneInfo, hour: int,
                 within: timedelta = timedelta(hours=24)) -> datetime | None:
    """The first moment at or after ``start`` whose local hour is ``hour``, if it comes
    within ``within``; None otherwise (a day skipping that hour for DST, say)."""
    local = start.astimezone(tz)
    if local.hour == hour:
        return start
    for days in (0, 1, 2):
        candidate = _at(local.date() + timedelta(days=days), time(hour, 0), tz)
        if candidate > start and candidate.astimezone(tz).hour == hour:
            return candidate if candidate - start <= within else None
    return None


@dataclass(frozen=True)
class SendTime:
    """The earliest moment a message may go (``at``), and why then: ``due``,
    ``best_hour`` or ``quiet_hours``. ``held_until``: when the message's own schedule,
    from its due time, waits past it (best hour or quiet hours), else None."""

    at: datetime
    reason: str
    zone: str
    best_hour: int | None
    quiet: Quiet | None
    held_until: datetime | None


def send_time(due_at: datetime, expires_at: datetime, now: datetime, zone_name: str,
              tz: ZoneInfo, quiet: Quiet | None, best: int | None) -> SendTime:
    """When a message due at ``due_at`` may go, looking at ``now``: at the next
    occurrence of the best hour after the due time (when it comes before expiry), and
    never inside quiet hours. Stateless: asking again later gives the same answer,
    so a held message needs no memory of why it was held."""
    if best is None and quiet is None:  # what earliest() below comes to then
        return frozen_record(SendTime, {"at": max(now, due_at), "reason": "due",
                                        "zone": zone_name, "best_hour": None,
                                        "quiet": None, "held_until": None})

    def earliest(at: datetime) -> tuple[datetime, str]:
        start, reason = due_at, "due"
        if best is not None:
            hour_at = next_hour_at(due_at, tz, best)
            if hour_at is not None and due_at < hour_at < expires_at:
                start, reason = hour_at, "best_hour"
        moment = max(at, start)
        if quiet is not None:
            end = quiet_end(moment, tz, quiet)
            if end is not None:
                moment, reason = end, "quiet_hours"
        return moment, reason

    planned, _ = earliest(due_at)
    at, reason = earliest(now)
    return frozen_record(SendTime, {"at": at, "reason": reason, "zone": zone_name,
                                    "best_hour": best, "quiet": quiet,
                                    "held_until": planned if planned > due_at else None})
