"""A job's bytes on the model replica: it reads the input by reference and
stores a large result, so neither passes through the runner or the JobStore.

The runner sends a `JobInput` (the blob's key, the media type and the query
parameters) instead of a parsed Input. The replica opens it: a JSON body is
read and parsed in memory (JSON is parsed whole anyway); a raw body reaches
the model as a local file (`Model.parse_file`: the blob itself on the file
backend, a temporary copy from S3), so a 2 GB recording is never one bytes
object. A result whose JSON is over `jobs.inline_result_kb` goes back to the
blob store (`results/<job id>`) and the replica answers a `StoredResult`.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from longserve.model import Model
from longserve.server.blobs import BlobMissing, Blobs, BlobsUnavailable
from longserve.server.config import BlobsConfig
from longserve.server.errors import InputUnavailable
from longserve.server.inputs import InputParser, is_json
from longserve.server.jobs.blob_keys import result_key
from longserve.server.jobs.record import BlobRef


@dataclass(frozen=True)
class JobInput:
    """A job's input by reference: what the runner sends the replica instead of bytes."""

    job_id: str
    media_type: str
    key: str  # in the blob store
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredResult:
    """The replica's answer when the result went to the blob store."""

    ref: BlobRef


def result_json(result: Any) -> bytes:
    """A result as GET /v1/jobs/{id}/result sends it (FastAPI's encoding, compact)."""
    import json

    return json.dumps(jsonable_encoder(result), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


class JobIO:
    def __init__(self, name: str, cls: type[Model], options: Model.Options, blobs: BlobsConfig,
                 max_json_depth: int, inline_result_kb: float):
        self.name = name
        self.blobs = Blobs(blobs)
        self.parser = InputParser.for_model(name, cls, options, max_json_depth)
        self.inline_result_bytes = int(inline_result_kb * 1024)

    @asynccontextmanager
    async def open(self, job: JobInput) -> AsyncIterator[BaseModel]:
        """The model's Input for `job`, valid inside the block (a local file may back it).
        Raises InvalidRequest / InputRejected for bad input, InputUnavailable when it cannot be read."""
        try:
            if is_json(job.media_type):
                body = await self.blobs.read_all(job.key)
                yield self.parser.parse(self.name, job.media_type, body, job.params)
                return
            async with self.blobs.local_file(job.key) as path:
                inputs = self.parser.parse_file(self.name, job.media_type, path, job.params)
                yield inputs
        except BlobMissing:
            raise InputUnavailable("the job's input is no longer in the blob store (deleted outside longserve?)",
                                   key=job.key) from None
        except BlobsUnavailable as exc:
            raise InputUnavailable(f"the blob store is unavailable: {exc}", retryable=True) from None

    async def store_result(self, job_id: str, result: Any) -> Any:
        """`result` as is when small, else a StoredResult (its JSON written to the blob store)."""
        data = result_json(result)
        if len(data) <= self.inline_result_bytes:
            return result
        try:
            written = await self.blobs.put(result_key(job_id), data)
        except BlobsUnavailable as exc:
            raise InputUnavailable(f"the blob store could not take the result: {exc}", retryable=True) from None
        return StoredResult(BlobRef(key=result_key(job_id), size=written.size, sha256=written.sha256))
