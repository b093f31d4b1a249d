"""The trigger stage's table: one row per message a rule decided on, from its scheduling
to its fate (sent, held out, suppressed, cancelled), on the shared ``streams.db.metadata``.

``message_id`` is the decision's stable id, so re-planning the same decision (a replay,
a re-fold, a merge) finds its row instead of adding one. ``due_at`` is when the due-loop
looks at the row next (the intent's due time, or the end of a hold: quiet hours, best
hour). ``intent`` is the planned ``Intent`` (JSON); ``message`` what the person pages show of
the document emitted (channel, template, personalization, why; the document itself is
on ``messages.personalized``, under the row's message id).
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from streams.db import metadata

STATUSES = ("pending", "sent", "held_out", "suppressed", "cancelled")

scheduled_messages = Table(
    "scheduled_messages", metadata,
    Column("message_id", Text, primary_key=True),
    Column("rule", Text, nullable=False),
    Column("profile_id", UUID(as_uuid=False), nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("reason", Text),
    Column("intent", JSONB, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("scheduled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("decided_at", DateTime(timezone=True)),
    Column("sent_at", DateTime(timezone=True)),
    Column("channel", Text),
    Column("message", JSONB),
    Column("converted_at", DateTime(timezone=True)),
    Index("scheduled_messages_profile", "profile_id"),
    # The due-loop's claim: pending rows in its order (due time, message id), read off the
    # index instead of sorting every due row each round.
    Index("scheduled_messages_due", "due_at", "message_id",
          postgresql_where=text("status = 'pending'")),
)
