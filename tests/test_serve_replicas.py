"""Service replicas: leases on running analyses (SQLite, in process) and two ``pulmo serve``
processes sharing one PostgreSQL database and one storage folder, one of them killed."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from pulmo.frontdoor.inputs import InputInfo
from pulmo.frontdoor.routing import Route
from pulmo.serve.db import analyses, audit, make_engine, migrate, utcnow
from pulmo.serve.jobs import JobRunner
from pulmo.serve.localpg import free_port, local_postgres, unavailable
from pulmo.serve.storage import Storage
from tests.frontdoor_fixtures import wav
from tests.serve_helpers import db_rows, http, multipart, serve_process

ROUTE = Route("a recording", ("lung-sounds",), "test")
INFO = InputInfo(name="a.wav", bytes=10, kind="audio", format="WAV", details={})


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'pulmo.db'}"
    migrate(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def runner(engine: Engine, tmp_path: Path, name: str, **kw: Any) -> JobRunner:
    """A replica's runner whose threads are never started: the tests drive it by hand."""
    return JobRunner(engine, Storage(tmp_path / "storage"), replica=name, **kw)


def row(engine: Engine, analysis_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(analyses).where(analyses.c.id == analysis_id)).one()


def age_lease(engine: Engine, analysis_id: str, seconds: float) -> None:
    """Move a lease's expiry ``seconds`` into the past, as if its replica had stopped renewing it."""
    with engine.begin() as conn:
        conn.execute(update(analyses).where(analyses.c.id == analysis_id)
                     .values(lease_expires_at=utcnow() - timedelta(seconds=seconds)))


def test_a_live_lease_is_never_taken_and_an_expired_one_is_requeued_once(engine, tmp_path):
    a, b = runner(engine, tmp_path, "replica-a"), runner(engine, tmp_path, "replica-b")
    job = a.submit("local", ROUTE, INFO, "0" * 64)
    first = a.claim_next()
    assert first.id == job and (first.claimed_by, first.attempts) == ("replica-a", 1)
    assert first.lease_expires_at is not None
    assert b.recover_expired() == 0 and b.claim_next() is None  # live: B neither re-queues nor claims it
    assert a.renew() == 1 and b.renew() == 0

    age_lease(engine, job, 1)  # A stopped renewing (killed, or cut off from the database)
    assert b.recover_expired() == 1 and a.recover_expired() == 0  # re-queued once, by one replica
    assert (row(engine, job).status, row(engine, job).claimed_by) == ("queued", None)
    second = b.claim_next()
    assert (second.claimed_by, second.attempts) == ("replica-b", 2)
    assert not a._finish(first, {"status": "done"})  # A's late result is dropped (fencing on the attempt)
    assert b._finish(second, {"status": "done"})
    trail = [(r["action"], r["detail"]) for r in db_rows(str(engine.url), audit) if r["analysis_id"] == job]
    assert trail == [("submit", None), ("start", "attempt 1 by replica-a"),
                     ("requeued", "attempt 1 by replica-a stopped renewing its lease"),
                     ("start", "attempt 2 by replica-b"), ("done", None)]


def test_renewal_keeps_a_lease_and_too_many_expiries_fail_the_analysis(engine, tmp_path):
    a, b = (runner(engine, tmp_path, name, max_attempts=2) for name in ("replica-a", "replica-b"))
    job = a.submit("local", ROUTE, INFO, "0" * 64)
    a.claim_next()
    age_lease(engine, job, 1)
    assert a.renew() == 1 and b.recover_expired() == 0  # renewed before anyone looked: still A's
    for attempt in (1, 2):
        age_lease(engine, job, 1)
        b.recover_expired()
        if attempt == 1:
            assert a.claim_next().attempts == 2
    done = row(engine, job)
    assert (done.status, done.error) == ("failed", "the service stopped during each of 2 attempts")


def test_stopping_ends_the_leases_of_what_still_runs(engine, tmp_path):
    a, b = runner(engine, tmp_path, "replica-a"), runner(engine, tmp_path, "replica-b")
    job = a.submit("local", ROUTE, INFO, "0" * 64)
    a.claim_next()
    a.stop(timeout_s=0.1)  # no threads were started: only the leases end
    assert row(engine, job).status == "running" and b.recover_expired() == 1


