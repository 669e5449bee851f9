"""The jobs API's bodies, shared by the server and the SDK (no server imports)."""

from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
PENDING = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
CallbackEvents = Literal["completed", "all"]
CallbackStatus = Literal["pending", "delivered", "failed"]


class ProgressView(BaseModel):
    done: float
    total: Optional[float] = None
    message: str = ""
    fraction: Optional[float] = None


class CallbackView(BaseModel):
    url: str
    events: CallbackEvents
    status: CallbackStatus
    attempts: int
    last_status: Optional[int] = None
    last_error: Optional[str] = None
    delivered_at: Optional[str] = None


class Links(BaseModel):
    self: str
    result: str


class JobView(BaseModel):
    """`GET /v1/jobs/{id}`: times are ISO 8601 UTC; `result` only once succeeded."""

    id: str
    model: str
    status: Status
    progress: ProgressView
    attempts: int
    # Where the last attempt resumed from (the checkpoint's progress.done); null: it started from the beginning.
    resumed_from: Optional[float] = None
    max_attempts: int
    created_at: str
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    expires_at: Optional[str] = None
    queue_wait_s: float
    run_s: Optional[float] = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    links: Links
    error: Optional[dict[str, Any]] = None
    callback: Optional[CallbackView] = None
    result: Any = None
    # Instead of `result` when the result is large (over jobs.inline_result_kb):
    # its size in bytes; GET links.result streams it (Range requests too).
    result_size: Optional[int] = None


class JobPage(BaseModel):
    """`GET /v1/jobs`: newest first; pass next_cursor to get the next page."""

    jobs: list[JobView]
    next_cursor: Optional[int] = None
