"""Alembic environment for the pulmo service database (online migrations only).

On PostgreSQL the migration holds a transaction-level advisory lock, so replicas starting
together against one database migrate it once, one after the other.
"""

from alembic import context
from sqlalchemy import create_engine, pool, text

from pulmo.serve.db import metadata

MIGRATION_LOCK = 0x70756C6D6F  # any fixed 64-bit key: 'pulmo'

url = context.config.get_main_option("sqlalchemy.url") or ""
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()
engine.dispose()
