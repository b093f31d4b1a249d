"""Database engine and schema migrations (Alembic), shared by every domain's store."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from psycopg.types.json import set_json_dumps, set_json_loads
from sqlalchemy import MetaData, Table, create_engine
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause

from streams.settings import Settings

# JSONB through orjson for every connection of the process: faster than the json module
# on the hot path (the profile store, the trigger stage).
set_json_loads(orjson.loads)
set_json_dumps(lambda obj: orjson.dumps(obj).decode())

# The layout of every table, the one source of truth: each domain's ``tables`` module adds
# its tables here, and a test has Alembic compare it with what the migrations build.
# Tables carry no schema: the configured one (STREAMS_PROFILES_SCHEMA, a test's or a
# rebuild's) is applied when a statement runs, by ``schema_translate_map`` for SQLAlchemy
# statements and by the transaction's search path for the stores' hand-written SQL.
metadata = MetaData()

# The modules defining tables on ``metadata``; a new domain with tables adds its own here.
TABLE_MODULES = ("streams.identity.tables", "streams.profiles.tables", "streams.triggers.tables")

_PREPARER = postgresql.dialect().identifier_preparer


def schema_metadata() -> MetaData:
    """``metadata`` with every domain's tables on it (imports their ``tables`` modules)."""
    for name in TABLE_MODULES:
        importlib.import_module(name)
    return metadata


def check_schema_name(schema: str) -> str:
    """``schema`` itself; raises ValueError unless it is letters, digits and ``_`` (it is
    written into SQL as an identifier)."""
    if not schema or not schema.replace("_", "").isalnum():
        raise ValueError(f"schema name {schema!r} must be letters, digits and _")
    return schema


def uuid_array(ids: Iterable[str]) -> str:
    """UUID strings as one PostgreSQL array literal (``{a,b}``), for a parameter the
    statement casts to ``uuid[]``: psycopg dumps a Python list element by element in
    Python (about half a microsecond an id, several per message on the trigger stage's
    hot path), a string in one piece. Each id must be a UUID's text (no braces, commas
    or quotes; anything else fails the cast). Pure."""
    return "{" + ",".join(ids) + "}"


def in_schema(schema: str | None) -> dict:
    """Execution options that put the metadata's tables in ``schema`` (None: the search
    path's), for ``Connection.execution_options``."""
    return {"schema_translate_map": {None: check_schema_name(schema)}} if schema else {}


def qualified(table: Table, schema: str | None) -> str:
    """``table``'s quoted name in ``schema`` (unqualified when None), for hand-written SQL."""
    name = _PREPARER.quote(table.name)
    return f"{_PREPARER.quote_schema(check_schema_name(schema))}.{name}" if schema else name


class SqlNames:
    """A table's quoted names for hand-written SQL, read from the metadata: ``str(names)``
    is the table's name (unqualified: the search path picks the schema) and
    ``names.<column key>`` a column's. An unknown column raises AttributeError, so a
    statement naming a column the metadata lacks fails when its module is imported."""

    def __init__(self, table: Table):
        self._table_name = _PREPARER.quote(table.name)
        for column in table.c:
            setattr(self, column.key, _PREPARER.quote(column.name))

    def __str__(self) -> str:
        return self._table_name

    def __format__(self, spec: str) -> str:
        return format(self._table_name, spec)


# Errors and logs of SQLAlchemy carry a statement's parameters unless told not to: those
# are events' values (emails, traits), which never go into a log line or a dead letter.
_HIDE = {"hide_parameters": True}


def async_engine(settings: Settings, **kwargs) -> AsyncEngine:
    """An asyncio engine (psycopg 3) on STREAMS_DATABASE_URL, hiding statement parameters
    from its errors and logs. Does not connect yet."""
    kwargs = {**_HIDE, **kwargs}
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(settings.database.url, **kwargs)


def sync_engine(settings: Settings, **kwargs) -> Engine:
    """A blocking engine, for the CLI and migrations, hiding statement parameters from
    its errors and logs."""
    kwargs = {**_HIDE, **kwargs}
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(settings.database.url, **kwargs)


def alembic_config(settings: Settings) -> Config:
    """Alembic's configuration pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("streams") / "migrations"))
    # Passed as an attribute, not an ini option: the URL holds a password and ini
    # options end up interpolated into log lines.
    cfg.attributes["database_url"] = settings.database.url
    return cfg


def upgrade(settings: Settings, revision: str = "heads") -> None:
    """Apply migrations up to ``revision`` (blocks). Raises SQLAlchemy errors on failure.

    Each domain keeps its own branch of revisions off ``0001``, so the default target is
    every head.
    """
    command.upgrade(alembic_config(settings), revision)


def current_revisions(settings: Settings) -> tuple[str, ...]:
    """The revisions (one per domain branch) the database is at; empty when never migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = sync_engine(settings)
    try:
        with engine.connect() as conn:
            return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    finally:
        engine.dispose()


class Rows(list):
    """A statement's result rows (tuples), with the few ``Result`` methods the hot path
    uses."""

    def first(self) -> Any:
        return self[0] if self else None

    def all(self) -> list:
        return list(self)

    def scalar(self) -> Any:
        return self[0][0] if self else None

    def scalar_one(self) -> Any:
        if len(self) != 1:
            raise ValueError(f"expected one row, got {len(self)}")
        return self[0][0]


class DriverConnection:
    """The psycopg connection under a SQLAlchemy ``AsyncConnection``, in its transaction,
    running the same ``text()`` statements: for the profile stage's batch, where
    SQLAlchemy's execution layer (compiled-cache lookup, parameter processing, result
    wrapping, the greenlet switch) cost about 85 µs of CPU per statement beside
    psycopg's 55, about a dozen statements per batch. Each statement is compiled to
    psycopg's placeholders once per process. Errors are psycopg's own (the retry policy
    classifies both); statement parameters never appear in them."""

    __slots__ = ("_conn", "_dialect")
    _sql: dict[str, str] = {}

    def __init__(self, conn: Any, dialect: Any):
        self._conn = conn
        self._dialect = dialect

    @classmethod
    async def of(cls, conn: AsyncConnection) -> DriverConnection:
        raw = await conn.get_raw_connection()
        return cls(raw.driver_connection, conn.dialect)

    async def execute(self, statement: TextClause,
                      params: dict | Sequence[dict] | None = None) -> Rows:
        """Run ``statement`` with ``params`` (a list: once per element); the rows it
        returns, if any."""
        sql = self._sql.get(statement.text)
        if sql is None:
            sql = self._sql[statement.text] = statement.compile(dialect=self._dialect).string
        async with self._conn.cursor() as cur:
            if isinstance(params, list):
                await cur.executemany(sql, params)
                return Rows()
            await cur.execute(sql, params or {})
            return Rows(await cur.fetchall()) if cur.description else Rows()

    async def scalar(self, statement: TextClause, params: dict | None = None) -> Any:
        return (await self.execute(statement, params)).scalar()
