"""`Client` and `AsyncClient`: the same methods (written once, in `_Api`),
run with blocking or with awaited I/O. On `AsyncClient` every method returns
an awaitable."""

import asyncio
import inspect
import time
from pathlib import Path
from typing import Any, Optional, Union

import httpx

from longserve.client.core import (
    DEFAULT_TIMEOUT,
    Call,
    JobRef,
    ProgressCallback,
    Protocol,
    Retry,
    Send,
    Sleep,
    Step,
    advance,
    make_body,
    transport_errors,
)


class _Api:
    """The calls. `_run` (sync or async) performs the steps each one yields."""

    _protocol: Protocol

    def _run(self, call: Call):  # pragma: no cover - defined by the subclasses
        raise NotImplementedError

    @property
    def url(self) -> str:
        return self._protocol.url

    def predict(
        self,
        model: str,
        inputs: Any = None,
        *,
        content: Union[bytes, str, Path, None] = None,
        content_type: Optional[str] = None,
        params: Optional[dict] = None,
        request_timeout: Optional[float] = None,
        prefer_wait: Optional[float] = None,
        on_progress: Optional[ProgressCallback] = None,
        wait_timeout: Optional[float] = None,
    ):
        """Run `model` on `inputs` (sent as JSON) or `content` (bytes or a file path, sent raw) and
        return its result. `request_timeout` sends `Request-Timeout`. With `prefer_wait=N` the server
        answers within N s; if the work is not done by then it becomes a job, which this call then
        waits for (`on_progress`, `wait_timeout` as in `wait`) — the caller just gets the result."""
        body = make_body(inputs, content, content_type)
        return self._run(
            self._protocol.predict(model, body, params, request_timeout, prefer_wait, on_progress, wait_timeout)
        )

    def submit(
        self,
        model: str,
        inputs: Any = None,
        *,
        content: Union[bytes, str, Path, None] = None,
        content_type: Optional[str] = None,
        params: Optional[dict] = None,
        ttl_s: Optional[float] = None,
        metadata: Optional[dict] = None,
        idempotency_key: Optional[str] = None,
        callback_url: Optional[str] = None,
        callback_events: Optional[str] = None,
    ):
        """Submit a job; returns its `JobView` (status `queued`) at once. `callback_url` and
        `callback_events` (`completed` | `all`) are passed to the server as query parameters."""
        body = make_body(inputs, content, content_type)
        return self._run(
            self._protocol.submit(model, body, params, ttl_s, metadata, idempotency_key, callback_url, callback_events)
        )

    def job(self, job: JobRef, wait: Optional[float] = None):
        """The job's `JobView` now, or (with `wait=N`) once its status or progress changes, within N s."""
        return self._run(self._protocol.job(job, wait))

    def wait(self, job: JobRef, timeout: Optional[float] = None, on_progress: Optional[ProgressCallback] = None):
        """Long-poll until the job is finished; returns its final `JobView` (succeeded, failed,
        cancelled or expired). `on_progress(view)` is called on every change of status or progress
        (on `AsyncClient` it may be a coroutine function). Raises `WaitTimeout` after `timeout` s."""
        return self._run(self._protocol.wait(job, timeout, on_progress))

    def result(self, job: JobRef):
        """The result of a succeeded job. Raises `LongserveError` (409 `job_failed` /
        `job_cancelled`, 410 `expired`), or `JobNotFinished` while it is pending."""
        return self._run(self._protocol.result(job))

    def cancel(self, job: JobRef):
        """Cancel a queued or running job; returns its `JobView`. 409 `job_finished` once it ended."""
        return self._run(self._protocol.cancel(job))

    def jobs(
        self, model: Optional[str] = None, status: Optional[str] = None, limit: int = 50, cursor: Optional[int] = None
    ):
        """One page of jobs, newest first (`JobPage`; pass its `next_cursor` for the next)."""
        return self._run(self._protocol.jobs(model, status, limit, cursor))

    def models(self):
        """Every model's effective config and state (`ModelList`)."""
        return self._run(self._protocol.models())

    def model(self, name: str):
        """One model (`ModelView`)."""
        return self._run(self._protocol.model(name))


class Client(_Api):
    """Blocking client. `url` and `api_key` default to `$LONGSERVE_URL` (else
    http://127.0.0.1:8000) and `$LONGSERVE_API_KEY`; the key goes as
    `Authorization: Bearer <key>`.

        with Client() as client:
            client.predict("embedder", {"texts": ["hello"]})
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        retry: Optional[Retry] = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: Optional[httpx.BaseTransport] = None,
    ):
        self._protocol = Protocol(url, api_key, retry)
        self._http = httpx.Client(
            base_url=self._protocol.url, headers=self._protocol.headers(), timeout=timeout, transport=transport
        )

    def _run(self, call: Call):
        done, step = advance(call, None)
        while not done:
            done, step = advance(call, self._perform(step))
        return step

    def _perform(self, step: Step) -> Any:
        if isinstance(step, Send):
            with transport_errors(self.url):
                return self._http.send(step.build(self._http))
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        return step.callback(step.job)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Api):
    """The same calls as `Client`, each returning an awaitable.

    async with AsyncClient() as client:
        job = await client.submit("transcriber", content="podcast.mp3")
        job = await client.wait(job, on_progress=print)
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        retry: Optional[Retry] = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ):
        self._protocol = Protocol(url, api_key, retry)
        self._http = httpx.AsyncClient(
            base_url=self._protocol.url, headers=self._protocol.headers(), timeout=timeout, transport=transport
        )

    async def _run(self, call: Call):
        done, step = advance(call, None)
        while not done:
            done, step = advance(call, await self._perform(step))
        return step

    async def _perform(self, step: Step) -> Any:
        if isinstance(step, Send):
            with transport_errors(self.url):
                return await self._http.send(step.build(self._http))
        if isinstance(step, Sleep):
            return await asyncio.sleep(step.seconds)
        reply = step.callback(step.job)  # on_progress may be sync or async here
        return (await reply) if inspect.isawaitable(reply) else reply

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
