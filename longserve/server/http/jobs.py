"""HTTP pieces of the jobs API: the Prefer header and job responses."""

import json
from typing import Optional

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from longserve.api.jobs import PENDING, CallbackEvents
from longserve.server.http.errors import ApiError
from longserve.server.jobs.record import Job
from longserve.server.seconds import parse_seconds

POLL_AFTER_S = 1  # Retry-After while a job is pending
MAX_METADATA_BYTES = 16 * 1024


class JobOptions(BaseModel):
    """Query parameters that configure a job, not the model's input: on
    POST .../jobs, and on predict with `Prefer: respond-async` or `wait=N`."""

    ttl_s: Optional[float] = Field(None, gt=0, description="Keep the finished job this long (capped by result_ttl_s).")
    metadata: Optional[str] = Field(None, description="A JSON object stored with the job.")
    callback_url: Optional[str] = Field(
        None, description="POST the job here when it ends (signed; see docs/callbacks.md)."
    )
    callback_events: CallbackEvents = Field("completed", description="all: also when it starts and progresses.")
    input_url: Optional[str] = Field(
        None,
        description=(
            "Fetch the input from here (http, https, or s3:// in the blob store's bucket) when the job runs; "
            "the body must be empty."
        ),
    )
    input_type: Optional[str] = Field(None, description="input_url's media type; default: the origin's Content-Type.")


JOB_PARAMS = set(JobOptions.model_fields)


def parse_prefer(header: Optional[str], max_wait_s: float) -> tuple[bool, Optional[float]]:
    """RFC 7240 `Prefer`: (respond_async, wait_s). Unknown preferences are ignored, as the RFC says."""
    respond_async, wait = False, None
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        name = name.strip().lower()
        if name == "respond-async":
            respond_async = True
        elif name == "wait":
            try:  # inf and nan are refused: nan would slip past the max_wait_s cap
                seconds = parse_seconds(value.strip().strip('"'), positive=False)
            except ValueError:
                raise ApiError(
                    400, "invalid_header", f"Prefer: wait={value!r} is not a number of seconds", header="Prefer"
                ) from None
            wait = min(max(seconds or 0.0, 0.0), max_wait_s)
    return respond_async, wait


def parse_metadata(raw: Optional[str]) -> dict:
    if raw is None:
        return {}
    if len(raw) > MAX_METADATA_BYTES:  # before parsing: the size bounds the work
        raise ApiError(422, "invalid_request", f"metadata is over {MAX_METADATA_BYTES // 1024} KiB")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"metadata must be a JSON object: {exc}") from None
    except RecursionError:
        raise ApiError(422, "invalid_request", "metadata is nested too deeply") from None
    if not isinstance(metadata, dict):
        raise ApiError(422, "invalid_request", "metadata must be a JSON object")
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
    return ApiError(
        409, kind, f"job {job.id} {job.status}: {error.get('message', '')}".strip(), job_id=job.id, job_error=error
    )


def sync_error(job: Job) -> ApiError:
    """A failed job reached through sync predict (Prefer: wait), as predict would answer."""
    error = job.error or {}
    status = {"invalid_input": 422, "job_timeout": 504}.get(str(error.get("type")), 500)
    return ApiError(status, error.get("type", "job_failed"), error.get("message", ""), job_id=job.id)
