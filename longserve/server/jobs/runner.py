"""JobRunner: claims queued jobs from the JobStore and runs them on the model
deployments, as many at once per model as the model's job slots allow.

While a job runs, the runner renews its lease and reports progress every
second (lease_s / 3 if shorter); the store's answer tells it when the job
was cancelled. A runner
that dies stops renewing: its jobs go back to the queue once their leases end.
The replica running a job stops by itself once its attempt is no longer the
job's (model_server.JobFence), and a later attempt gets the last checkpoint.
The model's partial outputs go to the job's event log as they come (jobs/partials.py).
"""

import asyncio
import logging
import time
import uuid
from typing import Any, Optional

from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from longserve.server.calls import call_model
from longserve.server.config import AppConfig, load_model_class
from longserve.server.errors import (
    InputRejected,
    InputUnavailable,
    ModelFailed,
    Overloaded,
    ReplicaDied,
    first_line,
)
from longserve.server.inputs import InputParser
from longserve.server.jobs.blob_keys import input_key
from longserve.server.jobs.callback_sender import CallbackSender
from longserve.server.jobs.job_io import JobInput, StoredResult
from longserve.server.jobs.partials import Partials
from longserve.server.jobs.record import BlobRef, Job, Progress, loggable
from longserve.server.jobs.store import get_job_store
from longserve.server.monitoring.monitor import Monitor

logger = logging.getLogger("ray.serve")

CLAIM_WAIT_S = 1.0
JOB_OUTCOMES = {"invalid_input": "client_error", "input_unavailable": "client_error", "job_timeout": "timeout_running"}
BUSY_BACKOFF_S = 1.0
STORE_RETRY_S = 0.5  # between attempts to store an outcome while the store's backend fails


