"""The schema helpers of streams.db: one metadata, names for hand-written SQL, schemas."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text

from streams.db import SqlNames, check_schema_name, in_schema, qualified, schema_metadata


def test_the_metadata_holds_every_domains_tables():
    assert set(schema_metadata().tables) == {
        "components", "identifier_to_profile", "profile_merges", "profile_id_to_survivor",
        "forgotten_identifiers", "profiles", "profile_events", "skipped_events",
        "profile_changes", "scheduled_messages"}


def test_sql_names_come_from_the_table_and_are_quoted_when_needed():
    table = Table("user", MetaData(), Column("id", Integer, key="ident"),
                  Column("Mixed", Text), Column("plain", Text))
    names = SqlNames(table)
    assert f"SELECT {names.ident}, {names.Mixed}, {names.plain} FROM {names}" == (
        'SELECT id, "Mixed", plain FROM "user"')
    with pytest.raises(AttributeError):
        _ = names.missing  # a statement naming a column the table lacks fails at import


def test_qualified_names_put_a_table_in_a_schema():
    table = schema_metadata().tables["profiles"]
    assert qualified(table, None) == "profiles"
    assert qualified(table, "pt_1") == "pt_1.profiles"
    assert qualified(table, "Rebuild_2") == '"Rebuild_2".profiles'


@pytest.mark.parametrize("bad", ["", "a-b", 'x"; DROP TABLE profiles; --', "a.b", "a b"])
def test_a_schema_name_must_be_a_plain_word(bad):
    with pytest.raises(ValueError, match="letters, digits and _"):
        check_schema_name(bad)
    if bad:  # "" is no schema at all, for in_schema
        with pytest.raises(ValueError):
            in_schema(bad)


def test_in_schema_translates_the_metadata_tables_only_when_a_schema_is_given():
    # Tables on the metadata carry no schema (None), which the map sends to the given one.
    assert {t.schema for t in schema_metadata().tables.values()} == {None}
    assert in_schema(None) == {} and in_schema("") == {}
    assert in_schema("pt_9") == {"schema_translate_map": {None: "pt_9"}}


def test_engines_hide_statement_parameters_from_errors_and_logs():
    from streams.db import async_engine, sync_engine
    from streams.settings import Settings

    settings = Settings()
    engines = [sync_engine(settings), async_engine(settings).sync_engine,
               sync_engine(settings, pool_size=1)]
    try:
        assert all(engine.hide_parameters for engine in engines)
    finally:
        for engine in engines:
            engine.dispose()


def test_uuid_array_is_one_postgresql_array_literal():
    from streams.db import uuid_array

    ids = ["355a409d-906a-50c7-bceb-61ea16d31df3", "00000000-0000-0000-0000-000000000001"]
    assert uuid_array(ids) == "{" + ",".join(ids) + "}"
    assert uuid_array(iter(ids[:1])) == "{355a409d-906a-50c7-bceb-61ea16d31df3}"
    assert uuid_array([]) == "{}"
