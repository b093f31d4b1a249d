"""The limits of the event contract, enforced alike by the collector (it refuses) and by
every stage reading an event topic (it dead-letters): one set, written once, here.

- sizes: an event over ``max_event_bytes``, a request over ``max_request_bytes`` (the
  collector's; a record on a topic was already written);
- identifier values (``identifier_fields``): at most ``max_identifier_chars``
  characters, no control character: Unicode category Cc (U+0000-U+001F, U+007F-U+009F)
  or Cf (format characters: bidi controls U+202A-U+202E and U+2066-U+2069, zero-width
  U+200B-U+200D, U+2060, U+FEFF, soft hyphen, tags...). In free text they have uses
  (ZWJ joins emoji); in an identifier they only make two values look alike;
- structure: no NUL (U+0000) in any property name or string, at most ``max_depth``
  nesting levels (the event object is level 1, each object or array inside one more),
  at most ``max_properties`` names in any one object;
- times (``TIME_FIELDS``): each present one a real instant (RFC 3339 with an offset, no
  leap second, no year 0000) between ``EARLIEST`` and ``LATEST``;
- event time: ``timestamp`` bounded to [receivedAt - ``max_past``, receivedAt +
  ``max_future``] when the event carries ``receivedAt`` (``bound_time``).

A problem is a ``(JSON pointer, reason)`` pair. Reasons name the field and the rule,
never the value (an identifier is a person's data). Pure; nothing here blocks.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from streams.events.time import parse_time

if TYPE_CHECKING:
    from streams.settings import Settings

Problem = tuple[str, str]

# The topic schemas' maxLength of messageId (common.json; a unit test holds them equal).
MESSAGE_ID_MAX_CHARS = 256
# Times outside these are refused, not bounded: no device, server or import means them,
# and they are where the parsers of the stack disagree (year 0000, 9999 with an offset).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NUL_ESCAPE = b"\\u0000"  # the only way JSON text can carry a NUL


@dataclass(frozen=True)
class Limits:
    """Every limit of the event contract (see the module docstring); ``from_settings``
    reads them from ``STREAMS_COLLECTOR_MAX_*`` and ``STREAMS_EVENT_*``."""

    max_event_bytes: int = 32 * 1024
    max_request_bytes: int = 500 * 1024
    max_batch_events: int = 10_000
    max_identifier_chars: int = 512
    max_depth: int = 32
    max_properties: int = 255
    max_future: timedelta = timedelta(minutes=10)
    max_past: timedelta = timedelta(days=3650)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits a deployment configured."""
        return cls(
            max_event_bytes=settings.collector_max_event_bytes,
            max_request_bytes=settings.collector_max_request_bytes,
            max_identifier_chars=settings.event_max_identifier_chars,
            max_depth=settings.event_max_depth,
            max_properties=settings.event_max_properties,
            max_future=timedelta(seconds=settings.event_max_future_seconds),
            max_past=timedelta(days=settings.event_max_past_days),
        )


DEFAULT_LIMITS = Limits()


# --- times ------------------------------------------------------------------------------


def instant(value: object) -> datetime | str:
    """``value`` as an aware UTC datetime, or the rule it breaks (a reason without the
    value): not a valid date-time, or out of range."""
    moment = parse_time(value)
    if moment is None:
        return "is not a valid date-time (RFC 3339 with an offset; no leap second, no year 0)"
    if not EARLIEST <= moment < LATEST:
        return (f"is out of range (from {EARLIEST.date().isoformat()} to before "
                f"{LATEST.date().isoformat()})")
    return moment


def time_problem(doc: Mapping, names: tuple[str, ...] = TIME_FIELDS,
                 parsed: dict[str, datetime] | None = None) -> Problem | None:
    """The first of ``names`` present in ``doc`` (and not null) that is not a valid
    instant in range, as a problem; None when all are. ``parsed``, when given, receives
    each valid instant by name (so a caller does not parse them again)."""
    for name in names:
        value = doc.get(name)
        if value is None:
            continue
        checked = instant(value)
        if isinstance(checked, str):
            return f"/{name}", f"/{name}: {checked}"
        if parsed is not None:
            parsed[name] = checked
    return None


def correct_skew(device: datetime, sent: datetime | None, received: datetime) -> datetime:
    """Segment's clock-skew correction: ``received - (sent - device)`` when the client
    said when it sent the event, else the device's time as it is."""
    return received - (sent - device) if sent is not None else device


def bound_time(moment: datetime, received: datetime | None, limits: Limits) -> datetime:
    """The event time: ``moment`` held within [received - max_past, received +
    max_future] (and within [EARLIEST, LATEST)); as it is without ``received``.

    Idempotent, so the worker applying it again to what the collector wrote changes
    nothing. Bounding the future is what keeps a timestamp from winning every later
    last-writer-wins comparison (traits, consent) for years."""
    if received is None:
        return moment
    low = max(received - limits.max_past, EARLIEST)
    high = min(received + limits.max_future, LATEST - timedelta(microseconds=1))
    return min(max(moment, low), high)


# --- identifiers ---------------------------------------------------------------------


def _get(doc: object, name: str) -> object:
    return doc.get(name) if isinstance(doc, dict) else None


