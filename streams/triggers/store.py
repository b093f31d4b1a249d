"""The trigger stage's schedule in PostgreSQL (``scheduled_messages``). Every function
runs on the caller's connection, inside its transaction, with the search path already
set to the configured schema; each blocks on the database and raises SQLAlchemy's
DBAPIError. The statements are hand-written (rows travel as one JSON document) and take
their names from the metadata (``streams.triggers.tables``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.db import SqlNames, uuid_array
from streams.triggers.models import Intent, SentRecord, frozen_record
from streams.triggers.tables import scheduled_messages

S = SqlNames(scheduled_messages)


@dataclass(frozen=True)
class Row:
    """One schedule row, as the stage reads it (``intent`` is decoded when first read:
    a plan round reads every row of a person and needs the intent of few)."""

    message_id: str
    rule: str
    profile_id: str
    status: str
    reason: str | None
    intent_doc: dict = field(repr=False)
    due_at: datetime
    sent_at: datetime | None
    decided_at: datetime | None
    converted_at: datetime | None

    @property
    def intent(self) -> Intent:
        """The planned intent, decoded once. Raises KeyError or ValueError when the stored
        one is malformed."""
        # By hand, not functools.cached_property, which takes a lock at every first read
        # (Python 3.11), a row's only read in the emit loop.
        try:
            return self.__dict__["_intent"]
        except KeyError:
            intent = self.__dict__["_intent"] = Intent.from_json(self.intent_doc)
            return intent


# The profile id as text: psycopg would build a uuid.UUID, which ``_row`` makes a string.
_COLUMNS = (f"{S.message_id}, {S.rule}, {S.profile_id}::text, {S.status}, {S.reason}, "
            f"{S.intent}, {S.due_at}, {S.sent_at}, {S.decided_at}, {S.converted_at}")
_ROWS_OF = text(f"SELECT {_COLUMNS} FROM {S} WHERE {S.profile_id} = ANY(CAST(:p AS uuid[]))")
# What a plan round reads of a person's rows: those still pending (to cancel) and those
# sent or held out and not yet converted (to count a conversion).
_OPEN_ROWS_OF = text(
    f"SELECT {_COLUMNS} FROM {S} WHERE {S.profile_id} = ANY(CAST(:p AS uuid[])) AND "
    f"({S.status} = 'pending' OR ({S.status} IN ('sent', 'held_out') "
    f"AND {S.converted_at} IS NULL))")
_UPSERT = text(
    f"INSERT INTO {S} ({S.message_id}, {S.rule}, {S.profile_id}, {S.intent}, {S.due_at}, "
    f"{S.expires_at}) SELECT m, r, p, i, d, e FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    "AS x(m text, r text, p uuid, i jsonb, d timestamptz, e timestamptz) "
    f"ON CONFLICT ({S.message_id}) DO UPDATE SET {S.profile_id} = EXCLUDED.{S.profile_id}, "
    f"{S.intent} = EXCLUDED.{S.intent}, {S.expires_at} = EXCLUDED.{S.expires_at}, "
    f"{S.due_at} = CASE WHEN {S}.{S.status} = 'cancelled' THEN EXCLUDED.{S.due_at} "
    f"ELSE {S}.{S.due_at} END, {S.status} = 'pending', {S.reason} = NULL, "
    f"{S.decided_at} = NULL WHERE {S}.{S.status} IN ('pending', 'cancelled')")
_REPOINT = text(f"UPDATE {S} SET {S.profile_id} = CAST(:n AS uuid) "
                f"WHERE {S.profile_id} = CAST(:o AS uuid)")
# The per-person lock the due claim tries (below), taken here with waiting, in one order
# (sorted, fenced by OFFSET 0 so that the aggregate sees them in that order): a plan
# round acts on a person only while no emit round and no other plan round does.
_LOCK_PEOPLE = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended('trigger:' || p::text, 0))) "
    "FROM (SELECT unnest(CAST(:p AS uuid[])) AS p ORDER BY 1 OFFSET 0) AS o")
_DELETE_OF = text(f"DELETE FROM {S} WHERE {S.profile_id} = CAST(:p AS uuid)")
_DECIDE = text(
    f"UPDATE {S} SET {S.status} = x.s, {S.reason} = x.r, {S.decided_at} = x.at, "
    f"{S.due_at} = coalesce(x.due, {S}.{S.due_at}), {S.sent_at} = x.sent, "
    f"{S.channel} = coalesce(x.ch, {S}.{S.channel}), {S.message} = x.msg "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(m text, s text, r text, "
    "at timestamptz, due timestamptz, sent timestamptz, ch text, msg jsonb) "
    # Only a pending row is decided: a plan round's cancellation that waited behind an
    # emit round's lock must not overwrite the message it has just sent.
    f"WHERE {S}.{S.message_id} = x.m AND {S}.{S.status} = 'pending'")
_CONVERTED = text(f"UPDATE {S} SET {S.converted_at} = CAST(:at AS timestamptz) "
                  f"WHERE {S.message_id} = ANY(:m)")
# The due claim in one statement. ``start`` is the key (due time, message id) of the
# first row pending and due (from ``:fd``, ``:fm``: where an earlier claim saw the first
# one, so that the next claim need not walk again the index entries of the rows decided
# since, which stay in the index until vacuumed; a burst's claim walked tens of
# thousands). From there the due rows are read off the due index in due order, at most
# ``:window`` of them (WINDOW people-rows per claimed one), and each row's person is
# try-locked (a per-person advisory lock taken without waiting) until ``n`` locks are
# this transaction's: another worker holding the first people makes this one take the
# next, instead of coming back empty and idling. The lock is a volatile filter under
# the LIMIT, over the ordered rows (fenced by OFFSET 0, so that the planner keeps the
# order below the filter): the index is read lazily and locks are only tried until
# ``n`` succeed (a test counts the locks held). A person's first row in that order is
# their earliest, so people are tried in the order of their first due row; a second row
# of a person already locked takes the lock again (it is re-entrant) and counts
# towards ``n``. (Before, the whole window was read, grouped by person and sorted
# first: at 2 lanes and rounds of 800 people, 6,400 rows for 800.) Then all those
# people's due rows, locked, in due order, with ``start``, how many locks the window
# took (``n`` when the round is full) and the key of the last row locked. The CTEs are
# materialized, never inlined. The row locks are what makes a claim safe from a round
# that decided the same person and committed between this statement's snapshot and its
# try-lock: the lock is then free, the snapshot still shows the rows pending, and
# ``FOR UPDATE`` re-reads each row's latest version against the conditions (PostgreSQL's
# EvalPlanQual), which drops the rows decided meanwhile. (Tried without it, reading the
# sent history in the same statement: a burst of 100,000 messages read 100,961 people,
# the extra ones most likely claimed again after another round had sent theirs.)
WINDOW = 4
_CLAIM_DUE = text(
    f"WITH start AS MATERIALIZED (SELECT {S.due_at} AS d, {S.message_id} AS m FROM {S} "
    f"WHERE {S.status} = 'pending' AND {S.due_at} <= :now "
    f"AND ({S.due_at}, {S.message_id}) >= (CAST(:fd AS timestamptz), CAST(:fm AS text)) "
    f"ORDER BY {S.due_at}, {S.message_id} LIMIT 1), "
    f"mine AS MATERIALIZED (SELECT p, d, m FROM (SELECT {S.profile_id} AS p, "
    f"{S.due_at} AS d, {S.message_id} AS m FROM {S} "
    f"WHERE {S.status} = 'pending' AND {S.due_at} <= :now "
    f"AND ({S.due_at}, {S.message_id}) >= ((SELECT d FROM start), (SELECT m FROM start)) "
    f"ORDER BY {S.due_at}, {S.message_id} LIMIT :window OFFSET 0) AS o "
    "WHERE pg_try_advisory_xact_lock(hashtextextended('trigger:' || p::text, 0)) "
    "LIMIT :n) "
    # = ANY(ARRAY(...)): the rows of these people off the profile index, not a join
    # with every due row. ``(status = 'pending') IS TRUE`` (the same test) keeps the due
    # index out of it: that index's predicate is not implied by it, and the planner,
    # which cannot know the array's size (it guessed 50,000 rows), otherwise walked
    # every due row of the burst for each claim, filtering on the people.
    f"SELECT {_COLUMNS}, (SELECT d FROM start), (SELECT m FROM start), "
    "(SELECT count(*) FROM mine), (SELECT d FROM mine ORDER BY d DESC, m DESC LIMIT 1), "
    "(SELECT m FROM mine ORDER BY d DESC, m DESC LIMIT 1) "
    f"FROM {S} WHERE {S.profile_id} = ANY(ARRAY(SELECT DISTINCT p FROM mine)) "
    f"AND ({S.status} = 'pending') IS TRUE AND {S.due_at} <= :now "
    f"ORDER BY {S.due_at}, {S.message_id} FOR UPDATE OF {S}")
_HISTORY = text(
    f"SELECT {S.profile_id}::text, {S.sent_at}, {S.channel}, {S.rule}, {S.message_id} "
    f"FROM {S} "
    f"WHERE {S.profile_id} = ANY(CAST(:p AS uuid[])) AND {S.status} = 'sent' "
    f"AND {S.sent_at} > :since")
_STATS = text(
    f"SELECT {S.rule}, {S.status}, {S.reason}, {S.converted_at} IS NOT NULL, count(*) "
    f"FROM {S} GROUP BY 1, 2, 3, 4")


def _row(r: Sequence[Any]) -> Row:
    return frozen_record(Row, {
        "message_id": r[0], "rule": r[1], "profile_id": str(r[2]), "status": r[3],
        "reason": r[4], "intent_doc": r[5], "due_at": r[6], "sent_at": r[7],
        "decided_at": r[8], "converted_at": r[9]})


def _dumps(rows: list[dict]) -> dict[str, str]:
    return {"rows": orjson.dumps(rows).decode()}


async def rows_of(conn: AsyncConnection, profile_ids: Iterable[str]) -> list[Row]:
    """Every schedule row of these profiles."""
    ids = sorted(set(profile_ids))
    return [_row(r) for r in await conn.execute(_ROWS_OF, {"p": ids})] if ids else []


async def open_rows_of(conn: AsyncConnection, profile_ids: Iterable[str]) -> list[Row]:
    """The rows of these profiles a plan round acts on: pending ones, and sent or held-out
    ones not yet converted."""
    ids = sorted(set(profile_ids))
    return [_row(r) for r in await conn.execute(_OPEN_ROWS_OF, {"p": ids})] if ids else []


def unchanged(intent: Intent, doc: dict, row: Row | None) -> bool:
    """True when storing ``intent`` (``doc``: its ``to_json()``) would not change ``row``
    (its stored row, if any): pending, with no hold reason, the same profile and the same
    intent. Pure."""
    return (row is not None and row.status == "pending" and row.reason is None
            and row.profile_id == intent.profile_id and row.intent_doc == doc)


async def upsert_intents(conn: AsyncConnection, intents: Sequence[Intent],
                         docs: Sequence[dict] | None = None) -> None:
    """Store planned intents (``docs``: their ``to_json()`` when the caller has them): new
    ones as pending; a pending one already stored follows its profile (merges, renames)
    and takes the new plan's facts (its due time, which a hold may have moved, stays);
    one cancelled because an earlier plan no longer wanted it is pending again (the plan
    depends on the events, not on the order they came in). One sent, held out or
    suppressed is left as it is."""
    if intents:
        docs = docs if docs is not None else [i.to_json() for i in intents]
        await conn.execute(_UPSERT, _dumps([
            {"m": i.message_id, "r": i.rule, "p": i.profile_id, "i": doc,
             "d": doc["dueAt"], "e": doc["expiresAt"]} for i, doc in zip(intents, docs,
                                                                         strict=True)]))


async def lock_people(conn: AsyncConnection, profile_ids: Iterable[str]) -> None:
    """Take each person's trigger lock until the transaction ends, waiting for a round
    that holds one; in sorted order, so that two plan rounds never wait for each other in
    a circle over one call's people."""
    ids = sorted(set(profile_ids))
    if ids:
        await conn.execute(_LOCK_PEOPLE, {"p": uuid_array(ids)})


