"""The rules file: TOML read with the standard library, validated with pydantic.

Shape (see the built-in ``rules.toml`` for a full example)::

    default_locale = "en"
    default_timezone = "UTC"
    quiet_hours = {start = "22:00", end = "08:00"}
    caps = {per_day = 3, per_week = 10}

    [rules.welcome]
    kind = "welcome"
    delay = "5s"
    ...

Every problem is reported at once, each naming the rule and the field, for example
``rule 'welcome': delay: must be a duration like '30s', '2h', '7d'``.
"""

from __future__ import annotations

import functools
import re
import tomllib
from datetime import time, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from streams.triggers.models import CHANNELS, KINDS, SOCIAL_ACTIONS, Channel
from streams.triggers.timing import zone

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
MAX_DURATION = timedelta(weeks=52)
DURATION_HINT = "must be a duration like '30s', '2h', '7d'"


def parse_duration(value: object) -> timedelta:
    """``"90s"``, ``"2h"``, ``"1h30m"``, ``"7d"``, ``"2w"`` (or whole seconds as an int)
    as a timedelta. Raises ValueError with the expected form."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(DURATION_HINT)
    text = value.strip().lower().replace(" ", "")
    if not text or _DURATION_RE.sub("", text):
        raise ValueError(f"{DURATION_HINT}, got {value!r}")
    seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION_RE.findall(text))
    if timedelta(seconds=seconds) > MAX_DURATION:
        raise ValueError(f"must be at most 52 weeks, got {value!r}")
    return timedelta(seconds=seconds)


@functools.lru_cache(maxsize=1024)  # a message's ``why`` formats its rule's durations
def format_duration(value: timedelta) -> str:
    """The shortest text ``parse_duration`` reads back: ``2h``, ``1h30m``, ``0s``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


def _time_of_day(value: object) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{2}:\d{2}", value.strip()):
        hours, minutes = (int(p) for p in value.strip().split(":"))
        if hours < 24 and minutes < 60:
            return time(hours, minutes)
    raise ValueError(f"must be a local time like '22:00', got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]
Names = Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]],
                  Field(max_length=50)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHours(_Strict):
    """Local hours in which nothing is sent; ``start`` after ``end`` spans midnight."""

    start: TimeOfDay = time(22, 0)
    end: TimeOfDay = time(8, 0)


class Caps(_Strict):
    """Frequency caps across all rules and channels, over a rolling day and week."""

    per_day: int = Field(default=3, ge=0)
    per_week: int = Field(default=10, ge=0)


class Rule(_Strict):
    """What every rule has. ``goal``: event names (case-insensitive) the message is for;
    with ``exit_on_goal`` one of them between the trigger and the due time cancels it,
    and one within ``conversion_window`` after the send counts as a conversion."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_\-]+$")
    kind: str
    enabled: bool = True
    description: str = ""
    template: str = Field(min_length=1, max_length=128)
    delay: Duration = timedelta(0)
    expires_after: Duration = timedelta(days=1)
    goal: Names = Field(default_factory=list)
    exit_on_goal: bool = True
    reeligible_after: Duration = timedelta(days=1)
    send_at: Literal["due", "best_hour"] = "due"
    channels: list[Channel] = Field(default_factory=lambda: list(CHANNELS), min_length=1)
    prefer_origin: bool = False
    quiet_hours: bool = True
    control_share: float = Field(default=0.0, ge=0.0, le=1.0)
    conversion_window: Duration = timedelta(days=7)

    @field_validator("expires_after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a channel twice")
        return value


class WelcomeRule(Rule):
    """A new person's first event gets a message, on the channel it came from."""

    kind: Literal["welcome"]


class BrowseAbandonmentRule(Rule):
    """``min_views`` views of one category or item within ``lookback``, and no goal."""

    kind: Literal["browse_abandonment"]
    min_views: int = Field(default=3, ge=1, le=1000)
    lookback: Duration = timedelta(days=1)
    scopes: list[Literal["category", "item"]] = Field(
        default_factory=lambda: ["category", "item"], min_length=1)


class CrossDeviceRule(Rule):
    """A ``started`` event on one device without a ``finished`` one: nudge on another."""

    kind: Literal["cross_device"]
    started: Names = Field(min_length=1)
    finished: Names = Field(default_factory=list)


