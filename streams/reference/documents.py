"""The profile document the reference expects, built from the events that count in a
profile (in any order: every section is a count, a min/max, a union or last writer wins
by (event time, message id)). One function per event kind (``BY_KIND``): a new kind adds
its own function there.

The shape is the one ``docs/profiles.md`` and the profile API describe; see
``document`` for every key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from streams.reference.facts import Fact

RECENT_KEPT = 10
NOTES_KEPT = 50


def latest(section: dict, name: str, value: object, fact: Fact) -> None:
    """Last writer wins: keep [value, time, message id] of the greatest key."""
    held = section.get(name)
    if held is None or (held[1], held[2]) < fact.key:
        section[name] = [value, fact.time, fact.message_id]


def add(section: dict, name: str, by: int = 1) -> None:
    """Count ``by`` more of ``name``."""
    section[name] = section.get(name, 0) + by


def span(doc: dict, scope: str, time: str) -> None:
    """Widen the [first, last] times seen of ``scope``."""
    first, last = doc["seen"].get(scope, [time, time])
    doc["seen"][scope] = [min(first, time), max(last, time)]


def common(doc: dict, fact: Fact) -> None:
    """What every event adds: counts, seen, provided values and zone."""
    counts = doc["counts"]
    counts["total"] += 1
    add(counts["type"], fact.type)
    add(counts["source"], fact.source)
    span(doc, "all", fact.time)
    span(doc, f"source:{fact.source}", fact.time)
    if fact.channel:
        add(counts["channel"], fact.channel)
        span(doc, f"channel:{fact.channel}", fact.time)
    for section in ("traits", "preferences", "consent"):
        for name, value in getattr(fact, section).items():
            latest(doc[section], name, value, fact)
    if fact.zone:
        held = doc["timezone"]
        if held is None or (held[1], held[2]) < fact.key:
            doc["timezone"] = [fact.zone, fact.time, fact.message_id]


def weight(fact: Fact) -> int:
    """Interest an event shows: page/screen 1; track by name: order completed or
    purchase 5, added or cart 3, view 1, anything else 2."""
    if fact.type in ("page", "screen"):
        return 1
    name = (fact.name or "").lower()
    for words, points in ((("order completed", "purchase"), 5), (("added", "cart"), 3),
                          (("view",), 1)):
        if any(w in name for w in words):
            return points
    return 2


def behaviour(doc: dict, fact: Fact, viewed: bool) -> None:
    """What a behavioural event (track, page, screen) adds: affinity, recently viewed,
    active hours and devices."""
    points = weight(fact)
    if fact.category:
        add(doc["affinity"]["category"], fact.category, points)
    if fact.item:
        add(doc["affinity"]["item"], fact.item, points)
        if viewed:
            held = doc["recent"].get(fact.item)
            if held is None or tuple(held) < fact.key:
                doc["recent"][fact.item] = [fact.time, fact.message_id]
    moment = datetime.fromisoformat(fact.time.replace("Z", "+00:00"))
    if fact.zone:
        add(doc["hours"]["local"], str(moment.astimezone(ZoneInfo(fact.zone)).hour))
    else:
        add(doc["hours"]["utc"], str(moment.hour))
    if fact.device:
        info = {k: v for k, v in fact.device.items() if k != "id"}
        name = fact.device.get("id") or "|".join(
            [info.get(k, "") for k in ("type", "manufacturer", "model", "os")]
            + ([info["browser"]] if "browser" in info else []))
        entry = doc["devices"].setdefault(
            name, {"first": fact.time, "last": fact.time, "info": [info, *fact.key]})
        entry["first"], entry["last"] = min(entry["first"], fact.time), max(
            entry["last"], fact.time)
        if (entry["info"][1], entry["info"][2]) < fact.key:
            entry["info"] = [info, *fact.key]


def viewed(fact: Fact) -> bool:
    """Whether an event is a view of its item: a page, a screen, or a track whose name
    says "view"."""
    return bool(fact.item) and (fact.type in ("page", "screen")
                                or (fact.type == "track" and "view" in (fact.name or "").lower()))


def track(doc: dict, fact: Fact) -> None:
    """A track: counted by name too; a view of its item when its name says so."""
    common(doc, fact)
    if fact.name:
        add(doc["counts"]["event"], fact.name)
    behaviour(doc, fact, viewed=viewed(fact))


def page_or_screen(doc: dict, fact: Fact) -> None:
    """A page or screen: always a view of its item."""
    common(doc, fact)
    behaviour(doc, fact, viewed=True)


def identify_or_alias(doc: dict, fact: Fact) -> None:
    """An identify or alias."""
    common(doc, fact)  # no behaviour: these say who, not what


def group(doc: dict, fact: Fact) -> None:
    """A group call: the account joins the person's groups, each of its traits last
    writer wins; no behaviour."""
    common(doc, fact)
    account = doc["groups"].setdefault(fact.group, {})
    for name, value in fact.group_traits.items():
        latest(account, name, value, fact)


BY_KIND: dict[str, Callable[[dict, Fact], None]] = {
    "track": track, "page": page_or_screen, "screen": page_or_screen,
    "identify": identify_or_alias, "alias": identify_or_alias, "group": group,
}


def document(profile_id: str, facts: Iterable[Fact], identifiers: Iterable[str],
             merges: int, notes: Iterable[list]) -> dict:
    """The expected profile document.

    ``created`` is [time, message id] of its earliest event; ``identifiers`` sorted;
    ``merges`` absorbed; ``notes`` the 50 smallest distinct [time, message id, rule,
    identifier]; ``recent`` the 10 items of greatest (time, message id, item) among the
    viewed ones, each at its latest view.
    """
    facts = sorted(facts, key=lambda f: f.key)
    doc: dict = {
        "id": profile_id, "created": list(facts[0].key), "identifiers": sorted(identifiers),
        "merges": merges, "notes": sorted({tuple(n) for n in notes})[:NOTES_KEPT],
        "traits": {}, "preferences": {}, "consent": {}, "timezone": None, "groups": {},
        "counts": {"total": 0, "type": {}, "event": {}, "source": {}, "channel": {}},
        "seen": {}, "affinity": {"category": {}, "item": {}}, "recent": {},
        "hours": {"local": {}, "utc": {}}, "devices": {},
    }
    doc["notes"] = [list(n) for n in doc["notes"]]
    for fact in facts:
        BY_KIND[fact.type](doc, fact)
    kept = sorted(doc["recent"].items(), key=lambda kv: (*kv[1], kv[0]))[-RECENT_KEPT:]
    doc["recent"] = dict(sorted(kept))
    return doc
