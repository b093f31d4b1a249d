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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.db import (
    DriverConnection,
    check_schema_name,
    in_schema,
    metadata,
    schema_metadata,
)
from streams.identity import store as identity_store
from streams.identity.logic import usable_identifiers
from streams.identity.models import IdentityRules
from streams.identity.store import bigint_array, json_list, text_array
from streams.identity.tables import component_id_seq
from streams.pipeline.policy import RetryPolicy
from streams.profiles import tables, writes
from streams.profiles.codec import unpack_event, unpack_profile
from streams.profiles.logic import Graph, canonical, needs_replay, replay
from streams.profiles.models import FoldEvent, iso
from streams.profiles.writes import BatchWrites, GroupPlan, collect, group_events, profile_to_row

__all__ = [
    "metadata", "profiles_table", "profile_events", "skipped_events", "profile_to_row",
    "row_to_profile", "group_events", "BatchOutcome", "ProfileStore",
    "create_schema", "drop_schema", "event_partitions",
]

log = logging.getLogger(__name__)


# The tables (defined in streams.profiles.tables), under the names this module gave them.
profiles_table = tables.profiles
profile_events = tables.profile_events
skipped_events = tables.skipped_events

# The reads and the forgetting, built once from the metadata's names (the batch's bulk
# writes are in streams.profiles.writes). No schema: ``_begin`` sets the search path.
C, P, E, K = writes.COMPONENTS, writes.PROFILES, writes.EVENTS, writes.SKIPPED
I, M, S = identity_store.IDS, identity_store.MERGES, identity_store.SURVIVORS  # noqa: E741
_PROFILE_COLUMNS = f"{P.profile_id}, {P.document}"
_INSERT_SKIPPED = text(
    f"INSERT INTO {K} ({K.message_id}, {K.reason}) SELECT * FROM "
    "unnest(CAST(:m AS text[]), CAST(:r AS text[])) ON CONFLICT DO NOTHING")
_KNOWN_MESSAGES = text(
    f"SELECT {E.message_id} FROM {E} WHERE {E.message_id} = ANY({text_array('m')}) "
    f"UNION ALL SELECT {K.message_id} FROM {K} WHERE {K.message_id} = ANY({text_array('m')})")
_ANY_PROFILE_OF_COMPONENTS = text(
    f"SELECT EXISTS (SELECT FROM {P} WHERE {P.component_id} = ANY({bigint_array('c')}))")
# What a batch reads of the components it touches, in one round trip: each component's
# latest event key (NULL for none) with each of its profiles (NULL for none).
_COMPONENTS_AND_PROFILES = text(
    f"SELECT k.c, c.{C.max_time}, c.{C.max_message_id}, p.{P.profile_id}, p.{P.document} "
    f"FROM unnest({bigint_array('c')}) AS k(c) "
    f"LEFT JOIN {C} c ON c.{C.component_id} = k.c "
    f"LEFT JOIN {P} p ON p.{P.component_id} = k.c")
_EVENTS_OF_PROFILES = text(
    f"SELECT {E.message_id}, {E.profile_id}, {E.event_time}, {E.event} FROM {E} "
    f"WHERE {E.profile_id} = ANY(CAST(:p AS uuid[]))")
_NEW_COMPONENT_IDS = text(
    f"SELECT nextval('{component_id_seq.name}') FROM generate_series(1, :n)")
_PROFILE = text(f"SELECT {_PROFILE_COLUMNS} FROM {P} WHERE {P.profile_id} = CAST(:p AS uuid)")
_ALL_PROFILES = text(f"SELECT {_PROFILE_COLUMNS} FROM {P}")
_COUNTS = tuple((name, text(sql)) for name, sql in (
    ("profiles", f"SELECT count(*) FROM {P}"),
    ("identifiers", f"SELECT count(*) FROM {I} WHERE {I.profile_id} IS NOT NULL"),
    ("events", f"SELECT count(*) FROM {E}"),
    ("merges", f"SELECT count(*) FROM {M}")))
