"""Alembic environment: runs migrations online against STREAMS_DATABASE_URL."""

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
url = config.attributes["database_url"]

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
