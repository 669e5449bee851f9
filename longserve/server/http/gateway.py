"""The HTTP ingress: validates requests, enforces the timeout in force, and
turns every failure into the one JSON error shape."""

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Optional

from fastapi import FastAPI, Header, Query, Request, Response, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from longserve.api.jobs import PENDING, JobPage, JobView, Status
from longserve.api.models import Backlog, ModelList, ModelView
from longserve.model import Model
from longserve.server.autoscaling import cold_start_note
from longserve.server.blobs import Blobs
from longserve.server.calls import call_model, call_model_once
from longserve.server.config import AUTO, AppConfig, load_model_class
from longserve.server.errors import InvalidRequest, ModelFailed, Overloaded, TimedOut, first_line
from longserve.server.http.admission import Admission
from longserve.server.http.auth import OPEN, Auth, Caller
from longserve.server.http.errors import ERROR_RESPONSES, ApiError, install_error_handlers, request_id, status_of
from longserve.server.http.events import EVENTS_RESPONSES, event_response, last_event_id
from longserve.server.http.flow_control import bound_body_queue
from longserve.server.http.job_cache import FinishedJobs
from longserve.server.http.jobs import (
    JOB_PARAMS,
    JobOptions,
    accepted,
    job_error,
    job_response,
    parse_metadata,
    parse_prefer,
    sync_error,
)
from longserve.server.http.openai import OpenAIRoutes
from longserve.server.http.openai import router as openai_router
from longserve.server.http.openai_batches import OpenAIBatchRoutes
from longserve.server.http.openai_batches import router as openai_batch_router
from longserve.server.http.results import result_response
from longserve.server.http.streams import CallStream, OnPartial, event_stream, native_events, wants_events
from longserve.server.http.uploads import forget, receive_upload
from longserve.server.inputs import InputParser, check_media_type, is_json
from longserve.server.jobs.blob_keys import input_key
from longserve.server.jobs.callbacks import check_url, load_secret
from longserve.server.jobs.fetch import check_input_url
from longserve.server.jobs.record import BlobRef, Callback, JobRequest, new_job_id
from longserve.server.jobs.store import get_job_store
from longserve.server.jobs.usage import RETAIN_S as USAGE_RETAIN_S
from longserve.server.monitoring.monitor import Monitor
from longserve.server.quotas import burst_of, over_quota
from longserve.server.timeouts import HEADER as TIMEOUT_HEADER
from longserve.server.timeouts import (
    TimeoutInForce,
    client_deadline,
    configured,
    timeout_error,
    timeout_in_force,
    within_client_deadline,
)

logger = logging.getLogger("ray.serve")

RETRY_AFTER_S = 1
READY_STORE_TIMEOUT_S = 2.0
STATS_TIMEOUT_S = 2.0
MAX_IDEMPOTENCY_KEY = 255
USAGE_FLUSH_S = 1.0

app = FastAPI(
    title="longserve",
    description="Model serving with timeouts you control and understand.",
    version="0.1.0",
    responses=ERROR_RESPONSES,
)
install_error_handlers(app)
# /openai/v1: the methods of OpenAIRoutes and OpenAIBatchRoutes, served by the Gateway below.
app.include_router(openai_router)
app.include_router(openai_batch_router)
# Documents the bearer key in OpenAPI; each handler checks its scope itself.
BEARER = [Security(HTTPBearer(auto_error=False, description="An API key, when the server has keys configured."))]
JOB: dict[int | str, dict[str, Any]] = {200: {"model": JobView}, 202: {"model": JobView}}


@dataclass
class Timing:
    """When a sync request was sent to the model, started there, and finished."""

    dispatched: Optional[float] = None
    started: Optional[float] = None
    finished: Optional[float] = None

    @property
    def queue_s(self) -> Optional[float]:
        if self.started is None or self.dispatched is None:
            return None
        return self.started - self.dispatched

    @property
    def run_s(self) -> Optional[float]:
        if self.finished is None or self.started is None:
            return None
        return self.finished - self.started


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def idempotency_key(request: Request) -> Optional[str]:
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400,
            "invalid_header",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters",
            header="Idempotency-Key",
        )
    return key


