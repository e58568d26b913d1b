"""Analyses as database rows, run by a pool of worker threads.

The database is the queue's truth; an in-memory queue only wakes workers. A worker claims
a row (``queued -> running``, ``attempts + 1``) in one conditional UPDATE, runs the
capability, and finishes only the attempt it claimed. At start, rows left ``running`` by a
service that died are put back to ``queued`` (or failed after ``max_attempts``), and every
queued row is dispatched again: nothing accepted is lost.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

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


class JobRunner:
    """``workers`` threads running analyses. ``checkpoints``: task -> checkpoint path (bundled when absent)."""

    def __init__(self, engine: Engine, storage: Storage, workers: int = 1,
                 checkpoints: Mapping[str, str] | None = None, max_attempts: int = 3) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        self.engine, self.storage = engine, storage
        self.workers, self.max_attempts = workers, max_attempts
        self.checkpoints = dict(checkpoints or {})
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
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
        self._queue.put(analysis_id)
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
        """Re-queue what a dead service left running, dispatch all queued rows, start the
        workers. Returns how many rows were re-queued."""
        requeued = 0
        with self.engine.begin() as conn:
            stale = conn.execute(select(analyses).where(analyses.c.status == "running")).all()
            for row in stale:
                give_up = row.attempts >= self.max_attempts
                status = "failed" if give_up else "queued"
                conn.execute(update(analyses).where(analyses.c.id == row.id).values(
                    status=status, error=f"the service stopped during each of {row.attempts} attempts" if give_up
                    else None, finished_at=utcnow() if give_up else None))
                record(conn, row.submitted_by, "failed" if give_up else "requeued", analysis_id=row.id,
                       file_sha256=row.file_sha256, task=row.task, status=status,
                       detail=f"left running by a previous service (attempt {row.attempts})")
                requeued += not give_up
            pending = conn.execute(select(analyses.c.id).where(analyses.c.status == "queued")
                                   .order_by(analyses.c.created_at)).scalars().all()
        for analysis_id in pending:
            self._queue.put(analysis_id)
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"pulmo-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return requeued

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask workers to stop after their current analysis; wait up to ``timeout_s`` in all.
        An analysis still running then stays ``running`` in the database and is re-queued
        by the next start."""
        self._stopping.set()  # a worker still busy when we stop waiting takes nothing more
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=timeout_s / max(len(self._threads), 1))
        self._threads = []

    # -- running ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set() and (analysis_id := self._queue.get()) is not None:
            try:
                self.run_one(analysis_id)
            except Exception:  # a bug in one analysis must not take the worker down
                log.error("analysis %s: %s", analysis_id, traceback.format_exc())

    def _claim(self, analysis_id: str) -> Any:
        with self.engine.begin() as conn:
            claimed = conn.execute(update(analyses).where(analyses.c.id == analysis_id, analyses.c.status == "queued")
                                   .values(status="running", attempts=analyses.c.attempts + 1, started_at=utcnow()))
            if claimed.rowcount != 1:
                return None  # another worker or service has it, or it is finished
            row = conn.execute(select(analyses).where(analyses.c.id == analysis_id)).one()
            record(conn, row.submitted_by, "start", analysis_id=analysis_id, file_sha256=row.file_sha256,
                   task=row.task, status="running", detail=f"attempt {row.attempts}")
        return row

    def _finish(self, row: Any, values: dict[str, Any], detail: str | None = None) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(update(analyses).where(analyses.c.id == row.id, analyses.c.status == "running",
                                                       analyses.c.attempts == row.attempts)
                                .values(finished_at=utcnow(), **values))
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

    def run_one(self, analysis_id: str) -> None:
        row = self._claim(analysis_id)
        if row is None:
            return
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
