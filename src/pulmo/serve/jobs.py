"""Analyses as database rows, run by worker threads in one or several service processes.

The database is the queue. A worker claims the oldest queued row (``queued -> running``,
``attempts + 1``) with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so that workers
of several replicas never wait on, or take, the same row; the UPDATE is conditional on the
row still being queued, which is all SQLite (one process, no row locks) needs. A worker
finishes only the attempt it claimed (fencing).

A claim is a lease: the row names its replica (``claimed_by``) and a ``lease_expires_at``
that the replica's heartbeat thread pushes forward every ``lease_s / 3`` while it lives. The
same thread re-queues any running row whose lease ran out (its replica was killed or lost
the database), or fails it after ``max_attempts``; so does every replica at start. A live
lease is never taken over. Workers wait on an in-memory signal from local submissions, and
look at the database every ``poll_s`` for rows submitted to, or re-queued by, other replicas.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import traceback
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, insert, or_, select, update

import pulmo
from pulmo.errors import PulmoError
from pulmo.frontdoor.capabilities import envelope, run_route
from pulmo.frontdoor.inputs import InputInfo
from pulmo.frontdoor.routing import Route
from pulmo.frontdoor.report import render_html
from pulmo.serve.db import analyses, audit, utcnow
from pulmo.serve.storage import Storage

log = logging.getLogger("pulmo.serve")


def record(conn: Connection, who: str, action: str, **fields: Any) -> None:
    """Append one audit row (``fields``: analysis_id, file_sha256, task, model, checkpoint_sha256, status, detail)."""
    conn.execute(insert(audit).values(at=utcnow(), who=who, action=action, **fields))


def info_from_row(row: Any) -> tuple[InputInfo, Route]:
    """The stored header facts and route of an analysis row (a row stored before routing by
    content runs its ``task`` alone)."""
    data = json.loads(row.file_info)
    stored = data.pop("route", None)
    route = Route.from_dict(stored) if stored else Route("", (row.task,), "stored before routing by content")
    return InputInfo(name=row.file_name, bytes=row.file_bytes, kind=row.file_kind, format=data.pop("format"),
                     details=data), route


def replica_name() -> str:
    """A name for this service process, unique among replicas: host, process id and a random tail."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def lease_expired(now: Any) -> ColumnElement[bool]:
    """A running row whose lease ran out at ``now`` (a row from before leases has none)."""
    return or_(analyses.c.lease_expires_at.is_(None), analyses.c.lease_expires_at < now)