_SKIPPED_BY_REASON = text(f"SELECT {K.reason}, count(*) FROM {K} GROUP BY {K.reason}")
# What forgetting profile :p deletes (its identifiers :i), in this order.
_FORGET_PROFILE = (
    text(f"DELETE FROM {P} WHERE {P.profile_id} = CAST(:p AS uuid)"),
    text(f"DELETE FROM {I} WHERE {I.identifier} = ANY(:i)"),
    text(f"DELETE FROM {M} WHERE {M.survivor_id} = CAST(:p AS uuid) "
         f"OR {M.merged_id} = CAST(:p AS uuid)"),
    text(f"DELETE FROM {S} WHERE {S.profile_id} = CAST(:p AS uuid)"),
)
_FORGET_EVENTS = text(
    f"DELETE FROM {E} WHERE {E.profile_id} = CAST(:p AS uuid) RETURNING {E.message_id}")
# Components :c left with no profile at all.
_DROP_COMPONENTS = (
    text(f"DELETE FROM {I} WHERE {I.component_id} = ANY(:c)"),
    text(f"DELETE FROM {C} WHERE {C.component_id} = ANY(:c)"),
)
del C, P, E, K, I, M, S


def row_to_profile(profile_id: object, document: bytes) -> dict:
    """The profile document of a ``profiles`` row (profile id, document)."""
    return unpack_profile(profile_id, document)


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


