"""A throwaway PostgreSQL cluster on this machine, for trying service replicas, for the tests
and for the load benchmark: ``initdb`` in a temporary folder, ``pg_ctl start`` on a free
loopback port, trust authentication, removed on exit.

    with local_postgres() as url:   # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        ...

PostgreSQL refuses to run as root; run as root, the cluster belongs to the ``postgres`` user
(else ``nobody``) and its commands run through ``runuser``. Durability is switched off
(``fsync=off``): the cluster lives only as long as the ``with`` block.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER_USERS = ("postgres", "nobody")


def pg_binary(name: str) -> str | None:
    """``name`` (initdb, pg_ctl) on PATH, else from Debian's ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def server_user() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (None when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def unavailable() -> str | None:
    """Why a local cluster cannot start here, in one line; None when it can."""
    missing = [name for name in ("initdb", "pg_ctl") if pg_binary(name) is None]
    if missing:
        return f"PostgreSQL's {' and '.join(missing)} not found (install postgresql)"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed: pip install 'pulmo[postgres]'"
    if os.geteuid() == 0 and (server_user() is None or shutil.which("runuser") is None):
        return "running as root without a 'postgres' or 'nobody' account and runuser to start PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], timeout_s: float = 120) -> None:
    """Run a PostgreSQL command, as the server account when we are root; raise with its output on failure."""
    user = server_user()
    prefix = ["runuser", "-u", user.pw_name, "--"] if user else []
    done = subprocess.run(prefix + cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed: {(done.stderr or done.stdout).strip()[-1500:]}")


@contextmanager
def local_postgres(port: int | None = None) -> Iterator[str]:
    """Start a fresh cluster; yields its SQLAlchemy URL; stops it and removes its folder on exit."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    folder = Path(tempfile.mkdtemp(prefix="pulmo-pg-"))
    user = server_user()
    if user:
        os.chown(folder, user.pw_uid, user.pw_gid)
    data, port = folder / "data", port or free_port()
    try:
        _run([str(pg_binary("initdb")), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off")
        _run([str(pg_binary("pg_ctl")), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "-t",
              "60", "start"])
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run([str(pg_binary("pg_ctl")), "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
