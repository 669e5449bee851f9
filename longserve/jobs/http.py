"""HTTP pieces of the jobs API: the Prefer header and job responses."""

import json
from typing import Optional

from fastapi.responses import JSONResponse

from longserve.errors import ApiError
from longserve.jobs.record import PENDING, Job

POLL_AFTER_S = 1  # Retry-After while a job is pending
# Query parameters of POST .../jobs that configure the job, not the model input.
JOB_PARAMS = {"ttl_s", "metadata", "callback_url", "callback_events"}


def parse_prefer(header: Optional[str], max_wait_s: float) -> tuple[bool, Optional[float]]:
    """RFC 7240 `Prefer`: (respond_async, wait_s). Unknown preferences are ignored, as the RFC says."""
    respond_async, wait = False, None
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        name = name.strip().lower()
        if name == "respond-async":
            respond_async = True
        elif name == "wait":
            try:
                wait = min(max(float(value.strip().strip('"')), 0.0), max_wait_s)
            except ValueError:
                raise ApiError(400, "invalid_header", f"Prefer: wait={value!r} is not a number of seconds", header="Prefer")
    return respond_async, wait


def parse_metadata(raw: Optional[str]) -> dict:
    if raw is None:
        return {}
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"metadata must be a JSON object: {exc}") from None
    if not isinstance(metadata, dict):
        raise ApiError(422, "invalid_request", "metadata must be a JSON object")
    if len(raw) > 16 * 1024:
        raise ApiError(422, "invalid_request", "metadata is over 16 KiB")
    return metadata


def job_response(job: Job, status_code: int = 200, headers: Optional[dict] = None) -> JSONResponse:
    headers = dict(headers or {})
    if job.status in PENDING:
        headers.setdefault("Retry-After", str(POLL_AFTER_S))
    return JSONResponse(job.view(), status_code=status_code, headers=headers)


def accepted(job: Job, headers: Optional[dict] = None) -> JSONResponse:
    """202 with the job and where to poll it."""
    return job_response(job, 202, {"Location": f"/v1/jobs/{job.id}", **(headers or {})})


def job_error(job: Job) -> ApiError:
    """The error for a job's result that will never come."""
    if job.status == "expired":
        return ApiError(410, "expired", f"job {job.id} finished and its result expired", job_id=job.id)
    error = job.error or {}
    kind = "job_cancelled" if job.status == "cancelled" else "job_failed"
    return ApiError(409, kind, f"job {job.id} {job.status}: {error.get('message', '')}".strip(),
                    job_id=job.id, job_error=error)


def sync_error(job: Job) -> ApiError:
    """A failed job reached through sync predict (Prefer: wait), as predict would answer."""
    error = job.error or {}
    status = {"invalid_input": 422, "job_timeout": 504}.get(error.get("type"), 500)
    return ApiError(status, error.get("type", "job_failed"), error.get("message", ""), job_id=job.id)
