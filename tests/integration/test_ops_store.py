"""Pipeline figures against the real PostgreSQL: present tables are counted, absent ones
are unavailable (never zero), a failing query spoils no other figure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy import insert, text

from streams.db import async_engine, in_schema
from streams.identity.tables import profile_merges
from streams.ops.store import read_pipeline_figures
from streams.profiles import tables
from streams.profiles.store import create_schema, drop_schema
from tests.helpers import unique


@pytest.fixture
def own_schema(session_settings):
    """A schema of our own with a few of the other domains' tables, dropped afterwards.

    The figures query unqualified names, so an engine whose search_path is this schema
    sees exactly these tables, whatever the merged migrations put in ``public``.
    """
    target = session_settings.database
    schema = unique("ops_fig_")
    with psycopg.connect(host=target.host, port=target.port, user=target.user,
                         password=target.password, dbname=target.dbname,
                         autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        conn.execute("CREATE TABLE profiles (id int)")
        conn.execute("INSERT INTO profiles SELECT generate_series(1, 3)")
        # No sent_at column: "messages sent" must fail alone, not as zero.
        conn.execute("CREATE TABLE scheduled_messages (id int)")
        conn.execute("INSERT INTO scheduled_messages VALUES (1), (2)")
        conn.execute("CREATE TABLE skipped_events (message_id text, reason text)")
        conn.execute("INSERT INTO skipped_events VALUES ('a', 'forgotten'), "
                     "('b', 'no_identifier'), ('c', 'forgotten')")
        conn.execute("CREATE TABLE event_log (id int)")  # the older of two candidates
        conn.execute("INSERT INTO event_log VALUES (1), (2), (3), (4)")
        yield schema
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def test_figures_count_present_tables_and_mark_absent_ones(session_settings, own_schema):
    engine = async_engine(session_settings, pool_size=1, max_overflow=0,
                          connect_args={"options": f"-c search_path={own_schema}"})
    try:
        figures = {f.name: f for f in await read_pipeline_figures(engine)}
    finally:
        await engine.dispose()
    assert figures["profiles"].value == 3 and figures["profiles"].unavailable is None
    assert figures["messages_scheduled"].value == 2
    assert figures["suppressed_events"].value == 2  # read after the failed query
    assert figures["events_stored"].value == 4
    assert figures["messages_sent"].value is None
    assert figures["messages_sent"].unavailable == (
        "query on scheduled_messages failed (UndefinedColumn)")
    assert figures["merges"].value is None
    assert figures["merges"].unavailable == "table profile_merges does not exist"


async def test_figures_on_the_migrated_database_read_the_event_log(session_settings):
    engine = async_engine(session_settings, pool_size=1, max_overflow=0)
    try:
        figures = {f.name: f for f in await read_pipeline_figures(engine)}
    finally:
        await engine.dispose()
    assert isinstance(figures["events_stored"].value, int)
    for figure in figures.values():
        # Each is either a count or says why not; never a silent zero for a missing table.
        assert (figure.value is None) != (figure.unavailable is None)


async def test_unreachable_database_makes_every_figure_unavailable(session_settings):
    target = session_settings.database
    url = f"postgresql+psycopg://{target.user}:{target.password}@127.0.0.1:1/{target.dbname}"
    settings = session_settings.model_copy(update={"database_url": SecretStr(url)})
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        figures = await read_pipeline_figures(engine)
    finally:
        await engine.dispose()
    assert figures and all(f.value is None and f.unavailable == "database unreachable"
                           for f in figures)


async def test_no_candidate_table_says_which_were_looked_for(session_settings):
    engine = async_engine(session_settings, pool_size=1, max_overflow=0,
                          connect_args={"options": f"-c search_path={unique('ops_none_')}"})
    try:
        figures = {f.name: f for f in await read_pipeline_figures(engine)}
    finally:
        await engine.dispose()
    assert all(f.value is None for f in figures.values())
    assert figures["events_stored"].unavailable == (
        "none of the tables profile_events, event_log exist")
    assert figures["profiles"].unavailable == "table profiles does not exist"


async def test_figures_read_the_profile_tables_in_the_configured_schema(session_settings):
    """STREAMS_PROFILES_SCHEMA holds the profile tables: the figures count there, not in
    the search path's schema (which holds the migrated, differently filled tables)."""
    schema = unique("ops_prof_")
    engine = async_engine(session_settings, pool_size=1, max_overflow=0)
    try:
        await create_schema(engine, schema)
        async with engine.begin() as conn:
            await conn.execution_options(**in_schema(schema))
            await conn.execute(insert(tables.profiles), [
                {"profile_id": str(uuid.uuid4()), "component_id": 1, "document": b"\x01"}
                for _ in range(7)])
            await conn.execute(insert(tables.profile_events), [
                {"message_id": f"m{i}", "profile_id": str(uuid.uuid4()),
                 "event_time": datetime(2026, 1, 1, tzinfo=UTC), "event": b"\x01"}
                for i in range(5)])
            await conn.execute(insert(tables.skipped_events), [
                {"message_id": f"s{i}", "reason": reason}
                for i, reason in enumerate(["forgotten"] * 3 + ["no_identifier"])])
            await conn.execute(insert(profile_merges), [
                {"component_id": 1, "survivor_id": str(uuid.uuid4()),
                 "merged_id": str(uuid.uuid4()), "message_id": "m0", "rule": "r",
                 "event_time": "t"}] * 2)
        async with engine.connect() as conn:  # the same tables on the search path
            public = {t: await conn.scalar(text(f"SELECT count(*) FROM {t}"))
                      for t in ("profiles", "profile_events", "profile_merges")}
        figures = {f.name: f for f in await read_pipeline_figures(engine, schema=schema)}
        default = {f.name: f for f in await read_pipeline_figures(engine)}
    finally:
        await drop_schema(engine, schema)
        await engine.dispose()
    assert {name: figures[name].value for name in
            ("profiles", "events_stored", "merges", "suppressed_events")} == {
        "profiles": 7, "events_stored": 5, "merges": 2, "suppressed_events": 3}
    assert (default["profiles"].value, default["events_stored"].value,
            default["merges"].value) == (public["profiles"], public["profile_events"],
                                         public["profile_merges"])
    assert public["profiles"] != 7  # the two schemas are told apart
    # The trigger stage's table, from its metadata, is read in the configured schema too
    # (created there empty), not on the search path.
    assert (figures["messages_scheduled"].value, figures["messages_sent"].value) == (0, 0)


async def test_a_schema_name_that_is_not_a_word_is_refused(session_settings):
    engine = async_engine(session_settings, pool_size=1, max_overflow=0)
    try:
        with pytest.raises(ValueError, match="letters, digits and _"):
            await read_pipeline_figures(engine, schema='x"; DROP TABLE profiles; --')
    finally:
        await engine.dispose()
