"""The HTTP API and web page.

Routes (JSON unless said otherwise; errors are ``{"error": code, "detail": message}``):

- ``GET /`` the web page; ``GET /health`` status, capabilities, queue counts (no token needed)
- ``POST /analyses`` multipart ``file`` (+ optional ``task``) -> 202 ``{"id", "status", ...}``
- ``GET /analyses?limit=&offset=`` the caller's analyses, newest first (every analysis for an admin)
- ``GET /analyses/{id}`` status, and the result once done
- ``GET /analyses/{id}/report`` the HTML report (``?download=1`` as an attachment)
- ``GET /analyses/{id}/figures/{name}.png`` one figure
- ``GET /docs`` (Swagger UI), ``GET /redoc``, ``GET /openapi.json``: the schema, served without a CDN

With ``require_token`` every route but ``/`` and ``/health`` needs ``Authorization: Bearer
<token>``; without it, requests carrying no token are recorded as ``local``. An analysis
belongs to whoever submitted it: anyone else gets the same 404 as for an unknown id, but an
admin token reads every analysis. Every refusal (401, 413, 415, 400, and each rejected
file) is a ``rejected`` row in the audit trail, under the token's name or ``anonymous``.
Messages name the user's file, never a path of the service's storage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, NoReturn

from fastapi import Depends, FastAPI, File, Form, Query, Request
from fastapi import UploadFile as Upload
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import pulmo
from pulmo.frontdoor.capabilities import capability, capability_names
from pulmo.frontdoor.inputs import InputRejected, Limits, inspect_file
from pulmo.frontdoor.routing import route_file
from pulmo.serve.db import default_url, make_engine, migrate
from pulmo.serve.docs import add_offline_docs
from pulmo.serve.schemas import Analysis, AnalysisAccepted, AnalysisPage, Health, error_responses
from pulmo.serve.jobs import JobRunner, record
from pulmo.serve.storage import Storage, TooLarge
from pulmo.serve.tokens import Caller, who_has

STATIC = Path(__file__).parent / "static"
FIGURE_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
MULTIPART_SLACK = 64 * 1024  # bytes of multipart framing and fields allowed beyond the file itself
log = logging.getLogger("pulmo.serve")


@dataclass
class ServeSettings:
    """How the service runs. ``db_url`` None: SQLite file ``<storage>/pulmo.db``."""

    storage: Path
    db_url: str | None = None
    workers: int = 1
    require_token: bool = False
    limits: Limits = field(default_factory=Limits)
    checkpoints: dict[str, str] = field(default_factory=dict)
    stop_timeout_s: float = 10.0  # at shutdown, how long to wait for running analyses (they are re-queued later)
    lease_s: float = 30.0  # a running analysis whose service stops renewing its lease this long is re-queued

    @property
    def url(self) -> str:
        return self.db_url or default_url(self.storage)


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` before the app reads them
    (by ``Content-Length``; a body without one is counted as it streams). ``on_refused``
    (called in a worker thread with the request's scope and the message) records each refusal."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_refused: Callable[[Scope, str], None] | None = None) -> None:
        self.app, self.max_bytes, self.on_refused = app, max_bytes, on_refused

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body over the limit of {self.max_bytes} bytes"
        if self.on_refused is not None:
            await run_in_threadpool(self.on_refused, scope, detail)
        await _error(413, "too_large", detail)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self.refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise TooLarge(seen)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except TooLarge:
            if not started:
                await self.refuse(scope, receive, send)


def iso(t: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset (SQLite hands back naive datetimes, stored as UTC)."""
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).isoformat()


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: ServeSettings) -> FastAPI:
    """The service. Migrations run, leftovers are re-queued and workers start when it starts."""
    storage = Storage(settings.storage)
    url = settings.url
    migrate(url)
    engine = make_engine(url)
    runner = JobRunner(engine, storage, settings.workers, settings.checkpoints, lease_s=settings.lease_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        removed = storage.clean_tmp()
        requeued = runner.start()
        log.info("pulmo serve: %s; %d analyses re-queued, %d partial uploads removed", url.split("://")[0],
                 requeued, removed)
        yield
        runner.stop(settings.stop_timeout_s)

    app = FastAPI(title="pulmo", version=pulmo.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="AI-assisted respiratory screening: upload a recording or an image, get a result and a "
                  "report. Every error, on every route, is `{\"error\": code, \"detail\": sentence}`.")
    app.state.runner, app.state.storage, app.state.engine, app.state.settings = runner, storage, engine, settings
    add_offline_docs(app)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return _error(err.status, err.code, err.detail, headers)

    def audit_refusal(who: str, err: ApiError, sha: str | None = None, task: str | None = None) -> None:
        """One ``rejected`` row in the audit trail for a refused request."""
        with engine.begin() as conn:
            record(conn, who, "rejected", file_sha256=sha, task=(task or None) and task[:32], status=str(err.status),
                   detail=f"{err.code}: {err.detail}")

    def refuse(who: str, err: ApiError, sha: str | None = None, task: str | None = None) -> NoReturn:
        """Record a refused request in the audit trail, then answer it."""
        audit_refusal(who, err, sha, task)
        raise err

    async def refused(user: Caller, err: ApiError) -> NoReturn:
        """:func:`refuse` from the event loop (the database is written in a worker thread)."""
        await run_in_threadpool(audit_refusal, user.name, err)
        raise err

    def caller(authorization: str) -> Caller:
        """Who an ``Authorization`` header ('' when absent) names. Raises ApiError 401."""
        if authorization:
            scheme, _, token = authorization.partition(" ")
            found = who_has(engine, token.strip()) if scheme.lower() == "bearer" else None
            if found is None:
                raise ApiError(401, "bad_token", "the API token is not valid (or was revoked)")
            return found
        if settings.require_token:
            raise ApiError(401, "token_required", "this service needs an API token: send 'Authorization: Bearer <token>'")
        return Caller("local")

    def who(request: Request) -> Caller:
        try:
            return caller(request.headers.get("authorization", ""))
        except ApiError as err:
            refuse("anonymous", err)

    def upload_form_refused(request: Request, detail: str) -> JSONResponse:
        """A POST /analyses whose form FastAPI could not read or validate: 400 ``bad_form``, audited."""
        try:
            name = caller(request.headers.get("authorization", "")).name
        except ApiError:
            name = "anonymous"
        err = ApiError(400, "bad_form", f"the multipart form was refused: {detail}")
        audit_refusal(name, err)
        return _error(err.status, err.code, err.detail)

    def is_upload(request: Request) -> bool:
        return request.method == "POST" and request.url.path == "/analyses"

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
        """Starlette's own errors (unknown route, wrong method, unparsable form) in the one error shape."""
        if isinstance(err.__cause__, TooLarge):  # FastAPI read the form and met BodyLimit's count: BodyLimit answers
            raise err.__cause__
        if is_upload(request) and err.status_code == 400:
            return await run_in_threadpool(upload_form_refused, request, str(err.detail))
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "bad_request")
        detail = {404: f"no route {request.url.path}",
                  405: f"{request.method} is not allowed on {request.url.path}"}.get(err.status_code, str(err.detail))
        return _error(err.status_code, code, detail, dict(err.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "path", "body"))
        detail = f"{where}: {first.get('msg', 'invalid value')}"
        if is_upload(request):
            return await run_in_threadpool(upload_form_refused, request, f"send one file in the field 'file' and at "
                                           f"most a text field 'task' ({detail})")
        return _error(422, "bad_parameter", detail)

    def body_too_large(scope: Scope, detail: str) -> None:
        """Audit a 413 from :class:`BodyLimit` under the token's name (``anonymous`` if not valid)."""
        try:
            name = caller(Headers(scope=scope).get("authorization", "")).name
        except ApiError:
            name = "anonymous"
        audit_refusal(name, ApiError(413, "too_large", detail))

    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_upload_bytes + MULTIPART_SLACK,
                       on_refused=body_too_large)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        caps = [{"name": n, "kinds": sorted(capability(n).kinds)} for n in capability_names()]
        return {"status": "ok", "pulmo_version": pulmo.__version__, "database": engine.dialect.name,
                "token_required": settings.require_token, "workers": settings.workers, "capabilities": caps,
                "analyses": runner.counts(),
                "limits": dataclasses.asdict(settings.limits)}

    def accept(user: str, stream: IO[bytes], filename: str, task: str | None) -> dict[str, Any]:
        limits = settings.limits
        try:
            tmp, sha, _ = storage.spool(iter(lambda: stream.read(1 << 20), b""), limits.max_upload_bytes)
        except TooLarge:
            refuse(user, ApiError(413, "too_large", f"{filename}: over the limit of {limits.max_upload_bytes} bytes"),
                   None, task)
        try:
            info = inspect_file(tmp, limits, name=filename)
            route = route_file(tmp, info, task)
        except InputRejected as err:
            storage.discard(tmp)
            log.info("upload %s refused: %s", filename, err)
            refuse(user, ApiError(err.status, err.code, storage.scrub(str(err), filename)), sha, task)
        storage.commit(tmp, sha)
        analysis_id = runner.submit(user, route, info, sha)
        return {"id": analysis_id, "status": "queued", "task": "+".join(route.tasks), "routing": route.to_dict(),
                "file": {"name": filename, "sha256": sha, "bytes": info.bytes, "kind": info.kind, "format": info.format},
                "links": links(analysis_id)}

    def links(analysis_id: str, figures: list[str] | None = None) -> dict[str, Any]:
        base = f"/analyses/{analysis_id}"
        out: dict[str, Any] = {"self": base, "report": f"{base}/report", "page": f"/?analysis={analysis_id}"}
        if figures is not None:
            out["figures"] = {n: f"{base}/figures/{n}.png" for n in figures}
        return out

    @app.post("/analyses", status_code=202, response_model=AnalysisAccepted,
              responses=error_responses(400, 401, 413, 415, 422))
    async def create_analysis(
        request: Request,
        file: Upload | None = File(None, description="the recording (WAV, FLAC, OGG, AIFF, MP3) or image "
                                       "(PNG, JPEG, TIFF, BMP, GIF)"),
        task: str | None = Form(None, description="run this capability instead of choosing from the content: "
                                "lung-sounds, resp-rate, cxr or detect"),
        user: Caller = Depends(who),
    ) -> JSONResponse:
        """Upload one file. It is checked and routed by its content now (refusals answer at once,
        4xx, and are audited); the analysis then runs in the background: poll ``links.self``."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            await refused(user, ApiError(415, "not_multipart", "send the file as multipart/form-data in a field named "
                                         "'file' (and optionally 'task')"))
        form = await request.form()  # parsed already for the parameters above; here for what they do not show
        if len([v for v in form.values() if isinstance(v, UploadFile)]) > 1 or len(form) > 4:
            await refused(user, ApiError(400, "bad_form", "the multipart form was refused: send one file in the "
                                         "field 'file' and at most a 'task'"))
        if not isinstance(file, UploadFile):
            await refused(user, ApiError(400, "no_file", "no file: send it in the multipart field named 'file'"))
        filename = Path(file.filename or "upload").name[:255] or "upload"
        body = await run_in_threadpool(accept, user.name, file.file, filename, task or None)
        await file.close()
        return JSONResponse(body, status_code=202, headers={"Location": body["links"]["self"]})

    @app.get("/analyses", response_model=AnalysisPage, responses=error_responses(401, 422))
    def list_analyses(limit: int = Query(20, ge=1, le=100, description="analyses per page"),
                      offset: int = Query(0, ge=0, description="how many to skip (newest first)"),
                      user: Caller = Depends(who)) -> dict[str, Any]:
        """The caller's analyses, newest first (an admin token sees every analysis)."""
        rows, total = runner.page(None if user.admin else user.name, limit, offset)
        items = []
        for row in rows:
            result = json.loads(row.result) if row.result else {}
            items.append({"id": row.id, "status": row.status, "task": row.task, "file_name": row.file_name,
                          "created_at": iso(row.created_at), "finished_at": iso(row.finished_at),
                          "headline": result.get("headline"), "links": links(row.id)})
        more = offset + len(rows) < total
        return {"items": items, "total": total, "limit": limit, "offset": offset,
                "next": f"/analyses?limit={limit}&offset={offset + limit}" if more else None}

    def row_or_404(analysis_id: str, user: Caller) -> Any:
        """The analysis, if ``user`` may read it; anything else is the same 404 (existence is not shown)."""
        row = runner.get(analysis_id) if re.fullmatch(r"[0-9a-f]{32}", analysis_id) else None
        if row is None or not user.may_read(row.submitted_by):
            raise ApiError(404, "not_found", f"no analysis {analysis_id!r}")
        return row

    @app.get("/analyses/{analysis_id}", response_model=Analysis, responses=error_responses(401, 404))
    def get_analysis(analysis_id: str, user: Caller = Depends(who)) -> dict[str, Any]:
        row = row_or_404(analysis_id, user)
        result = json.loads(row.result) if row.result else None
        figures = ([f["name"] for part in (result, *result.get("also", [])) for f in part.get("figures", [])]
                   if result else None)
        return {"id": row.id, "status": row.status, "task": row.task, "submitted_by": row.submitted_by,
                "created_at": iso(row.created_at), "started_at": iso(row.started_at),
                "finished_at": iso(row.finished_at), "attempts": row.attempts,
                "file": {"name": row.file_name, "sha256": row.file_sha256, "bytes": row.file_bytes,
                         "kind": row.file_kind},
                "error": row.error, "result": result, "links": links(row.id, figures)}

    def done_row(analysis_id: str, user: Caller) -> Any:
        row = row_or_404(analysis_id, user)
        if row.status != "done":
            detail = f"analysis {analysis_id} is {row.status}" + (f": {row.error}" if row.error else "")
            raise ApiError(409, "not_done", detail)
        return row

    @app.get("/analyses/{analysis_id}/report", response_class=HTMLResponse, responses=error_responses(401, 404, 409))
    def get_report(analysis_id: str, download: bool = False, user: Caller = Depends(who)) -> Response:
        row = done_row(analysis_id, user)
        path = storage.result_dir(row.id) / runner.figure_dir(row) / "report.html"
        headers = {}
        if download:
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(row.file_name).stem)[:80]  # no quotes or line breaks in a header
            headers["Content-Disposition"] = f'attachment; filename="pulmo-report-{stem}.html"'
        return Response(path.read_bytes(), media_type="text/html; charset=utf-8", headers=headers)

    @app.get("/analyses/{analysis_id}/figures/{name}.png", responses={
        200: {"content": {"image/png": {}}, "description": "the figure"}, **error_responses(401, 404, 409)})
    def get_figure(analysis_id: str, name: str, user: Caller = Depends(who)) -> Response:
        row = done_row(analysis_id, user)
        path = storage.result_dir(row.id) / runner.figure_dir(row) / f"{name}.png"
        if not FIGURE_RE.match(name) or not path.is_file():
            raise ApiError(404, "not_found", f"analysis {analysis_id} has no figure {name!r}")
        return Response(path.read_bytes(), media_type="image/png")

    return app
