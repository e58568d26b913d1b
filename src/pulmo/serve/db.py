"""The service's database: tables (SQLAlchemy Core), engine, and migrations (Alembic,
shipped in ``pulmo/serve/migrations`` and applied at start).

SQLite by default (a file under the storage folder, no set-up), PostgreSQL by URL
(``postgresql+psycopg://user@host/db``). Times are UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Engine, Integer, MetaData, String, Table, Text,
                        create_engine, event, false)

metadata = MetaData()

# One row per submitted analysis. status: queued -> running -> done | failed. ``attempts``
# counts claims by a worker; a worker may only finish the attempt it claimed (fencing), so
# a job re-queued after a crash can never be overwritten by the old, stale worker. A running
# row is leased: ``claimed_by`` names the service process (replica) whose worker runs it, and
# ``lease_expires_at`` is pushed forward while that replica lives; any replica re-queues a
# running row whose lease has run out.
analyses = Table(
    "analyses", metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("task", String(32), nullable=False),
    Column("file_sha256", String(64), nullable=False, index=True),
    Column("file_name", String(255), nullable=False),
    Column("file_bytes", BigInteger, nullable=False),
    Column("file_kind", String(8), nullable=False),
    Column("file_info", Text, nullable=False),  # JSON: header facts from the input check
    Column("submitted_by", String(64), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("model", String(128)),
    Column("checkpoint_sha256", String(64)),
    Column("pulmo_version", String(32)),
    Column("result", Text),  # JSON envelope (see pulmo.frontdoor.capabilities.envelope)
    Column("error", Text),
    Column("claimed_by", String(64)),
    Column("lease_expires_at", DateTime(timezone=True)),
)

# Who did what when: one row per event (submit, rejected, start, done, failed, requeued).
audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("who", String(64), nullable=False),  # token name, or 'local' without a token on loopback
    Column("action", String(16), nullable=False),
    Column("analysis_id", String(32), index=True),
    Column("file_sha256", String(64)),
    Column("task", String(32)),
    Column("model", String(128)),
    Column("checkpoint_sha256", String(64)),
    Column("status", String(16)),
    Column("detail", Text),
)

# API tokens: only a SHA-256 of each token is kept (tokens are 256-bit random, so a fast
# hash is enough; the token itself is shown once, at creation). An ``admin`` token may read
# every analysis; any other reads only those it submitted.
tokens = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("admin", Boolean, nullable=False, default=False, server_default=false()),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_url(storage: Path) -> str:
    return f"sqlite:///{(storage / 'pulmo.db').resolve()}"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys, and may be
    used from the worker threads."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (``alembic upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
