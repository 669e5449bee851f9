"""OpenAI batches as longserve jobs: each line of the input file becomes one
durable job; the batch's record (which job answers which custom_id) is kept
in the file store (server/openai/files.py). A batch's status and counts are
read from its jobs' states each time, so there is no second state machine to
keep in step; the output and error files are written once every job ended
(`finalized_at`), a cancelled batch's too (with what did run). A batch read
after its completion_window with lines still pending expires: those lines
are cancelled and reported `batch_expired` in the error file, the batch ends
`expired` with what did finish in its output file.
Pure functions; the routes are in server/http/openai_batches.py."""

import json
import time
from typing import Any, Optional

from pydantic import ValidationError

from longserve.api.jobs import PENDING
from longserve.server.errors import InvalidRequest
from longserve.server.openai.bodies import BatchLine, window_s
from longserve.server.openai.formats import embedding_list

MAX_LINES = 10_000


def parse_lines(data: bytes) -> list[BatchLine]:
    """The input file's lines; the first bad one is refused by its number, so nothing runs."""
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for number, text in enumerate(data.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = BatchLine.model_validate_json(text)
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            raise InvalidRequest(f"input file line {number}: {problem}", param="input_file_id") from None
        if line.custom_id in seen:
            raise InvalidRequest(
                f"input file line {number}: custom_id {line.custom_id!r} is used twice", param="input_file_id"
            )
        seen.add(line.custom_id)
        lines.append(line)
    if not lines:
        raise InvalidRequest("the input file holds no requests", param="input_file_id")
    if len(lines) > MAX_LINES:
        raise InvalidRequest(f"{len(lines)} requests; at most {MAX_LINES} per batch", param="input_file_id")
    return lines


def counts(jobs: list[Any]) -> dict[str, int]:
    done = [job for job in jobs if job is None or job.status not in PENDING]
    completed = sum(job is not None and job.status == "succeeded" for job in jobs)
    return {"total": len(jobs), "completed": completed, "failed": len(done) - completed}


def finished(jobs: list[Any]) -> bool:
    return all(job is None or job.status not in PENDING for job in jobs)


def expires_at(record: dict) -> int:
    return record["created_at"] + window_s(record["completion_window"])


def past_window(record: dict, jobs: list[Any], now: float) -> bool:
    """True when the batch must expire now: its window passed with lines still pending."""
    open_ = record.get("finalized_at") is None and record.get("cancelled_at") is None
    return open_ and record.get("expired_at") is None and now >= expires_at(record) and not finished(jobs)


def view(record: dict, jobs: list[Any]) -> dict:
    """The batch as OpenAI's Batch object, its status from its jobs."""
    done, finalized, cancelled = finished(jobs), record.get("finalized_at"), record.get("cancelled_at")
    expired = record.get("expired_at")
    if cancelled is not None:
        status = "cancelled" if done and finalized else "cancelling"
    elif expired is not None:
        status = "expired" if done and finalized else "finalizing"
    elif done:
        status = "completed" if finalized else "finalizing"
    else:
        status = "in_progress"
    return {
        "id": record["id"],
        "object": "batch",
        "endpoint": record["endpoint"],
        "errors": None,
        "input_file_id": record["input_file_id"],
        "completion_window": record["completion_window"],
        "status": status,
        "output_file_id": record.get("output_file_id"),
        "error_file_id": record.get("error_file_id"),
        "created_at": record["created_at"],
        "in_progress_at": record["created_at"],
        "expires_at": expires_at(record),
        "finalizing_at": finalized,
        "completed_at": finalized if cancelled is None and expired is None else None,
        "failed_at": None,  # a bad input file is refused at create (400): no batch fails later
        "expired_at": expired,
        "cancelling_at": cancelled,
        "cancelled_at": finalized if cancelled is not None else None,
        "request_counts": counts(jobs),
        "metadata": record.get("metadata"),
    }


def outputs(record: dict, jobs: list[Any]) -> tuple[bytes, bytes]:
    """(output file, error file): one JSON line per request, by custom_id."""
    ok, failed = [], []
    for item, job in zip(record["items"], jobs, strict=True):
        line = {"id": f"batch_req_{job.id if job else item['job_id']}", "custom_id": item["custom_id"]}
        answer = response_of(item, job, expired=record.get("expired_at") is not None)
        if answer.get("status_code") == 200:
            ok.append({**line, "response": answer, "error": None})
        elif "status_code" in answer:
            failed.append({**line, "response": answer, "error": None})
        else:
            failed.append({**line, "response": None, "error": answer})
    return jsonl(ok), jsonl(failed)


def response_of(item: dict, job: Any, expired: bool = False) -> dict:
    """A line's response ({status_code, request_id, body}), or its error ({code, message})."""
    if job is None:
        return {"code": "job_missing", "message": "the request's job is gone (expired and forgotten)"}
    if expired and job.status == "cancelled":  # cancelled because the window passed
        return {"code": "batch_expired", "message": "the request did not finish within the batch's completion_window"}
    if job.status in ("cancelled", "expired"):
        return {"code": f"batch_{job.status}", "message": f"the request was {job.status} before it ran"}
    if job.status == "failed":
        error = job.error or {}
        status = 400 if error.get("type") == "invalid_input" else 500
        return {
            "status_code": status,
            "request_id": job.id,
            "body": {
                "error": {
                    "message": error.get("message", "failed"),
                    "type": "server_error" if status == 500 else "invalid_request_error",
                    "param": None,
                    "code": error.get("type"),
                }
            },
        }
    result = job.result
    if item.get("dimensions") is not None and item["dimensions"] != result["dim"]:
        return {
            "status_code": 400,
            "request_id": job.id,
            "body": {
                "error": {
                    "message": f"the model makes {result['dim']}-dimensional vectors and cannot shorten them",
                    "type": "invalid_request_error",
                    "param": "dimensions",
                    "code": "unsupported_option",
                }
            },
        }
    return {
        "status_code": 200,
        "request_id": job.id,
        "body": embedding_list(result, item["model"], item["encoding_format"]),
    }


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def new_record(batch_id: str, request: Any, items: list[dict]) -> dict:
    return {
        "id": batch_id,
        "endpoint": request.endpoint,
        "input_file_id": request.input_file_id,
        "completion_window": request.completion_window,
        "metadata": request.metadata,
        "created_at": int(time.time()),
        "items": items,
        "cancelled_at": None,
        "expired_at": None,
        "finalized_at": None,
        "output_file_id": None,
        "error_file_id": None,
    }


def output_file_ids(batch_id: str) -> tuple[str, str]:
    """Fixed per batch, so two readers that both finish it write the same files."""
    suffix = batch_id.removeprefix("batch-")
    return f"file-{suffix}-output", f"file-{suffix}-errors"


def stamp(record: dict, key: str, when: Optional[int] = None) -> dict:
    return {**record, key: when or int(time.time())}
