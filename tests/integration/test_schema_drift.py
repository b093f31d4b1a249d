"""The migrations and the metadata describe one schema: Alembic's autogenerate comparison
of a freshly migrated database with ``streams.db.schema_metadata()`` finds nothing."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, Column, MetaData, String, Table, text

from streams.db import schema_metadata, sync_engine

# What ``alembic revision --autogenerate`` compares, server defaults included.
COMPARE = {"compare_type": True, "compare_server_default": True}


def drift(settings, metadata: MetaData) -> list:
    """Alembic's differences between the migrated database of ``settings`` (its default
    schema, where the migrations run) and ``metadata``."""
    engine = sync_engine(settings)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn, opts=COMPARE), metadata)
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_metadata(session_settings):
    differences = drift(session_settings, schema_metadata())
    # When this fails, write a migration for the listed differences (or fix the metadata).
    assert not differences, "\n".join(map(str, differences))


def test_each_kind_of_change_is_drift(session_settings):
    """The comparison is not blind: a column whose nullability, type or server default
    the metadata changes, an index it renames and a table it adds are each reported."""
    changed = MetaData()
    for table in schema_metadata().sorted_tables:
        table.to_metadata(changed)
    changed.tables["skipped_events"].c.reason.nullable = True
    changed.tables["profile_merges"].c.rule.type = String(40)
    changed.tables["skipped_events"].c.recorded_at.server_default.arg = text("clock_timestamp()")
    next(iter(changed.tables["profile_events"].indexes)).name = "profile_events_by_profile"
    Table("not_migrated", changed, Column("id", BigInteger, primary_key=True))
    found = [d[0] if isinstance(d, list) else d for d in drift(session_settings, changed)]
    assert sorted((d[0], d[2], d[3]) if d[0].startswith("modify") else (d[0], d[1].name)
                  for d in found) == [
        ("add_index", "profile_events_by_profile"),
        ("add_table", "not_migrated"),
        ("modify_default", "skipped_events", "recorded_at"),
        ("modify_nullable", "skipped_events", "reason"),
        ("modify_type", "profile_merges", "rule"),
        ("remove_index", "profile_events_profile"),
    ]