async def repoint(conn: AsyncConnection, old: str, new: str) -> None:
    """Every row of profile ``old`` (merged away, or renamed by a replay) moves to ``new``."""
    await conn.execute(_REPOINT, {"o": old, "n": new})


async def delete_of(conn: AsyncConnection, profile_id: str) -> None:
    """Forget a person's messages: every row, sent ones included."""
    await conn.execute(_DELETE_OF, {"p": profile_id})


async def decide(conn: AsyncConnection, decisions: Sequence[dict]) -> None:
    """Record decisions on rows still pending: dicts with ``m`` (message id), ``s``
    (status), ``r`` (reason), ``at`` (decided at), and optionally ``due`` (the next look,
    for a hold), ``sent``, ``ch`` (channel) and ``msg`` (``shown`` of the message). A row
    another round decided meanwhile is left as it is."""
    if decisions:
        # orjson writes aware datetimes as RFC 3339, which PostgreSQL reads.
        await conn.execute(_DECIDE, _dumps(list(decisions)))


def shown(message: dict) -> dict:
    """What a sent row keeps of its message (its ``msg``): what the person pages show
    (the channel, the template, the personalization and the ``why`` block), not the
    ids, destination and times the row has in its own columns or a sender alone needs.
    The whole document is on ``messages.personalized``, under the row's message id.
    Pure."""
    return {"channel": message.get("channel"), "template": message.get("template"),
            "personalization": message.get("personalization"), "why": message.get("why")}


