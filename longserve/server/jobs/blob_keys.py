"""Where a job's bytes live in the blob store, and their deletion with the job.

A job's input is `inputs/<job id>` (an upload, or what its input_url served),
its large result `results/<job id>`. The keys follow from the id, so the
JobStore deletes them from the id alone, and deleting twice is harmless.
"""

import asyncio
import logging
from collections.abc import Iterable
from typing import Optional

from longserve.server.blobs import Blobs, BlobsUnavailable
from longserve.server.config import BlobsConfig

logger = logging.getLogger(__name__)


def input_key(job_id: str) -> str:
    return f"inputs/{job_id}"


def result_key(job_id: str) -> str:
    return f"results/{job_id}"


class BlobDeleter:
    """Deletes the blobs of expired and forgotten jobs, in the background, so the
    JobStore's lock never waits on the blob store. Keys whose delete failed (the
    store unreachable) stay pending and are tried again at the next reap; they
    are lost if the JobStore restarts meanwhile (a leak, never a wrong delete)."""

    def __init__(self, config: Optional[BlobsConfig]):
        self.config = config
        self.blobs = None if config is None else Blobs(config)
        self.pending: set[str] = set()
        self.task: Optional[asyncio.Task] = None

    def configure(self, config: BlobsConfig) -> None:
        if config != self.config:
            self.config, self.blobs = config, Blobs(config)

    def delete_jobs(self, job_ids: Iterable[str]) -> None:
        if self.blobs is None:
            return  # a store created without a blob store (tests, tools): nothing of theirs is there
        for job_id in job_ids:
            self.pending.update((input_key(job_id), result_key(job_id)))
        self.retry_failed()

    def retry_failed(self) -> None:
        if self.blobs is None or not self.pending or (self.task is not None and not self.task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the store's __init__: the first reap flushes them
            return
        self.task = loop.create_task(self._flush())

    async def _flush(self) -> None:
        assert self.blobs is not None
        for key in sorted(self.pending):
            try:
                await self.blobs.delete(key)
            except BlobsUnavailable as exc:
                logger.warning("deleting %d job blobs failed (%s); retrying at the next reap", len(self.pending), exc)
                return
            self.pending.discard(key)
