"""Pure identity resolution: normalize identifiers, apply the rules, choose a profile.

No Kafka, no SQLAlchemy. ``resolve`` reads the identity graph through the small
``GraphView`` protocol, so the oracle's in-memory graph and the store's loaded snapshot
answer the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from streams.identity.models import (
    ANONYMOUS_ID,
    DEVICE_ID,
    EMAIL,
    PHONE,
    SOCIAL_CHANNELS,
    TYPE_RE,
    USER_ID,
    Dropped,
    IdentityRules,
    Resolution,
    id_key,
    split_key,
)

_PHONE_JUNK = re.compile(r"[\s().\-/]")
_SOCIAL_ALIASES = {
    **{c: f"{c}_id" for c in SOCIAL_CHANNELS},
    "x": "twitter_id", "x_id": "twitter_id", "x_handle": "twitter_handle",
    **{f"{c}_id": f"{c}_id" for c in SOCIAL_CHANNELS},
    **{f"{c}_handle": f"{c}_handle" for c in SOCIAL_CHANNELS},
}
_BUILTIN_ALIASES = {
    "userid": USER_ID, "user_id": USER_ID, "user": USER_ID,
    "anonymousid": ANONYMOUS_ID, "anonymous_id": ANONYMOUS_ID,
    "email": EMAIL, "phone": PHONE, "device_id": DEVICE_ID, "deviceid": DEVICE_ID,
}


class GraphView(Protocol):
    """What resolution needs to know about the stored identity graph."""

    def owner(self, identifier: str) -> str | None:
        """The profile id holding ``identifier``, or None."""

    def identifiers_of(self, profile_id: str) -> Iterable[str]:
        """Every identifier held by ``profile_id``."""

    def merge_count(self, profile_id: str) -> int:
        """How many merges ``profile_id`` has absorbed so far."""

    def created_key(self, profile_id: str) -> tuple[str, str]:
        """(event time, message id) of the event that created ``profile_id``."""


def canonical_type(raw_type: str) -> str | None:
    """The identifier type an ``externalIds[].type`` names, or None when unusable."""
    t = raw_type.strip().lower().replace(" ", "_")
    if t in _BUILTIN_ALIASES:
        return _BUILTIN_ALIASES[t]
    if t in _SOCIAL_ALIASES:
        return _SOCIAL_ALIASES[t]
    return t if TYPE_RE.fullmatch(t) else None


def normalize_value(id_type: str, raw: object) -> str | None:
    """The normalized value of an identifier, or None when it cannot be one.

    Emails are trimmed and lower-cased and need an ``@``; phones keep a leading ``+`` and
    their digits (``00`` becomes ``+``) and need at least six digits; social handles lose a
    leading ``@`` and are lower-cased; other values are trimmed strings.
    """
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int | float):
        raw = str(int(raw)) if isinstance(raw, int) or raw.is_integer() else str(raw)
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if id_type == EMAIL:
        value = value.lower()
        local, at, domain = value.partition("@")
        return value if at and local and domain else None
    if id_type == PHONE:
        value = _PHONE_JUNK.sub("", value)
        if value.startswith("00"):
            value = "+" + value[2:]
        digits = value[1:] if value.startswith("+") else value
        if not digits.isdigit() or len(digits) < 6:
            return None
        return value
    if id_type.endswith("_handle"):
        return value.lstrip("@").lower() or None
    return value[:512]


def usable_identifiers(identifiers: Iterable[str], rules: IdentityRules,
                       forgotten: frozenset[str] = frozenset()) -> list[str]:
    """The identifiers that may take part in matching: not blocked, not forgotten, unique,
    in priority order (highest first, then by value)."""
    keep: dict[str, tuple[int, str, str]] = {}  # key -> its priority_key
    is_blocked, rank = rules.is_blocked, rules.rank  # perf: asked of every identifier
    for key in identifiers:
        id_type, sep, value = key.partition(":")  # split_key without a call
        if not sep or not id_type:
            split_key(key)  # raises, saying why
        if key in forgotten or is_blocked(value):
            continue
        keep[key] = (rank(id_type), id_type, value)
    if len(keep) < 2:
        return list(keep)
    return sorted(keep, key=keep.__getitem__)


def priority_key(key: str, rules: IdentityRules) -> tuple[int, str, str]:
    """Sort key: higher priority first; within a type, by value (deterministic)."""
    id_type, value = split_key(key)
    return (rules.rank(id_type), id_type, value)


def _violation(identifiers: Iterable[str], rules: IdentityRules) -> str | None:
    counts: dict[str, int] = {}
    for k in identifiers:
        id_type = k[:k.index(":")]
        counts[id_type] = counts.get(id_type, 0) + 1
    over = [t for t, n in counts.items() if n > rules.limit(t)]
    if not over:
        return None
    # Custom types share one rank: the type name breaks the tie (not the set's order,
    # which changes with the interpreter's hash seed).
    return f"limit:{min(over, key=lambda t: (rules.rank(t), t))}"


def resolve(identifiers: Iterable[str], graph: GraphView, rules: IdentityRules,
            *, ordered: bool = False) -> Resolution:
    """Decide where an event with these (usable, normalized) identifiers goes.

    Matching profiles are merged into the one created first (earliest event time, then
    message id): that rule depends only on the events, never on their arrival order.
    When the merged profile would hold more identifiers of a type than its limit, or
    exceed the merge cap, the event's lowest-priority identifier is dropped from
    matching and the event is resolved again; each drop is returned with its rule.
    Raises ValueError when ``identifiers`` is empty. Pure; does not block.
    """
    # ``ordered``: ``identifiers`` is already what ``usable_identifiers`` returns
    # (unique, in priority order), so it is not sorted again (hot path).
    active = list(identifiers) if ordered else sorted(
        set(identifiers), key=lambda k: priority_key(k, rules))
    if not active:
        raise ValueError("an event needs at least one usable identifier to resolve")
    dropped: list[Dropped] = []
    while True:
        found = [(k, graph.owner(k)) for k in active]
        new = [k for k, o in found if o is None]
        owners = sorted({o for _, o in found if o is not None}, key=graph.created_key)
        if not new and len(owners) == 1:
            # Every identifier already in one profile: nothing changes, nothing to check.
            return Resolution(target=owners[0], merged=(), added=(), matched=tuple(active),
                              dropped=tuple(dropped))
        combined = set(new)
        for pid in owners:
            combined.update(graph.identifiers_of(pid))
        rule = _violation(combined, rules)
        if rule is None and len(owners) > 1:
            merges = sum(graph.merge_count(p) for p in owners) + len(owners) - 1
            if merges > rules.merge_cap:
                rule = "merge_cap"
        if rule is None or len(active) == 1:
            # One identifier alone can always be matched: it either has an owner (whose
            # profile already satisfies the rules) or starts a new profile.
            target = owners[0] if owners else None
            return Resolution(
                target=target,
                merged=tuple(owners[1:]),
                added=tuple(new),
                matched=tuple(active),
                dropped=tuple(dropped),
            )
        lowest = active.pop()  # ``active`` is in priority order: the last is the lowest
        dropped.append(Dropped(lowest, rule))


def identifier_type(key: str) -> str:
    """The type part of ``TYPE:VALUE``."""
    return split_key(key)[0]


__all__ = [
    "GraphView", "canonical_type", "identifier_type", "id_key", "normalize_value",
    "priority_key", "resolve", "usable_identifiers",
]
