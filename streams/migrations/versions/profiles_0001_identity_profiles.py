"""Identity graph and unified profiles; the raw event log of 0001 is dropped.

Revision ID: profiles_0001
Revises: 0001

The event log is superseded: every accepted event is kept, reduced to what the fold
needs, in ``profile_events`` (for replays and for forgetting a person), and the topics
remain the full log (``streams rebuild`` reads them).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "profiles_0001"
down_revision = "0001"
branch_labels = ("profiles",)
depends_on = None

JSONB = postgresql.JSONB
UUID = postgresql.UUID(as_uuid=False)
NOW = sa.text("now()")


def upgrade() -> None:
    op.drop_table("event_log")
    # An interaction component: identifiers, profiles and events that can influence each
    # other's resolution. It is the unit of locking and of replay.
    op.execute("CREATE SEQUENCE component_id_seq")
    op.create_table(
        "components",
        sa.Column("component_id", sa.BigInteger, primary_key=True,
                  server_default=sa.text("nextval('component_id_seq')")),
        sa.Column("max_time", sa.Text, nullable=False),
        sa.Column("max_message_id", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "profiles",
        sa.Column("profile_id", UUID, primary_key=True),
        sa.Column("component_id", sa.BigInteger, nullable=False),
        # created, identifiers, merges absorbed, notes on dropped identifiers
        sa.Column("identity", JSONB, nullable=False),
        # traits, preferences, consent, timezone: {name: [value, event time, message id]}
        sa.Column("provided", JSONB, nullable=False),
        # counts, seen, affinity, recent, hours, devices
        sa.Column("behaviour", JSONB, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("profiles_component", "profiles", ["component_id"])
    # Every usable identifier ever seen. profile_id is NULL for one that was only ever
    # dropped by a rule: it still ties its events into their component.
    op.create_table(
        "identifier_to_profile",
        sa.Column("identifier", sa.Text, primary_key=True),
        sa.Column("profile_id", UUID),
        sa.Column("component_id", sa.BigInteger, nullable=False),
    )
    op.create_index("identifier_to_profile_profile", "identifier_to_profile", ["profile_id"])
    op.create_index("identifier_to_profile_component", "identifier_to_profile",
                    ["component_id"])
    # Accepted events, deduplicated by message id, in the profile they count in.
    op.create_table(
        "profile_events",
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("profile_id", UUID, nullable=False),
        sa.Column("event", JSONB, nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("profile_events_profile", "profile_events", ["profile_id"])
    op.create_table(
        "profile_merges",
        sa.Column("merge_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("component_id", sa.BigInteger, nullable=False),
        sa.Column("survivor_id", UUID, nullable=False),
        sa.Column("merged_id", UUID, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("event_time", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("profile_merges_component", "profile_merges", ["component_id"])
    op.create_index("profile_merges_survivor", "profile_merges", ["survivor_id"])
    # A profile id that no longer exists (merged away, or renamed by a replay) -> the
    # profile that holds its events now. Kept pointing at a live profile: one hop.
    op.create_table(
        "profile_id_to_survivor",
        sa.Column("old_id", UUID, primary_key=True),
        sa.Column("profile_id", UUID, nullable=False),
    )
    op.create_index("profile_id_to_survivor_profile", "profile_id_to_survivor", ["profile_id"])
    # Events that were accepted but count in no profile: 'forgotten' (they carry the
    # identifier of a forgotten person) or 'no_identifier' (every identifier blocked).
    op.create_table(
        "skipped_events",
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("skipped_events_reason", "skipped_events", ["reason"])
    # Forgotten identifiers, as SHA-256 digests: the person's values are not kept.
    op.create_table(
        "forgotten_identifiers",
        sa.Column("identifier_sha256", sa.LargeBinary, primary_key=True),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=NOW),
    )


def downgrade() -> None:
    for table in ("forgotten_identifiers", "skipped_events", "profile_id_to_survivor",
                  "profile_merges", "profile_events", "identifier_to_profile", "profiles",
                  "components"):
        op.drop_table(table)
    op.execute("DROP SEQUENCE component_id_seq")
    op.create_table(
        "event_log",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("key", sa.Text),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True)),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("topic", "partition", "offset"),
    )
    op.create_index("event_log_message_id", "event_log", ["message_id"])
