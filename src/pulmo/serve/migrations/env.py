"""Alembic environment for the pulmo service database (online migrations only)."""

from alembic import context
from sqlalchemy import create_engine, pool

from pulmo.serve.db import metadata

url = context.config.get_main_option("sqlalchemy.url") or ""
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