class JobRunner:
    """``workers`` threads running analyses. ``checkpoints``: task -> checkpoint path (bundled
    when absent). ``lease_s``: how long a claim lasts without renewal; ``poll_s``: how often an
    idle worker looks for rows it was not told about; ``replica``: this process's name in claims."""

    def __init__(self, engine: Engine, storage: Storage, workers: int = 1,
                 checkpoints: Mapping[str, str] | None = None, max_attempts: int = 3, lease_s: float = 30.0,
                 poll_s: float = 0.5, replica: str | None = None) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        if lease_s <= 0 or poll_s <= 0:
            raise ValueError("the lease and the poll interval must be positive")
        self.engine, self.storage = engine, storage
        self.workers, self.max_attempts = workers, max_attempts
        self.lease_s, self.poll_s = lease_s, poll_s
        self.replica = (replica or replica_name())[:64]
        self.checkpoints = dict(checkpoints or {})
        self._wake: queue.Queue[bool | None] = queue.Queue()  # a local submission, or None: stop
        self._threads: list[threading.Thread] = []
        self._heartbeat: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- submitting and reading -------------------------------------------------------
    def submit(self, who: str, route: Route, info: InputInfo, sha256: str) -> str:
        """Store a queued analysis of an already stored upload; returns its id. The row's
        ``task`` names every routed capability (``lung-sounds+resp-rate``); ``file_info``
        keeps the route itself."""
        analysis_id = uuid.uuid4().hex
        task = "+".join(route.tasks)
        with self.engine.begin() as conn:
            conn.execute(insert(analyses).values(
                id=analysis_id, status="queued", task=task, file_sha256=sha256, file_name=info.name[:255],
                file_bytes=info.bytes, file_kind=info.kind,
                file_info=json.dumps({"format": info.format, **info.details, "route": route.to_dict()}),
                submitted_by=who, attempts=0, created_at=utcnow(), pulmo_version=pulmo.__version__))
            record(conn, who, "submit", analysis_id=analysis_id, file_sha256=sha256, task=task, status="queued")
        self._wake.put(True)
        return analysis_id

    def get(self, analysis_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(analyses).where(analyses.c.id == analysis_id)).first()

    def page(self, owner: str | None, limit: int, offset: int) -> tuple[list[Any], int]:
        """``(rows, total)``: ``owner``'s analyses (everyone's when None), newest first."""
        where = [] if owner is None else [analyses.c.submitted_by == owner]
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(analyses).where(*where)).scalar_one()
            rows = conn.execute(select(analyses).where(*where).order_by(analyses.c.created_at.desc(), analyses.c.id)
                                .limit(limit).offset(offset)).all()
        return list(rows), int(total)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(analyses.c.status, func.count()).group_by(analyses.c.status)).all()
        return {str(s): int(n) for s, n in rows}

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> int:
        """Re-queue running rows whose lease ran out, start the heartbeat and the workers.
        Returns how many rows were re-queued."""
        requeued = self.recover_expired()
        self._heartbeat = threading.Thread(target=self._beat, name="pulmo-lease-heartbeat", daemon=True)
        self._heartbeat.start()
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"pulmo-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return requeued

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask workers to stop after their current analysis; wait up to ``timeout_s`` in all.
        An analysis still running then stays ``running`` with its lease ended, so that the
        next replica to look (this one restarted, or another) re-queues it."""
        self._stopping.set()  # a worker still busy when we stop waiting takes nothing more
        for _ in self._threads:
            self._wake.put(None)
        for t in self._threads:
            t.join(timeout=timeout_s / max(len(self._threads), 1))
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=timeout_s)
        self._threads, self._heartbeat = [], None
        try:
            with self.engine.begin() as conn:
                conn.execute(update(analyses).where(analyses.c.claimed_by == self.replica,
                                                    analyses.c.status == "running").values(lease_expires_at=utcnow()))
        except Exception:  # the database is away: the leases run out by themselves
            log.warning("could not end this service's leases at shutdown: %s", traceback.format_exc(limit=1))

    # -- leases -------------------------------------------------------------------------
    def lease_until(self) -> Any:
        return utcnow() + timedelta(seconds=self.lease_s)

    def renew(self) -> int:
        """Push this replica's leases forward; returns how many running rows it holds."""
        with self.engine.begin() as conn:
            return conn.execute(update(analyses).where(analyses.c.claimed_by == self.replica,
                                                       analyses.c.status == "running")
                                .values(lease_expires_at=self.lease_until())).rowcount

    def recover_expired(self) -> int:
        """Re-queue each running row whose lease ran out (failed after ``max_attempts``),
        skipping rows another replica is recovering right now. Returns how many were re-queued."""
        requeued = 0
        with self.engine.begin() as conn:
            now = utcnow()
            stale = conn.execute(select(analyses).where(analyses.c.status == "running", lease_expired(now))
                                 .with_for_update(skip_locked=True)).all()
            for row in stale:
                requeued += self._requeue(conn, row, now)
        return requeued

    def _requeue(self, conn: Connection, row: Any, now: Any) -> bool:
        """Re-queue (or fail) one expired row, unless its lease was renewed since it was read."""
        give_up = row.attempts >= self.max_attempts
        status = "failed" if give_up else "queued"
        taken = conn.execute(update(analyses).where(
            analyses.c.id == row.id, analyses.c.status == "running", analyses.c.attempts == row.attempts,
            lease_expired(now)).values(
            status=status, claimed_by=None, lease_expires_at=None, finished_at=now if give_up else None,
            error=f"the service stopped during each of {row.attempts} attempts" if give_up else None))
        if taken.rowcount != 1:
            return False
        record(conn, row.submitted_by, status if give_up else "requeued", analysis_id=row.id,
               file_sha256=row.file_sha256, task=row.task, status=status,
               detail=f"attempt {row.attempts} by {row.claimed_by or 'a previous service'} stopped renewing its lease")
        if not give_up:
            self._wake.put(True)
        return not give_up

    def _beat(self) -> None:
        """Every ``lease_s / 3`` until stopped: renew this replica's leases, recover expired ones."""
        while not self._stopping.wait(self.lease_s / 3):
            try:
                self.renew()
                if n := self.recover_expired():
                    log.info("re-queued %d analyses whose service stopped renewing its lease", n)
            except Exception:  # the database may be briefly unreachable: try again next beat
                log.warning("lease heartbeat: %s", traceback.format_exc(limit=1))

    # -- running ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ran = self.run_next()
            except Exception:  # a bug in one analysis, or the database away, must not take the worker down
                log.error("worker: %s", traceback.format_exc())
                ran = False
            if ran:
                continue
            try:
                if self._wake.get(timeout=self.poll_s) is None:
                    return
            except queue.Empty:
                pass

    def claim_next(self) -> Any:
        """Claim the oldest queued row for this replica; None when there is none. On SQLite
        two workers may read the same row: the one whose conditional UPDATE lands wins, the
        other tries the next row."""
        for _ in range(8):
            with self.engine.begin() as conn:
                found = conn.execute(select(analyses.c.id).where(analyses.c.status == "queued")
                                     .order_by(analyses.c.created_at, analyses.c.id).limit(1)
                                     .with_for_update(skip_locked=True)).first()
                if found is None:
                    return None
                row = self._take(conn, found.id)
            if row is not None:
                return row
        return None

    def _take(self, conn: Connection, analysis_id: str) -> Any:
        """``queued -> running`` under this replica's lease, with an audit row; None if it was not queued."""
        claimed = conn.execute(update(analyses).where(analyses.c.id == analysis_id, analyses.c.status == "queued")
                               .values(status="running", attempts=analyses.c.attempts + 1, started_at=utcnow(),
                                       claimed_by=self.replica, lease_expires_at=self.lease_until()))
        if claimed.rowcount != 1:
            return None  # another worker has it, or it is finished
        row = conn.execute(select(analyses).where(analyses.c.id == analysis_id)).one()
        record(conn, row.submitted_by, "start", analysis_id=analysis_id, file_sha256=row.file_sha256,
               task=row.task, status="running", detail=f"attempt {row.attempts} by {self.replica}")
        return row

    def _finish(self, row: Any, values: dict[str, Any], detail: str | None = None) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(update(analyses).where(analyses.c.id == row.id, analyses.c.status == "running",
                                                       analyses.c.attempts == row.attempts)
                                .values(finished_at=utcnow(), lease_expires_at=None, **values))
            if done.rowcount != 1:
                log.warning("analysis %s attempt %s finished after it was taken over; result dropped", row.id,
                            row.attempts)
                return False
            record(conn, row.submitted_by, values["status"], analysis_id=row.id, file_sha256=row.file_sha256,
                   task=row.task, model=values.get("model"), checkpoint_sha256=values.get("checkpoint_sha256"),
                   status=values["status"], detail=detail)
        return True

    def _fail(self, row: Any, message: str) -> None:
        """Finish ``row`` as failed with ``message``, storage paths replaced by the user's file
        name (the server log keeps the full message)."""
        message = self.storage.scrub(message, row.file_name)
        self._finish(row, {"status": "failed", "error": message}, detail=message)

    def figure_dir(self, row: Any) -> str:
        """Figures of the attempt that produced the stored result: ``results/<id>/a<attempt>``."""
        return f"a{row.attempts}"

    def run_next(self) -> bool:
        """Claim and run the oldest queued analysis; False when there was none."""
        row = self.claim_next()
        if row is None:
            return False
        self.run(row)
        return True

    def run(self, row: Any) -> None:
        """Run a claimed analysis and finish its attempt (done, or failed with a message)."""
        analysis_id = row.id
        try:
            info, route = info_from_row(row)
            primary, further, failed = run_route(self.storage.upload_path(row.file_sha256), route, self.checkpoints)
            result = envelope(primary, info, row.file_sha256, route, further, failed)
        except PulmoError as err:
            log.info("analysis %s (%s) failed: %s", analysis_id, row.file_name, err)
            self._fail(row, str(err))
            return
        except Exception as err:
            log.error("analysis %s: %s", analysis_id, traceback.format_exc())
            self._fail(row, f"internal error: {type(err).__name__}: {err}")
            return
        sub = self.figure_dir(row)
        figures = {f.name: f.png for a in (primary, *further) for f in a.figures}
        for name, png in figures.items():
            self.storage.save_result_file(analysis_id, f"{sub}/{name}.png", png)
        self.storage.save_result_file(analysis_id, f"{sub}/report.html", render_html(result, figures).encode())
        model = result["model"]
        self._finish(row, {"status": "done", "result": json.dumps(result), "model": model["name"],
                           "checkpoint_sha256": model["sha256"]})
