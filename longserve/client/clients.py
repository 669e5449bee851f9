"""`Client` and `AsyncClient`: the same methods (written once, in `_Api`),
run with blocking or with awaited I/O. On `AsyncClient` every method returns
an awaitable, and a stream (`predict(..., stream=True)`, `jobs.events`) is an
async iterator."""

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Optional, Union

import httpx
from httpx_sse import EventSource

from longserve.client.core import (
    DEFAULT_TIMEOUT,
    EVENT_STREAM,
    Call,
    Close,
    Dropped,
    Emit,
    Event,
    Feed,
    JobRef,
    NextEvent,
    Open,
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


def is_event_stream(response: httpx.Response) -> bool:
    return response.status_code == 200 and EVENT_STREAM in response.headers.get("content-type", "")


class _Jobs:
    """`client.jobs(...)`: one page of jobs; `client.jobs.events(job)`: a job's events as they come."""

    def __init__(self, api: "_Api"):
        self._api = api

    def __call__(
        self, model: Optional[str] = None, status: Optional[str] = None, limit: int = 50, cursor: Optional[int] = None
    ):
        """One page of jobs, newest first (`JobPage`; pass its `next_cursor` for the next)."""
        return self._api._run(self._api._protocol.jobs(model, status, limit, cursor))

    def events(self, job: JobRef, last_event_id: Optional[str] = None):
        """The job's events (`Event`: `status`, `progress`, `partial`, then `result` or `error`,
        with which it ends), from its first or from after `last_event_id`. A dropped
        connection is opened again by itself, from the last event seen (`Last-Event-ID`):
        no event is lost or repeated. An `error` event (the job failed, was cancelled or
        expired) is handed over like the others, not raised."""
        return self._api._stream(self._api._protocol.job_events(job, last_event_id))


class _Api:
    """The calls. `_run` (sync or async) performs the steps each one yields."""

    _protocol: Protocol

    def _run(self, call: Call):  # pragma: no cover - defined by the subclasses
        raise NotImplementedError

    def _stream(self, call: Call):  # pragma: no cover - defined by the subclasses
        raise NotImplementedError

    @property
    def jobs(self) -> _Jobs:
        """Call it for a page of jobs; `jobs.events(job)` follows one job's events."""
        return _Jobs(self)

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
        stream: bool = False,
    ):
        """Run `model` on `inputs` (sent as JSON) or `content` (bytes or a file path, sent raw) and
        return its result. `request_timeout` sends `Request-Timeout`. With `prefer_wait=N` the server
        answers within N s; if the work is not done by then it becomes a job, which this call then
        waits for (`on_progress`, `wait_timeout` as in `wait`) — the caller just gets the result.

        With `stream=True`: an iterator of `Event`s, the model's partials (`partial`) as it emits
        them, then `result` (its data: the result). An error, before or during the stream, raises
        the `LongserveError` the same call unstreamed raises (504 `timeout`, ...)."""
        body = make_body(inputs, content, content_type)
        if stream:
            if prefer_wait is not None:
                raise ValueError("stream=True is one request; prefer_wait makes a job: submit() and jobs.events(job)")
            return self._stream(self._protocol.predict_stream(model, body, params, request_timeout))
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

    def _stream(self, call: Call) -> Iterator[Event]:
        feeds: list[Feed] = []
        try:
            done, step = advance(call, None)
            while not done:
                reply = None
                if isinstance(step, Emit):
                    yield step.event
                else:
                    reply = self._perform(step)
                    if isinstance(reply, Feed):
                        feeds.append(reply)
                done, step = advance(call, reply)
        finally:  # also when the caller stops early: the connection goes back
            call.close()
            for feed in feeds:
                feed.response.close()

    def _perform(self, step: Step) -> Any:
        if isinstance(step, Send):
            with transport_errors(self.url):
                return self._http.send(step.build(self._http))
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        if isinstance(step, Open):
            try:
                response = self._http.send(step.send.build(self._http), stream=True)
            except httpx.TransportError as exc:
                return Dropped(exc)
            if is_event_stream(response):
                return Feed(response, EventSource(response).iter_sse())
            try:  # an error answer (or a server that does not stream): read whole
                response.read()
            finally:
                response.close()
            return Feed(response)
        if isinstance(step, NextEvent):
            try:
                return next(step.feed.events, None)
            except httpx.TransportError as exc:  # a read timeout, a connection cut
                return Dropped(exc)
        if isinstance(step, Close):
            return step.feed.response.close()
        if isinstance(step, Emit):
            raise TypeError("a stream's steps run only in _stream")
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

    async def _stream(self, call: Call) -> AsyncIterator[Event]:
        feeds: list[Feed] = []
        try:
            done, step = advance(call, None)
            while not done:
                reply = None
                if isinstance(step, Emit):
                    yield step.event
                else:
                    reply = await self._perform(step)
                    if isinstance(reply, Feed):
                        feeds.append(reply)
                done, step = advance(call, reply)
        finally:  # also when the caller stops early: the connection goes back
            call.close()
            for feed in feeds:
                await feed.response.aclose()

    async def _perform(self, step: Step) -> Any:
        if isinstance(step, Send):
            with transport_errors(self.url):
                return await self._http.send(step.build(self._http))
        if isinstance(step, Sleep):
            return await asyncio.sleep(step.seconds)
        if isinstance(step, Open):
            try:
                response = await self._http.send(step.send.build(self._http), stream=True)
            except httpx.TransportError as exc:
                return Dropped(exc)
            if is_event_stream(response):
                return Feed(response, EventSource(response).aiter_sse())
            try:  # an error answer (or a server that does not stream): read whole
                await response.aread()
            finally:
                await response.aclose()
            return Feed(response)
        if isinstance(step, NextEvent):
            try:
                return await anext(step.feed.events, None)
            except httpx.TransportError as exc:  # a read timeout, a connection cut
                return Dropped(exc)
        if isinstance(step, Close):
            return await step.feed.response.aclose()
        if isinstance(step, Emit):
            raise TypeError("a stream's steps run only in _stream")
        reply = step.callback(step.job)  # on_progress may be sync or async here
        return (await reply) if inspect.isawaitable(reply) else reply

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
