"""The HTTP API's request and response bodies, as the OpenAPI schema shows them (``/docs``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error, on every route: a short machine-readable code and one sentence."""

    error: str = Field(examples=["digital_silence"])
    detail: str = Field(examples=["breath.wav: digital silence (every sample is zero or within 2 steps of it): nothing to analyse"])


class Links(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self", description="this analysis")
    report: str = Field(description="the HTML report (add ?download=1 for an attachment)")
    page: str = Field(description="the web page showing this analysis (a permalink)")
    figures: dict[str, str] | None = Field(None, description="figure name -> PNG, once done")


class FileFacts(BaseModel):
    name: str
    sha256: str
    bytes: int
    kind: str = Field(description="audio or image")
    format: str | None = None


class Routing(BaseModel):
    """What the file holds, which capabilities run on it and why (see docs/front-door.md)."""

    content: str
    tasks: list[str]
    reason: str
    warnings: list[str] = []
    measurements: dict[str, Any] = {}


class AnalysisAccepted(BaseModel):
    id: str
    status: str = Field(examples=["queued"])
    task: str = Field(description="the capabilities that will run, joined by '+'", examples=["lung-sounds+resp-rate"])
    routing: Routing
    file: FileFacts
    links: Links


class Analysis(BaseModel):
    id: str
    status: str = Field(description="queued, running, done or failed")
    task: str
    submitted_by: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    file: FileFacts
    error: str | None = Field(description="why it failed, in words")
    result: dict[str, Any] | None = Field(description="the result envelope once done: routing, warnings, headline, "
                                                      "table, figures, the model and its evaluation, further results under 'also'")
    links: Links


class AnalysisSummary(BaseModel):
    id: str
    status: str
    task: str
    file_name: str
    created_at: str | None
    finished_at: str | None
    headline: str | None = Field(description="the result's first sentence, once done")
    links: Links


class AnalysisPage(BaseModel):
    items: list[AnalysisSummary]
    total: int = Field(description="the caller's analyses in all (every analysis for an admin token)")
    limit: int
    offset: int
    next: str | None = Field(description="the next page, if any")


class Health(BaseModel):
    status: str
    pulmo_version: str
    database: str
    token_required: bool
    workers: int
    capabilities: list[dict[str, Any]]
    analyses: dict[str, int]
    limits: dict[str, float]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status answered with :class:`ErrorBody`."""
    words = {400: "unreadable or malformed input", 401: "missing or invalid API token", 404: "no such analysis (or not yours)",
             409: "the analysis is not done", 413: "too large (bytes, seconds, samples or pixels)",
             415: "not a file kind pulmo takes", 422: "out of scope (silence, tone, not a chest X-ray, ...) or a bad parameter"}
    return {s: {"model": ErrorBody, "description": words.get(s, "error")} for s in statuses}


__all__ = ["Analysis", "AnalysisAccepted", "AnalysisPage", "AnalysisSummary", "ErrorBody", "Health", "Links",
           "error_responses"]