@serve.deployment
class JobRunner:
    async def __init__(self, config: AppConfig, models: dict[str, DeploymentHandle]) -> None:  # type: ignore[misc]
        # Ray Serve awaits an async __init__; mypy knows no such thing.
        self.config = config
        self.store = get_job_store(config.jobs, config.blobs)
        self.handles = {name: handle.options(stream=True) for name, handle in models.items()}
        self.classes = {name: load_model_class(m.class_path) for name, m in config.models.items()}
        self.parser = InputParser(config, self.classes)
        self.limits = {name: m.job_slots() for name, m in config.models.items()}
        # Fair turns between tenants (tenants.<name>.weight, else tenants.defaults.weight).
        self.weights = {name: config.tenant(name)[0].weight for name in config.tenants if name != "defaults"}
        self.default_weight = config.tenant("defaults")[0].weight
        self.heartbeat_s = min(1.0, config.jobs.lease_s / 3)
        self.id = f"runner-{uuid.uuid4().hex[:12]}"
        self.monitor = Monitor(serve.get_replica_context().app_name, config)
        self.monitor.start()
        self.callbacks = CallbackSender(config.callbacks, self.store, self.id, self.monitor)
        self.tasks: set[asyncio.Task] = set()
        self.loop = asyncio.get_running_loop().create_task(self._claim_forever())

    async def check_health(self) -> None:
        # Serve restarts a replica whose claim or callback loop died.
        for name, task in (("claim", self.loop), ("callback", self.callbacks.loop)):
            if task.done():
                raise RuntimeError(f"{name} loop stopped: {task.exception()!r}")

    async def _claim_forever(self) -> None:
        while True:
            try:
                claimed = await self.store.claim.remote(
                    self.id, self.limits, CLAIM_WAIT_S, self.weights, self.default_weight
                )
            except Exception:
                logger.exception("claiming from the job store failed; retrying")
                await asyncio.sleep(BUSY_BACKOFF_S)
                continue
            if claimed is not None:
                task = asyncio.create_task(self._run(*claimed))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _run(self, job: Job, body: Optional[bytes]) -> None:
        self.callbacks.notify(job, "started")
        progress: dict = {}
        heartbeat = asyncio.create_task(self._heartbeat(job, progress))
        work = asyncio.create_task(self._call_model(job, body, progress))
        done, _ = await asyncio.wait({heartbeat, work}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:  # the store said stop: cancel the replica's work
            work.cancel()
        heartbeat.cancel()
        await asyncio.gather(heartbeat, work, return_exceptions=True)
        if work.done() and not work.cancelled() and work.exception() is not None:
            logger.error("job %s: runner error %r", loggable(job.id), work.exception())

    async def _heartbeat(self, job: Job, progress: dict) -> None:
        sent, events = None, 0
        while True:
            await asyncio.sleep(self.heartbeat_s)
            update = dict(progress) if progress and progress != sent else None
            try:
                keep_going = await self.store.heartbeat.remote(job.id, self.id, job.attempts, update)
            except Exception:  # a store hiccup is not a cancel; the lease decides
                logger.exception("job %s: heartbeat failed; retrying", loggable(job.id))
                continue
            if not keep_going:
                return
            if update is not None:
                events += 1
                self.callbacks.notify(job.model_copy(update={"progress": Progress(**update)}), "progress", events)
            sent = update or sent

    async def _call_model(self, job: Job, body: Optional[bytes], progress: dict) -> None:
        settings = self.config.models[job.model]  # claims only ask for configured models
        inputs: Any
        if job.input is not None or job.request.input_url is not None:  # the replica reads it: no bytes pass here
            inputs = JobInput(
                job.id,
                job.request.media_type,
                input_key(job.id),
                job.request.params,
                job.request.input_url,
                attempt=job.attempts,  # fences the replica's checkpoints and tells it when to stop
                resume=job.checkpoint.state if job.checkpoint is not None else None,
            )
        else:  # a job stored before inputs went to the blob store: its body is in the backend
            try:
                inputs = self.parser.parse(job.model, job.request.media_type, body or b"", job.request.params)
            except Exception as exc:  # validated at submit; only a changed model schema gets here
                await self._finish(job, "failed", error={"type": "invalid_input", "message": str(exc)})
                return

        def on_started() -> None:
            if settings.job_timeout is not None:
                run_limit.reschedule(asyncio.get_running_loop().time() + settings.job_timeout)

        def on_progress(update: dict) -> None:
            progress.clear()
            progress.update(update)

        async def send_partials(values: list) -> bool:
            return await self.store.partials.remote(job.id, self.id, job.attempts, values)

        partials = Partials(send_partials, f"job {loggable(job.id)}")
        try:
            # job_timeout bounds the run, from the moment a replica starts it: waiting
            # for a replica (a model scaled to zero, cold-starting) does not count.
            async with asyncio.timeout(None) as run_limit:
                try:
                    result = await call_model(
                        self.handles[job.model], job.model, settings, inputs, on_started, on_progress, partials.add
                    )
                finally:  # the partials are in the job's events before its outcome
                    await partials.drain()
        except TimeoutError:
            await self._finish(
                job,
                "failed",
                error={
                    "type": "job_timeout",
                    "message": f"the job ran longer than models.{job.model}.job_timeout={settings.job_timeout:g} s",
                },
            )
        except InputRejected as exc:
            await self._finish(job, "failed", error={"type": exc.type, "message": exc.message})
        except InputUnavailable as exc:
            if exc.retryable:  # the blob store is down: a later attempt may read it
                await self.store.release.remote(job.id, self.id, job.attempts, exc.message)
            else:
                await self._finish(job, "failed", error=exc.body)
        except ModelFailed as exc:
            await self._finish(job, "failed", error={"type": exc.type, "message": exc.reason})
        except Overloaded:
            await self.store.release.remote(job.id, self.id, job.attempts, "the model's queue was full")
        except ReplicaDied as exc:
            await self.store.release.remote(job.id, self.id, job.attempts, f"its model replica died ({exc.kind})")
        else:
            if isinstance(result, StoredResult):  # large: the replica put it in the blob store
                await self._finish(job, "succeeded", result_blob=result.ref)
            else:
                await self._finish(job, "succeeded", result=result)

    async def _finish(
        self, job: Job, status: str, result=None, error: Optional[dict] = None, result_blob: Optional[BlobRef] = None
    ) -> None:
        if not await self._store_outcome(job, status, result, error, result_blob):
            return  # cancelled meanwhile, or the lease was lost: not this runner's outcome
        now = time.time()
        kind = str((error or {}).get("type"))
        outcome = "ok" if status == "succeeded" else JOB_OUTCOMES.get(kind, "server_error")
        started = job.started_at or now  # set by the claim that started this run
        self.monitor.record(
            job.model, "job", outcome, started - job.created_at, now - started, now - job.created_at, job.id, job.tenant
        )
        if status == "failed":
            logger.warning(
                "job %s (%s) failed on attempt %d: %s: %s",
                loggable(job.id),
                job.model,
                job.attempts,
                kind,
                (error or {}).get("message", ""),
            )

    async def _store_outcome(
        self, job: Job, status: str, result, error: Optional[dict], result_blob: Optional[BlobRef] = None
    ) -> bool:
        """store.finish, retried while the store's backend fails (redis restarting).
        Its failure is the store's, not the model's: it must not reach
        _call_model's model-error handling. finish is fenced by lease and
        attempt, so a retry after the lease went elsewhere is refused (False)."""
        deadline = time.monotonic() + 3 * self.config.jobs.lease_s
        while True:
            try:
                return await self.store.finish.remote(job.id, self.id, job.attempts, status, result, error, result_blob)
            except RayTaskError as exc:
                if time.monotonic() > deadline:  # the lease decides: the job runs again
                    raise RuntimeError(
                        f"job {loggable(job.id)}: the job store did not take the outcome: {first_line(exc)}"
                    ) from None
                logger.warning("job %s: storing the outcome failed (%s); retrying", loggable(job.id), first_line(exc))
                await asyncio.sleep(STORE_RETRY_S)
