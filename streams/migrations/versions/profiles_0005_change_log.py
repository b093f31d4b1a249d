"""The change feed becomes a log: appended to, read off a sequence.

Revision ID: profiles_0005
Revises: profiles_0004

``profile_changes`` had one row per profile, written by ``INSERT ... ON CONFLICT DO
UPDATE``: a batch that touched a profile whose change the trigger stage had claimed (a
row it had locked and deleted, not yet committed) waited for that plan round to commit,
and every claim sorted the whole table by ``changed_at`` (it had no index). Now a batch
only appends, and a claim takes the oldest rows off the ``seq`` primary key
(``streams.profiles.feed``). The rows already there are numbered in the order they were
noted.
"""

from alembic import op

revision = "profiles_0005"
down_revision = "profiles_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE profile_changes DROP CONSTRAINT profile_changes_pkey")
    op.execute("ALTER TABLE profile_changes ADD COLUMN seq bigint")
    op.execute("UPDATE profile_changes SET seq = o.n FROM (SELECT profile_id, "
               "row_number() OVER (ORDER BY changed_at, profile_id) AS n "
               "FROM profile_changes) AS o WHERE profile_changes.profile_id = o.profile_id")
    op.execute("ALTER TABLE profile_changes ALTER COLUMN seq SET NOT NULL, "
               "ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY")
    op.execute("SELECT setval(pg_get_serial_sequence('profile_changes', 'seq'), "
               "coalesce(max(seq), 0) + 1, false) FROM profile_changes")
    op.execute("ALTER TABLE profile_changes ADD CONSTRAINT profile_changes_pkey "
               "PRIMARY KEY (seq)")


def downgrade() -> None:
    # One row per profile again: its latest change.
    op.execute("DELETE FROM profile_changes AS a USING profile_changes AS b "
               "WHERE a.profile_id = b.profile_id AND a.seq < b.seq")
    op.execute("ALTER TABLE profile_changes DROP CONSTRAINT profile_changes_pkey")
    op.execute("ALTER TABLE profile_changes DROP COLUMN seq")
    op.execute("ALTER TABLE profile_changes ADD CONSTRAINT profile_changes_pkey "
               "PRIMARY KEY (profile_id)")
