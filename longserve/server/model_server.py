"""One deployment class serves every configured model.

`run` is a streaming method of (Event, value) pairs, read by
server/calls.py for jobs and SSE predicts: STARTED as soon as the replica
begins the request, then progress events (when asked for) and the result.
A plain sync predict calls `call` instead, unary: the gateway takes
"started" from the replica accepting the call (calls.py call_model_once). Cancelling
the call (on a timeout or a cancelled job) cancels the coroutine here; we
then tell the model through its Context and wait for it to stop, so the
replica's slot is not freed while the model still computes.

A job's input comes by reference (a JobInput): the replica reads it from the
blob store itself and stores a large result there (jobs/job_io.py).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Optional, Union

import ray
from pydantic import BaseModel
from ray import serve

from longserve.model import Cancelled, Context, InvalidInput
from longserve.server.actors import NAMESPACE
from longserve.server.calls import Event
from longserve.server.config import BlobsConfig, InputsConfig, ModelConfig, load_model_class
from longserve.server.devices import choose_device
from longserve.server.errors import InputRejected, InputUnavailable, InvalidRequest, UnsupportedMediaType
from longserve.server.jobs.job_io import JobInput, JobIO, JobIOSettings
from longserve.server.jobs.record import loggable

logger = logging.getLogger("ray.serve")

# How long a cancelled request may take to reach its next check_cancelled().
CANCEL_GRACE_S = 60.0
# How often a replica running a job asks the store whether the attempt is still the job's.
FENCE_CHECK_S = 1.0


def replica_device(name: str = "replica", runtime: str = "torch") -> str:
    # Ray sets CUDA_VISIBLE_DEVICES for replicas with num_gpus > 0; CUDA must also
    # work for the library that runs the model.
    return choose_device(ray.get_gpu_ids(), f"model {name}", runtime)


@serve.deployment
class ModelServer:
    def __init__(self, name: str, config: ModelConfig, io: Optional[JobIOSettings] = None):
        self.name = name
        cls = load_model_class(config.class_path)
        self.model = cls(**config.options.model_dump())
        io = io or JobIOSettings(BlobsConfig.model_validate({}), InputsConfig.model_validate({}))
        self.io = JobIO(name, cls, config.options, io)
        self.device = replica_device(name, self.model.runtime)
        self.model.load(self.device)
        self.batching = config.batching is not None
        if config.batching is not None:
            batched: Any = self._predict_batched  # @serve.batch adds the setters; mypy sees a plain method
            batched.set_max_batch_size(config.batching.max_batch_size)
            batched.set_batch_wait_timeout_s(config.batching.batch_wait_timeout_s)
        logger.info("model %s loaded on %s", name, self.device)

    async def run(
        self, inputs: Union[BaseModel, JobInput], progress: bool = False, partials: bool = False
    ) -> AsyncIterator[tuple]:
        yield (Event.STARTED, self.device)
        try:
            if not isinstance(inputs, JobInput):
                async for event in self._predict(inputs, progress, partials):
                    yield event
                return
            async with self.io.open(inputs) as parsed:  # a local file may back it until the model is done
                async for kind, value in self._predict(parsed, progress, partials, inputs):
                    yield (kind, await self.io.store_result(inputs.job_id, value) if kind == Event.RESULT else value)
        except InvalidInput as exc:
            yield (Event.INVALID, str(exc))
        except (InvalidRequest, InputRejected, UnsupportedMediaType) as exc:  # a job's input, parsed here
            yield (Event.INVALID, exc.message)
        except InputUnavailable as exc:
            yield (Event.UNAVAILABLE, {**exc.body, "retryable": exc.retryable})

    async def call(self, inputs: BaseModel) -> tuple:
        """A plain sync predict, unary (server/calls.py call_model_once): (Event.RESULT, result)
        or (Event.INVALID, message); no STARTED event, which a stream would cost a message more."""
        try:
            if self.batching:
                return (Event.RESULT, await self._predict_batched(inputs))
            # No progress or partials to relay: the model's thread alone, awaited.
            ctx = Context()
            work = asyncio.ensure_future(asyncio.to_thread(self.model.predict, inputs, ctx))
            try:
                return (Event.RESULT, await asyncio.shield(work))
            except asyncio.CancelledError:
                ctx.cancel()
                await _wait_stopped(work, self.name)
                raise
        except InvalidInput as exc:
            return (Event.INVALID, str(exc))

    async def _predict(
        self, inputs: BaseModel, progress: bool, partials: bool, job: Optional[JobInput] = None
    ) -> AsyncIterator[tuple]:
        if self.batching:
            yield (Event.RESULT, await self._predict_batched(inputs))
        else:
            async for event in self._predict_in_thread(inputs, progress, partials, job):
                yield event

    async def _predict_in_thread(
        self, inputs: BaseModel, progress: bool, partials: bool, job: Optional[JobInput]
    ) -> AsyncIterator[tuple]:
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue = asyncio.Queue()  # (Event.PROGRESS | Event.PARTIAL, value), from the model's thread

        fence = JobFence(self.io.settings.store_name, job, partials) if job is not None and job.attempt else None

        def send(kind: Event) -> Callable[[Any], None]:
            def put(value: Any) -> None:  # called in the model's thread
                if kind == Event.PARTIAL and fence is not None and fence.emitted is not None:
                    fence.emitted += 1  # before any later checkpoint, in the same thread
                loop.call_soon_threadsafe(updates.put_nowait, (kind, value))

            return put

        ctx = Context(
            on_progress=send(Event.PROGRESS) if progress else None,
            on_partial=send(Event.PARTIAL) if partials else None,
            on_checkpoint=fence.checkpoint if fence is not None else None,
            resume=job.resume if job is not None else None,
        )
        work = asyncio.ensure_future(asyncio.to_thread(self.model.predict, inputs, ctx))
        watch = asyncio.ensure_future(fence.watch(ctx)) if fence is not None else None
        try:
            while not work.done():
                update = asyncio.ensure_future(updates.get())
                await asyncio.wait({work, update}, return_when=asyncio.FIRST_COMPLETED)
                if update.done():
                    yield update.result()
                else:
                    update.cancel()
            while not updates.empty():
                yield updates.get_nowait()
            yield (Event.RESULT, work.result())
        except asyncio.CancelledError:
            ctx.cancel()
            await _wait_stopped(work, self.name)
            raise
        finally:
            if watch is not None:
                watch.cancel()

    @serve.batch
    async def _predict_batched(self, batch: list[BaseModel]) -> list[Any]:
        # Deliberately on the replica's user-code event loop, which it blocks
        # while the batch computes, and not in a worker thread. Measured on the
        # embedder (commit 74543a0: 2 CPUs, 16 clients, max batch 32, wait 5 ms,
        # RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0): in a worker thread its
        # batches averaged 1.2 requests (bare Ray Serve's: 6.1) and it served
        # 49 req/s (0.59x bare Serve); on the loop, 78 req/s (0.91x). While the
        # loop is blocked, arriving requests wait and form the next batch
        # together; with the loop free but the GIL held by the model, they were
        # taken in one at a time.
        return self.model.predict_batch(batch)


class JobFence:
    """A job attempt's tie to the JobStore, seen from the replica that runs it:
    checkpoints are stored fenced by the attempt, and the attempt stops once it
    is no longer the job's (cancelled, finished, or its lease passed to another
    attempt because its runner died), so a GPU does not compute one job twice."""

    def __init__(self, store_name: Optional[str], job: JobInput, partials: bool = False):
        self.job = job
        self.store: Any = ray.get_actor(store_name, namespace=NAMESPACE) if store_name else None
        # Partials the model emitted, when they go to the job's events: a checkpoint is stored only
        # once they are all there, so a later attempt resuming from it leaves no gap in them.
        self.emitted: Optional[int] = 0 if partials else None

    def checkpoint(self, state: Any, done: Optional[float]) -> bool:
        # Called in the model's thread: it waits until the store holds the state.
        if self.store is None:
            return True
        job_id, attempt = self.job.job_id, self.job.attempt
        return bool(ray.get(self.store.checkpoint.remote(job_id, attempt, state, done, self.emitted)))

    async def watch(self, ctx: Context) -> None:
        if self.store is None:
            return
        while not ctx.cancelled:
            await asyncio.sleep(FENCE_CHECK_S)
            try:
                current = await self.store.is_current.remote(self.job.job_id, self.job.attempt)
            except Exception:  # the store restarting is no reason to stop; ask again
                logger.warning("job %s: could not ask the job store whether to go on", loggable(self.job.job_id))
                continue
            if not current:
                job_id = loggable(self.job.job_id)
                logger.info("job %s: attempt %d is no longer the job's; stopping", job_id, self.job.attempt)
                ctx.cancel()


async def _wait_stopped(work: asyncio.Future, name: str) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(work), CANCEL_GRACE_S)
    except Cancelled:
        logger.info("model %s stopped a cancelled request", name)
    except (TimeoutError, asyncio.CancelledError):
        logger.warning("model %s still busy %ss after cancel", name, CANCEL_GRACE_S)
    except Exception:  # the request is gone; its error has no one to go to
        logger.exception("model %s failed after cancel", name)
