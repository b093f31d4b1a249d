"""Identifier rules of the reference, as ``docs/profiles.md`` states them: normalization
of each type, blocked values, per-type limits, priority and the merge cap.

Independent of ``streams.identity``: a rules object of production (or anything with the
same attribute names) is read attribute by attribute by ``Rules.of``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

SOCIAL = ("facebook", "instagram", "twitter", "linkedin")
BUILT_IN_ORDER = ("user_id", "email", "phone",
                  *(f"{c}_{k}" for c in SOCIAL for k in ("id", "handle")),
                  "*", "device_id", "anonymous_id")
BLOCKED = ("", "null", "undefined", "0", "anonymous", "none", "nil", "nan", "unknown", "n/a")
CUSTOM_TYPE = re.compile(r"[a-z0-9_.\-]{1,64}")
# ``externalIds[].type`` names of the built-in and social types (after lower-casing and
# spaces turned into underscores).
TYPE_NAMES = {"userid": "user_id", "user_id": "user_id", "user": "user_id",
              "anonymousid": "anonymous_id", "anonymous_id": "anonymous_id",
              "email": "email", "phone": "phone", "device_id": "device_id",
              "deviceid": "device_id", "x": "twitter_id", "x_id": "twitter_id",
              "x_handle": "twitter_handle"}
for _c in SOCIAL:
    TYPE_NAMES[_c] = TYPE_NAMES[f"{_c}_id"] = f"{_c}_id"
    TYPE_NAMES[f"{_c}_handle"] = f"{_c}_handle"


@dataclass(frozen=True)
class Rules:
    """The identity rules (defaults: the documented ones)."""

    blocked_values: frozenset[str] = frozenset(BLOCKED)
    blocked_patterns: tuple[str, ...] = (r"[0\-]+",)
    limits: dict[str, int] = field(default_factory=lambda: {"user_id": 1})
    default_limit: int = 5
    priority: tuple[str, ...] = BUILT_IN_ORDER
    merge_cap: int = 100

    @classmethod
    def of(cls, other: object | None) -> Rules:
        """These rules, read from any object with the same attribute names (None: the
        defaults). Pure."""
        if other is None or isinstance(other, Rules):
            return other or cls()
        return cls(**{name: getattr(other, name) for name in (
            "blocked_values", "blocked_patterns", "limits", "default_limit", "priority",
            "merge_cap")})

    def blocked(self, value: str) -> bool:
        """Whether ``value`` may never identify anyone: the empty value, a listed value
        (case-insensitive) or a whole-value match of a pattern (case-insensitive)."""
        if value == "" or value.casefold() in self._folded:
            return True
        return any(p.fullmatch(value) for p in self._patterns)

    @functools.cached_property
    def _folded(self) -> frozenset[str]:
        return frozenset(v.casefold() for v in self.blocked_values)

    @functools.cached_property
    def _patterns(self) -> tuple[re.Pattern, ...]:
        return tuple(re.compile(p, re.IGNORECASE) for p in self.blocked_patterns)

    def limit_of(self, id_type: str) -> int:
        """How many identifiers of ``id_type`` one profile may hold."""
        return int(self.limits.get(id_type, self.default_limit))

    def order(self, identifier: str) -> tuple[int, str, str]:
        """Sort key, highest priority first: the type's place in the priority list
        (custom types take the place of ``*``), then type, then value."""
        id_type, _, value = identifier.partition(":")
        if id_type in self.priority:
            place = self.priority.index(id_type)
        elif "*" in self.priority:
            place = self.priority.index("*")
        else:
            place = len(self.priority)
        return (place, id_type, value)


def type_named(raw: str) -> str | None:
    """The identifier type an ``externalIds[].type`` names, or None when unusable."""
    name = raw.strip().lower().replace(" ", "_")
    if name in TYPE_NAMES:
        return TYPE_NAMES[name]
    return name if CUSTOM_TYPE.fullmatch(name) else None


def normalized(id_type: str, raw: object) -> str | None:
    """The identifier ``TYPE:VALUE`` for a raw value, or None when it cannot be one.

    Numbers become their text (an integral float without ``.0``); booleans, null and
    other JSON types are not identifiers. Emails: trimmed, lower-cased, something on both
    sides of the first ``@``. Phones: spaces and ``().-/`` removed, ``00`` -> ``+``, then
    an optional ``+`` and at least six digits. Handles: leading ``@`` removed,
    lower-cased, not empty. Anything else: trimmed, cut at 512 characters.
    """
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, float):
        raw = str(int(raw)) if raw == int(raw) else repr(raw)
    elif isinstance(raw, int):
        raw = str(raw)
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if id_type == "email":
        text = text.lower()
        if "@" not in text:
            return None
        before, after = text.split("@", 1)
        value = text if before and after else None
    elif id_type == "phone":
        text = re.sub(r"[\s().\-/]", "", text)
        if text[:2] == "00":
            text = "+" + text[2:]
        digits = text[1:] if text[:1] == "+" else text
        value = text if digits.isdigit() and len(digits) >= 6 else None
    elif id_type.endswith("_handle"):
        value = text.lstrip("@").lower() or None
    else:
        value = text[:512]
    return None if value is None else f"{id_type}:{value}"