def check_not_erased(job):
    if job.erased:
        raise ApiError(
            410,
            "erased",
            f"job {job.id} was erased on request: its input, result and metadata are gone",
            job_id=job.id,
            erased=True,
        )
    return job


def outcome_of(exc: Exception) -> str:
    """The outcome label of a failed sync request, for metrics."""
    if isinstance(exc, TimedOut):
        return f"timeout_{exc.fields['stage']}"
    if isinstance(exc, Overloaded):
        return "overloaded"
    return "client_error" if status_of(exc) < 500 else "server_error"


@serve.deployment
@serve.ingress(app)
class Gateway(OpenAIRoutes, OpenAIBatchRoutes):
    def __init__(self, config: AppConfig, models: dict[str, DeploymentHandle], runner: DeploymentHandle):
        bound_body_queue()  # behind HAProxy, an upload waits in the client, not here (http/flow_control.py)
        self.config = config
        self.store = get_job_store(config.jobs, config.blobs)
        self.finished = FinishedJobs(config.jobs.gateway_cache_s)  # polls of finished jobs, answered here
        self.blobs = Blobs(config.blobs)
        self.runner = runner  # held so Serve deploys it; it needs no requests
        self.handles = {name: handle.options(stream=True) for name, handle in models.items()}  # SSE predicts
        self.unary = {name: handle.options(stream=False) for name, handle in models.items()}  # plain predicts
        # Sync requests over a model's capacity wait here, not in Ray's router (http/admission.py).
        self.admission = {
            name: Admission(name, model, config.gateway.num_replicas)
            for name, model in config.models.items()
            if model.queue_in == "gateway"
        }
        self.classes: dict[str, type[Model]] = {
            name: load_model_class(model.class_path) for name, model in config.models.items()
        }
        self.max_body_bytes = int(config.max_body_mb * 1024 * 1024)
        self.max_input_bytes = int(config.jobs.max_input_mb * 1024 * 1024)
        self.auth = Auth(config.auth)
        load_secret(config.callbacks)  # a malformed secret stops the deploy here, not at the first callback
        self.parser = InputParser(config, self.classes)
        self.app_name = serve.get_replica_context().app_name
        self.monitor = Monitor(self.app_name, config)
        self.stats = self.monitor.stats if self.monitor.enabled else None
        # (tenant, model, "requests" | "seconds") -> since the last flush
        self.usage_counts: defaultdict[tuple[str, str, str], float] = defaultdict(float)
        self.usage_task: Optional[asyncio.Task] = None

    @app.post("/v1/models/{model}/predict", dependencies=BEARER)
    async def predict(self, model: str, request: Request, job: Annotated[JobOptions, Query()]) -> Any:
        # The clock starts when the request reaches us; reading the body counts.
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        caller = await self._caller(request, "predict")
        self._model_config(model)
        respond_async, wait_s = parse_prefer(request.headers.get("prefer"), self.config.jobs.max_wait_s)
        if wait_s is not None:  # the 202 comes before the client gives up
            wait_s = within_client_deadline(request.headers, wait_s)
        if respond_async or wait_s is not None:
            self.auth.check(request, "jobs")  # it stores a job, as POST .../jobs does (one request: one token)
            return await self._predict_as_job(model, request, job, respond_async, wait_s, caller)
        if job.model_fields_set:
            raise ApiError(
                400,
                "invalid_request",
                f"{', '.join(sorted(job.model_fields_set))} configure a job, and a plain predict makes "
                f"none: send 'Prefer: respond-async' or 'Prefer: wait=<seconds>', "
                f"or POST /v1/models/{model}/jobs",
            )

        async def read() -> BaseModel:
            return await self._read_input(model, request, caller)

        if wants_events(request):
            return await self._predict_stream(model, request, arrival, read, caller)
        return await self._sync(model, request, arrival, read, caller)

    @app.post("/v1/models/{model}/jobs", status_code=202, dependencies=BEARER, responses=JOB)
    async def submit_job(self, model: str, request: Request, job: Annotated[JobOptions, Query()]) -> Any:
        caller = await self._caller(request, "jobs")
        self._model_config(model)
        stored, replayed = await self._submit(model, request, job, caller)
        return accepted(stored, {"Idempotent-Replayed": "true"} if replayed else None)

    @app.get("/v1/jobs/{job_id}", dependencies=BEARER, responses=JOB)
    async def get_job(self, job_id: str, request: Request, wait: Optional[float] = Query(None, ge=0)) -> Any:
        caller = await self._caller(request, "jobs")
        cached = self.finished.get(job_id)
        if cached is not None:  # finished: a wait would return at once anyway
            self._found(cached.job, job_id, caller)
            return Response(cached.body, media_type="application/json")
        job = await self._job(request, job_id, caller)
        if wait and job.status in PENDING:
            wait = within_client_deadline(request.headers, min(wait, self.config.jobs.max_wait_s))
            asked = self.finished.clock()
            job = self._found(await self.store.wait.remote(job_id, wait), job_id)
            self.finished.put(job, asked)
            check_not_erased(job)  # erased while we waited
        return job_response(job)

    @app.get("/v1/jobs/{job_id}/events", dependencies=BEARER, responses=EVENTS_RESPONSES)
    async def job_events(
        self,
        job_id: str,
        request: Request,
        last_event_id_header: Annotated[Optional[str], Header(alias="Last-Event-ID")] = None,
    ) -> Any:
        """The job's events as Server-Sent Events (status, progress, partial, then result or error);
        with Last-Event-ID, from the event after it (docs/jobs.md#events)."""
        await self._job(request, job_id)
        after = last_event_id(last_event_id_header)
        return event_response(self.store, job_id, after, self.config.jobs.events_keepalive_s)

    @app.get("/v1/jobs/{job_id}/result", dependencies=BEARER)
    async def get_job_result(self, job_id: str, request: Request) -> Any:
        cached = self.finished.get(job_id)
        if cached is not None:
            job = self._found(cached.job, job_id, await self._caller(request, "jobs"))
        else:
            job = await self._job(request, job_id)
        if job.status in PENDING:
            return accepted(job)
        if job.status != "succeeded":
            raise job_error(job)
        return await result_response(job, self.blobs, request)

    @app.delete("/v1/jobs/{job_id}", dependencies=BEARER, responses=JOB)
    async def cancel_job(
        self,
        job_id: str,
        request: Request,
        erase: Annotated[
            bool,
            Query(
                description="delete its input, result and metadata now (cancelling it first), leaving a tombstone "
                "that answers 410"
            ),
        ] = False,
    ) -> Any:
        await self._job(request, job_id)
        self.finished.drop(job_id)
        if erase:
            _, job = await self.store.erase.remote(job_id)
            self.finished.drop(job_id)  # and every read of it sent before the erase
            self._found(job, job_id)
            return {"id": job_id, "erased": True}
        outcome, job = await self.store.cancel.remote(job_id)
        self.finished.drop(job_id)
        job = self._found(job, job_id)
        if outcome == "finished":
            raise ApiError(409, "job_finished", f"job {job_id} already {job.status}; nothing to cancel", job_id=job_id)
        return job_response(job)

    @app.post("/v1/jobs/{job_id}/retry", status_code=202, dependencies=BEARER, responses=JOB)
    async def retry_job(self, job_id: str, request: Request) -> Any:
        job = await self._job(request, job_id)
        quota, where = self.config.tenant(job.tenant)
        self.finished.drop(job_id)
        outcome, job = await self.store.retry.remote(job_id, quota.max_active_jobs)
        self.finished.drop(job_id)  # and every read of it sent before the retry
        job = self._found(job, job_id)
        if outcome == "over_quota":
            raise self._over_active(job.tenant, quota.max_active_jobs, where)
        if outcome == "not_retryable":
            raise ApiError(
                409,
                "not_retryable",
                f"job {job_id} is {job.status}; only failed or cancelled jobs run again",
                job_id=job_id,
            )
        return accepted(job)

    @app.get("/v1/jobs", dependencies=BEARER, response_model=JobPage, response_model_exclude_unset=True)
    async def list_jobs(
        self,
        request: Request,
        model: Optional[str] = None,
        status: Optional[Status] = None,
        tenant: Optional[str] = Query(None, description="admin keys: only this tenant's jobs"),
        created_after: Annotated[Optional[datetime], Query(description="ISO 8601 or unix seconds; inclusive")] = None,
        created_before: Annotated[Optional[datetime], Query(description="ISO 8601 or unix seconds; exclusive")] = None,
        limit: int = Query(50, ge=1, le=500),
        # le: a job's seq is a 64-bit integer in every backend; a larger cursor is no cursor we gave.
        cursor: Optional[int] = Query(None, ge=1, le=2**63 - 1, description="next_cursor of the previous page"),
    ) -> dict:
        """The caller's own jobs, newest first; an admin key lists every tenant's."""
        caller = await self._caller(request, "jobs")
        if tenant is not None and not caller.owns(tenant):
            raise ApiError(403, "forbidden", "only an admin key lists another tenant's jobs", scope="admin")
        jobs, next_cursor = await self.store.list.remote(
            model,
            status,
            limit,
            cursor,
            tenant if caller.admin else caller.tenant,
            created_after and created_after.timestamp(),
            created_before and created_before.timestamp(),
        )
        return {"jobs": [job.view(with_result=False) for job in jobs], "next_cursor": next_cursor}

    @app.get("/v1/models", dependencies=BEARER, response_model=ModelList)
    async def list_models(self, request: Request) -> dict:
        await self._caller(request, "admin")
        backlog = await self.store.backlog.remote()
        return {"models": [await self._describe(name, backlog) for name in self.config.models]}

    @app.get("/v1/models/{model}", dependencies=BEARER, response_model=ModelView)
    async def get_model(self, model: str, request: Request) -> dict:
        await self._caller(request, "admin")
        self._model_config(model)
        return await self._describe(model, await self.store.backlog.remote())

    @app.get("/v1/usage", dependencies=BEARER)
    async def get_usage(
        self,
        request: Request,
        window_s: float = Query(3600, gt=0, le=USAGE_RETAIN_S, description="the last this many seconds"),
        tenant: Optional[str] = Query(None, description="admin keys: this tenant (default: every tenant)"),
    ) -> dict:
        """The caller's jobs, sync requests and model-seconds per model over the window (in whole minutes);
        an admin key sees every tenant's."""
        caller = await self._caller(request, "jobs")
        if tenant is not None and not caller.owns(tenant):
            raise ApiError(403, "forbidden", "only an admin key reads another tenant's usage", scope="admin")
        await self._flush_usage()  # this replica's own requests, so the caller sees the one just made
        who = tenant if caller.admin else caller.tenant
        return {"window_s": window_s, "tenants": await self.store.usage_of.remote(who, window_s)}

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> Any:
        # serve.status() waits on the controller: off the event loop, which serves every other request.
        deployments = (await asyncio.to_thread(serve.status)).applications[self.app_name].deployments
        states = {name: str(deployments[name].status.value) for name in self.config.models}
        ready = all(state in ("HEALTHY", "UPSCALING", "DOWNSCALING") for state in states.values())
        try:
            await asyncio.wait_for(self.store.backlog.remote(), READY_STORE_TIMEOUT_S)
            jobs = "ok"
        except Exception as exc:  # restarting, or its backend is unreachable
            jobs, ready = f"job store unavailable: {type(exc).__name__}", False
        if not ready:
            raise ApiError(
                503, "not_ready", "models are loading or unhealthy, or the job store is down", models=states, jobs=jobs
            )
        return {"status": "ready", "models": states, "jobs": jobs}

    # -- helpers --------------------------------------------------------------

    def _model_config(self, model: str):
        if model not in self.config.models:
            known = ", ".join(sorted(self.config.models))
            raise ApiError(404, "not_found", f"no model named '{model}'; served models: {known}", model=model)
        return self.config.models[model]

    async def _describe(self, name: str, backlog: dict) -> dict:
        model = self.config.models[name]
        timeout = configured(self.config, name, self.monitor.auto)
        return ModelView(
            name=name,
            class_path=model.class_path,
            timeout_s=timeout.seconds,
            timeout_source=timeout.source,
            auto_timeout=model.auto_timeout.model_dump() if model.timeout == AUTO and model.auto_timeout else None,
            max_timeout_s=self.config.max_timeout,
            batching=model.batching.model_dump() if model.batching else None,
            max_ongoing_requests=model.max_ongoing_requests,
            max_queued_requests=model.max_queued_requests,
            num_replicas=model.num_replicas,
            autoscaling_config=model.autoscaling_config,
            ray_actor_options=model.ray_actor_options,
            accepts_raw_body=self.classes[name].raw_body_field is not None,
            job_timeout_s=model.job_timeout,
            max_concurrent_jobs=model.job_slots(),
            jobs=Backlog(**backlog.get(name, {})),
            latency=await self._latency(name),
        ).model_dump(by_alias=True)

    async def _latency(self, name: str) -> Optional[dict]:
        if self.stats is None:
            return None
        try:
            return await asyncio.wait_for(self.stats.summary.remote(name), STATS_TIMEOUT_S)
        except Exception as exc:  # the stats actor restarting must not break model info
            logger.warning("latency stats unavailable: %r", exc)
            return None

    def _found(self, job, job_id: str, caller: Optional[Caller] = None):
        # Another tenant's job answers exactly as an unknown id: ids cannot be probed.
        if job is None or (caller is not None and not caller.owns(job.tenant)):
            raise ApiError(404, "not_found", f"no job '{job_id}'", job_id=job_id)
        return job

    async def _job(self, request: Request, job_id: str, caller: Optional[Caller] = None):
        """The job, if the caller's key (scope jobs) belongs to its tenant or is an admin's; else 404.
        A finished one is kept for this replica's next polls (http/job_cache.py)."""
        caller = caller or await self._caller(request, "jobs")
        asked = self.finished.clock()
        job = self._found(await self.store.get.remote(job_id), job_id, caller)
        self.finished.put(job, asked)
        return check_not_erased(job)

    async def _submit(self, model: str, request: Request, options: JobOptions, caller: Caller):
        """Validate like predict (4xx now, never a job doomed by its input), then store.
        The input is the body, streamed into the blob store, or `input_url`, fetched when the job runs."""
        metadata = parse_metadata(options.metadata)
        callback = None
        if options.callback_url is not None:
            await check_url(options.callback_url, self.config.callbacks)
            callback = Callback(url=options.callback_url, events=options.callback_events)
        params = {k: v for k, v in request.query_params.items() if k not in JOB_PARAMS}
        job_id = new_job_id()
        if options.input_url is not None:
            job_request = await self._input_url_request(model, request, options, params)
            outcome, job = await self._store_job(
                model, job_id, job_request, None, metadata, options, request, callback, caller
            )
        else:
            if options.input_type is not None:
                raise ApiError(
                    400, "invalid_request", "input_type describes an input_url; send Content-Type with a body"
                )
            outcome, job = await self._submit_upload(
                model, job_id, request, params, metadata, options, callback, caller
            )
        if outcome == "over_quota":
            quota, where = self.config.tenant(caller.tenant)
            raise self._over_active(caller.tenant, quota.max_active_jobs, where)
        if outcome == "conflict":  # the other job's id stays unsaid: the key is no way to find jobs
            raise ApiError(
                422,
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request (body, content type, query, "
                "callback, ttl_s or metadata); send a new key for a new request",
                model=model,
            )
        return job, outcome == "existing"

    async def _submit_upload(
        self,
        model: str,
        job_id: str,
        request: Request,
        params: dict,
        metadata: dict,
        options: JobOptions,
        callback: Optional[Callback],
        caller: Caller,
    ):
        media_type = media_type_of(request)
        check_media_type(self.classes[model], model, media_type)
        key = input_key(job_id)
        limit, setting = self._limit(
            caller, self.max_input_bytes, f"jobs.max_input_mb={self.config.jobs.max_input_mb:g}"
        )
        # Streamed into the blob store as it arrives; a JSON body small enough for predict is kept to validate now.
        keep = self.max_body_bytes if is_json(media_type) else 0
        written, body = await receive_upload(
            request, self.blobs, key, limit, keep, lambda size: self._too_large(size, limit, setting, "job input")
        )
        try:
            # Validated like predict (a JSON body in memory); a raw body is parsed where it is read, on the replica.
            if body is not None:
                self.parser.parse(model, media_type, body, params)
            elif written.size == 0 and not is_json(media_type):
                raise InvalidRequest(f"empty body; model '{model}' expects {self.classes[model].raw_body_field} data")
            ref = BlobRef(key=key, size=written.size, sha256=written.sha256)
            outcome, job = await self._store_job(
                model,
                job_id,
                JobRequest(media_type=media_type, params=params),
                ref,
                metadata,
                options,
                request,
                callback,
                caller,
            )
        except BaseException:  # refused or not stored: the blob has no job
            await forget(self.blobs, key)
            raise
        if outcome != "created":  # a replay or a conflict: the stored job keeps its own input
            await forget(self.blobs, key)
        return outcome, job

    async def _input_url_request(self, model: str, request: Request, options: JobOptions, params: dict) -> JobRequest:
        assert options.input_url is not None
        if request.headers.get("transfer-encoding") or request.headers.get("content-length", "0") != "0":
            raise ApiError(400, "invalid_request", "send the input as the body or as input_url, not both")
        await check_input_url(options.input_url, self.config.inputs, self.config.blobs)
        media_type = (options.input_type or "").split(";")[0].strip().lower()
        if media_type:  # else the origin's Content-Type decides, when the job runs
            check_media_type(self.classes[model], model, media_type)
        return JobRequest(media_type=media_type, params=params, input_url=options.input_url)

    async def _store_job(
        self,
        model: str,
        job_id: str,
        job_request: JobRequest,
        ref: Optional[BlobRef],
        metadata: dict,
        options: JobOptions,
        request: Request,
        callback: Optional[Callback],
        caller: Caller,
    ):
        jobs, (quota, _) = self.config.jobs, self.config.tenant(caller.tenant)
        try:
            return await self.store.submit.remote(
                job_id,
                model,
                job_request,
                None,
                metadata,
                min(options.ttl_s or jobs.result_ttl_s, jobs.result_ttl_s),
                idempotency_key(request),
                callback,
                input=ref,
                tenant=caller.tenant,
                max_active=quota.max_active_jobs,
            )
        except RayTaskError as exc:  # the store's backend failed the write (redis restarting): not accepted
            logger.error("job store could not store a %s job: %s", model, exc)
            raise ApiError(
                503,
                "jobs_unavailable",
                f"the job store could not store the job ({first_line(exc)}); it was not accepted. "
                f"Retry after {RETRY_AFTER_S} s.",
                {"Retry-After": str(RETRY_AFTER_S)},
                model=model,
            ) from None

    async def _predict_as_job(
        self,
        model: str,
        request: Request,
        options: JobOptions,
        respond_async: bool,
        wait_s: Optional[float],
        caller: Caller,
    ):
        """RFC 7240: run predict as a job; answer with the result if it ends
        within `wait` seconds, else 202 with the job, which goes on."""
        job, _ = await self._submit(model, request, options, caller)
        if respond_async:
            return accepted(job, {"Preference-Applied": "respond-async"})
        job = await self.store.wait.remote(job.id, wait_s, until_finished=True)
        applied = {"Preference-Applied": f"wait={wait_s:g}"}
        if job.status == "succeeded":
            return await result_response(job, self.blobs, request, {**applied, "Location": f"/v1/jobs/{job.id}"})
        if job.status in PENDING:
            return accepted(job, applied)
        raise sync_error(job)

    async def _predict_stream(
        self,
        model: str,
        request: Request,
        arrival: float,
        read: Callable[[], Awaitable[BaseModel]],
        caller: Caller,
    ) -> Any:
        """Predict as Server-Sent Events (server/http/streams.py): an error before
        the first partial is answered as a plain predict's."""
        stream = CallStream(lambda on_partial: self._sync(model, request, arrival, read, caller, on_partial))
        first = await stream.first()
        return event_stream(native_events(request, stream.outputs(first)))

    async def _sync(
        self,
        model: str,
        request: Request,
        arrival: float,
        read: Callable[[], Awaitable[BaseModel]],
        caller: Caller = OPEN,
        on_partial: Optional[OnPartial] = None,
    ) -> Any:
        """One sync call of `model` (native predict and the OpenAI routes): the
        timeout in force from the request's headers, the input from `read()`,
        the deadline counted from `arrival` (for a stream: until its end, partials
        passed to `on_partial` included), and the call's metrics."""
        loop = asyncio.get_running_loop()
        timing, outcome = Timing(), "ok"
        try:
            timeout = timeout_in_force(
                self.config,
                model,
                request.headers.get(TIMEOUT_HEADER),
                self.monitor.auto,
                client_deadline(request.headers),
            )
            inputs = await read()
            remaining = None if timeout.seconds is None else timeout.seconds - (loop.time() - arrival)
            return await self._call(model, inputs, timeout, remaining, request_id(request), timing, on_partial)
        except Exception as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            self.monitor.record(
                model,
                "sync",
                outcome,
                timing.queue_s,
                timing.run_s,
                loop.time() - arrival,
                request_id(request),
                caller.tenant,
            )
            self._count(caller.tenant, model, timing.run_s)

    async def _read_input(self, model: str, request: Request, caller: Caller) -> BaseModel:
        media_type = media_type_of(request)
        check_media_type(self.classes[model], model, media_type)  # before reading the body
        body = await self._read_body(request, caller)
        return self.parser.parse(model, media_type, body, dict(request.query_params))

    async def _read_body(self, request: Request, caller: Caller) -> bytes:
        # Refuse before holding the body: by its declared length, else as it streams in.
        limit, setting = self._limit(caller, self.max_body_bytes, f"max_body_mb={self.config.max_body_mb:g}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_large(int(declared), limit, setting)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise self._too_large(size, limit, setting)
            chunks.append(chunk)
        return b"".join(chunks)

    def _limit(self, caller: Caller, limit: int, setting: str) -> tuple[int, str]:
        """The smaller of `limit` (set by `setting`) and the caller's tenant's max_input_mb, and the setting
        that sets it. A tenant's max_input_mb is a quota too, but answered 413, not 429: waiting would not help."""
        tenant, where = self.config.tenant(caller.tenant)
        if tenant.max_input_mb is not None and tenant.max_input_mb * 1024 * 1024 < limit:
            return int(tenant.max_input_mb * 1024 * 1024), f"{where['max_input_mb']}={tenant.max_input_mb:g}"
        return limit, setting

    def _too_large(self, size: int, limit: int, setting: str, what: str = "body") -> ApiError:
        return ApiError(
            413,
            "payload_too_large",
            f"{what} of {size} bytes (or more) is over the limit of {limit} bytes ({setting} in serve_config.yaml)",
            limit_bytes=limit,
        )

    def _over_active(self, tenant: str, limit: Optional[int], where: dict[str, str]) -> ApiError:
        assert limit is not None  # only a tenant with max_active_jobs is ever over it
        return over_quota(
            tenant,
            "active_jobs",
            where["max_active_jobs"],
            limit,
            f"tenant {tenant} has {limit} jobs queued or running, its most",
            RETRY_AFTER_S,
            RETRY_AFTER_S,
        )

    def _count(self, tenant: str, model: str, run_s: Optional[float]) -> None:
        self.usage_counts[(tenant, model, "requests")] += 1
        self.usage_counts[(tenant, model, "seconds")] += run_s or 0.0
        if self.usage_task is None:
            self.usage_task = asyncio.get_running_loop().create_task(self._flush_usage_forever())

    async def _flush_usage_forever(self) -> None:
        while True:
            await asyncio.sleep(USAGE_FLUSH_S)
            try:
                await self._flush_usage()
            except Exception:  # usage must never take serving down; these counts are lost
                logger.exception("sending usage to the job store failed")

    async def _flush_usage(self) -> None:
        counts, self.usage_counts = self.usage_counts, defaultdict(float)
        pairs = {(tenant, model) for tenant, model, _ in counts}
        if pairs:
            await self.store.record_usage.remote(
                [(t, m, int(counts[(t, m, "requests")]), counts[(t, m, "seconds")]) for t, m in pairs]
            )

    async def _caller(self, request: Request, scope: str) -> Caller:
        """The authenticated caller, within their tenant's request rate (tenants.<name>.requests_per_s)."""
        caller = self.auth.check(request, scope)  # type: ignore[arg-type]
        tenant, where = self.config.tenant(caller.tenant)
        if tenant.requests_per_s is not None:
            rate, burst = tenant.requests_per_s, burst_of(tenant.requests_per_s, tenant.burst)
            allowed, wait_s, _ = await self.store.take.remote(caller.tenant, rate, burst)
            if not allowed:
                raise over_quota(
                    caller.tenant,
                    "requests",
                    where["requests_per_s"],
                    burst,
                    f"tenant {caller.tenant} is over its {rate:g} requests/s (burst {burst})",
                    wait_s,
                    burst / rate,
                )
        return caller

    async def _call(
        self,
        model: str,
        inputs: BaseModel,
        timeout: TimeoutInForce,
        remaining: Optional[float],
        rid: str,
        timing: "Timing",
        on_partial: Optional[OnPartial] = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        timing.dispatched = loop.time()

        def started() -> None:
            timing.started = loop.time()

        try:
            async with asyncio.timeout(None if remaining is None else max(remaining, 0)):
                admission = self.admission.get(model)
                async with admission.slot() if admission else contextlib.nullcontext():
                    settings = self.config.models[model]
                    if on_partial is None:  # nothing to stream: one message back, not a stream of two
                        result = await call_model_once(self.unary[model], model, settings, inputs, started)
                    else:
                        result = await call_model(
                            self.handles[model], model, settings, inputs, started, on_partial=on_partial
                        )
        except TimeoutError:
            stage = "queued" if timing.started is None else "running"
            note = cold_start_note(model, self.config.models[model]) if stage == "queued" else ""
            error = timeout_error(model, timeout, stage, self.config.max_timeout, note)
            logger.error(
                "timeout: model=%s timeout_s=%s timeout_source=%r stage=%s request_id=%s; %s",
                model,
                timeout.seconds,
                timeout.source,
                stage,
                rid,
                error.fields["hint"],
            )
            raise error from None
        except ModelFailed as exc:
            logger.error("model %s failed (request_id=%s): %s", model, rid, exc.__cause__)
            raise
        timing.finished = loop.time()
        return result
