"""`GET /v1/jobs/{id}/result`: any result, inline or in the blob store,
streamed with an ETag (its sha256) and single byte ranges (RFC 9110: 206 and
Content-Range; 416 past the end; several ranges or a malformed one: 200 whole)."""

import hashlib
import re
from typing import Optional

from fastapi import Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from longserve.server.blobs import BlobMissing, Blobs, BlobsUnavailable
from longserve.server.http.errors import ApiError
from longserve.server.http.uploads import blobs_unavailable
from longserve.server.jobs.job_io import result_json
from longserve.server.jobs.record import Job

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
JSON = "application/json"


def parse_range(header: Optional[str], size: int) -> Optional[tuple[int, int]]:
    """(start, end inclusive) of a single `Range: bytes=...`; None: send it whole.
    Raises the 416 when the range starts past the end."""
    match = _RANGE.fullmatch((header or "").strip())
    if match is None or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:  # bytes=-N: the last N bytes
        return (max(size - int(last), 0), size - 1) if int(last) > 0 and size else None
    start, end = int(first), min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # malformed: ignored, as the RFC says
    if start >= size:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the range starts at byte {start}; the result has {size} bytes",
            {"Content-Range": f"bytes */{size}"},
            size=size,
        )
    return start, end


async def result_response(job: Job, blobs: Blobs, request: Request, headers: Optional[dict] = None) -> Response:
    headers = {"Accept-Ranges": "bytes", **(headers or {})}
    blob = job.result_blob
    if blob is None:
        data = result_json(job.result)
        size, etag = len(data), hashlib.sha256(data).hexdigest()
    else:
        data, size, etag = None, blob.size, blob.sha256
        url = await blobs.presigned_url(blob.key)
        if url is not None:  # the client downloads it from the store itself
            return RedirectResponse(url, 302, headers={"ETag": f'"{etag}"'})
    headers["ETag"] = f'"{etag}"'
    if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', f'W/"{etag}"'):
        return Response(status_code=304, headers=headers)
    span = parse_range(request.headers.get("range"), size)
    start, end = span or (0, size - 1)
    headers["Content-Length"] = str(end - start + 1)
    status = 200
    if span is not None:
        status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
    if data is not None:
        return Response(data[start : end + 1], status, headers, media_type=JSON)
    assert blob is not None
    try:
        await blobs.stat(blob.key)  # a missing blob is a clean error now, not a broken stream later
    except BlobMissing:
        raise ApiError(
            410, "result_missing", f"job {job.id}'s result is no longer in the blob store", job_id=job.id
        ) from None
    except BlobsUnavailable as exc:
        raise blobs_unavailable(exc, "the result is kept") from None
    return StreamingResponse(blobs.read(blob.key, start, end + 1), status, headers, media_type=JSON)
