"""A job's bytes on the model replica: it reads the input by reference and
stores a large result, so neither passes through the runner or the JobStore.

The runner sends a `JobInput` (the blob's key, the media type and the query
parameters) instead of a parsed Input. The replica opens it: a JSON body is
read and parsed in memory (JSON is parsed whole anyway); a raw body reaches
the model as a local file (`Model.parse_file`: the blob itself on the file
backend, a temporary copy from S3), so a 2 GB recording is never one bytes
object. A result whose JSON is over `jobs.inline_result_kb` goes back to the
blob store (`results/<job id>`) and the replica answers a `StoredResult`.
An input given by URL is fetched here first (jobs/fetch.py), on every attempt.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from longserve.model import Model
from longserve.server.blobs import BlobMissing, Blobs, BlobsUnavailable
from longserve.server.config import AppConfig, BlobsConfig, InputsConfig
from longserve.server.errors import InputUnavailable
from longserve.server.inputs import InputParser, is_json
from longserve.server.jobs.blob_keys import result_key
from longserve.server.jobs.fetch import Fetcher, s3_location
from longserve.server.jobs.record import BlobRef
from longserve.server.jobs.store import store_name


@dataclass(frozen=True)
class JobInput:
    """A job's input by reference: what the runner sends the replica instead of bytes."""

    job_id: str
    media_type: str
    key: str  # in the blob store
    params: dict[str, str] = field(default_factory=dict)
    url: Optional[str] = None  # fetched into `key` first (s3:// in the blob store's bucket: read in place)
    attempt: int = 0  # the job's attempt this run is; its checkpoints are fenced by it
    resume: Any = None  # the job's last checkpoint, for ctx.resume


@dataclass(frozen=True)
class JobIOSettings:
    """What a model replica needs of the app's config to read inputs and store results."""

    blobs: BlobsConfig
    inputs: InputsConfig
    max_json_depth: int = 32
    inline_result_kb: float = 256.0
    max_input_mb: float = 4096.0
    store_name: Optional[str] = None  # the JobStore actor, for checkpoints and fencing

    @classmethod
    def of(cls, config: AppConfig) -> "JobIOSettings":
        return cls(
            config.blobs,
            config.inputs,
            config.max_json_depth,
            config.jobs.inline_result_kb,
            config.jobs.max_input_mb,
            store_name(config.jobs),
        )


@dataclass(frozen=True)
class StoredResult:
    """The replica's answer when the result went to the blob store."""

    ref: BlobRef


def result_json(result: Any) -> bytes:
    """A result as GET /v1/jobs/{id}/result sends it (FastAPI's encoding, compact)."""
    import json

    return json.dumps(jsonable_encoder(result), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
        "utf-8"
    )


class JobIO:
    def __init__(self, name: str, cls: type[Model], options: Model.Options, settings: JobIOSettings):
        self.name = name
        self.settings = settings
        self.blobs = Blobs(settings.blobs)
        # s3:// inputs name keys of the whole bucket, not under blobs.prefix.
        s3 = settings.blobs.backend == "s3"
        self.bucket = Blobs(settings.blobs.model_copy(update={"prefix": ""})) if s3 else None
        self.parser = InputParser.for_model(name, cls, options, settings.max_json_depth)
        self.inline_result_bytes = int(settings.inline_result_kb * 1024)
        self.fetcher = Fetcher(settings.inputs, int(settings.max_input_mb * 1024 * 1024))

    @asynccontextmanager
    async def open(self, job: JobInput) -> AsyncIterator[BaseModel]:
        """The model's Input for `job`, valid inside the block (a local file may back it).
        Raises InvalidRequest / InputRejected for bad input, InputUnavailable when it cannot be read."""
        blobs, key, media_type = self.blobs, job.key, job.media_type
        try:
            if job.url is not None and job.url.lower().startswith("s3://") and self.bucket is not None:
                blobs, key = self.bucket, s3_location(job.url)[1]
            elif job.url is not None:
                _, origin_type = await self.fetcher.fetch(job.url, self.blobs, job.key)
                media_type = media_type or origin_type
            media_type = media_type or "application/octet-stream"
            if is_json(media_type):
                body = await blobs.read_all(key)
                yield self.parser.parse(self.name, media_type, body, job.params)
                return
            async with blobs.local_file(key) as path:
                inputs = self.parser.parse_file(self.name, media_type, path, job.params)
                yield inputs
        except BlobMissing:
            where = job.url or "the blob store"
            raise InputUnavailable(
                f"the job's input is no longer in {where} (deleted outside longserve?)", key=key
            ) from None
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