class ReEngagementRule(Rule):
    """No activity for ``inactive_for``: a message (``delay`` after that moment)."""

    kind: Literal["re_engagement"]
    inactive_for: Duration

    @field_validator("inactive_for")
    @classmethod
    def _positive_inactivity(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


class SocialFollowUpRule(Rule):
    """A social interaction of one of ``actions``, answered on its channel or another."""

    kind: Literal["social_follow_up"]
    actions: list[Literal["like", "share", "comment", "follow", "mention", "message"]] = Field(
        default_factory=lambda: ["like", "share", "comment", "mention"], min_length=1)


AnyRule = Annotated[
    WelcomeRule | BrowseAbandonmentRule | CrossDeviceRule | ReEngagementRule
    | SocialFollowUpRule,
    Field(discriminator="kind"),
]


class RuleSet(_Strict):
    """The loaded rules file: global settings and the rules by name."""

    default_locale: str = Field(default="en", min_length=1, max_length=35)
    default_timezone: str = "UTC"
    quiet_hours: QuietHours = QuietHours()
    caps: Caps = Caps()
    rules: dict[str, AnyRule] = Field(default_factory=dict)
    source: str = "<memory>"

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        # A rule's name is its table's key; an explicit name must agree with it.
        if isinstance(data, dict) and isinstance(data.get("rules"), dict):
            rules = {}
            for key, body in data["rules"].items():
                if isinstance(body, dict):
                    body = {**body, "name": body.get("name", key)}
                rules[key] = body
            data = {**data, "rules": rules}
        return data

    @model_validator(mode="after")
    def _check(self) -> RuleSet:
        for key, rule in self.rules.items():
            if rule.name != key:
                raise ValueError(f"rule {key!r}: name: must equal the table's key")
        return self

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if zone(value) is None:
            raise ValueError(f"unknown time zone {value!r}")
        return value

    def rule(self, name: str) -> AnyRule | None:
        """The rule of that name, or None."""
        return self.rules.get(name)

    def enabled(self) -> list[AnyRule]:
        """The enabled rules, by name."""
        return [r for _, r in sorted(self.rules.items()) if r.enabled]

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-able row per rule, durations as text (for ``streams triggers list``)."""
        rows = []
        for _, rule in sorted(self.rules.items()):
            row = rule.model_dump(mode="python")
            rows.append({k: format_duration(v) if isinstance(v, timedelta) else v
                         for k, v in row.items()})
        return rows


class RulesError(ValueError):
    """The rules file cannot be read or is invalid; ``problems`` lists each one, naming
    the rule and the field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _problem(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    if error.get("type") == "union_tag_not_found":
        message = "kind: missing (one of " + ", ".join(KINDS) + ")"
    elif error.get("type") == "union_tag_invalid":
        message = "kind: must be one of " + ", ".join(KINDS)
    elif error.get("type") == "extra_forbidden":
        message = "unknown field"
    elif error.get("type") == "missing":
        message = "missing"
    if len(loc) >= 2 and loc[0] == "rules":
        name, rest = loc[1], loc[2:]
        if rest and rest[0] in KINDS:  # pydantic puts the union's tag in the path
            rest = rest[1:]
        if rest and rest[0] == "actions" and len(rest) > 1:
            message = "must be among " + ", ".join(SOCIAL_ACTIONS)
        if rest and rest[0] == "channels" and len(rest) > 1:
            message = "must be among " + ", ".join(CHANNELS)
        where = ".".join(rest)
        return f"rule {name!r}: {where}: {message}" if where else f"rule {name!r}: {message}"
    where = ".".join(loc)
    return f"{where}: {message}" if where else message


def parse_rules(text: str, source: str = "<memory>") -> RuleSet:
    """Validate the text of a rules file. Raises RulesError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(source, [f"not valid TOML: {exc}"]) from None
    if "source" in data:
        raise RulesError(source, ["source: unknown field"])
    try:
        return RuleSet.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise RulesError(source, [_problem(e) for e in exc.errors()]) from None


def builtin_rules_path() -> Path:
    """The rules file shipped with the package."""
    return Path(str(resources.files("streams.triggers") / "rules.toml"))


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rules file (the built-in one when ``path`` is None).
    Blocks on the file read. Raises RulesError naming each problem."""
    target = Path(path) if path is not None else builtin_rules_path()
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(target), [f"cannot read: {exc}"]) from None
    return parse_rules(text, str(target))
