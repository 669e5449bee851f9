"""Where job inputs and large results live: a local directory or an
S3-compatible bucket, behind one small interface.

Bytes never pass through an actor: the gateway streams an upload in with
`write`, a model replica reads it back with `read` (or `local_file`), and
the job record keeps only the key. Both backends are obstore stores, so a
directory and a bucket behave the same (streamed multipart writes, ranged
reads, ETags); obstore is async-native, which the gateway's event loop
needs, and one library covers both backends.
"""

import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, S3Store

from longserve.server.config import BlobsConfig

__all__ = ["BlobsConfig", "Blobs", "BlobMissing", "BlobTooLarge", "BlobsUnavailable", "Written", "Stat"]

# Uploads reach the store in parts of this size: the most an upload holds in memory.
PART_BYTES = 8 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024


class BlobMissing(Exception):
    """The blob is not in the store (deleted, or never written)."""


class BlobTooLarge(Exception):
    """An upload passed its limit; what was written of it is deleted."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"{size} bytes (or more) is over the limit of {limit} bytes")
        self.size, self.limit = size, limit


class BlobsUnavailable(Exception):
    """The store could not be reached or refused the operation."""


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str


@dataclass(frozen=True)
class Stat:
    size: int
    etag: str


class Blobs:
    def __init__(self, config: BlobsConfig):
        self.config = config
        self.store = make_store(config)

    async def write(self, key: str, chunks: AsyncIterable[bytes], limit: Optional[int] = None) -> Written:
        """Stream `chunks` into `key`, hashing as they pass. Over `limit`: BlobTooLarge, and nothing kept."""
        digest, size = hashlib.sha256(), 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise BlobTooLarge(size, limit)
                digest.update(chunk)
                yield chunk

        try:
            await obstore.put_async(self.store, key, counted(), chunk_size=PART_BYTES, max_concurrency=2)
        except BlobTooLarge:
            await self.delete(key)  # a multipart upload that failed leaves nothing; a file may be left
            raise
        except obstore.exceptions.BaseError as exc:
            raise BlobsUnavailable(f"the blob store failed the write: {first_line(exc)}") from exc
        return Written(size, digest.hexdigest())

    async def put(self, key: str, data: bytes) -> Written:
        try:
            await obstore.put_async(self.store, key, data)
        except obstore.exceptions.BaseError as exc:
            raise BlobsUnavailable(f"the blob store failed the write: {first_line(exc)}") from exc
        return Written(len(data), hashlib.sha256(data).hexdigest())

    async def stat(self, key: str) -> Stat:
        try:
            meta = await obstore.head_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            raise BlobMissing(key) from None
        except obstore.exceptions.BaseError as exc:
            raise BlobsUnavailable(f"the blob store failed a read: {first_line(exc)}") from exc
        return Stat(meta["size"], (meta["e_tag"] or "").strip('"'))

    async def read(self, key: str, start: int = 0, end: Optional[int] = None) -> AsyncIterator[bytes]:
        """The bytes of `key` from `start` up to `end` (exclusive), streamed."""
        whole = not start and end is None
        span: Any = (start, end) if end is not None else {"offset": start}
        try:
            result = await obstore.get_async(self.store, key, options=None if whole else {"range": span})
        except (NotFoundError, FileNotFoundError):
            raise BlobMissing(key) from None
        except obstore.exceptions.BaseError as exc:
            raise BlobsUnavailable(f"the blob store failed a read: {first_line(exc)}") from exc
        async for chunk in result.stream(min_chunk_size=READ_CHUNK_BYTES):
            yield bytes(chunk)

    async def read_all(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    @asynccontextmanager
    async def local_file(self, key: str) -> AsyncIterator[Path]:
        """A path to the blob on this machine, for libraries that read files
        (PyAV): the file itself for the file backend, else a temporary copy."""
        if isinstance(self.store, LocalStore):
            path = Path(os.path.expanduser(self.config.path)) / key
            if not path.is_file():
                raise BlobMissing(key)
            yield path
            return
        with tempfile.NamedTemporaryFile(prefix="longserve-") as copy:
            async for chunk in self.read(key):
                copy.write(chunk)
            copy.flush()
            yield Path(copy.name)

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing blob is not an error."""
        try:
            await obstore.delete_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            pass
        except obstore.exceptions.BaseError as exc:
            raise BlobsUnavailable(f"the blob store failed a delete: {first_line(exc)}") from exc

    async def presigned_url(self, key: str) -> Optional[str]:
        """A short-lived GET URL for `key`, when the config asks for one and the store can sign."""
        if not (self.config.presign_results and isinstance(self.store, S3Store)):
            return None
        expires = timedelta(seconds=self.config.presign_expires_s)
        return await obstore.sign_async(self.store, "GET", key, expires)


def make_store(config: BlobsConfig) -> "LocalStore | S3Store":
    if config.backend == "file":
        root = Path(os.path.expanduser(config.path))
        root.mkdir(parents=True, exist_ok=True)
        return LocalStore(root, mkdir=True)
    if not config.bucket:
        raise ValueError("blobs.bucket is required with blobs.backend: s3")
    options: dict[str, Any] = {
        "prefix": config.prefix or None,
        # Few, quick retries: a store that is down answers 503 within seconds, not minutes.
        "client_options": {
            "allow_http": (config.endpoint_url or "").startswith("http://"),
            "connect_timeout": timedelta(seconds=2),
        },
        "retry_config": {"max_retries": 3, "retry_timeout": timedelta(seconds=10)},
    }
    if config.endpoint_url:
        options["endpoint"] = config.endpoint_url
    if config.region:
        options["region"] = config.region
    return S3Store(config.bucket, **options)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
