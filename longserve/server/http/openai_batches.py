"""OpenAI's files and batches under /openai/v1, on the gateway (a mixin, as
OpenAIRoutes): a batch's lines run as durable longserve jobs, through the
JobStore's submit, get and cancel; files and batch records live in the file
store (server/openai/files.py). The `jobs` scope, as native jobs; like jobs,
files and batches belong to the caller's tenant: another tenant's answer 404
exactly as an unknown id, lists show the caller's own (an admin's: all), and
a batch's lines are jobs of its tenant (fair turns, usage)."""

import asyncio
import json
import time
from functools import cached_property
from typing import Any, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from longserve.server.blobs import BlobsUnavailable
from longserve.server.errors import InputRejected, InvalidRequest
from longserve.server.http.auth import ANONYMOUS, Caller
from longserve.server.http.errors import ApiError
from longserve.server.http.openai import PREFIX, GatewayParts, parse_body, parse_form
from longserve.server.jobs.record import JobRequest, new_job_id
from longserve.server.openai import batches
from longserve.server.openai.bodies import BatchRequest
from longserve.server.openai.files import FileStore, new_id, public

router = APIRouter(prefix=PREFIX, tags=["openai"])
PURPOSES = ("batch",)  # what uploads may be for; outputs are `batch_output`
RETRY_AFTER_S = 1


