"""The trigger stage: follows the profile stage's change feed, schedules what the rules
decide, and emits due messages to ``messages.personalized``.

Two loops, each one PostgreSQL transaction per round, several workers sharing them (and
in each worker's trigger process, ``triggers_emit_lanes`` emit loops at once, which share
due rows as workers do):

- **plan**: claim changed profiles from the feed (``FOR UPDATE SKIP LOCKED``, removed when
  the round commits), and for each: a profile merged away or renamed hands its rows to
  where it went; a forgotten one loses its rows; a live one is planned from all its events
  (``logic.plan_schedules``): new intents are stored as pending, pending rows no longer
  planned are cancelled with the reason (exit, superseded, disabled), and sent or
  held-out messages followed by the rule's goal count as converted. The feed is written
  in the fold's own transaction and consumed in this one, so no change is ever lost.
- **emit**: claim the people of the first due rows that no other worker is deciding
  about (a per-person advisory lock taken without waiting) with all their due rows, in
  due order (caps and re-eligibility count what was decided before, as in the
  reference), re-decide each from the current profile and
  the person's sent history (``logic.decide_send``: forgotten, consent, caps, quiet hours,
  best hour, expiry, exit, control group), produce every message to send (idempotent
  producer, key = profile id) and wait for Kafka's acknowledgement, then record the
  decisions. A crash after the produce and before the commit leaves the rows pending:
  they are emitted again with the same message id, which consumers drop.

Every message is validated against ``schemas/v1/message.json`` before it is produced.
The clock is injected, so tests run weeks of schedule in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.db import check_schema_name
from streams.errors import describe_failure
from streams.events.schemas import SchemaSet, default_schemas
from streams.events.time import utc_now
from streams.events.validate import schema_error
from streams.kafka import EventWriter, OutgoingRecord
from streams.pipeline.policy import RetryPolicy
from streams.profiles import feed
from streams.settings import Settings
from streams.triggers import store
from streams.triggers.logic import cancel_reason, converted, decide_send, outcome, plan_schedules
from streams.triggers.models import (
    PERSON_KEYS,
    Cancel,
    Hold,
    HoldOut,
    Person,
    Send,
    SentRecord,
    Suppress,
)
from streams.triggers.rules import RuleSet, load_rules

log = logging.getLogger(__name__)

# How far back the sent history of a person is read: the weekly cap's window, or a
# rule's re-eligibility window when that is longer.
WEEK = timedelta(days=7)
# How long the due claim may start where an earlier one saw the first pending row before
# it looks from the beginning again (see ``TriggerStage._claim``).
FLOOR_SECONDS = 1.0
# In a backlog an emit round claims up to this many batches (see ``TriggerStage._claim``).
BACKLOG_ROUNDS = 4


class TriggerStage:
    """The plan and emit loops over one engine and one producer (see the module)."""

    def __init__(self, settings: Settings, engine: AsyncEngine, producer: Any,
                 rules: RuleSet | None = None, clock: Callable[[], datetime] = utc_now,
                 schemas: SchemaSet | None = None, backlog: Callable[[], int] | None = None):
        self.settings = settings
        # The profile stage's backlog in events (``run`` yields to it), if known.
        self.backlog = backlog
        self._yielded = False
        self.engine = engine
        self.producer = producer
        # Messages go out in record batches per partition (a few microseconds a message
        # where producer.send costs tens); the write returns once all are acknowledged.
        # No linger: a round writes all its messages at once, then waits for them.
        self.writer = EventWriter(settings, producer, started=True, linger_ms=0)
        self.rules = rules if rules is not None else load_rules(settings.triggers_file)
        self.clock = clock
        self.schemas = schemas or default_schemas()
        self.topic = settings.topic(settings.topic_messages)
        self.batch = settings.triggers_batch
        schema = settings.profiles_schema or None
        self._begin_sql = text(_begin_statement(check_schema_name(schema) if schema else None))
        windows = [r.reeligible_after for r in self.rules.rules.values()]
        self.history_window = max([WEEK, *windows])
        self.policy = RetryPolicy(tries=3)
        # Where the next due claim may start (see ``_claim``), shared by the emit lanes.
        self._floor: store.DueKey | None = None
        self._floor_at = 0.0
        # People the next emit round claims: the batch, doubled after each full round up
        # to BACKLOG_ROUNDS batches.
        self._round_size = self.batch

    async def _begin(self, conn: AsyncConnection) -> None:
        await conn.execute(self._begin_sql)

    # --- plan ------------------------------------------------------------------------
    async def plan_once(self) -> int:
        """One round of the plan loop; returns how many changed profiles it took."""
        return await self.policy.call(self._plan_round)

    async def _plan_round(self) -> int:
        now = self.clock()
        async with self.engine.begin() as conn:
            await self._begin(conn)
            changed = await feed.claim_changes(conn, self.batch)
            if not changed:
                return 0
            # One round at a time per person (another worker's plan round may hold a
            # later change of the same person, an emit round their due rows): the
            # people are read once their locks are held.
            await store.lock_people(conn, changed)
            live = await feed.snapshots(conn, changed, PERSON_KEYS)
            for pid in changed:
                if pid in live:
                    continue
                where = await feed.where_is(conn, pid)
                if where is None:
                    await store.delete_of(conn, pid)  # forgotten: their messages go too
                else:
                    if where not in live:
                        await store.lock_people(conn, [where])
                        live.update(await feed.snapshots(conn, [where], PERSON_KEYS))
                    await store.repoint(conn, pid, where)
            rows = await store.open_rows_of(conn, live)
            by_profile: dict[str, list[store.Row]] = {}
            stored = {}
            for row in rows:
                by_profile.setdefault(row.profile_id, []).append(row)
                stored[row.message_id] = row
            intents, docs, decisions, conversions = [], [], [], []
            for pid, snap in live.items():
                person = Person.from_profile(snap.document, snap.events)
                planned = plan_schedules(person, self.rules, now=now)
                # A planned intent its row already holds as it is needs no write (most
                # of a person's intents, when a new event changes one of them).
                for intent in planned:
                    doc = intent.to_json()
                    if not store.unchanged(intent, doc, stored.get(intent.message_id)):
                        intents.append(intent)
                        docs.append(doc)
                wanted = {i.message_id for i in planned}
                for row in by_profile.get(pid, ()):
                    if row.status == "pending" and row.message_id not in wanted:
                        reason = cancel_reason(row.intent, person, self.rules, now) \
                            or "superseded"
                        decisions.append({"m": row.message_id, "s": "cancelled", "r": reason,
                                          "at": now, "sent": None, "msg": None})
                    elif row.status in ("sent", "held_out") and row.converted_at is None:
                        rule = self.rules.rule(row.rule)
                        at = row.sent_at or row.decided_at
                        if rule is not None and at is not None and converted(
                                at, rule, person.events):
                            conversions.append(row.message_id)
            await store.upsert_intents(conn, intents, docs)
            await store.decide(conn, decisions)
            await store.mark_converted(conn, conversions, now)
        if decisions:
            log.info("triggers: %d scheduled message(s) cancelled", len(decisions))
        return len(changed)

    # --- emit ------------------------------------------------------------------------
    async def emit_once(self) -> int:
        """One round of the emit loop; returns how many due rows it decided."""
        return await self.policy.call(self._emit_round)

    async def _emit_round(self) -> int:
        now = self.clock()
        async with self.engine.begin() as conn:
            await self._begin(conn)
            due = await self._claim(conn, now)
            if not due:
                return 0
            people = {row.profile_id for row in due}
            live = await feed.snapshots(conn, sorted(people), PERSON_KEYS)
            moved = {}
            for pid in people - set(live):
                where = await feed.where_is(conn, pid)
                if where is not None:
                    # Merged or renamed: its rows follow it now, to be decided under the
                    # survivor's lock in a later round (the plan loop would move them too).
                    await store.repoint(conn, pid, where)
                    moved[pid] = where
            sent_before = await store.history(conn, people, now - self.history_window)
            persons: dict[str, Person] = {}
            decisions, sends = [], []
            for row in due:
                if row.profile_id in moved:
                    continue
                person = persons.get(row.profile_id)
                if person is None:
                    snap = live.get(row.profile_id)
                    person = persons[row.profile_id] = (
                        Person.from_profile(snap.document, snap.events) if snap
                        else Person.gone(row.profile_id))
                history = sent_before.setdefault(row.profile_id, [])
                decision = decide_send(row.intent, person, history, self.rules, now)
                entry = self._record(row, decision, now)
                if isinstance(decision, Send):
                    if not self._valid(entry, decision.message):
                        decisions.append(entry)
                        continue
                    encoded = orjson.dumps(decision.message)
                    # The whole document is on the topic; the row keeps what the person
                    # pages show of it (``store.shown``).
                    entry["msg"] = store.shown(decision.message)
                    sends.append(OutgoingRecord(self.topic, row.profile_id.encode(), encoded))
                    history.append(SentRecord(now, decision.channel, row.rule, row.message_id))
                decisions.append(entry)
            if sends:
                # acks=all: on every in-sync replica once this returns.
                await self.writer.write(sends)
            await store.decide(conn, decisions)
        return len(due)

    async def _claim(self, conn: AsyncConnection, now: datetime) -> list[store.Row]:
        """The round's due rows (``store.claim_due``). While rounds come back full (a
        backlog), each takes twice the people of the one before, up to
        ``BACKLOG_ROUNDS`` batches, and each claim starts at the last row a claim of
        this process locked (the latest of the lanes'), instead of walking again the
        index entries of every row decided since the last vacuum and of the rows other
        lanes hold: every due row before it was taken or held by another transaction
        when that claim read it. A round that is not full, a claim from there that finds
        nothing, or ``FLOOR_SECONDS`` since the floor was first taken, make the next
        claim look from the beginning, so a row that became pending before it (planned
        late, given back by a failed round, or its person locked by a plan round when
        read) waits for at most that."""
        after = self._floor
        if after is not None and time.monotonic() - self._floor_at > FLOOR_SECONDS:
            after = None
        size = self._round_size
        window = store.WINDOW * size * self.settings.triggers_emit_lanes
        claim = await store.claim_due(conn, now, size, window=window, after=after)
        if not claim.rows and after is not None:
            after = None
            claim = await store.claim_due(conn, now, size, window=window)
        if not claim.full or claim.last is None:
            self._floor = None
            self._round_size = self.batch
        else:
            if after is None:  # from the beginning: the floor starts again here
                self._floor_at = time.monotonic()
                self._floor = claim.last
            else:  # another lane's claim may have moved it further meanwhile
                self._floor = max(claim.last, self._floor or claim.last)
            # A backlog: larger rounds, whose fixed costs (the transaction, its commit,
            # five statements) are shared by more messages.
            self._round_size = min(size * 2, self.batch * BACKLOG_ROUNDS)
        return claim.rows

    def _record(self, row: store.Row, decision: Any, now: datetime) -> dict:
        status, reason = outcome(decision)
        entry = {"m": row.message_id, "s": status, "r": reason, "at": now, "sent": None,
                 "msg": None}
        if isinstance(decision, Hold):
            entry.update(s="pending", due=decision.until, at=None)
        elif isinstance(decision, Send):
            entry.update(sent=now, ch=decision.channel)  # msg: set once it is encoded
        elif isinstance(decision, HoldOut):
            entry.update(ch=decision.channel, at=decision.at)
        elif isinstance(decision, Suppress | Cancel) and decision.detail:
            log.info("triggers: %s %s (%s)", row.message_id, status, reason)
        return entry

    def _valid(self, entry: dict, message: dict) -> bool:
        problem = schema_error(self.schemas.message, message)
        if problem is None:
            return True
        log.error("triggers: message %s fails its schema (%s); suppressed", entry["m"],
                  problem[1])
        entry.update(s="suppressed", r="invalid_message", sent=None, msg=None)
        return False

    # --- both ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run the loops until ``stop`` is set (or the task is cancelled): the plan loop
        and ``triggers_emit_lanes`` emit loops, concurrently, each round its own
        transaction on its own connection (the engine needs ``connections(settings)``).
        While one emit round waits for Kafka's acknowledgement and its commit, another
        claims other people and decides: the lanes share due rows exactly as several
        workers do (per-person try-locks, row locks). Each round that found work is
        followed at once by another, an idle one by a pause of ``triggers_poll_seconds``.
        Failures are retried by the policy (waiting out the database); anything else is
        logged and the round tried again later.

        While ``backlog`` (the profile stage's, in events) is over
        ``triggers_yield_backlog``, each loop runs a round only once every
        ``triggers_yield_seconds``: on cores the fold saturates, every round taken from
        it delays ingestion, and a message cannot come sooner than the fold of the event
        behind it. Nothing is lost meanwhile (the feed and the schedule wait in the
        database); the rounds that still run keep the loops alive."""
        stop = stop or asyncio.Event()
        lanes = [self._loop(self.plan_once, stop)]
        lanes += [self._loop(self.emit_once, stop)
                  for _ in range(self.settings.triggers_emit_lanes)]
        await asyncio.gather(*lanes)

    def yielding(self) -> bool:
        """Whether the profile stage is behind by more than ``triggers_yield_backlog``
        events (never when that is 0 or the backlog is unknown)."""
        limit = self.settings.triggers_yield_backlog
        if not limit or self.backlog is None:
            return False
        behind = self.backlog()
        now = behind > limit
        if now != self._yielded:
            self._yielded = now
            if now:
                log.info("triggers: the profile stage is %d events behind; yielding to it "
                         "(a round per loop every %.0fs)", behind,
                         self.settings.triggers_yield_seconds)
            else:
                log.info("triggers: the profile stage caught up; rounds resume")
        return now

    async def _loop(self, round_once: Callable[[], Any], stop: asyncio.Event) -> None:
        pause = self.settings.triggers_poll_seconds
        spacing = self.settings.triggers_yield_seconds
        last = -math.inf
        while not stop.is_set():
            if self.yielding() and time.monotonic() - last < spacing:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                except TimeoutError:
                    pass
                continue
            last = time.monotonic()
            try:
                busy = await round_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in one round must not end the loops
                log.error("triggers: a round failed; trying again: %s", describe_failure(exc))
                busy = 0
                await asyncio.sleep(min(5.0, pause * 10))
            if not busy:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                except TimeoutError:
                    pass


# What each round's transaction sets first (``SET LOCAL``: until it ends). The rounds'
# statements select a few people's rows by profile or message id, or read the due index
# in order; the right plan for each is an index scan, whatever the statistics say. The
# statistics are stale exactly when the rounds matter most: when many rows have just
# become due at once (a burst, the end of quiet hours) or just been decided, and
# autovacuum has not analyzed the table since. Then the planner took a bitmap scan of
# every due row and a sort for a claim that needs its first few hundred, and a
# sequential scan of the whole schedule for a history of a few hundred people
# (auto_explain, 2026-12-03; the burst's bimodal rate, docs/triggers.md): the claim cost
# 447 µs a row instead of 36. Sequential and bitmap scans are made a last resort
# (``enable_*`` only add a penalty to their cost: a statement that has no index to use
# still runs), and JIT is off, which the penalty would otherwise switch on.
_PLANNER = (("enable_seqscan", "off"), ("enable_bitmapscan", "off"), ("jit", "off"))


def _begin_statement(schema: str | None) -> str:
    """The statement that starts each round's transaction: the planner settings above
    and, with ``schema`` (already checked), the search path. Pure."""
    settings = [*_PLANNER, *((("search_path", f'"{schema}"'),) if schema else ())]
    return "SELECT " + ", ".join(f"set_config('{name}', '{value}', true)"
                                 for name, value in settings)


def connections(settings: Settings) -> int:
    """The database connections ``TriggerStage.run`` uses at once: one per emit lane
    and one for the plan loop. Pure."""
    return settings.triggers_emit_lanes + 1
