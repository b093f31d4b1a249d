"""Event log: every accepted event, keyed by where it was read from.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_log",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("key", sa.Text),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True)),
        sa.Column(
            "stored_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        # A redelivered record (same topic, partition, offset) is a no-op on insert.
        sa.PrimaryKeyConstraint("topic", "partition", "offset"),
    )
    op.create_index("event_log_message_id", "event_log", ["message_id"])


def downgrade() -> None:
    op.drop_table("event_log")
