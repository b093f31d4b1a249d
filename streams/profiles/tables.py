"""The profile stage's tables: the one definition of their layout.

On the shared ``streams.db.metadata`` beside the identity graph's tables
(``streams.identity.tables``), so that ``create_all`` builds the whole schema of a rebuild
or a test, and Alembic compares both with the migrations.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

from streams.db import metadata
from streams.identity import tables as _identity_tables  # noqa: F401  (same metadata)

profiles = Table(
    "profiles", metadata,
    Column("profile_id", UUID(as_uuid=False), primary_key=True),
    Column("component_id", BigInteger, nullable=False),
    # The whole document (``logic.new_profile``'s shape, without its id) in the compact
    # form of ``streams.profiles.codec``: about a fifth of the JSONB it replaces.
    Column("document", LargeBinary, nullable=False),
    Index("profiles_component", "component_id"),
)
# Accepted events, deduplicated by message id, in the profile they count in: what replay,
# the person page and the trigger stage need of each (``FoldEvent.to_json`` without its
# message id and time, in the compact form of ``streams.profiles.codec``).
profile_events = Table(
    "profile_events", metadata,
    Column("message_id", Text, primary_key=True),
    Column("profile_id", UUID(as_uuid=False), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("event", LargeBinary, nullable=False),
    # A person's events in canonical order (event time, message id): the person page's
    # timeline reads one page off it (keyset), replays and forgets find a profile's rows.
    Index("profile_events_profile", "profile_id", "event_time", "message_id"),
)
# Events that were accepted but count in no profile: 'forgotten' (they carry the
# identifier of a forgotten person) or 'no_identifier' (every identifier blocked).
skipped_events = Table(
    "skipped_events", metadata,
    Column("message_id", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("skipped_events_reason", "reason"),
)
# The profile stage's change feed (an outbox): every profile a batch or a forget touched,
# written in the same transaction, so a stage that follows profiles (the trigger stage)
# can never miss a change. A profile merged away or forgotten is listed too; its reader
# finds where it went (``streams.profiles.feed``). A log, appended to without a key on the
# profile: a batch never waits for a reader that holds (has claimed) an earlier change
# of the same profile, and a reader takes the oldest rows off the ``seq`` index instead
# of sorting the table. A profile changed twice before it is read is listed twice.
profile_changes = Table(
    "profile_changes", metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("profile_id", UUID(as_uuid=False), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
