"""The bulk writes of one batch: every group's result collected, then flushed in a fixed
number of statements whatever the batch size (``streams.profiles.store`` plans them).

The statements are hand-written for speed (rows travel as one JSON document) and take
every table and column name from the metadata (``streams.identity.tables``,
``streams.profiles.tables``), built once at import. They name no schema: the store's
transaction sets the search path to the configured one.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.db import SqlNames, uuid_array
from streams.identity.store import IDS, MERGES, SURVIVORS
from streams.identity.tables import components
from streams.profiles import tables
from streams.profiles.codec import pack_event, pack_profile
from streams.profiles.logic import Graph
from streams.profiles.models import FoldEvent, profile_id_for

COMPONENTS = SqlNames(components)
PROFILES = SqlNames(tables.profiles)
EVENTS = SqlNames(tables.profile_events)
SKIPPED = SqlNames(tables.skipped_events)
CHANGES = SqlNames(tables.profile_changes)



def profile_to_row(doc: dict, component_id: int) -> dict[str, Any]:
    """A profile document as a row of ``profiles`` for ``_UPSERT_PROFILES`` (the compact
    document base64-encoded: the rows travel as one JSON text)."""
    return {"p": doc["id"], "c": component_id, "d": b64(pack_profile(doc))}


def event_to_row(event: FoldEvent, profile_id: str | None) -> dict[str, Any]:
    """A stored event as a row of ``profile_events`` for ``_INSERT_EVENTS``."""
    return {"m": event.message_id, "p": profile_id, "t": time_text(event.time),
            "e": b64(pack_event(event))}


def time_text(t: str) -> str:
    """A canonical event time as PostgreSQL reads it: years under 1000 padded."""
    return t if len(t) >= 27 else t.rjust(27, "0")


def b64(data: bytes) -> str:
    """Bytes as base64 text (PostgreSQL's ``decode(..., 'base64')`` reverses it)."""
    return b2a_base64(data, newline=False).decode("ascii")


@dataclass
class GroupPlan:
    """One group of a batch: its components, new events, the profiles they hold, the
    components' latest event key and whether the group replays."""

    cids: list[int]
    new_events: list[FoldEvent]
    olds: dict[str, dict]
    max_key: tuple[str, str] | None
    replaying: bool
    old_event_profile: dict[str, str] = field(default_factory=dict)


C, P, E, K, I, M, S = COMPONENTS, PROFILES, EVENTS, SKIPPED, IDS, MERGES, SURVIVORS  # noqa: E741
# Bulk writes pass all rows as one JSON document (``_recordset``) or as one array per
# column (unnest): one statement, one round trip, whatever the batch size.
_UPSERT_COMPONENTS = text(
    f"INSERT INTO {C} ({C.component_id}, {C.max_time}, {C.max_message_id}) "
    "SELECT c, CAST(t AS timestamptz), m FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    f"AS x(c bigint, t text, m text) ON CONFLICT ({C.component_id}) DO UPDATE SET "
    f"{C.max_time} = EXCLUDED.{C.max_time}, "
    f"{C.max_message_id} = EXCLUDED.{C.max_message_id}")
_DELETE_COMPONENTS = text(f"DELETE FROM {C} WHERE {C.component_id} = ANY(:o)")
# Rows of an absorbed component move to the one that absorbed it.
_MOVE_TO_COMPONENT = tuple(text(
    f"UPDATE {t} t SET {t.component_id} = m.n FROM unnest(CAST(:o AS bigint[]), "
    f"CAST(:n AS bigint[])) AS m(o, n) WHERE t.{t.component_id} = m.o") for t in (I, P, M))
_UPSERT_PROFILES = text(
    f"INSERT INTO {P} ({P.profile_id}, {P.component_id}, {P.document}) "
    "SELECT p, c, decode(d, 'base64') FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    "AS x(p uuid, c bigint, d text) "
    f"ON CONFLICT ({P.profile_id}) DO UPDATE SET {P.component_id} = EXCLUDED.{P.component_id}, "
    f"{P.document} = EXCLUDED.{P.document}")
_DELETE_PROFILES = text(f"DELETE FROM {P} WHERE {P.profile_id} = ANY(CAST(:p AS uuid[]))")
_UPSERT_IDENTIFIERS = text(
    f"INSERT INTO {I} ({I.identifier}, {I.profile_id}, {I.component_id}) "
    "SELECT i, p, c FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    f"AS x(i text, p uuid, c bigint) ON CONFLICT ({I.identifier}) DO UPDATE SET "
    f"{I.profile_id} = EXCLUDED.{I.profile_id}, {I.component_id} = EXCLUDED.{I.component_id} "
    # An unchanged row is not rewritten: no dead version left for every event of a person.
    f"WHERE ({I}.{I.profile_id}, {I}.{I.component_id}) "
    f"IS DISTINCT FROM (EXCLUDED.{I.profile_id}, EXCLUDED.{I.component_id})")
_DELETE_UNMENTIONED = text(
    f"DELETE FROM {I} WHERE {I.component_id} = :c AND NOT ({I.identifier} = ANY(:i))")
_INSERT_EVENTS = text(
    f"INSERT INTO {E} ({E.message_id}, {E.profile_id}, {E.event_time}, {E.event}) "
    "SELECT m, p, CAST(t AS timestamptz), decode(e, 'base64') "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(m text, p uuid, t text, e text)")
_MOVE_EVENTS = text(
    f"UPDATE {E} e SET {E.profile_id} = m.p FROM unnest(CAST(:m AS text[]), "
    f"CAST(:p AS uuid[])) AS m(m, p) WHERE e.{E.message_id} = m.m")
_DELETE_EVENTS = text(f"DELETE FROM {E} WHERE {E.message_id} = ANY(:m)")
_SKIP_FORGOTTEN = text(
    f"INSERT INTO {K} ({K.message_id}, {K.reason}) VALUES (:m, 'forgotten') "
    "ON CONFLICT DO NOTHING")
_REPOINT_EVENTS = text(
    f"UPDATE {E} e SET {E.profile_id} = CAST(m.s AS uuid) FROM "
    "unnest(CAST(:o AS text[]), CAST(:s AS text[])) AS m(o, s) "
    f"WHERE e.{E.profile_id} = CAST(m.o AS uuid)")
_DELETE_MERGES = text(f"DELETE FROM {M} WHERE {M.component_id} = ANY(:c)")
# Appended (``tables.profile_changes``): nothing to wait for, whoever holds earlier rows.
NOTE_CHANGES = text(
    f"INSERT INTO {CHANGES} ({CHANGES.profile_id}) SELECT unnest(CAST(:p AS uuid[]))")
_INSERT_MERGES = text(
    f"INSERT INTO {M} ({M.component_id}, {M.survivor_id}, {M.merged_id}, {M.message_id}, "
    f"{M.rule}, {M.event_time}) SELECT c, survivor, merged, message_id, rule, event_time "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(c bigint, survivor uuid, "
    "merged uuid, message_id text, rule text, event_time text)")
_UPSERT_REDIRECTS = text(
    f"INSERT INTO {S} ({S.old_id}, {S.profile_id}) "
    "SELECT * FROM unnest(CAST(:o AS uuid[]), CAST(:n AS uuid[])) "
    f"ON CONFLICT ({S.old_id}) DO UPDATE SET {S.profile_id} = EXCLUDED.{S.profile_id}")
_FOLLOW_REDIRECTS = text(
    f"UPDATE {S} r SET {S.profile_id} = CAST(m.n AS uuid) "
    "FROM unnest(CAST(:o AS text[]), CAST(:n AS text[])) AS m(o, n) "
    f"WHERE r.{S.profile_id} = CAST(m.o AS uuid)")
_DELETE_REDIRECTS = text(f"DELETE FROM {S} WHERE {S.old_id} = ANY(CAST(:p AS uuid[]))")
# An existing redirect of the id an event created follows that event when a replay moves
# it (an old id answers with the person its creating event belongs to now).
_RENAME_REDIRECTS = text(
    f"UPDATE {S} r SET {S.profile_id} = CAST(m.n AS uuid) "
    "FROM unnest(CAST(:o AS text[]), CAST(:n AS text[])) AS m(o, n) "
    f"WHERE r.{S.old_id} = CAST(m.o AS uuid) AND r.{S.profile_id} <> CAST(m.n AS uuid)")
del C, P, E, K, I, M, S


@dataclass
class BatchWrites:
    """Every write of a batch, accumulated over its groups and flushed in bulk."""

    components: list[dict] = field(default_factory=list)
    absorbed: dict[int, int] = field(default_factory=dict)
    profiles: list[dict] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    identifiers: list[dict] = field(default_factory=list)
    replay_keep: list[tuple[int, list[str]]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    moved: list[dict] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    repoint: dict[str, str] = field(default_factory=dict)
    replayed_cids: list[int] = field(default_factory=list)
    merges: list[dict] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    live: list[str] = field(default_factory=list)
    feed: bool = False  # note every profile touched in ``profile_changes``

    async def flush(self, conn: AsyncConnection) -> None:
        """Run the accumulated writes on ``conn``: a fixed number of statements per batch.
        Blocks on the database; raises SQLAlchemy's DBAPIError."""
        x = conn.execute
        if self.components:
            await x(_UPSERT_COMPONENTS, _recordset(self.components))
        if self.absorbed:
            olds, news = list(self.absorbed), list(self.absorbed.values())
            await x(_DELETE_COMPONENTS, {"o": olds})
            for statement in _MOVE_TO_COMPONENT:
                await x(statement, {"o": olds, "n": news})
        if self.profiles:
            await x(_UPSERT_PROFILES, _recordset(self.profiles))
        if self.vanished:
            await x(_DELETE_PROFILES, {"p": self.vanished})
        if self.identifiers:
            await x(_UPSERT_IDENTIFIERS, _recordset(self.identifiers))
        for cid, keep in self.replay_keep:
            # Identifiers no event mentions any more (forgotten ones) go.
            await x(_DELETE_UNMENTIONED, {"c": cid, "i": keep})
        if self.events:
            await x(_INSERT_EVENTS, _recordset(self.events))
        if self.moved:
            await x(_MOVE_EVENTS, _columns(self.moved, "m", "p"))
        if self.orphaned:
            await x(_DELETE_EVENTS, {"m": self.orphaned})
            await x(_SKIP_FORGOTTEN, [{"m": m} for m in self.orphaned])
        if self.repoint:
            await x(_REPOINT_EVENTS,
                    {"o": list(self.repoint), "s": list(self.repoint.values())})
        if self.replayed_cids:
            await x(_DELETE_MERGES, {"c": self.replayed_cids})
        if self.merges:
            await x(_INSERT_MERGES, _recordset(self.merges))
        if self.redirects:
            pairs = {"o": list(self.redirects), "n": list(self.redirects.values())}
            await x(_UPSERT_REDIRECTS, pairs)
            await x(_FOLLOW_REDIRECTS, pairs)
        if self.renamed:
            await x(_RENAME_REDIRECTS, {"o": list(self.renamed), "n": list(self.renamed.values())})
        if self.live and (self.redirects or self.vanished or self.replayed_cids):
            # A live profile id is never a redirect (a replay may bring an id back).
            await x(_DELETE_REDIRECTS, {"p": self.live})
        if self.feed:
            changed = {*self.live, *self.vanished, *self.redirects}
            if changed:
                await x(NOTE_CHANGES, {"p": uuid_array(sorted(changed))})


def _columns(rows: list[dict], *names: str) -> dict[str, list]:
    """Rows as one list per column (for unnest)."""
    return {name: [r[name] for r in rows] for name in names}


def _recordset(rows: list[dict]) -> dict[str, str]:
    """Rows as one JSON document for jsonb_to_recordset: dumped by orjson in one go,
    which is far cheaper than psycopg escaping every element of text arrays."""
    return {"rows": orjson.dumps(rows).decode()}


def collect(w: BatchWrites, plan: GroupPlan, graph: Graph, cid: int) -> None:
    """Add one group's result (``graph``, folded into component ``cid``) to the batch's
    writes. Pure."""
    if graph.max_key is None:  # a forced replay of nothing: a component of no event
        w.components.append({"c": cid, "t": None, "m": ""})
    else:
        w.components.append({"c": cid, "t": time_text(graph.max_key[0]),
                             "m": graph.max_key[1]})
    for absorbed in plan.cids[1:]:
        w.absorbed[absorbed] = cid
    write_ids = sorted(graph.profiles) if plan.replaying else sorted(graph.touched)
    for pid in write_ids:
        w.profiles.append(profile_to_row(graph.profiles[pid], cid))
    w.live.extend(write_ids)
    vanished = sorted(set(plan.olds) - set(graph.profiles))
    w.vanished.extend(vanished)
    idents = sorted(graph.mentioned if plan.replaying else graph.touched_identifiers)
    w.identifiers.extend({"i": i, "p": graph.owners.get(i), "c": cid} for i in idents)
    if plan.replaying:
        w.replay_keep.append((cid, idents))
        if plan.cids:
            w.replayed_cids.append(cid)
    w.events.extend(event_to_row(e, graph.final_profile_of(e.message_id))
                    for e in plan.new_events)
    if plan.replaying:
        for message_id, pid in plan.old_event_profile.items():
            final = graph.final_profile_of(message_id)
            if final is None:  # only forgotten identifiers left: counts nowhere now
                w.orphaned.append(message_id)
            elif final != pid:
                w.moved.append({"m": message_id, "p": final})
    else:
        for merged in graph.redirects:
            if merged in plan.olds:
                w.repoint[merged] = _follow(graph.redirects, merged)
    w.merges.extend({"c": cid, **m} for m in graph.new_merges)
    redirects = {m: _follow(graph.redirects, m) for m in graph.redirects}
    if plan.replaying:
        for pid in vanished:
            final = graph.final_profile_of(plan.olds[pid]["created"][1])
            if final:
                redirects[pid] = final
        for message_id in graph.event_profile:
            old = profile_id_for(message_id)
            if old not in graph.profiles:
                w.renamed[old] = graph.final_profile_of(message_id)
    w.redirects.update({o: n for o, n in redirects.items() if o != n and n in graph.profiles})


def _follow(redirects: dict[str, str], pid: str) -> str:
    while pid in redirects:
        pid = redirects[pid]
    return pid


def group_events(events: Sequence[FoldEvent], usable: dict[str, list[str]],
                 mapping: dict[str, int]) -> list[tuple[set[int], list[FoldEvent]]]:
    """Partition a batch into groups that share an identifier or a component.

    Returns (component ids, events) per group. Pure.
    """
    parent: dict[tuple, tuple] = {}

    def find(x: tuple) -> tuple:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for e in events:
        enode = find(("e", e.message_id))
        for ident in usable[e.message_id]:
            node = ("c", mapping[ident]) if ident in mapping else ("i", ident)
            parent[find(node)] = enode
            enode = find(enode)
    groups: dict[tuple, tuple[set[int], list[FoldEvent]]] = {}
    for e in events:
        groups.setdefault(find(("e", e.message_id)), (set(), []))[1].append(e)
    for node in list(parent):
        if node[0] == "c":
            root = find(node)
            if root in groups:
                groups[root][0].add(node[1])
    return list(groups.values())
