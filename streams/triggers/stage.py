"""The trigger stage: follows the profile stage's change feed, schedules what the rules
decide, and emits due messages to ``messages.personalized``.

Two loops, each one PostgreSQL transaction per round, several workers sharing them:

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
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.db import check_schema_name
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


class TriggerStage:
    """The plan and emit loops over one engine and one producer (see the module)."""

    def __init__(self, settings: Settings, engine: AsyncEngine, producer: Any,
                 rules: RuleSet | None = None, clock: Callable[[], datetime] = utc_now,
                 schemas: SchemaSet | None = None):
        self.settings = settings
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
        self._set_path = (text(f'SET LOCAL search_path TO "{check_schema_name(schema)}"')
                          if schema else None)
        windows = [r.reeligible_after for r in self.rules.rules.values()]
        self.history_window = max([WEEK, *windows])
        self.policy = RetryPolicy(tries=3)

    async def _begin(self, conn: AsyncConnection) -> None:
        if self._set_path is not None:
            await conn.execute(self._set_path)

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
            live = await feed.snapshots(conn, changed, PERSON_KEYS)
            for pid in changed:
                if pid in live:
                    continue
                where = await feed.where_is(conn, pid)
                if where is None:
                    await store.delete_of(conn, pid)  # forgotten: their messages go too
                else:
                    await store.repoint(conn, pid, where)
                    if where not in live:
                        live.update(await feed.snapshots(conn, [where], PERSON_KEYS))
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
            due = await store.claim_due(conn, now, self.batch)
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
                    # Serialized once: the same bytes go to Kafka and into the row.
                    encoded = orjson.dumps(decision.message)
                    entry["msg"] = store.message_fragment(encoded)
                    sends.append(OutgoingRecord(self.topic, row.profile_id.encode(), encoded))
                    history.append(SentRecord(now, decision.channel, row.rule, row.message_id))
                decisions.append(entry)
            if sends:
                # acks=all: on every in-sync replica once this returns.
                await self.writer.write(sends)
            await store.decide(conn, decisions)
        return len(due)

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
        """Run both loops until ``stop`` is set (or the task is cancelled): each round
        that found work is followed at once by another, an idle one by a pause of
        ``triggers_poll_seconds``. Failures are retried by the policy (waiting out the
        database); anything else is logged and the round tried again later."""
        stop = stop or asyncio.Event()
        pause = self.settings.triggers_poll_seconds
        while not stop.is_set():
            try:
                busy = await self.plan_once() + await self.emit_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug in one round must not end the loops
                log.exception("triggers: a round failed; trying again")
                busy = 0
                await asyncio.sleep(min(5.0, pause * 10))
            if not busy:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                except TimeoutError:
                    pass
