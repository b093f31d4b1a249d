"""The identity graph's tables: the one definition of their layout.

Alembic compares these with the migrations (tests/integration/test_schema_drift.py);
``streams.profiles.store.create_schema`` builds them into a fresh schema; the store's
hand-written SQL takes its names from them (``streams.db.SqlNames``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    Sequence,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

from streams.db import metadata

# An interaction component: identifiers, profiles and events that can influence each
# other's resolution. It is the unit of locking and of replay.
component_id_seq = Sequence("component_id_seq", metadata=metadata)
components = Table(
    "components", metadata,
    Column("component_id", BigInteger, component_id_seq, primary_key=True,
           server_default=component_id_seq.next_value()),
    # The latest event's key (time, message id); NULL time: the component holds none.
    Column("max_time", DateTime(timezone=True)),
    Column("max_message_id", Text, nullable=False),
)
# Every usable identifier ever seen. profile_id is NULL for one that was only ever
# dropped by a rule: it still ties its events into their component.
identifier_to_profile = Table(
    "identifier_to_profile", metadata,
    Column("identifier", Text, primary_key=True),
    Column("profile_id", UUID(as_uuid=False)),
    Column("component_id", BigInteger, nullable=False),
    # No index on profile_id: nothing looks identifiers up by profile (a profile's
    # document lists its identifiers).
    Index("identifier_to_profile_component", "component_id"),
)
profile_merges = Table(
    "profile_merges", metadata,
    Column("merge_id", BigInteger, Identity(), primary_key=True),
    Column("component_id", BigInteger, nullable=False),
    Column("survivor_id", UUID(as_uuid=False), nullable=False),
    Column("merged_id", UUID(as_uuid=False), nullable=False),
    Column("message_id", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("event_time", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("profile_merges_component", "component_id"),
    Index("profile_merges_survivor", "survivor_id"),
)
# A profile id that no longer exists (merged away, or renamed by a replay) -> the profile
# that holds its events now. Kept pointing at a live profile: one hop.
profile_id_to_survivor = Table(
    "profile_id_to_survivor", metadata,
    Column("old_id", UUID(as_uuid=False), primary_key=True),
    Column("profile_id", UUID(as_uuid=False), nullable=False),
    Index("profile_id_to_survivor_profile", "profile_id"),
)
# Forgotten identifiers, as SHA-256 digests: the person's values are not kept.
forgotten_identifiers = Table(
    "forgotten_identifiers", metadata,
    Column("identifier_sha256", LargeBinary, primary_key=True),
    Column("forgotten_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