async def mark_converted(conn: AsyncConnection, message_ids: Sequence[str],
                         at: datetime) -> None:
    """Count these sent or held-out messages as converted at ``at``."""
    if message_ids:
        await conn.execute(_CONVERTED, {"m": list(message_ids), "at": at})


DueKey = tuple[datetime, str]
_START: DueKey = (datetime.min.replace(tzinfo=UTC), "")


@dataclass(frozen=True)
class DueClaim:
    """What ``claim_due`` took: the rows, ``start``, the key (due time, message id) of
    the first row pending and due when it looked (None when it took nothing): no earlier
    row was pending then, and ``full``: True when it took as many people as it could
    (their locks, a person counted once per due row among those it read, reached the
    limit), and ``last``, the key of the last row it locked, where its reading of the
    due index stopped: every due row before it was either taken or locked by another
    transaction."""

    rows: list[Row]
    start: DueKey | None
    full: bool = False
    last: DueKey | None = None


async def claim_due(conn: AsyncConnection, now: datetime, limit: int, *,
                    window: int | None = None, after: DueKey | None = None) -> DueClaim:
    """Up to ``limit`` people with rows due at ``now`` that no other transaction is
    deciding about (a per-person advisory lock, taken without waiting), those whose rows
    fall due first (among the first ``window`` due rows, ``WINDOW * limit`` unless
    given), with every one of their due rows, locked, in the order they fall due. Each
    person's messages are therefore decided by one transaction at a time and always in
    due order, however many workers share the loop: frequency caps and re-eligibility
    count what was decided before, as the reference does. With ``after`` (a ``start`` of
    an earlier claim), only people with a due row at or after that key are looked for:
    rows that became pending before it since (planned late, or given back by a round
    that failed) wait for a claim without it. One round trip."""
    rows, start, locks, last = [], None, 0, None
    for r in await conn.execute(_CLAIM_DUE, {
            "now": now, "n": limit, "window": window or WINDOW * limit,
            "fd": (after or _START)[0], "fm": (after or _START)[1]}):
        rows.append(_row(r))
        start, locks, last = (r[10], r[11]), r[12], (r[13], r[14])
    return DueClaim(rows, start, locks >= limit, last)


async def history(conn: AsyncConnection, profile_ids: Iterable[str],
                  since: datetime) -> dict[str, list[SentRecord]]:
    """Messages sent to these people since ``since``, by profile."""
    ids = sorted(set(profile_ids))
    out: dict[str, list[SentRecord]] = {pid: [] for pid in ids}
    if ids:
        for pid, sent_at, channel, rule, mid in await conn.execute(
                _HISTORY, {"p": uuid_array(ids), "since": since}):
            out[pid].append(SentRecord(sent_at, channel, rule, mid))
    return out


async def stats_rows(conn: AsyncConnection) -> list[dict]:
    """Counts by (rule, status, reason, converted), one dict per group with its
    ``count``: what ``logic.tally`` takes (a few dozen rows, however large the table)."""
    return [{"rule": rule, "status": status, "reason": reason, "converted": converted,
             "count": int(n)} for rule, status, reason, converted, n in await conn.execute(_STATS)]