class OpenAIBatchRoutes(GatewayParts):
    @router.post("/files")
    async def openai_upload(self, request: Request) -> Any:
        caller = await self._files_caller(request)
        fields, (filename, data) = parse_form(
            request.headers.get("content-type", ""), await self._read_body(request, caller)
        )
        if fields.get("purpose") not in PURPOSES:
            raise ApiError(400, "unsupported_option", f"purpose must be one of: {', '.join(PURPOSES)}", param="purpose")
        batches.parse_lines(data)  # an unusable file is refused now; a bad line is reported by its batch
        return public(
            await self._files_call(self.openai_files.put_file(data, filename, fields["purpose"], caller.tenant))
        )

    @router.get("/files")
    async def openai_list_files(
        self,
        request: Request,
        purpose: Optional[str] = None,
        limit: int = Query(100, ge=1, le=10_000),
        after: Optional[str] = None,
    ) -> dict:
        caller = await self._files_caller(request)
        found = await self._files_call(self.openai_files.files())
        mine = [public(f) for f in found if purpose in (None, f["purpose"]) and caller.owns(f.get("owner", ANONYMOUS))]
        return page(mine, limit, after)

    @router.get("/files/{file_id}")
    async def openai_file(self, file_id: str, request: Request) -> dict:
        return public(await self._file(file_id, await self._files_caller(request)))

    @router.get("/files/{file_id}/content")
    async def openai_file_content(self, file_id: str, request: Request) -> Response:
        await self._file(file_id, await self._files_caller(request))
        data = await self._files_call(self.openai_files.content(file_id))
        return Response(data, media_type="application/jsonl")

    @router.delete("/files/{file_id}")
    async def openai_delete_file(self, file_id: str, request: Request) -> dict:
        await self._file(file_id, await self._files_caller(request))
        await self._files_call(self.openai_files.delete_file(file_id))
        return {"id": file_id, "object": "file", "deleted": True}

    @router.post("/batches")
    async def openai_create_batch(self, request: Request) -> dict:
        caller = await self._files_caller(request)
        body = parse_body(BatchRequest, await self._read_body(request, caller))
        await self._file(body.input_file_id, caller, param="input_file_id")
        lines, bad = batches.parse_lines(await self._files_call(self.openai_files.content(body.input_file_id)))
        items: list[dict] = [{**problem, "job_id": None, "error": problem["message"]} for problem in bad]
        inputs: dict[str, tuple[str, bytes]] = {}  # job id -> (model, body)
        for number, line in lines:  # every line checked before any job exists
            model = self._openai_model(line.body.model, "embeddings")  # a model not served: the whole batch is a 404
            item: dict[str, Any] = {"custom_id": line.custom_id, "line": number, "job_id": None, "error": None}
            texts = line.body.texts()
            try:
                if texts is None:
                    raise InvalidRequest("token arrays are not supported")
                data = json.dumps({"texts": texts}).encode()
                self.parser.parse(model, "application/json", data, {})
            except (InvalidRequest, InputRejected) as exc:  # this line only: reported in the error file
                items.append({**item, "error": f"line {number}: {exc.message}"})
                continue
            item.update(job_id=new_job_id(), model=line.body.model, encoding_format=line.body.encoding_format)
            items.append({**item, "dimensions": line.body.dimensions})
            inputs[item["job_id"]] = (model, data)
        items.sort(key=lambda item: item["line"])
        # The record first, with the job ids: a batch cut short by a crash still
        # accounts for every line (a job never submitted reads as missing).
        record = batches.new_record(new_id("batch"), body, items, caller.tenant)
        if not inputs:  # not one line is a request: the batch fails, as OpenAI's does at validation
            record = batches.failed(record)
        await self._files_call(self.openai_files.put_batch(record))
        ttl = self.config.jobs.result_ttl_s
        await asyncio.gather(
            *(
                self.store.submit.remote(
                    job_id,
                    model,
                    JobRequest(media_type="application/json"),
                    data,
                    {"openai_batch": record["id"], "custom_id": custom_id},
                    ttl,
                    tenant=caller.tenant,
                )
                for custom_id, job_id, (model, data) in (
                    (item["custom_id"], item["job_id"], inputs[item["job_id"]]) for item in items if item["job_id"]
                )
            )
        )
        return await self._batch_view(record)

    @router.get("/batches")
    async def openai_list_batches(
        self, request: Request, limit: int = Query(20, ge=1, le=100), after: Optional[str] = None
    ) -> dict:
        caller = await self._files_caller(request)
        found = await self._files_call(self.openai_files.batches())
        listed = page([b for b in found if caller.owns(b.get("owner", ANONYMOUS))], limit, after)
        return {**listed, "data": [await self._batch_view(record) for record in listed["data"]]}

    @router.get("/batches/{batch_id}")
    async def openai_batch(self, batch_id: str, request: Request) -> dict:
        return await self._batch_view(await self._batch(batch_id, await self._files_caller(request)))

    @router.post("/batches/{batch_id}/cancel")
    async def openai_cancel_batch(self, batch_id: str, request: Request) -> dict:
        record = await self._batch(batch_id, await self._files_caller(request))
        if record.get("finalized_at") is None and record.get("cancelled_at") is None:
            record = batches.stamp(record, "cancelled_at")
            await self._files_call(self.openai_files.put_batch(record))
            await asyncio.gather(*(self.store.cancel.remote(job_id) for job_id in batches.job_ids(record)))
        return await self._batch_view(record)

    # -- helpers --------------------------------------------------------------

    @cached_property
    def openai_files(self) -> FileStore:
        return FileStore(self.config.openai.files)

    async def _files_caller(self, request: Request) -> Caller:
        if not self.config.openai.enabled:
            raise ApiError(404, "not_found", "the OpenAI-compatible API is off (openai.enabled in serve_config.yaml)")
        return await self._caller(request, "jobs")

    async def _files_call(self, work: Any) -> Any:
        try:
            return await work
        except BlobsUnavailable as exc:
            raise ApiError(
                503, "files_unavailable", f"{exc}; retry after {RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)}
            ) from None

    async def _file(self, file_id: str, caller: Caller, param: Optional[str] = None) -> dict:
        found = await self._files_call(self.openai_files.file(file_id))
        if found is None or not caller.owns(found.get("owner", ANONYMOUS)):  # another tenant's: as unknown
            raise ApiError(404, "not_found", f"no file '{file_id}'", param=param)
        return found

    async def _batch(self, batch_id: str, caller: Caller) -> dict:
        found = await self._files_call(self.openai_files.batch(batch_id))
        if found is None or not caller.owns(found.get("owner", ANONYMOUS)):
            raise ApiError(404, "not_found", f"no batch '{batch_id}'")
        return found

    async def _batch_view(self, record: dict) -> dict:
        """The batch now; once every job ended, its output and error files are written (once).
        Past its completion_window, its pending jobs are cancelled first (it expires)."""
        jobs = await self._batch_jobs(record)
        if batches.past_window(record, jobs, time.time()):
            record = batches.stamp(record, "expired_at")
            await self._files_call(self.openai_files.put_batch(record))
            await asyncio.gather(*(self.store.cancel.remote(job_id) for job_id in batches.job_ids(record)))
            jobs = await self._batch_jobs(record)
        if batches.finished(jobs) and record.get("finalized_at") is None and record.get("failed_at") is None:
            record = await self._finish_batch(record, jobs)
        return batches.view(record, jobs)

    async def _batch_jobs(self, record: dict) -> list:
        """Each line's job, None for a line that is not a request (it has none)."""
        ids = batches.job_ids(record)
        found = dict(zip(ids, await asyncio.gather(*(self.store.get.remote(i) for i in ids)), strict=True))
        return [found.get(item["job_id"]) for item in record["items"]]

    async def _finish_batch(self, record: dict, jobs: list) -> dict:
        ok, failed = batches.outputs(record, jobs)
        output_id, error_id = batches.output_file_ids(record["id"])
        files = self.openai_files
        record = {**record, "output_file_id": output_id, "error_file_id": error_id if failed else None}
        owner = record.get("owner", ANONYMOUS)
        await self._files_call(files.put_file(ok, f"{record['id']}_output.jsonl", "batch_output", owner, output_id))
        if failed:
            await self._files_call(
                files.put_file(failed, f"{record['id']}_errors.jsonl", "batch_output", owner, error_id)
            )
        record = batches.stamp(record, "finalized_at")
        await self._files_call(files.put_batch(record))
        return record


def page(items: list[dict], limit: int, after: Optional[str]) -> dict:
    """OpenAI's cursor page of `items` (newest first): those after the id `after`.
    The SDKs' iterators follow `has_more` and the last id."""
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    data = items[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(items) > limit,
    }
