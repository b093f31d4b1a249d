"""Database engine and schema migrations (Alembic), shared by every domain's store."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from streams.settings import Settings


def async_engine(settings: Settings, **kwargs) -> AsyncEngine:
    """An asyncio engine (psycopg 3) on STREAMS_DATABASE_URL. Does not connect yet."""
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(settings.database_url.get_secret_value(), **kwargs)


def sync_engine(settings: Settings, **kwargs) -> Engine:
    """A blocking engine, for the CLI and migrations."""
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(settings.database_url.get_secret_value(), **kwargs)


def alembic_config(settings: Settings) -> Config:
    """Alembic's configuration pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("streams") / "migrations"))
    # Passed as an attribute, not an ini option: the URL holds a password and ini
    # options end up interpolated into log lines.
    cfg.attributes["database_url"] = settings.database_url.get_secret_value()
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