def test_concurrent_workers_claim_each_analysis_once(engine, tmp_path):
    replicas = [runner(engine, tmp_path, f"replica-{i}") for i in range(4)]
    jobs = [replicas[0].submit("local", ROUTE, INFO, "0" * 64) for _ in range(40)]
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(r: JobRunner) -> None:
        while (got := r.claim_next()) is not None:
            with lock:
                claimed.append(got.id)

    threads = [threading.Thread(target=drain, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(jobs)
    assert {row(engine, j).attempts for j in jobs} == {1}


# -- two replicas on PostgreSQL, one killed -------------------------------------------------
def submit(port: int, data: bytes) -> str:
    body, ctype = multipart({"file": ("breath.wav", data)}, {"task": "lung-sounds"})
    status, _, out = http("POST", f"http://127.0.0.1:{port}/analyses", body=body, headers={"Content-Type": ctype})
    assert status == 202, out
    return json.loads(out)["id"]


def running_on(url: str, proc: subprocess.Popen) -> list[str]:
    """Ids of analyses that ``proc``'s worker is running now (its claims carry its process id)."""
    return [r["id"] for r in db_rows(url, analyses) if r["status"] == "running" and f"-{proc.pid}-" in r["claimed_by"]]


def wait_all_finished(url: str, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {r["id"]: r for r in db_rows(url, analyses)}
        if all(rows[i]["status"] in ("done", "failed") for i in ids):
            return rows
        assert time.monotonic() < deadline, Counter(r["status"] for r in rows.values())
        time.sleep(0.1)


def test_two_replicas_on_postgresql_run_each_analysis_once_and_lose_none_when_one_is_killed(tmp_path):
    reason = unavailable()
    if reason:
        pytest.skip(f"no local PostgreSQL: {reason}")
    data = wav(tmp_path / "breath.wav", seconds=6.0).read_bytes()
    storage = tmp_path / "shared"
    with local_postgres() as url:
        ports = [free_port(), free_port()]
        procs: list[subprocess.Popen] = []
        try:
            with ThreadPoolExecutor(2) as pool:  # started together: they migrate the new database one after the other
                procs = list(pool.map(lambda port: serve_process(storage, port, url, "--workers", "1",
                                                                 "--lease-seconds", "2"), ports))
            ids = [submit(ports[i % 2], data) for i in range(12)]
            deadline = time.monotonic() + 60
            while not (killed := running_on(url, procs[0])) or sum(
                    r["status"] == "queued" for r in db_rows(url, analyses)) < 2:
                assert time.monotonic() < deadline, "replica 1 never ran an analysis while others waited"
                time.sleep(0.02)
            procs[0].send_signal(signal.SIGKILL)  # mid-analysis, with more waiting in the queue
            procs[0].wait(timeout=30)
            ids += [submit(ports[1], data) for _ in range(2)]
            rows = wait_all_finished(url, ids, timeout_s=90)
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=30)
        trail = db_rows(url, audit)
    starts = Counter(r["analysis_id"] for r in trail if r["action"] == "start")
    done = Counter(r["analysis_id"] for r in trail if r["action"] == "done")
    requeued = Counter(r["analysis_id"] for r in trail if r["action"] == "requeued")
    assert all(rows[i]["status"] == "done" for i in ids), [rows[i]["error"] for i in ids]
    assert done == Counter(ids)  # every analysis finished exactly once
    assert {i: starts[i] for i in ids} == {i: 2 if i in killed else 1 for i in ids}  # only the killed run ran again
    assert requeued == Counter(killed) and {rows[i]["attempts"] for i in killed} == {2}
    survivor = {r["claimed_by"] for i, r in rows.items() if i in ids and f"-{procs[1].pid}-" in r["claimed_by"]}
    assert len(survivor) == 1  # the second replica finished the killed one's work
    for i in ids:  # each report is in the shared storage, under the attempt that finished
        assert (storage / "results" / i / f"a{rows[i]['attempts']}" / "report.html").is_file()
