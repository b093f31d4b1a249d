"""profiles_0004 on a database that holds data: a component's latest event time moves
from text to timestamptz and back unchanged (the empty text of a component without
events as NULL, a year under 1000 included), and the unread ``updated_at`` columns go and
come back."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from streams import db
from streams.profiles.models import iso
from tests.helpers import scratch_database

ROWS = {1: ("2026-03-01T10:05:00.000001Z", "m2"), 2: ("999-01-02T03:04:05.000006Z", "m0"),
        3: ("", "")}


def test_component_times_survive_the_upgrade_and_the_downgrade(session_settings):
    with scratch_database(session_settings) as settings:
        db.upgrade(settings, "profiles_0003")
        engine = db.sync_engine(settings)
        try:
            with engine.begin() as conn:
                for cid, (t, m) in ROWS.items():
                    conn.execute(text("INSERT INTO components (component_id, max_time, "
                                      "max_message_id) VALUES (:c, :t, :m)"),
                                 {"c": cid, "t": t, "m": m})
            db.upgrade(settings, "profiles_0004")
            with engine.connect() as conn:
                now = {r[0]: (iso(r[1]) if r[1] is not None else "", r[2])
                       for r in conn.execute(text(
                           "SELECT component_id, max_time, max_message_id FROM components"))}
                columns = {(r[0], r[1]) for r in conn.execute(text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_name IN ('components', 'profiles')"))}
            assert now == ROWS
            assert ("components", "updated_at") not in columns
            assert ("profiles", "updated_at") not in columns

            command.downgrade(db.alembic_config(settings), "profiles_0003")
            with engine.connect() as conn:
                back = {r[0]: (r[1], r[2]) for r in conn.execute(
                    text("SELECT component_id, max_time, max_message_id FROM components"))}
                kinds = dict(conn.execute(text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'components'")).all())
            assert back == ROWS
            assert kinds["max_time"] == "text" and "updated_at" in kinds
        finally:
            engine.dispose()
