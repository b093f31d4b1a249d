"""Alembic environment: runs migrations online against STREAMS_DATABASE_URL.

``target_metadata`` is every domain's tables (``streams.db.schema_metadata``): the
migrations must build exactly that, which tests/integration/test_schema_drift.py checks
with Alembic's own comparison. A new migration is written from that comparison.
"""

from alembic import context
from sqlalchemy import create_engine, pool

from streams.db import schema_metadata

config = context.config
url = config.attributes["database_url"]
target_metadata = schema_metadata()

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=target_metadata,
                      transaction_per_migration=True, compare_server_default=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
