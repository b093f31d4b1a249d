"""Pure logic of the profile stage: fold, merge, and resolve a run of events (decoding
is ``streams.profiles.decode``).

No Kafka, no SQLAlchemy: typed values in, plans and documents out.

Order independence. A profile is the fold of its events in the *canonical order*
(event time, then message id), and identity is resolved in that order too. The stored
state is therefore a function of the set of events, not of their arrival order. The
worker keeps that true incrementally: an event that sorts after everything already in
its interaction component is simply applied (the common, cheap case); an event that
arrives "in the past" of its component makes the worker replay the component's events in
canonical order (``replay``). Replay is needed, not a convenience: with per-type limits
a later-arriving event can decide that an identifier belonged elsewhere, so any
merge-only scheme would depend on arrival order. The aggregates themselves are
commutative as well (counts, min/max times, unions, last-writer-wins by (time, message
id)), so ``merge_profiles`` gives the same document whichever side survives.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.identity.logic import resolve, usable_identifiers
from streams.identity.models import (
    IdentityRules,
)
from streams.profiles.decode import local_hour, zone_named
from streams.profiles.models import (
    EventKey,
    FoldEvent,
    profile_id_for,
)

RECENT_ITEMS = 10  # recently viewed items kept per profile
NOTES_KEPT = 50  # identity notes (dropped identifiers) kept per profile


# --- the profile document ----------------------------------------------------------
def new_profile(profile_id: str, created: EventKey) -> dict[str, Any]:
    """An empty profile document.

    Shape: ``id``; ``created`` [time, message id] of its first event; ``identifiers``
    (sorted); ``merges`` absorbed; ``notes`` (identifiers dropped by the rules);
    provided: ``traits``, ``preferences``, ``consent`` as {name: [value, time, msg]},
    ``timezone`` [zone, time, msg] and ``groups`` (accounts the person belongs to, by
    group calls) {group id: {trait: [value, time, msg]}}; behaviour: ``counts`` (total,
    by type, track event, source, channel), ``seen`` {"all"|"source:x"|"channel:x":
    [first, last]}, ``affinity`` {category, item: {name: score}}, ``recent`` {item:
    [time, msg]},
    ``hours`` {local: {hour: count} in the event's own zone, utc: {hour: count} of
    events without a zone}, ``devices`` {key: {first, last, info: [attrs, time, msg]}}.
    """
    return {
        "id": profile_id, "created": list(created), "identifiers": [], "merges": 0,
        "notes": [], "traits": {}, "preferences": {}, "consent": {}, "timezone": None,
        "groups": {},
        "counts": {"total": 0, "type": {}, "event": {}, "source": {}, "channel": {}},
        "seen": {}, "affinity": {"category": {}, "item": {}}, "recent": {},
        "hours": {"local": {}, "utc": {}}, "devices": {},
    }


def affinity_weight(event: FoldEvent) -> int:
    """How much one event says about interest: purchase 5, cart 3, social 2, view 1."""
    name = (event.event or "").lower()
    if event.type in ("page", "screen"):
        return 1
    if "order completed" in name or "purchase" in name:
        return 5
    if "added" in name or "cart" in name:
        return 3
    if "view" in name:
        return 1
    return 2


def _lww(target: dict, name: str, value: Any, key: EventKey) -> None:
    """Last writer wins by (time, message id): commutative and idempotent."""
    current = target.get(name)
    if current is None or (current[1], current[2]) < key:
        target[name] = [value, key[0], key[1]]


def _inc(target: dict, name: str, by: int = 1) -> None:
    target[name] = target.get(name, 0) + by


def _seen(profile: dict, scope: str, time: str) -> None:
    span = profile["seen"].get(scope)
    if span is None:
        profile["seen"][scope] = [time, time]
    else:
        span[0], span[1] = min(span[0], time), max(span[1], time)


def _trim_recent(recent: dict) -> dict:
    if len(recent) <= RECENT_ITEMS:  # perf: nothing to drop, only the order to make
        return dict(sorted(recent.items()))
    keep = sorted(recent.items(), key=lambda kv: (kv[1][0], kv[1][1], kv[0]),
                  reverse=True)[:RECENT_ITEMS]
    return dict(sorted(keep))


def fold_event(profile: dict, event: FoldEvent) -> None:
    """Fold one event's facts into ``profile`` (in place). Identity is not touched here.

    Every update is commutative, so folding the same events in any order gives the
    same document. Does not deduplicate: the caller folds each message id once.
    """
    key = event.key
    counts = profile["counts"]
    counts["total"] += 1
    _inc(counts["type"], event.type)
    if event.type == "track" and event.event:
        _inc(counts["event"], event.event)
    _inc(counts["source"], event.source)
    if event.channel:
        _inc(counts["channel"], event.channel)
    _seen(profile, "all", event.time)
    _seen(profile, f"source:{event.source}", event.time)
    if event.channel:
        _seen(profile, f"channel:{event.channel}", event.time)
    for name, value in event.traits.items():
        _lww(profile["traits"], name, value, key)
    for name, value in event.preferences.items():
        _lww(profile["preferences"], name, value, key)
    for name, value in event.consent.items():
        _lww(profile["consent"], name, value, key)
    if event.timezone:
        tz = profile["timezone"]
        if tz is None or (tz[1], tz[2]) < key:
            profile["timezone"] = [event.timezone, key[0], key[1]]
    if event.group_id:
        group = profile["groups"].setdefault(event.group_id, {})
        for name, value in event.group_traits.items():
            _lww(group, name, value, key)
    if event.type in ("identify", "alias", "group"):
        return  # what follows is behaviour
    weight = affinity_weight(event)
    if event.category:
        _inc(profile["affinity"]["category"], event.category, weight)
    if event.item:
        _inc(profile["affinity"]["item"], event.item, weight)
        viewed = event.type in ("page", "screen") or "view" in (event.event or "").lower()
        if viewed:
            current = profile["recent"].get(event.item)
            if current is None or tuple(current) < key:
                profile["recent"][event.item] = list(key)
            profile["recent"] = _trim_recent(profile["recent"])
    hour = local_hour(event.time, event.timezone)
    if hour is None:
        _inc(profile["hours"]["utc"], str(int(event.time[11:13])))
    else:
        _inc(profile["hours"]["local"], str(hour))
    if event.device:
        info = {k: v for k, v in event.device.items() if k != "id"}
        dkey = event.device.get("id") or "|".join(
            info.get(k, "") for k in ("type", "manufacturer", "model", "os")
        ) + (f"|{info['browser']}" if "browser" in info else "")
        entry = profile["devices"].get(dkey)
        if entry is None:
            profile["devices"][dkey] = {"first": event.time, "last": event.time,
                                        "info": [info, key[0], key[1]]}
        else:
            entry["first"] = min(entry["first"], event.time)
            entry["last"] = max(entry["last"], event.time)
            if (entry["info"][1], entry["info"][2]) < key:
                entry["info"] = [info, key[0], key[1]]


def _merge_lww_map(into: dict, other: dict) -> None:
    for name, (value, t, m) in other.items():
        _lww(into, name, value, (t, m))


def _merge_counts(into: dict, other: dict) -> None:
    for name, n in other.items():
        _inc(into, name, n)


def merge_profiles(survivor: dict, merged: dict) -> dict:
    """The document of ``survivor`` after absorbing ``merged`` (returns a new dict).

    Commutative in every aggregate; the id stays the survivor's, ``merges`` adds up
    plus one. Pure; does not block.
    """
    out = copy.deepcopy(survivor)
    out["created"] = min(out["created"], merged["created"])
    out["identifiers"] = sorted(set(out["identifiers"]) | set(merged["identifiers"]))
    out["merges"] = out["merges"] + merged["merges"] + 1
    out["notes"] = _trim_notes(out["notes"] + merged["notes"])
    for section in ("traits", "preferences", "consent"):
        _merge_lww_map(out[section], merged[section])
    for group_id, group in merged["groups"].items():
        _merge_lww_map(out["groups"].setdefault(group_id, {}), group)
    tz = merged["timezone"]
    if tz is not None and (out["timezone"] is None
                           or (out["timezone"][1], out["timezone"][2]) < (tz[1], tz[2])):
        out["timezone"] = list(tz)
    out["counts"]["total"] += merged["counts"]["total"]
    for section in ("type", "event", "source", "channel"):
        _merge_counts(out["counts"][section], merged["counts"][section])
    for scope, (first, last) in merged["seen"].items():
        _seen(out, scope, first)
        _seen(out, scope, last)
    for section in ("category", "item"):
        _merge_counts(out["affinity"][section], merged["affinity"][section])
    recent = dict(out["recent"])
    for item, key in merged["recent"].items():
        if item not in recent or tuple(recent[item]) < tuple(key):
            recent[item] = list(key)
    out["recent"] = _trim_recent(recent)
    for zone in ("local", "utc"):
        _merge_counts(out["hours"][zone], merged["hours"][zone])
    for dkey, entry in merged["devices"].items():
        mine = out["devices"].get(dkey)
        if mine is None:
            out["devices"][dkey] = copy.deepcopy(entry)
        else:
            mine["first"] = min(mine["first"], entry["first"])
            mine["last"] = max(mine["last"], entry["last"])
            if (mine["info"][1], mine["info"][2]) < (entry["info"][1], entry["info"][2]):
                mine["info"] = copy.deepcopy(entry["info"])
    return out


def _trim_notes(notes: list) -> list:
    unique = sorted({tuple(n) for n in notes})
    return [list(n) for n in unique[:NOTES_KEPT]]


# --- identity + fold over a run of events ---------------------------------------------
@dataclass
class Graph:
    """An identity graph with its profiles, in memory: the whole world for the oracle,
    one locked interaction component for the worker.

    ``apply`` resolves and folds one event; applying events in canonical order gives
    the canonical state. ``touched`` and ``new_merges`` tell the store what to write.
    """

    rules: IdentityRules
    owners: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, dict] = field(default_factory=dict)
    mentioned: set[str] = field(default_factory=set)
    forgotten: frozenset[str] = frozenset()
    max_key: EventKey | None = None
    event_profile: dict[str, str] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    new_merges: list[dict] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    touched_identifiers: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)

    # GraphView
    def owner(self, identifier: str) -> str | None:
        return self.owners.get(identifier)

    def identifiers_of(self, profile_id: str) -> Iterable[str]:
        return self.profiles[profile_id]["identifiers"]

    def merge_count(self, profile_id: str) -> int:
        return self.profiles[profile_id]["merges"]

    def created_key(self, profile_id: str) -> tuple[str, str]:
        created = self.profiles[profile_id]["created"]
        return (created[0], created[1])

    def apply(self, event: FoldEvent, usable: list[str] | None = None) -> str | None:
        """Resolve ``event`` and fold it into its profile; returns the profile id, or
        None when no identifier of the event is usable (recorded in ``skipped``).
        ``usable`` may pass the event's usable identifiers when already computed."""
        if usable is None:
            usable = usable_identifiers(event.identifiers, self.rules, self.forgotten)
        self.mentioned.update(usable)
        self.touched_identifiers.update(usable)
        if self.max_key is None or self.max_key < event.key:
            self.max_key = event.key
        if not usable:
            self.skipped[event.message_id] = "no_identifier"
            return None
        res = resolve(usable, self, self.rules, ordered=True)
        if res.target is None:
            pid = profile_id_for(event.message_id)
            self.profiles[pid] = new_profile(pid, event.key)
        else:
            pid = res.target
        profile = self.profiles[pid]
        for other in res.merged:
            absorbed = self.profiles.pop(other)
            profile = merge_profiles(profile, absorbed)
            for ident in absorbed["identifiers"]:
                self.owners[ident] = pid
                self.touched_identifiers.add(ident)
            self.redirects[other] = pid
            for old, new in list(self.redirects.items()):
                if new == other:
                    self.redirects[old] = pid
            self.touched.discard(other)
            self.new_merges.append({
                "survivor": pid, "merged": other, "message_id": event.message_id,
                "rule": "shared_identifier", "event_time": event.time,
            })
        if res.added:
            for ident in res.added:
                self.owners[ident] = pid
            profile["identifiers"] = sorted(set(profile["identifiers"]) | set(res.added))
        if res.dropped:
            profile["notes"] = _trim_notes(profile["notes"] + [
                [event.time, event.message_id, d.rule, d.identifier] for d in res.dropped])
        fold_event(profile, event)
        self.profiles[pid] = profile
        self.touched.add(pid)
        self.event_profile[event.message_id] = pid
        return pid

    def final_profile_of(self, message_id: str) -> str | None:
        """The profile an applied event ends in, following merges."""
        pid = self.event_profile.get(message_id)
        while pid is not None and pid in self.redirects:
            pid = self.redirects[pid]
        return pid


