"""A real ``pulmo serve`` on loopback for tests (uvicorn in a thread, port chosen by the OS),
a tiny HTTP client on the standard library, and a fresh database per test.

With PULMO_TEST_POSTGRES=postgresql+psycopg://user@127.0.0.1:PORT/postgres every service
test runs on a fresh PostgreSQL database of its own; without it, on SQLite files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import Table, create_engine, select, text

from pulmo.serve.app import ServeSettings, create_app
from pulmo.serve.db import default_url

POSTGRES = os.environ.get("PULMO_TEST_POSTGRES")


@contextmanager
def fresh_db(storage: Path) -> Iterator[str]:
    """A database URL for one test: a new PostgreSQL database, or SQLite under ``storage``."""
    if not POSTGRES:
        yield default_url(storage)
        return
    name = f"pulmo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def db_rows(url: str, table: Table) -> list[dict[str, Any]]:
    """Every row of ``table``, in primary-key order."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]
    engine.dispose()
    return rows


class LiveServer:
    """``with LiveServer(settings) as srv: srv.get("/health")``. Leaving stops uvicorn; the
    app's shutdown waits ``settings.stop_timeout_s`` for running analyses."""

    def __init__(self, settings: ServeSettings) -> None:
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def request(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return http(method, self.base + path, token, body, headers)

    def get(self, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, token)

    def get_json(self, path: str, token: str | None = None) -> tuple[int, Any]:
        status, _, body = self.get(path, token)
        return status, json.loads(body)

    def upload(self, name: str, data: bytes, task: str | None = None, token: str | None = None) -> tuple[int, Any]:
        fields = {"task": task} if task else {}
        body, ctype = multipart({"file": (name, data)}, fields)
        status, _, out = self.request("POST", "/analyses", token, body, {"Content-Type": ctype})
        return status, json.loads(out)

    def wait(self, analysis_id: str, token: str | None = None, until: tuple[str, ...] = ("done", "failed"),
             timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = self.get_json(f"/analyses/{analysis_id}", token)
            assert status == 200, body
            if body["status"] in until:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"analysis {analysis_id} still {body['status']}")
            time.sleep(0.05)


def serve_process(storage: Path, port: int, url: str, *options: str) -> subprocess.Popen:
    """``pulmo serve`` in its own process on ``port`` (one thread for the models); returns once
    ``/health`` answers. Its stderr is a pipe: the service's own log lines."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pulmo.cli", "serve", "--port", str(port), "--storage", str(storage),
                             "--db", url, *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if http("GET", f"http://127.0.0.1:{port}/health")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"pulmo serve did not start: {proc.stderr.read().decode()[-2000:]}")


def http(method: str, url: str, token: str | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def announce_only(base: str, path: str, content_length: int, content_type: str,
                  token: str | None = None) -> tuple[int, Any]:
    """POST headers announcing ``content_length`` bytes, and no body: the answer shows the
    server refused before reading any of it. Returns ``(status, JSON body)``."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(content_length))
    if token:
        conn.putheader("Authorization", f"Bearer {token}")
    conn.endheaders()
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def chunked_upload(base: str, name: str, data: bytes, token: str | None = None) -> tuple[int, Any]:
    """POST ``data`` as the multipart ``file`` in chunks, without a Content-Length: the
    server can only count the body as it streams. Returns ``(status, JSON body)``."""
    import http.client
    from urllib.parse import urlsplit

    body, ctype = multipart({"file": (name, data)}, {})
    headers = {"Content-Type": ctype, "Transfer-Encoding": "chunked"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("POST", "/analyses", body=(body[i:i + 65536] for i in range(0, len(body), 65536)), headers=headers,
                 encode_chunked=True)
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def multipart(files: dict[str, tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    """``(body, content type)`` of a multipart/form-data request."""
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    for key, (name, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
