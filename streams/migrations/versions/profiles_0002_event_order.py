"""A person's events in canonical order: ``profile_events_profile`` becomes
(profile_id, event time, message id), so the person page reads one page of a timeline
off the index however many events the person has.

Revision ID: profiles_0002
Revises: triggers_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "profiles_0002"
down_revision = "triggers_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("profile_events_profile", table_name="profile_events")
    op.create_index("profile_events_profile", "profile_events",
                    ["profile_id", sa.text("(event ->> 't')"), "message_id"])


def downgrade() -> None:
    op.drop_index("profile_events_profile", table_name="profile_events")
    op.create_index("profile_events_profile", "profile_events", ["profile_id"])