class ProfileStore:
    """Profiles in PostgreSQL. Every method blocks on the database (async).

    ``schema`` (used by ``streams rebuild``) puts every statement in another schema.
    """

    def __init__(self, engine: AsyncEngine, rules: IdentityRules | None = None,
                 clock: Callable[[], datetime] = _utcnow, schema: str | None = None,
                 feed: bool = False, forget_key: bytes | None = None):
        self.engine = engine
        # Keys the digests of forgotten identifiers (STREAMS_FORGET_KEY); None: unkeyed
        # SHA-256, for tests and tools only (for_settings passes the configured key).
        self.forget_key = forget_key
        # Whether batches and forgets note the profiles they touch in ``profile_changes``
        # (the change feed a following stage reads); off when no stage reads it.
        self.feed = feed
        self.rules = rules or IdentityRules()
        self.clock = clock
        self.schema = schema
        # Each transaction starts by putting the hand-written statements in ``schema``.
        self._set_path = (text(f'SET LOCAL search_path TO "{check_schema_name(schema)}"')
                          if schema else None)

    @classmethod
    def for_settings(cls, settings, engine: AsyncEngine) -> ProfileStore:
        """The store of ``settings``' profile schema and identity rules, on ``engine``."""
        key = settings.api.forget_key
        return cls(engine, settings.identity,
                   schema=settings.profiles_schema or None, feed=settings.triggers_enabled,
                   forget_key=key.get_secret_value().encode() if key is not None else None)

    async def _begin(self, conn: AsyncConnection) -> None:
        if self._set_path is not None:
            await conn.execute(self._set_path)

    # --- the batch -----------------------------------------------------------------
    async def write_batch(self, events: Sequence[FoldEvent],
                          counted: frozenset[str] = frozenset()) -> BatchOutcome:
        """Store a batch of decoded events in one transaction, all or nothing.

        ``counted`` (``streams rebuild`` only): message ids that count although they
        carry a forgotten identifier (stored before that person was forgotten, they are
        folded without it, as the forget left them); any other event carrying one is
        skipped as ``forgotten``.

        Tries once: raises SQLAlchemy's DBAPIError on any failure, a deadlock with a
        concurrent batch included. Retrying is the caller's, by failure class
        (``streams.pipeline.policy.RetryPolicy``: the stage runner, rebuild).
        """
        async with self.engine.begin() as conn:
            await self._begin(conn)
            return await self._write(await DriverConnection.of(conn), events, counted)

    async def _write(self, conn: AsyncConnection, events: Sequence[FoldEvent],
                     counted: frozenset[str] = frozenset()) -> BatchOutcome:
        outcome = BatchOutcome()
        batch = canonical(events)
        outcome.duplicates = len(events) - len(batch)
        if not batch:
            return outcome
        unblocked = {e.message_id: usable_identifiers(e.identifiers, self.rules) for e in batch}
        lockable = sorted({i for ids in unblocked.values() for i in ids})
        mapping = await identity_store.lock_and_map(conn, lockable)
        # Read under the locks: a forget holds the same identifier locks. An identifier
        # in the graph is no forgotten one (a forget deletes its rows in the transaction
        # that remembers it, and no event carrying it is folded after), so only the
        # others are looked up.
        forgotten = await identity_store.forgotten_among(
            conn, [i for i in lockable if i not in mapping], self.forget_key)
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
            elif forgotten.intersection(e.identifiers) and e.message_id not in counted:
                skipped.append((e.message_id, "forgotten"))
            elif not usable[e.message_id]:
                skipped.append((e.message_id, "no_identifier"))
            else:
                fresh.append(e)
        if skipped:
            await conn.execute(
                _INSERT_SKIPPED, {"m": [m for m, _ in skipped], "r": [r for _, r in skipped]})
            for _, reason in skipped:
                outcome.skipped[reason] = outcome.skipped.get(reason, 0) + 1
        groups = [(sorted(cids), group, False)
                  for cids, group in group_events(fresh, usable, mapping)]
        outcome.groups = len(groups)
        outcome.applied = len(fresh)
        outcome.replays = await self._write_groups(conn, groups, usable)
        return outcome

    async def _known_messages(self, conn: AsyncConnection, message_ids: list[str]) -> set[str]:
        rows = await conn.execute(_KNOWN_MESSAGES, {"m": json_list(message_ids)})
        return {r[0] for r in rows}

    async def _any_profile(self, conn: AsyncConnection, component_ids: list[int]) -> bool:
        return bool(await conn.scalar(_ANY_PROFILE_OF_COMPONENTS,
                                      {"c": json_list(component_ids)}))

    async def _write_groups(self, conn: AsyncConnection,
                            groups: list[tuple[list[int], list[FoldEvent], bool]],
                            usable: dict[str, list[str]] | None = None) -> int:
        """Append or replay every group (component ids, new events, force replay) with a
        fixed number of statements for the whole batch; returns how many replayed."""
        if not groups:
            return 0
        all_cids = sorted({c for cids, _, _ in groups for c in cids})
        by_component: dict[int, dict[str, dict]] = {}
        max_keys: dict[int, tuple[str, str]] = {}
        if all_cids:  # none when every group is new: nothing to read
            rows = await conn.execute(_COMPONENTS_AND_PROFILES, {"c": json_list(all_cids)})
            for cid, max_time, max_message_id, pid, data in rows:
                if max_time is not None:
                    max_keys[cid] = (iso(max_time), max_message_id)
                if pid is not None:
                    by_component.setdefault(cid, {})[str(pid)] = row_to_profile(pid, data)

        plans = []
        replay_pids: list[str] = []
        for cids, new_events, force in groups:
            olds = {pid: doc for c in cids for pid, doc in by_component.get(c, {}).items()}
            keys = [max_keys[c] for c in cids if c in max_keys]
            max_key = max(keys) if keys else None
            replaying = force or needs_replay(max_key, new_events)
            if replaying:
                replay_pids.extend(olds)
            plans.append(GroupPlan(cids, new_events, olds, max_key, replaying))
        # One read of the stored events of every component that replays.
        stored: dict[str, list[tuple[str, FoldEvent]]] = {}
        if replay_pids:
            rows = await conn.execute(_EVENTS_OF_PROFILES, {"p": replay_pids})
            for message_id, pid, time, data in rows:
                stored.setdefault(str(pid), []).append(
                    (message_id, unpack_event(message_id, iso(time), data)))
            # The new events' identifiers too: a rebuild's ``counted`` events carry
            # forgotten ones (the worker's never do: they are skipped).
            forgotten = await identity_store.forgotten_among(
                conn, {*(i for evs in stored.values() for _, e in evs for i in e.identifiers),
                       *(i for p in plans if p.replaying for e in p.new_events
                         for i in e.identifiers)},
                self.forget_key)
        else:
            forgotten = frozenset()

        new_cids_needed = sum(1 for p in plans if not p.cids)
        fresh_cids: list[int] = []
        if new_cids_needed:
            rows = await conn.execute(_NEW_COMPONENT_IDS, {"n": new_cids_needed})
            fresh_cids = [r[0] for r in rows]

        w = BatchWrites(feed=self.feed)
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
            collect(w, plan, graph, cid)
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
        row = (await conn.execute(_PROFILE, {"p": profile_id})).first()
        return row_to_profile(*row) if row else None

    async def all_profiles(self) -> dict[str, dict]:
        """Every profile by id (tests, rebuild comparison). Loads them all: not for the
        hot path."""
        async with self.engine.connect() as conn:
            await self._begin(conn)
            rows = await conn.execute(_ALL_PROFILES)
            return {str(r[0]): row_to_profile(*r) for r in rows}

    async def counts(self) -> dict[str, int]:
        """Pipeline figures: profiles, identifiers, events, merges, skipped by reason."""
        async with self.engine.connect() as conn:
            await self._begin(conn)
            out = {}
            for name, statement in _COUNTS:
                out[name] = (await conn.execute(statement)).scalar_one()
            rows = await conn.execute(_SKIPPED_BY_REASON)
            for reason, n in rows:
                out[f"skipped_{reason}"] = n
            return out

    # --- forgetting ----------------------------------------------------------------
    async def forget(self, profile_id: str) -> dict | None:
        """Forget a person: profile, identifiers, events and merge history are deleted,
        the identifiers' keyed digests kept (HMAC-SHA256 under ``forget_key``) so that
        later events carrying them are suppressed.
        The rest of the component is replayed without them. Returns what was removed,
        or None when there is no such profile. A lock conflict with a concurrent batch
        is retried (``RetryPolicy``); other failures raise."""

        async def once() -> dict | None:
            async with self.engine.begin() as conn:
                await self._begin(conn)
                return await self._forget(conn, profile_id)

        return await RetryPolicy(tries=1).call(once)

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
        await identity_store.remember_forgotten(conn, doc["identifiers"], self.forget_key)
        events = (await conn.execute(_FORGET_EVENTS, {"p": pid})).all()
        for statement in _FORGET_PROFILE:
            await conn.execute(statement, {"p": pid, "i": doc["identifiers"]})
        # The rest of the component is replayed without the forgotten events, so that
        # what remains is what those events alone would have built.
        if cids and await self._any_profile(conn, cids):
            await self._write_groups(conn, [(cids, [], True)])
        elif cids:
            for statement in _DROP_COMPONENTS:
                await conn.execute(statement, {"c": cids})
        if self.feed:
            await conn.execute(writes.NOTE_CHANGES, {"p": [pid]})
        return {"profile_id": pid, "identifiers": len(doc["identifiers"]),
                "events": len(events)}


async def create_schema(engine: AsyncEngine, schema: str) -> None:
    """Create ``schema`` with the identity and profile tables in it (for rebuilds and
    isolated tests; production schemas come from the migrations). Blocks."""
    options = in_schema(schema)  # raises ValueError for a name that is not a plain word
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.execution_options(**options)
        await conn.run_sync(schema_metadata().create_all)


async def drop_schema(engine: AsyncEngine, schema: str) -> None:
    """Drop ``schema`` and everything in it. Blocks."""
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{check_schema_name(schema)}" CASCADE'))


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
