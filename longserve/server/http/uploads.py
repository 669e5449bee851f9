"""A job's body, streamed into the blob store as it arrives: the gateway never
holds it whole (a JSON body small enough for sync predict is also kept, to be
validated at submit as predict validates it)."""

import logging
from collections.abc import AsyncIterator, Callable
from typing import Optional

from fastapi import Request

from longserve.server.blobs import Blobs, BlobsUnavailable, BlobTooLarge, Written
from longserve.server.http.errors import ApiError

logger = logging.getLogger("ray.serve")

BLOBS_RETRY_AFTER_S = 5


def blobs_unavailable(exc: Exception, consequence: str = "the job was not accepted") -> ApiError:
    return ApiError(
        503,
        "blobs_unavailable",
        f"the blob store is unavailable ({exc}); {consequence}. Retry after {BLOBS_RETRY_AFTER_S} s.",
        {"Retry-After": str(BLOBS_RETRY_AFTER_S)},
    )


async def receive_upload(
    request: Request, blobs: Blobs, key: str, limit: int, keep: int, too_large: Callable[[int], ApiError]
) -> tuple[Written, Optional[bytes]]:
    """Stream the request's body into `key`, up to `limit` bytes; also the body
    itself when it is at most `keep` bytes. Over the limit (as declared by
    Content-Length, or as streamed so far): `too_large`, and nothing is kept."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared))
    kept: Optional[list[bytes]] = [] if keep > 0 else None
    size = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal kept, size
        async for chunk in request.stream():
            size += len(chunk)
            if kept is not None:
                if size <= keep:
                    kept.append(chunk)
                else:
                    kept = None  # too large to validate here: the replica does
            yield chunk

    try:
        written = await blobs.write(key, chunks(), limit)
    except BlobTooLarge as exc:
        raise too_large(exc.size) from None
    except BlobsUnavailable as exc:
        await forget(blobs, key)
        raise blobs_unavailable(exc) from None
    except BaseException:  # the client went away mid-upload: leave no partial blob
        await forget(blobs, key)
        raise
    return written, None if kept is None else b"".join(kept)


async def forget(blobs: Blobs, key: str) -> None:
    """Delete a blob no job will use; a store that is down keeps it (logged)."""
    try:
        await blobs.delete(key)
    except BlobsUnavailable as exc:
        logger.warning("could not delete the unused blob %s: %s", key.split("/")[0], exc)
