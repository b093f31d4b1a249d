"""PostgreSQL writes of the profile stage: one transaction per batch, idempotent.

A batch is written in one transaction: deduplicate by message id, suppress events of
forgotten people, lock the identifiers and their interaction components (see
``streams.identity.store``), then for each group of events that share a component either
append them (they sort after everything the component holds) or replay the component's
events in canonical order (``streams.profiles.logic``). Replaying a batch a second time
(after a crash between this commit and the Kafka offset commit) changes nothing: every
message id is stored with its effect, in the same transaction.

Memory: only the batch and the components it touches are held, never a cache of
profiles, so a worker's memory does not grow with the number of profiles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg.types.json import set_json_dumps, set_json_loads
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.identity import store as identity_store
from streams.identity.logic import usable_identifiers
from streams.identity.models import IdentityRules, rules_from_settings
from streams.identity.store import bigint_array, json_list, text_array
from streams.profiles.logic import Graph, canonical, needs_replay, replay
from streams.profiles.models import FoldEvent

log = logging.getLogger(__name__)

# JSONB through orjson: faster than the json module on the hot path.
set_json_loads(orjson.loads)
set_json_dumps(lambda obj: orjson.dumps(obj).decode())

# The profile stage's own tables (identity tables live in streams.identity.store), on
# the identity metadata so that ``create_all`` builds the whole schema for a rebuild.
metadata: MetaData = identity_store.metadata
profiles_table = Table(
    "profiles", metadata,
    Column("profile_id", UUID(as_uuid=False), primary_key=True),
    Column("component_id", BigInteger, nullable=False, index=True),
    Column("identity", JSONB, nullable=False),
    Column("provided", JSONB, nullable=False),
    Column("behaviour", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
profile_events = Table(
    "profile_events", metadata,
    Column("message_id", Text, primary_key=True),
    Column("profile_id", UUID(as_uuid=False), nullable=False, index=True),
    Column("event", JSONB, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
skipped_events = Table(
    "skipped_events", metadata,
    Column("message_id", Text, primary_key=True),
    Column("reason", Text, nullable=False, index=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

_IDENTITY_KEYS = ("created", "identifiers", "merges", "notes")
_PROVIDED_KEYS = ("traits", "preferences", "consent", "timezone")
_BEHAVIOUR_KEYS = ("counts", "seen", "affinity", "recent", "hours", "devices")
_PROFILE_COLUMNS = "profile_id, identity, provided, behaviour"


def profile_to_row(doc: dict, component_id: int) -> dict[str, Any]:
    """A profile document as the columns of ``profiles``."""
    return {
        "profile_id": doc["id"], "component_id": component_id,
        "identity": {k: doc[k] for k in _IDENTITY_KEYS},
        "provided": {k: doc[k] for k in _PROVIDED_KEYS},
        "behaviour": {k: doc[k] for k in _BEHAVIOUR_KEYS},
    }


def row_to_profile(profile_id: object, identity: dict, provided: dict,
                   behaviour: dict) -> dict:
    """The inverse of ``profile_to_row``."""
    return {"id": str(profile_id), **identity, **provided, **behaviour}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class BatchOutcome:
    """What one batch did (for logs and the bench)."""

    applied: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    replays: int = 0
    groups: int = 0


def is_retryable_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the batch is simply tried again."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in ("40P01", "40001")


class ProfileStore:
    """Profiles in PostgreSQL. Every method blocks on the database (async).

    ``schema`` (used by ``streams rebuild``) puts every statement in another schema.
    """

    def __init__(self, engine: AsyncEngine, rules: IdentityRules | None = None,
                 clock: Callable[[], datetime] = _utcnow, schema: str | None = None):
        self.engine = engine
        self.rules = rules or IdentityRules()
        self.clock = clock
        self.schema = schema

    @classmethod
    def for_settings(cls, settings, engine: AsyncEngine) -> ProfileStore:
        """The store of ``settings``' profile schema and identity rules, on ``engine``."""
        return cls(engine, rules_from_settings(settings),
                   schema=settings.profiles_schema or None)

    async def _begin(self, conn: AsyncConnection) -> None:
        if self.schema:
            await conn.execute(text(f'SET LOCAL search_path TO "{self.schema}"'))

    # --- the batch -----------------------------------------------------------------
    async def write_batch(self, events: Sequence[FoldEvent]) -> BatchOutcome:
        """Store a batch of decoded events in one transaction.

        Retries deadlocks and serialization failures itself; raises SQLAlchemy's
        DBAPIError for anything else (the caller decides between retry and DLQ).
        """
        attempt = 0
        while True:
            try:
                async with self.engine.begin() as conn:
                    await self._begin(conn)
                    return await self._write(conn, events)
            except DBAPIError as exc:
                attempt += 1
                if not is_retryable_conflict(exc) or attempt > 20:
                    raise
                log.info("batch hit a lock conflict (%s); retrying", exc.orig)

    async def _write(self, conn: AsyncConnection, events: Sequence[FoldEvent]) -> BatchOutcome:
        outcome = BatchOutcome()
        batch = canonical(events)
        outcome.duplicates = len(events) - len(batch)
        if not batch:
            return outcome
        unblocked = {e.message_id: usable_identifiers(e.identifiers, self.rules) for e in batch}
        lockable = sorted({i for ids in unblocked.values() for i in ids})
        mapping = await identity_store.lock_and_map(conn, lockable)
        # Read under the locks: a forget holds the same identifier locks.
        forgotten = await identity_store.forgotten_among(conn, lockable)
        usable = {m: [i for i in ids if i not in forgotten] if forgotten else ids
                  for m, ids in unblocked.items()}
        # Deduplicate under the locks: a copy of an event carries the same identifiers, so
        # a concurrent worker holding that copy has committed or not yet started.
        seen = await self._known_messages(conn, [e.message_id for e in batch])
        skipped: list[tuple[str, str]] = []
        fresh: list[FoldEvent] = []
        for e in batch:
            if e.message_id in seen:
                outcome.duplicates += 1
            elif forgotten.intersection(e.identifiers):
                skipped.append((e.message_id, "forgotten"))
            elif not usable[e.message_id]:
                skipped.append((e.message_id, "no_identifier"))
            else:
                fresh.append(e)
        if skipped:
            await conn.execute(
                text("INSERT INTO skipped_events (message_id, reason) SELECT * FROM "
                     "unnest(CAST(:m AS text[]), CAST(:r AS text[])) ON CONFLICT DO NOTHING"),
                {"m": [m for m, _ in skipped], "r": [r for _, r in skipped]})
            for _, reason in skipped:
                outcome.skipped[reason] = outcome.skipped.get(reason, 0) + 1
        groups = [(sorted(cids), group, False)
                  for cids, group in group_events(fresh, usable, mapping)]
        outcome.groups = len(groups)
        outcome.applied = len(fresh)
        outcome.replays = await self._write_groups(conn, groups, usable)
        return outcome

    async def _known_messages(self, conn: AsyncConnection, message_ids: list[str]) -> set[str]:
        rows = await conn.execute(text(
            f"SELECT message_id FROM profile_events WHERE message_id = ANY({text_array('m')}) "
            "UNION ALL SELECT message_id FROM skipped_events "
            f"WHERE message_id = ANY({text_array('m')})"), {"m": json_list(message_ids)})
        return {r[0] for r in rows}

    async def _load_profiles(self, conn: AsyncConnection, component_ids: list[int]
                             ) -> dict[str, dict]:
        rows = await conn.execute(text(
            f"SELECT {_PROFILE_COLUMNS}, component_id FROM profiles "
            f"WHERE component_id = ANY({bigint_array('c')})"), {"c": json_list(component_ids)})
        return {str(r[0]): {**row_to_profile(*r[:4]), "_component": r[4]} for r in rows}

    async def _write_groups(self, conn: AsyncConnection,
                            groups: list[tuple[list[int], list[FoldEvent], bool]],
                            usable: dict[str, list[str]] | None = None) -> int:
        """Append or replay every group (component ids, new events, force replay) with a
        fixed number of statements for the whole batch; returns how many replayed."""
        if not groups:
            return 0
        all_cids = sorted({c for cids, _, _ in groups for c in cids})
        old_profiles = await self._load_profiles(conn, all_cids) if all_cids else {}
        by_component: dict[int, dict[str, dict]] = {}
        for pid, doc in old_profiles.items():
            by_component.setdefault(doc.pop("_component"), {})[pid] = doc
        max_keys: dict[int, tuple[str, str]] = {}
        if all_cids:
            rows = await conn.execute(text(
                "SELECT component_id, max_time, max_message_id FROM components "
                f"WHERE component_id = ANY({bigint_array('c')})"), {"c": json_list(all_cids)})
            max_keys = {r[0]: (r[1], r[2]) for r in rows}

        plans = []
        replay_pids: list[str] = []
        for cids, new_events, force in groups:
            olds = {pid: doc for c in cids for pid, doc in by_component.get(c, {}).items()}
            keys = [max_keys[c] for c in cids if c in max_keys]
            max_key = max(keys) if keys else None
            replaying = force or needs_replay(max_key, new_events)
            if replaying:
                replay_pids.extend(olds)
            plans.append(_GroupPlan(cids, new_events, olds, max_key, replaying))
        # One read of the stored events of every component that replays.
        stored: dict[str, list[tuple[str, FoldEvent]]] = {}
        if replay_pids:
            rows = await conn.execute(text(
                "SELECT message_id, profile_id, event FROM profile_events "
                "WHERE profile_id = ANY(CAST(:p AS uuid[]))"), {"p": replay_pids})
            for message_id, pid, doc in rows:
                stored.setdefault(str(pid), []).append((message_id, FoldEvent.from_json(doc)))
            forgotten = await identity_store.forgotten_among(
                conn, {i for evs in stored.values() for _, e in evs for i in e.identifiers})
        else:
            forgotten = frozenset()

        new_cids_needed = sum(1 for p in plans if not p.cids)
        fresh_cids: list[int] = []
        if new_cids_needed:
            rows = await conn.execute(text(
                "SELECT nextval('component_id_seq') FROM generate_series(1, :n)"),
                {"n": new_cids_needed})
            fresh_cids = [r[0] for r in rows]

        w = _Writes()
        replays = 0
        for plan in plans:
            if plan.replaying:
                replays += 1
                old_events = []
                for pid in plan.olds:
                    for message_id, event in stored.get(pid, []):
                        plan.old_event_profile[message_id] = pid
                        old_events.append(event)
                graph = replay([*old_events, *plan.new_events], self.rules, forgotten)
            else:
                graph = Graph(rules=self.rules, max_key=plan.max_key)
                for pid, doc in plan.olds.items():
                    graph.profiles[pid] = doc
                    for ident in doc["identifiers"]:
                        graph.owners[ident] = pid
                for event in canonical(plan.new_events):
                    graph.apply(event, usable.get(event.message_id) if usable else None)
            cid = plan.cids[0] if plan.cids else fresh_cids.pop()
            _collect(w, plan, graph, cid)
        await w.flush(conn)
        return replays

    # --- reads ---------------------------------------------------------------------
    async def get_profile(self, profile_id: str) -> tuple[dict, list[dict]] | None:
        """(profile document, merge history) for a live, merged-away or replaced id;
        None when there is no such profile (or it was forgotten)."""
        async with self.engine.connect() as conn:
            await self._begin(conn)
            doc = await self._profile(conn, profile_id)
            if doc is None:
                survivor = await identity_store.survivor_of(conn, profile_id)
                doc = await self._profile(conn, survivor) if survivor else None
            if doc is None:
                return None
            return doc, await identity_store.merges_of(conn, doc["id"])

    async def find_by_identifier(self, identifier: str) -> tuple[dict, list[dict]] | None:
        """The profile holding ``TYPE:VALUE`` (already normalized), or None."""
        async with self.engine.connect() as conn:
            await self._begin(conn)
            pid = await identity_store.profile_for_identifier(conn, identifier)
        return await self.get_profile(pid) if pid else None

    async def _profile(self, conn: AsyncConnection, profile_id: str) -> dict | None:
        row = (await conn.execute(text(
            f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE profile_id = CAST(:p AS uuid)"),
            {"p": profile_id})).first()
        return row_to_profile(*row) if row else None

    async def all_profiles(self) -> dict[str, dict]:
        """Every profile by id (tests, rebuild comparison). Loads them all: not for the
        hot path."""
        async with self.engine.connect() as conn:
            await self._begin(conn)
            rows = await conn.execute(text(f"SELECT {_PROFILE_COLUMNS} FROM profiles"))
            return {str(r[0]): row_to_profile(*r) for r in rows}

    async def counts(self) -> dict[str, int]:
        """Pipeline figures: profiles, identifiers, events, merges, skipped by reason."""
        async with self.engine.connect() as conn:
            await self._begin(conn)
            out = {}
            for name, sql in (("profiles", "SELECT count(*) FROM profiles"),
                              ("identifiers", "SELECT count(*) FROM identifier_to_profile "
                                              "WHERE profile_id IS NOT NULL"),
                              ("events", "SELECT count(*) FROM profile_events"),
                              ("merges", "SELECT count(*) FROM profile_merges")):
                out[name] = (await conn.execute(text(sql))).scalar_one()
            rows = await conn.execute(text(
                "SELECT reason, count(*) FROM skipped_events GROUP BY reason"))
            for reason, n in rows:
                out[f"skipped_{reason}"] = n
            return out

    # --- forgetting ----------------------------------------------------------------
    async def forget(self, profile_id: str) -> dict | None:
        """Forget a person: profile, identifiers, events and merge history are deleted,
        the identifiers' digests kept so that later events carrying them are suppressed.
        The rest of the component is replayed without them. Returns what was removed,
        or None when there is no such profile."""
        while True:
            try:
                async with self.engine.begin() as conn:
                    await self._begin(conn)
                    return await self._forget(conn, profile_id)
            except DBAPIError as exc:
                if not is_retryable_conflict(exc):
                    raise

    async def _forget(self, conn: AsyncConnection, profile_id: str) -> dict | None:
        locked: set[str] = set()
        for _ in range(10):
            doc = await self._profile(conn, profile_id)
            if doc is None:
                survivor = await identity_store.survivor_of(conn, profile_id)
                doc = await self._profile(conn, survivor) if survivor else None
            if doc is None:
                return None
            if set(doc["identifiers"]) <= locked:
                break  # read under the locks of all its identifiers: stable
            locked |= set(doc["identifiers"])
            mapping = await identity_store.lock_and_map(conn, sorted(locked))
        else:
            raise RuntimeError(f"profile {profile_id} kept changing while being forgotten")
        pid = doc["id"]
        cids = sorted({mapping[i] for i in doc["identifiers"] if i in mapping})
        await conn.execute(text(
            "INSERT INTO forgotten_identifiers (identifier_sha256) VALUES (:d) "
            "ON CONFLICT DO NOTHING"),
            [{"d": identity_store.identifier_digest(i)} for i in doc["identifiers"]])
        events = (await conn.execute(text(
            "DELETE FROM profile_events WHERE profile_id = CAST(:p AS uuid) RETURNING message_id"),
            {"p": pid})).all()
        await conn.execute(text("DELETE FROM profiles WHERE profile_id = CAST(:p AS uuid)"),
                           {"p": pid})
        await conn.execute(text(
            "DELETE FROM identifier_to_profile WHERE identifier = ANY(:i)"),
            {"i": doc["identifiers"]})
        await conn.execute(text(
            "DELETE FROM profile_merges WHERE survivor_id = CAST(:p AS uuid) "
            "OR merged_id = CAST(:p AS uuid)"), {"p": pid})
        await conn.execute(text(
            "DELETE FROM profile_id_to_survivor WHERE profile_id = CAST(:p AS uuid)"),
            {"p": pid})
        # The rest of the component is replayed without the forgotten events, so that
        # what remains is what those events alone would have built.
        if cids and await self._load_profiles(conn, cids):
            await self._write_groups(conn, [(cids, [], True)])
        elif cids:
            await conn.execute(text("DELETE FROM identifier_to_profile "
                                    "WHERE component_id = ANY(:c)"), {"c": cids})
            await conn.execute(text("DELETE FROM components WHERE component_id = ANY(:c)"),
                               {"c": cids})
        return {"profile_id": pid, "identifiers": len(doc["identifiers"]),
                "events": len(events)}


@dataclass
class _GroupPlan:
    cids: list[int]
    new_events: list[FoldEvent]
    olds: dict[str, dict]
    max_key: tuple[str, str] | None
    replaying: bool
    old_event_profile: dict[str, str] = field(default_factory=dict)


@dataclass
class _Writes:
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
    live: list[str] = field(default_factory=list)

    async def flush(self, conn: AsyncConnection) -> None:
        """Run the accumulated writes: a fixed number of statements per batch."""
        x = conn.execute
        # Bulk writes pass all rows as one JSON document: one statement, one round trip,
        # whatever the batch size.
        if self.components:
            await x(text(
                "INSERT INTO components (component_id, max_time, max_message_id) "
                "SELECT c, t, m FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS x(c bigint, t text, m text) ON CONFLICT (component_id) DO UPDATE SET "
                "max_time = EXCLUDED.max_time, max_message_id = EXCLUDED.max_message_id, "
                "updated_at = now()"), _recordset(self.components))
        if self.absorbed:
            olds, news = list(self.absorbed), list(self.absorbed.values())
            await x(text("DELETE FROM components WHERE component_id = ANY(:o)"), {"o": olds})
            for table in ("identifier_to_profile", "profiles", "profile_merges"):
                await x(text(
                    f"UPDATE {table} t SET component_id = m.n FROM unnest(CAST(:o AS bigint[]), "
                    "CAST(:n AS bigint[])) AS m(o, n) WHERE t.component_id = m.o"),
                    {"o": olds, "n": news})
        if self.profiles:
            await x(text(
                "INSERT INTO profiles (profile_id, component_id, identity, provided, behaviour) "
                "SELECT profile_id, component_id, identity, provided, behaviour FROM "
                "jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(profile_id uuid, "
                "component_id bigint, identity jsonb, provided jsonb, behaviour jsonb) "
                "ON CONFLICT (profile_id) DO UPDATE SET component_id = EXCLUDED.component_id, "
                "identity = EXCLUDED.identity, provided = EXCLUDED.provided, "
                "behaviour = EXCLUDED.behaviour, updated_at = now()"),
                _recordset(self.profiles))
        if self.vanished:
            await x(text("DELETE FROM profiles WHERE profile_id = ANY(CAST(:p AS uuid[]))"),
                    {"p": self.vanished})
        if self.identifiers:
            await x(text(
                "INSERT INTO identifier_to_profile (identifier, profile_id, component_id) "
                "SELECT i, p, c FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS x(i text, p uuid, c bigint) ON CONFLICT (identifier) DO UPDATE SET "
                "profile_id = EXCLUDED.profile_id, component_id = EXCLUDED.component_id"),
                _recordset(self.identifiers))
        for cid, keep in self.replay_keep:
            # Identifiers no event mentions any more (forgotten ones) go.
            await x(text("DELETE FROM identifier_to_profile WHERE component_id = :c "
                         "AND NOT (identifier = ANY(:i))"), {"c": cid, "i": keep})
        if self.events:
            await x(text(
                "INSERT INTO profile_events (message_id, profile_id, event) "
                "SELECT m, p, e FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS x(m text, p uuid, e jsonb)"), _recordset(self.events))
        if self.moved:
            await x(text(
                "UPDATE profile_events e SET profile_id = m.p FROM unnest(CAST(:m AS text[]), "
                "CAST(:p AS uuid[])) AS m(m, p) WHERE e.message_id = m.m"),
                _columns(self.moved, "m", "p"))
        if self.orphaned:
            await x(text("DELETE FROM profile_events WHERE message_id = ANY(:m)"),
                    {"m": self.orphaned})
            await x(text(
                "INSERT INTO skipped_events (message_id, reason) VALUES (:m, 'forgotten') "
                "ON CONFLICT DO NOTHING"), [{"m": m} for m in self.orphaned])
        if self.repoint:
            await x(text(
                "UPDATE profile_events e SET profile_id = CAST(m.s AS uuid) FROM "
                "unnest(CAST(:o AS text[]), CAST(:s AS text[])) AS m(o, s) "
                "WHERE e.profile_id = CAST(m.o AS uuid)"),
                {"o": list(self.repoint), "s": list(self.repoint.values())})
        if self.replayed_cids:
            await x(text("DELETE FROM profile_merges WHERE component_id = ANY(:c)"),
                    {"c": self.replayed_cids})
        if self.merges:
            await x(text(
                "INSERT INTO profile_merges (component_id, survivor_id, merged_id, message_id, "
                "rule, event_time) SELECT c, survivor, merged, message_id, rule, event_time "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(c bigint, survivor uuid, "
                "merged uuid, message_id text, rule text, event_time text)"),
                _recordset(self.merges))
        if self.redirects:
            await x(text(
                "INSERT INTO profile_id_to_survivor (old_id, profile_id) "
                "SELECT * FROM unnest(CAST(:o AS uuid[]), CAST(:n AS uuid[])) "
                "ON CONFLICT (old_id) DO UPDATE SET profile_id = EXCLUDED.profile_id"),
                {"o": list(self.redirects), "n": list(self.redirects.values())})
            await x(text(
                "UPDATE profile_id_to_survivor r SET profile_id = CAST(m.n AS uuid) "
                "FROM unnest(CAST(:o AS text[]), CAST(:n AS text[])) AS m(o, n) "
                "WHERE r.profile_id = CAST(m.o AS uuid)"),
                {"o": list(self.redirects), "n": list(self.redirects.values())})
        if self.live and (self.redirects or self.vanished or self.replayed_cids):
            # A live profile id is never a redirect (a replay may bring an id back).
            await x(text(
                "DELETE FROM profile_id_to_survivor WHERE old_id = ANY(CAST(:p AS uuid[]))"),
                {"p": self.live})


def _columns(rows: list[dict], *names: str) -> dict[str, list]:
    """Rows as one list per column (for unnest)."""
    return {name: [r[name] for r in rows] for name in names}


def _recordset(rows: list[dict]) -> dict[str, str]:
    """Rows as one JSON document for jsonb_to_recordset: dumped by orjson in one go,
    which is far cheaper than psycopg escaping every element of text arrays."""
    return {"rows": orjson.dumps(rows).decode()}


def _collect(w: _Writes, plan: _GroupPlan, graph: Graph, cid: int) -> None:
    """Add one group's result to the batch's writes."""
    if graph.max_key is None:  # a forced replay of nothing
        graph.max_key = ("", "")
    w.components.append({"c": cid, "t": graph.max_key[0], "m": graph.max_key[1]})
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
    w.events.extend({"m": e.message_id, "p": graph.final_profile_of(e.message_id),
                     "e": e.to_json()} for e in plan.new_events)
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
    w.redirects.update({o: n for o, n in redirects.items() if o != n and n in graph.profiles})


def _follow(redirects: dict[str, str], pid: str) -> str:
    while pid in redirects:
        pid = redirects[pid]
    return pid


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def iter_chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


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


async def create_schema(engine: AsyncEngine, schema: str) -> None:
    """Create ``schema`` with the identity and profile tables in it (for rebuilds and
    isolated tests; production schemas come from the migrations). Blocks."""
    if not schema.replace("_", "").isalnum():
        raise ValueError(f"schema name {schema!r} must be letters, digits and _")
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))
        await conn.run_sync(metadata.create_all)


async def drop_schema(engine: AsyncEngine, schema: str) -> None:
    """Drop ``schema`` and everything in it. Blocks."""
    if not schema.replace("_", "").isalnum():
        raise ValueError(f"schema name {schema!r} must be letters, digits and _")
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


async def event_partitions(settings) -> list:
    """Every (topic, partition) of the event topics, from the cluster's metadata."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(settings.event_topics))
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described
            if not t["error_code"] for p in t["partitions"]]
