"""Pipeline figures against the real PostgreSQL: present tables are counted, absent ones
are unavailable (never zero), a failing query spoils no other figure."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from streams.db import async_engine
from streams.ops.store import read_pipeline_figures
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
