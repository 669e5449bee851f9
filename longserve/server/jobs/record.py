"""A job as the server stores it; `Job.view()` is what clients see (longserve.api.jobs)."""

import secrets
import time
from datetime import UTC, datetime
from typing import Any, Optional

from pydantic import BaseModel, Field

from longserve.api.jobs import (
    CallbackEvents,
    CallbackStatus,
    CallbackView,
    JobView,
    Links,
    ProgressView,
    Status,
)


def new_job_id() -> str:
    # A job id is a capability: 144 random bits, url-safe.
    return "job_" + secrets.token_urlsafe(18)


def loggable(job_id: str) -> str:
    """A job id as logs may show it: enough to correlate (36 bits), not to read the job."""
    return job_id[:10] + "…" if job_id.startswith("job_") else job_id


class Progress(BaseModel):
    done: float = 0.0
    total: Optional[float] = None
    message: str = ""

    @property
    def fraction(self) -> Optional[float]:
        if not self.total:
            return None
        return round(min(self.done / self.total, 1.0), 4)


class Callback(BaseModel):
    """Where to POST the job when it ends, and how delivery is going.

    Part of the job record, so delivery survives any restart."""

    url: str
    events: CallbackEvents = "completed"  # "all": also on start and progress
    status: CallbackStatus = "pending"
    attempts: int = 0  # of the final (completed) delivery
    last_status: Optional[int] = None
    last_error: Optional[str] = None
    delivered_at: Optional[float] = None
    next_attempt_at: Optional[float] = None
    owner: Optional[str] = None  # the runner delivering it, until next_attempt_at


class BlobRef(BaseModel):
    """Bytes kept in the blob store (server/blobs.py); the record holds only this."""

    key: str
    size: int
    sha256: str


class Checkpoint(BaseModel):
    """A model's last `ctx.checkpoint` of the job: a later attempt gets `state` as ctx.resume."""

    state: Any = None
    done: Optional[float] = None  # the last progress reported before it: where a later attempt resumes from
    attempt: int


class JobRequest(BaseModel):
    """The request as received, so a runner can parse it again on any attempt."""

    media_type: str  # empty for an input_url without input_type: the origin's Content-Type decides
    params: dict[str, str] = Field(default_factory=dict)
    input_url: Optional[str] = None  # fetched at run time instead of an uploaded body


class Job(BaseModel):
    id: str
    seq: int  # submission order: listing and FIFO queues
    model: str
    tenant: str = "anonymous"  # who submitted it (http/auth.py); only they and admins see it
    status: Status = "queued"
    request: JobRequest
    metadata: dict[str, Any] = Field(default_factory=dict)
    progress: Progress = Field(default_factory=Progress)
    attempts: int = 0
    max_attempts: int = 3
    created_at: float = Field(default_factory=time.time)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    expires_at: Optional[float] = None  # set when the job finishes
    ttl_s: float
    result: Any = None
    error: Optional[dict[str, Any]] = None
    idempotency_key: Optional[str] = None
    body_sha256: str = ""
    input: Optional[BlobRef] = None  # the uploaded body, in the blob store (older jobs: in the backend)
    result_blob: Optional[BlobRef] = None  # a result over jobs.inline_result_kb, instead of `result`
    # The runner holding the job and until when; attempts fences stale runners.
    lease_owner: Optional[str] = None
    lease_expires_at: Optional[float] = None
    callback: Optional[Callback] = None
    checkpoint: Optional[Checkpoint] = None
    resumed_from: Optional[float] = None  # the checkpoint's `done` the current (last) attempt started from
    events: int = 0  # the id of the job's newest event (jobs/events.py)
    partials: int = 0  # partial outputs of the current attempt in its events (checkpoints wait for them)
    # Erased on request: a tombstone (id, tenant, model, times) without input, result or metadata.
    erased: bool = False
    version: int = 0  # bumped on every change; long-polls wait for it to move

    def view(self, with_result: bool = True) -> dict:
        """The job as `GET /v1/jobs/{id}` shows it (a JobView)."""
        end = self.finished_at or time.time()
        view = JobView(
            id=self.id,
            model=self.model,
            status=self.status,
            progress=ProgressView(**self.progress.model_dump(), fraction=self.progress.fraction),
            attempts=self.attempts,
            resumed_from=self.resumed_from,
            max_attempts=self.max_attempts,
            created_at=_iso(self.created_at),
            started_at=_iso(self.started_at),
            finished_at=_iso(self.finished_at),
            expires_at=_iso(self.expires_at),
            queue_wait_s=round((self.started_at or end) - self.created_at, 3),
            run_s=round(end - self.started_at, 3) if self.started_at else None,
            metadata=self.metadata,
            links=Links(self=f"/v1/jobs/{self.id}", result=f"/v1/jobs/{self.id}/result"),
        )
        if self.error is not None:
            view.error = self.error
        if self.callback is not None:
            cb = self.callback
            view.callback = CallbackView(
                url=cb.url,
                events=cb.events,
                status=cb.status,
                attempts=cb.attempts,
                last_status=cb.last_status,
                last_error=cb.last_error,
                delivered_at=_iso(cb.delivered_at),
            )
        if with_result and self.status == "succeeded":
            if self.result_blob is not None:  # too large to show inline: its size, and links.result
                view.result_size = self.result_blob.size
            else:
                view.result = self.result
        # Absent, not null: `result` only on a succeeded job, `error` and `callback` only when there is one.
        return view.model_dump(exclude_unset=True)


def _iso(ts: Optional[float]) -> Optional[str]:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
