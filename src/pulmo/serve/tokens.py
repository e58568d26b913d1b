"""API tokens: made here, shown once, stored as a SHA-256 only."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update

from pulmo.errors import ConfigError
from pulmo.serve.db import tokens, utcnow

PREFIX = "pulmo_"
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
RESERVED = ("local", "anonymous")  # requests without a token; refused requests in the audit trail


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a token's name (or ``local``), and whether it may read every analysis."""

    name: str
    admin: bool = False

    def may_read(self, submitted_by: str) -> bool:
        """Whether this caller may see an analysis submitted by ``submitted_by``."""
        return self.admin or submitted_by == self.name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_token(engine: Engine, name: str, admin: bool = False) -> str:
    """Create a token named ``name`` (who it is for; ``admin``: may read every analysis);
    returns the token, which is not kept."""
    if not NAME_RE.match(name):
        raise ConfigError(f"token name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    if name in RESERVED:
        raise ConfigError(f"{name!r} is reserved for requests without a valid token; choose another name")
    token = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if conn.execute(select(tokens.c.id).where(tokens.c.name == name)).first():
            raise ConfigError(f"a token named {name!r} exists already (revoke it first)")
        conn.execute(insert(tokens).values(name=name, token_sha256=token_hash(token), created_at=utcnow(),
                                           admin=admin))
    return token


def revoke_token(engine: Engine, name: str) -> None:
    """Revoke and rename the token, so the name can be given to a new token."""
    with engine.begin() as conn:
        row = conn.execute(select(tokens.c.id).where(tokens.c.name == name, tokens.c.revoked_at.is_(None))).first()
        if row is None:
            raise ConfigError(f"no active token named {name!r}")
        now = utcnow()
        conn.execute(update(tokens).where(tokens.c.id == row.id)
                     .values(revoked_at=now, name=f"{name}~revoked{row.id}"[:64]))


def list_tokens(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(tokens.c.name, tokens.c.admin, tokens.c.created_at, tokens.c.revoked_at)
                            .order_by(tokens.c.id))
        return [dict(r._mapping) for r in rows]


def active_token_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(tokens.c.id).where(tokens.c.revoked_at.is_(None))).all())


def who_has(engine: Engine, token: str) -> Caller | None:
    """The name and admin flag of the active token ``token``, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(tokens.c.name, tokens.c.admin).where(tokens.c.token_sha256 == token_hash(token),
                                                                       tokens.c.revoked_at.is_(None))).first()
    return None if row is None else Caller(str(row.name), bool(row.admin))
