"""Pure logic of the person page: the search, the timeline's pages, the identity graph
laid out for drawing, what the person told us beside what they did, and their messages.

No aiohttp, no SQL: rows in (``streams.people.models``), JSON-able dicts out, ``now``
explicit. The page (``static/people.js``) draws what these return and adds nothing.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from streams.identity.logic import canonical_type, normalize_value
from streams.identity.models import (
    ANONYMOUS_ID,
    DEVICE_ID,
    EMAIL,
    PHONE,
    SOCIAL_TYPES,
    USER_ID,
    IdentityRules,
    id_key,
    split_key,
)
from streams.people.models import (
    CONSENT_CHANNELS,
    Cursor,
    FirstSeen,
    Lookup,
    MessageRow,
    PersonRows,
)
from streams.profiles.logic import profile_view

# A bare value (no TYPE:) is tried as each of these, in this order.
BARE_VALUE_TYPES = (USER_ID, EMAIL, DEVICE_ID, ANONYMOUS_ID, *SOCIAL_TYPES, PHONE)
TOP_AFFINITIES = 8

# Drawing grid of the identity graph (SVG user units).
_COL_W, _ROW_H, _TOP, _LEFT, _EVENT_W = 205, 40, 50, 10, 215


# --- search ---------------------------------------------------------------------------
def parse_query(raw: str) -> Lookup:
    """What a search box's text asks for: a profile id (a UUID), ``TYPE:VALUE`` (typed
    and normalized as the worker does), or a bare value tried as every identifier type it
    is valid for (a device id, a handle with or without ``@``). Raises ValueError naming
    what is wrong when nothing can be looked up."""
    text = raw.strip()
    if not text:
        raise ValueError("type an identifier (email:ann@example.com) or a profile id")
    try:
        return Lookup(profile_id=str(uuid.UUID(text)))
    except ValueError:
        pass
    id_type, sep, value = text.partition(":")
    typed = canonical_type(id_type) if sep and value.strip() else None
    if typed is not None:
        normalized = normalize_value(typed, value.strip())
        if normalized is None:
            raise ValueError(f"that is not a valid {typed}")
        return Lookup(identifiers=(id_key(typed, normalized),))
    candidates: list[str] = []
    for t in BARE_VALUE_TYPES:
        normalized = normalize_value(t, text)
        if normalized is not None and id_key(t, normalized) not in candidates:
            candidates.append(id_key(t, normalized))
    if not candidates:
        raise ValueError("that is neither an identifier nor a profile id")
    return Lookup(identifiers=tuple(candidates))


# --- timeline -------------------------------------------------------------------------
def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe token for ``cursor``."""
    raw = orjson.dumps([cursor.time, cursor.message_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The cursor ``encode_cursor`` made. Raises ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        t, m = orjson.loads(raw)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError("cursor is not one this server gave out") from exc
    if not isinstance(t, str) or not isinstance(m, str):
        raise ValueError("cursor is not one this server gave out")
    return Cursor(t, m)


def _kind(doc: dict[str, Any]) -> str:
    kind = doc.get("y", "track")
    if kind == "track":
        return doc.get("e") or "track"
    return kind


def timeline_entry(doc: dict[str, Any]) -> dict[str, Any]:
    """One stored event (``FoldEvent.to_json`` form) as a timeline row: when, what kind,
    where (source, social channel, device) and which item."""
    device = doc.get("d") or {}
    label = device.get("id") or " ".join(
        v for v in (device.get("manufacturer"), device.get("model")) if v) or device.get("type")
    return {
        "message_id": doc["m"], "time": doc["t"], "type": doc.get("y"), "kind": _kind(doc),
        "source": doc.get("s", "unknown"), "channel": doc.get("c"),
        "lane": doc.get("c") or doc.get("s", "unknown"), "device": label or None,
        "item": doc.get("p"), "category": doc.get("g"),
    }


def timeline_page(docs: Sequence[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A page from up to ``limit + 1`` stored events, newest first (the store reads one
    more than it shows to know whether another page follows): the rows, and the cursor
    of the next page (None on the last)."""
    shown = list(docs[:limit])
    more = len(docs) > limit and bool(shown)
    last = shown[-1] if shown else None
    return {
        "events": [timeline_entry(d) for d in shown],
        "next": encode_cursor(Cursor(last["t"], last["m"])) if more and last else None,
    }


# --- identity graph -------------------------------------------------------------------
def blocked_rule(value: str, rules: IdentityRules) -> str | None:
    """The rule that blocks ``value`` (``blocked_value`` or ``blocked_pattern``), or None."""
    if not rules.is_blocked(value):
        return None
    folded = {v.casefold() for v in rules.blocked_values}
    return "blocked_value" if value.casefold() in folded else "blocked_pattern"


def _identifier_states(profile: dict, first_seen: Iterable[FirstSeen],
                       rules: IdentityRules) -> dict[str, dict[str, Any]]:
    held = set(profile["identifiers"])
    notes = {n[3]: n for n in profile.get("notes", [])}
    keys = held | set(notes) | {f.identifier for f in first_seen}
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(keys):
        id_type, value = split_key(key)
        if key in held:
            status, rule = "held", None
        elif (rule := blocked_rule(value, rules)) is not None:
            status = "blocked"
        elif key in notes:
            status, rule = "dropped", notes[key][2]
        else:
            status, rule = "elsewhere", None  # seen here, matched to another profile
        out[key] = {"key": key, "type": id_type, "value": value, "status": status,
                    "rule": rule, "first_event": None}
    return out


def identity_graph(profile: dict, merges: Sequence[dict], first_seen: Sequence[FirstSeen],
                   rules: IdentityRules) -> dict[str, Any]:
    """The identity graph of one profile, grouped and laid out for an SVG.

    ``groups``: identifiers by type, each with its status (``held``; ``dropped`` by a
    limit or the merge cap, with the rule; ``blocked`` with the rule; ``elsewhere``: seen
    in the person's events, held by another profile) and the event that first carried
    it. ``links``: those events, each with every identifier it carried (an event with
    two is what linked them). ``merges``: profiles absorbed, with event and rule.
    ``drawing``: nodes (x, y) and edges of the picture. Pure; does not block."""
    states = _identifier_states(profile, first_seen, rules)
    links: dict[str, dict[str, Any]] = {}
    for f in sorted(first_seen, key=lambda f: (f.time, f.message_id)):
        if f.identifier in states:
            states[f.identifier]["first_event"] = f.message_id
        links.setdefault(f.message_id, {
            "message_id": f.message_id, "time": f.time, "kind": f.event or f.type,
            "source": f.source, "channel": f.channel,
            "identifiers": sorted(i for i in f.identifiers if i in states)})
    absorbed = [{"merged": m["merged"], "into": m["survivor"], "message_id": m["message_id"],
                 "rule": m["rule"], "event_time": m["event_time"]} for m in merges]
    for m in absorbed:  # the event behind a merge is drawn even if it brought nothing new
        links.setdefault(m["message_id"], {
            "message_id": m["message_id"], "time": m["event_time"], "kind": "merge",
            "source": None, "channel": None, "identifiers": []})
    ordered_links = sorted(links.values(), key=lambda e: (e["time"], e["message_id"]))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for state in states.values():
        by_type.setdefault(state["type"], []).append(state)
    order = sorted(by_type, key=lambda t: (rules.rank(t), t))
    groups = [{"type": t, "identifiers": by_type[t]} for t in order]
    return {"groups": groups, "links": ordered_links, "merges": absorbed,
            "drawing": _layout(groups, ordered_links, absorbed)}


def _layout(groups: list[dict], links: list[dict], merges: list[dict]) -> dict[str, Any]:
    """Columns: the linking events on the left in time order, one column per identifier
    type, the absorbed profiles on the right; edges from each event to what it carried
    and to the merges it caused."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for row, link in enumerate(links):
        nodes.append({"id": f"e:{link['message_id']}", "kind": "event", "x": _LEFT,
                      "y": _TOP + row * _ROW_H, "label": link["kind"],
                      "sub": f"{link['time'][:19].replace('T', ' ')} "
                             f"{link['channel'] or link['source'] or ''}".strip()})
    x = _LEFT + _EVENT_W + 40
    status_of: dict[str, str] = {}
    for col, group in enumerate(groups):
        cx = x + col * _COL_W
        nodes.append({"id": f"h:{group['type']}", "kind": "header", "x": cx, "y": _TOP - 30,
                      "label": group["type"], "sub": ""})
        for row, ident in enumerate(group["identifiers"]):
            status_of[ident["key"]] = ident["status"]
            nodes.append({"id": f"i:{ident['key']}", "kind": "identifier", "x": cx,
                          "y": _TOP + row * _ROW_H, "label": ident["value"],
                          "sub": ident["rule"] or "", "status": ident["status"]})
    mx = x + len(groups) * _COL_W
    if merges:
        nodes.append({"id": "h:merges", "kind": "header", "x": mx, "y": _TOP - 30,
                      "label": "absorbed profiles", "sub": ""})
    for row, merge in enumerate(merges):
        nodes.append({"id": f"m:{merge['merged']}", "kind": "merge", "x": mx,
                      "y": _TOP + row * _ROW_H, "label": merge["merged"][:8],
                      "sub": merge["rule"], "status": "merged"})
        edges.append({"from": f"e:{merge['message_id']}", "to": f"m:{merge['merged']}",
                      "status": "merged"})
    for link in links:
        for key in link["identifiers"]:
            edges.append({"from": f"e:{link['message_id']}", "to": f"i:{key}",
                          "status": status_of.get(key, "held")})
    rows = max([len(links), len(merges), *(len(g["identifiers"]) for g in groups), 1])
    width = mx + (_COL_W if merges else 0) + _LEFT
    return {"width": width, "height": _TOP + rows * _ROW_H, "nodes": nodes, "edges": edges}


# --- told and did ---------------------------------------------------------------------
def _top(scores: dict[str, int], n: int = TOP_AFFINITIES) -> list[dict[str, Any]]:
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"name": k, "score": v} for k, v in ranked]


def told_and_did(profile: dict, now: datetime) -> dict[str, Any]:
    """What the person told us (traits, preferences, consent for every channel: granted,
    refused or never asked, time zone) beside what they did (counts, where and when
    they were seen, top affinities, active hours in their zone, recently viewed,
    devices). ``now`` (aware UTC) fixes the zone's offset. Pure."""
    view = profile_view(profile, now)
    given = view["consent"]
    channels = [*CONSENT_CHANNELS, *sorted(set(given) - set(CONSENT_CHANNELS))]
    consent = [{"channel": c, "state": ("granted" if given[c] else "refused")
                if c in given else "not asked"} for c in channels]
    behaviour = view["behaviour"]
    seen = behaviour["seen"]
    return {
        "told": {"traits": view["traits"], "preferences": view["preferences"],
                 "consent": consent, "timezone": view["timezone"]},
        "did": {
            "counts": behaviour["counts"],
            "first_seen": seen.get("all", {}).get("first"),
            "last_seen": seen.get("all", {}).get("last"),
            "where": [{"scope": k, **v} for k, v in sorted(seen.items()) if k != "all"],
            "categories": _top(behaviour["affinity"]["category"]),
            "items": _top(behaviour["affinity"]["item"]),
            "active_hours": behaviour["active_hours"],
            "hours_zone": view["timezone"] or "UTC",
            "recently_viewed": behaviour["recently_viewed"],
            "devices": [{"key": k, **v} for k, v in sorted(behaviour["devices"].items())],
        },
        "identity_notes": view["identity_notes"],
    }


# --- messages -------------------------------------------------------------------------
def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def _why(row: MessageRow) -> dict[str, Any]:
    if row.message and isinstance(row.message.get("why"), dict):
        return row.message["why"]
    intent = row.intent
    return {"triggerEvents": intent.get("triggerEvents", []),
            "originChannel": intent.get("originChannel"), "facts": intent.get("facts", {})}


def messages_view(rows: Sequence[MessageRow], now: datetime) -> dict[str, Any]:
    """The person's messages, latest due first, each with rule, status, channel (the
    one chosen, or the trigger's origin while still pending), due time, reason and why;
    with counts by status. ``now`` (aware UTC) says which pending ones are overdue."""
    counts: dict[str, int] = {}
    out = []
    for row in sorted(rows, key=lambda r: (r.due_at, r.message_id), reverse=True):
        counts[row.status] = counts.get(row.status, 0) + 1
        channel = row.channel or (row.message or {}).get("channel")
        out.append({
            "message_id": row.message_id, "rule": row.rule, "status": row.status,
            "reason": row.reason, "channel": channel,
            "planned_channel": None if channel else row.intent.get("originChannel"),
            "due_at": _iso(row.due_at), "expires_at": _iso(row.expires_at),
            "scheduled_at": _iso(row.scheduled_at), "decided_at": _iso(row.decided_at),
            "sent_at": _iso(row.sent_at),
            "overdue": row.status == "pending" and row.due_at <= now,
            "why": _why(row),
        })
    return {"counts": counts, "messages": out}


# --- the whole page -------------------------------------------------------------------
def person_page(rows: PersonRows, rules: IdentityRules, now: datetime,
                limit: int) -> dict[str, Any]:
    """Everything the person page shows for one person, as one JSON-able dict (the
    page's ``.json`` link answers exactly this). Pure."""
    profile = rows.profile
    return {
        "id": profile["id"],
        "created": {"time": profile["created"][0], "message_id": profile["created"][1]},
        "identity": {**identity_graph(profile, rows.merges, rows.first_seen, rules),
                     "complete": rows.scanned_all},
        "timeline": timeline_page(rows.events, limit),
        **told_and_did(profile, now),
        "messages": {**messages_view(rows.messages, now), "available": rows.message_tables},
        "as_of": now.isoformat(),
    }
