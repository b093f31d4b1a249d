"""The profile stage's change feed and the trigger stage's schedule.

Revision ID: triggers_0001
Revises: profiles_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "triggers_0001"
down_revision = "profiles_0001"
branch_labels = None
depends_on = None

JSONB = postgresql.JSONB
UUID = postgresql.UUID(as_uuid=False)
NOW = sa.text("now()")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "profile_changes",
        sa.Column("profile_id", UUID, primary_key=True),
        sa.Column("changed_at", TS, nullable=False, server_default=NOW),
    )
    op.create_table(
        "scheduled_messages",
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("profile_id", UUID, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'pending'")),
        sa.Column("reason", sa.Text),
        sa.Column("intent", JSONB, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("scheduled_at", TS, nullable=False, server_default=NOW),
        sa.Column("decided_at", TS),
        sa.Column("sent_at", TS),
        sa.Column("channel", sa.Text),
        sa.Column("message", JSONB),
        sa.Column("converted_at", TS),
    )
    op.create_index("scheduled_messages_profile", "scheduled_messages", ["profile_id"])
    op.create_index("scheduled_messages_due", "scheduled_messages", ["due_at", "message_id"],
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_table("scheduled_messages")
    op.drop_table("profile_changes")