def identifier_fields(doc: Mapping) -> Iterator[tuple[str, str, object]]:
    """Every place an identifier is read from, as (JSON pointer, label, value): label
    ``anonymous_id``, ``user_id``, ``email``, ``phone``, ``device_id``, or ``external:``
    + the entry's raw ``type`` for ``context.externalIds[]``. ``previousId`` counts on
    an alias only (elsewhere it identifies nobody), ``traits`` on anything but a group
    call (whose traits are the account's). The profile stage's identifier
    extraction reads exactly these."""
    yield "/anonymousId", "anonymous_id", doc.get("anonymousId")
    yield "/userId", "user_id", doc.get("userId")
    kind = doc.get("type")
    if kind == "alias":
        yield "/previousId", "anonymous_id", doc.get("previousId")
    context = doc.get("context")
    # A group call's traits are the account's, not the person's: no identifiers there.
    traits = doc.get("traits") if kind != "group" else None
    if type(traits) is dict:
        yield "/traits/email", "email", traits.get("email")
        yield "/traits/phone", "phone", traits.get("phone")
    if type(context) is not dict:
        return
    traits = context.get("traits")
    if type(traits) is dict:
        yield "/context/traits/email", "email", traits.get("email")
        yield "/context/traits/phone", "phone", traits.get("phone")
    yield "/context/device/id", "device_id", _get(context.get("device"), "id")
    external = _get(context, "externalIds")
    if isinstance(external, list):
        for i, entry in enumerate(external):
            if isinstance(entry, dict):
                id_type = entry.get("type")
                yield (f"/context/externalIds/{i}/id",
                       "external:" + (id_type if isinstance(id_type, str) else ""),
                       entry.get("id"))


def _has_control(value: str) -> bool:
    """Cc or Cf anywhere in ``value`` (ASCII holds no Cf: the common case is one scan)."""
    if value.isascii():  # perf: the ASCII characters not printable are exactly its Cc
        return not value.isprintable()
    if _CONTROL.search(value):
        return True
    return not value.isascii() and any(
        unicodedata.category(ch) == "Cf" for ch in value if ord(ch) > 0x7F)


def identifier_problem(doc: Mapping, limits: Limits = DEFAULT_LIMITS,
                       found: list[tuple[str, str, object]] | None = None) -> Problem | None:
    """The first identifier value (a string) over ``max_identifier_chars`` or holding a
    control character, as a problem; None when every one is fine. ``found``, when given,
    receives each ``identifier_fields`` entry checked (so a caller that reads the
    identifiers next does not walk the event again)."""
    for field in identifier_fields(doc):
        if found is not None:
            found.append(field)
        pointer, _, value = field
        if type(value) is not str:
            continue
        if len(value) > limits.max_identifier_chars:
            return pointer, (f"{pointer}: longer than {limits.max_identifier_chars} "
                             "characters (max_identifier_chars)")
        if _has_control(value):
            return pointer, f"{pointer}: contains a control character (Unicode Cc: " \
                            "U+0000-U+001F, U+007F-U+009F, or Cf: bidi, zero-width)"
    return None


# --- structure ---------------------------------------------------------------------------


def _escape(key: object) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")[:100]


def _pointer(paths: list[tuple[int, object]], at: int, key: object = None) -> str:
    parts = [] if key is None else [_escape(key)]
    while at > 0:  # entry 0 is the event itself
        parent, name = paths[at]
        parts.append(_escape(name))
        at = parent
    return ("/" + "/".join(reversed(parts)))[:300] if parts else ""


def structure_problem(doc: object, limits: Limits = DEFAULT_LIMITS,
                      raw: bytes | None = None) -> Problem | None:
    """NUL in a property name or string, nesting over ``max_depth`` or an object over
    ``max_properties`` names, as a problem (the first found); None otherwise.

    ``raw``, the event's JSON text when the caller has it, allows a fast path: without a
    ``\\u0000`` escape there is no NUL, and with few brackets and colons neither limit
    can be reached, so most events are never walked."""
    check_nul = raw is None or _NUL_ESCAPE in raw
    if raw is not None and not check_nul and \
            raw.count(b"{") + raw.count(b"[") <= limits.max_depth and \
            raw.count(b":") <= limits.max_properties:
        return None
    # Iterative (orjson reads up to 1024 levels, past Python's recursion limit); each
    # container remembers its parent, so a pointer is built only for a problem.
    paths: list[tuple[int, object]] = [(-1, None)]
    stack: list[tuple[object, int, int]] = [(doc, 1, 0)]
    while stack:
        node, depth, at = stack.pop()
        if depth > limits.max_depth:
            pointer = _pointer(paths, at)
            return pointer, (f"{pointer or 'event'}: nested deeper than {limits.max_depth} "
                             "levels (max_depth)")
        if type(node) is dict:
            if len(node) > limits.max_properties:
                pointer = _pointer(paths, at)
                return pointer, (f"{pointer or 'event'}: has {len(node)} properties, over "
                                 f"the limit of {limits.max_properties} (max_properties)")
            items = node.items()
        else:
            items = enumerate(node)  # type: ignore[arg-type]
        for key, value in items:
            if check_nul and type(key) is str and "\x00" in key:
                pointer = _pointer(paths, at)
                return pointer, f"{pointer or 'event'}: a property name contains NUL (U+0000)"
            kind = type(value)
            if kind is dict or kind is list:
                paths.append((at, key))
                stack.append((value, depth + 1, len(paths) - 1))
            elif check_nul and kind is str and "\x00" in value:
                pointer = _pointer(paths, at, key)
                return pointer, f"{pointer}: contains NUL (U+0000)"
    return None


def content_problem(doc: Mapping, limits: Limits = DEFAULT_LIMITS,
                    raw: bytes | None = None,
                    found: list[tuple[str, str, object]] | None = None) -> Problem | None:
    """Identifier values, then structure (see ``identifier_problem``, whose ``found`` this
    passes on, and ``structure_problem``): the checks both ends run on an event beside
    its schema."""
    return identifier_problem(doc, limits, found) or structure_problem(doc, limits, raw)