def canonical(events: Iterable[FoldEvent]) -> list[FoldEvent]:
    """Events in canonical order with duplicate message ids removed (first kept)."""
    seen: dict[str, FoldEvent] = {}
    for event in events:
        seen.setdefault(event.message_id, event)
    return sorted(seen.values(), key=lambda e: e.key)


def replay(events: Iterable[FoldEvent], rules: IdentityRules,
           forgotten: frozenset[str] = frozenset()) -> Graph:
    """The canonical state of a set of events: resolve and fold them in canonical order
    into an empty graph. Pure; cost is linear in the events."""
    graph = Graph(rules=rules, forgotten=forgotten)
    for event in canonical(events):
        graph.apply(event)
    return graph


def needs_replay(component_max: EventKey | None, new_events: Iterable[FoldEvent]) -> bool:
    """True when some new event sorts before an event already in the component: then
    appending would not be the canonical order, and the component must be replayed."""
    if component_max is None:
        return False
    return any(e.key <= component_max for e in new_events)


def profile_view(profile: dict, now: datetime) -> dict[str, Any]:
    """The profile as the API shows it: values without their LWW bookkeeping, and the
    active-hours histogram in the person's time zone.

    Events that carried their own zone were counted in it; the others were counted in
    UTC and are shifted here by the person's zone offset at ``now`` (aware UTC).
    """
    tz = profile["timezone"][0] if profile["timezone"] else None
    hours = [0] * 24
    for h, n in profile["hours"]["local"].items():
        hours[int(h)] += n
    offset = 0
    zone = zone_named(tz) if tz else None
    if zone is not None:
        delta = now.astimezone(zone).utcoffset()
        offset = int(delta.total_seconds() // 3600) if delta else 0
    for h, n in profile["hours"]["utc"].items():
        hours[(int(h) + offset) % 24] += n
    recent = sorted(profile["recent"].items(), key=lambda kv: tuple(kv[1]), reverse=True)
    return {
        "id": profile["id"],
        "identifiers": [dict(zip(("type", "value"), k.split(":", 1), strict=True))
                        for k in profile["identifiers"]],
        "traits": {k: v[0] for k, v in profile["traits"].items()},
        "preferences": {k: v[0] for k, v in profile["preferences"].items()},
        "consent": {k: v[0] for k, v in profile["consent"].items()},
        "groups": {g: {k: v[0] for k, v in traits.items()}
                   for g, traits in profile["groups"].items()},
        "timezone": tz,
        "behaviour": {
            "counts": profile["counts"],
            "seen": {k: {"first": v[0], "last": v[1]} for k, v in profile["seen"].items()},
            "affinity": profile["affinity"],
            "recently_viewed": [{"item": item, "at": key[0]} for item, key in recent],
            "active_hours": hours,
            "devices": {k: {"first": v["first"], "last": v["last"], **v["info"][0]}
                        for k, v in profile["devices"].items()},
        },
        "merges_absorbed": profile["merges"],
        "identity_notes": [{"at": n[0], "message_id": n[1], "rule": n[2], "identifier": n[3]}
                           for n in profile["notes"]],
    }
