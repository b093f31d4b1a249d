"""profiles_0005 on a database that holds changes: the one-row-per-profile feed becomes a
log numbered in the order the changes were noted, takes repeated changes of a profile,
and goes back to one row per profile (the latest) on the downgrade."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from streams import db
from tests.helpers import scratch_database

A, B, C = ("00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b",
           "00000000-0000-4000-8000-00000000000c")


def test_changes_keep_their_order_up_and_down(session_settings):
    with scratch_database(session_settings) as settings:
        db.upgrade(settings, "profiles_0004")
        engine = db.sync_engine(settings)
        try:
            with engine.begin() as conn:
                for pid, at in ((B, "2026-01-01T00:00:02Z"), (A, "2026-01-01T00:00:03Z"),
                                (C, "2026-01-01T00:00:01Z")):
                    conn.execute(text("INSERT INTO profile_changes (profile_id, changed_at) "
                                      "VALUES (:p, :t)"), {"p": pid, "t": at})
            db.upgrade(settings, "profiles_0005")
            with engine.begin() as conn:
                numbered = conn.execute(text(
                    "SELECT seq, profile_id::text FROM profile_changes ORDER BY seq")).all()
                # Appended: a profile already listed is listed again, numbered after.
                conn.execute(text("INSERT INTO profile_changes (profile_id) "
                                  "VALUES (:a), (:c)"), {"a": A, "c": C})
                log = [r[0] for r in conn.execute(text(
                    "SELECT profile_id::text FROM profile_changes ORDER BY seq"))]
            assert numbered == [(1, C), (2, B), (3, A)]
            assert log == [C, B, A, A, C]

            command.downgrade(db.alembic_config(settings), "profiles_0004")
            with engine.connect() as conn:
                back = sorted(r[0] for r in conn.execute(
                    text("SELECT profile_id::text FROM profile_changes")))
                key = conn.execute(text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON "
                    "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = 'profile_changes'::regclass AND i.indisprimary"
                )).scalar_one()
            assert back == [A, B, C]
            assert key == "profile_id"
        finally:
            engine.dispose()
