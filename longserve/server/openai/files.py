"""Uploaded files, batch outputs and batch records of the OpenAI facade, in
a blob store (a directory, or S3 on a cluster: `openai.files`).

    openai/files/{id}.json    the file's object (OpenAI's FileObject)
    openai/files/{id}.jsonl   its bytes
    openai/batches/{id}.json  a batch's record (server/openai/batches.py)

The records live here, not in the JobStore, so a batch outlives any restart
of the store: its lines are jobs there, which the store reloads itself.
Each file and batch records its owner (the tenant that made it) under
`owner`; `public` strips it from what a client sees.
"""

import json
import re
import secrets
import time
from typing import Any, Optional

import obstore

from longserve.server.blobs import BlobMissing, Blobs, BlobsConfig

# Ids become keys: only these characters, so no id can name another key.
ID = re.compile(r"^(file|batch)-[A-Za-z0-9_-]{8,80}$")
FILES, BATCHES = "openai/files/", "openai/batches/"


def new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_urlsafe(18)}"  # 144 random bits: ids are capabilities, as job ids are


def valid_id(value: str, kind: str) -> bool:
    return bool(ID.match(value)) and value.startswith(kind + "-")


def public(meta: dict) -> dict:
    """A file's object as OpenAI defines it: without its owner."""
    return {key: value for key, value in meta.items() if key != "owner"}


class FileStore:
    def __init__(self, config: BlobsConfig):
        self.blobs = Blobs(config)

    async def put_file(
        self, data: bytes, filename: str, purpose: str, owner: str, file_id: Optional[str] = None
    ) -> dict:
        file_id = file_id or new_id("file")
        await self.blobs.put(f"{FILES}{file_id}.jsonl", data)
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "owner": owner,
        }
        await self.blobs.put(f"{FILES}{file_id}.json", json.dumps(meta).encode())  # last: a listed file is whole
        return meta

    async def file(self, file_id: str) -> Optional[dict]:
        return await self._json(f"{FILES}{file_id}.json") if valid_id(file_id, "file") else None

    async def content(self, file_id: str) -> bytes:
        return await self.blobs.read_all(f"{FILES}{file_id}.jsonl")

    async def delete_file(self, file_id: str) -> None:
        await self.blobs.delete(f"{FILES}{file_id}.json")
        await self.blobs.delete(f"{FILES}{file_id}.jsonl")

    async def files(self) -> list[dict]:
        return await self._all(FILES)

    async def put_batch(self, record: dict) -> None:
        await self.blobs.put(f"{BATCHES}{record['id']}.json", json.dumps(record).encode())

    async def batch(self, batch_id: str) -> Optional[dict]:
        return await self._json(f"{BATCHES}{batch_id}.json") if valid_id(batch_id, "batch") else None

    async def batches(self) -> list[dict]:
        return await self._all(BATCHES)

    async def _json(self, key: str) -> Optional[dict]:
        try:
            return json.loads(await self.blobs.read_all(key))
        except BlobMissing:
            return None

    async def _all(self, prefix: str) -> list[dict]:
        """Every object under `prefix`, newest first."""
        listing = await obstore.list_with_delimiter_async(self.blobs.store, prefix.rstrip("/"))
        found: list[Any] = []
        for meta in listing["objects"]:
            if meta["path"].endswith(".json"):
                record = await self._json(meta["path"])
                if record is not None:  # deleted meanwhile
                    found.append(record)
        return sorted(found, key=lambda r: (r["created_at"], r["id"]), reverse=True)
