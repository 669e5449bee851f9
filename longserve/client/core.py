"""What the sync and async clients share: every call is written once, as a
generator that yields steps (send this request, sleep, tell the caller about
progress) and returns the call's value. `Client` and `AsyncClient` only run
the steps, with blocking or awaited I/O (the "sans-I/O" pattern).

A streamed call (Server-Sent Events) is written the same way: it opens a
stream, reads its events one step at a time, and hands each one on (`Emit`);
the clients run it as an iterator (async on `AsyncClient`).
"""

import json
import logging
import mimetypes
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import httpx

from longserve.api.jobs import PENDING, JobPage, JobView
from longserve.api.models import ModelList, ModelView

logger = logging.getLogger("longserve.client")

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, API_KEY_ENV = "LONGSERVE_URL", "LONGSERVE_API_KEY"
POLL_S = 30.0  # one long-poll (the server caps it at jobs.max_wait_s)
EVENT_STREAM = "text/event-stream"
# A job's event stream is idle while the job queues or computes; servers send a comment
# line every 15 s to keep it open. Nothing at all for this long: the connection is taken
# for dead and opened again (from the last event seen, so nothing is lost).
EVENTS_READ_TIMEOUT_S = 60.0
FINAL_EVENTS = ("result", "error")
CONNECT_TIMEOUT_S = 10.0
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=CONNECT_TIMEOUT_S)
CLIENT_DEFAULT = "default"

JobRef = Union[str, JobView]
ProgressCallback = Callable[[JobView], Any]


class LongserveError(Exception):
    """An error answer from the server, with its JSON error body.

    `status` is the HTTP status, `type` the error's type (`timeout`,
    `overloaded`, `not_found`, ...), `error` the whole `error` object (with
    fields such as `hint`, `timeout_s`, `stage`, `request_id`)."""

    def __init__(self, status: int, error: dict, headers: Optional[Mapping[str, str]] = None):
        self.status = status
        self.error = error
        self.type = error.get("type", "http_error")
        self.message = error.get("message", "")
        self.request_id = error.get("request_id")
        self.headers = dict(headers or {})
        super().__init__(f"{status} {self.type}: {self.message}")

    @property
    def hint(self) -> Optional[str]:
        return self.error.get("hint")


class ConnectionFailed(LongserveError):
    """The server could not be reached (no HTTP answer at all)."""

    def __init__(self, url: str, exc: Exception):
        super().__init__(
            0, {"type": "connection_failed", "message": f"could not reach {url}: {type(exc).__name__}: {exc}"}
        )


class JobNotFinished(LongserveError):
    """The job's result was asked for while the job is still queued or running."""

    def __init__(self, job: JobView):
        self.job = job
        super().__init__(202, {"type": "not_finished", "message": f"job {job.id} is {job.status}", "job_id": job.id})


class WaitTimeout(LongserveError):
    """`wait(..., timeout=)` ran out; the job goes on."""

    def __init__(self, job: JobView, timeout: Optional[float]):
        self.job = job
        super().__init__(
            0,
            {
                "type": "wait_timeout",
                "job_id": job.id,
                "message": f"job {job.id} still {job.status} after waiting {timeout or 0:g} s; it goes on",
            },
        )


class StreamBroken(ConnectionFailed):
    """A stream ended (or its connection dropped) before its final event."""

    def __init__(self, url: str, why: str):
        LongserveError.__init__(self, 0, {"type": "stream_broken", "message": f"the stream of {url} {why}"})


# An `error` event carries the error's JSON body but no HTTP status: the status the same
# error gets as a plain answer, so a streamed call raises what the same call unstreamed would.
STREAM_ERROR_STATUS = {
    "timeout": 504,
    "overloaded": 503,
    "unavailable": 503,
    "input_unavailable": 502,
    "invalid_input": 422,
    "invalid_request": 422,
}


def stream_error(data: Any) -> LongserveError:
    """The exception of an `error` event's data ({"error": {...}})."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        error = {"type": "http_error", "message": str(data)[:500]}
    return LongserveError(STREAM_ERROR_STATUS.get(error.get("type", ""), 500), error)


@dataclass(frozen=True)
class Event:
    """One event of a stream. `type`: `partial` or `result` for a streamed predict; for a
    job also `status`, `progress` and `error`. `data`: its JSON, parsed. `id`: its number."""

    type: str
    data: Any
    id: Optional[str] = None


# -- steps a call yields ------------------------------------------------------


@dataclass
class Send:
    method: str
    url: str
    params: Optional[dict] = None
    headers: dict = field(default_factory=dict)
    content: Optional[bytes] = None
    json: Any = None
    read_timeout: Union[float, None, str] = CLIENT_DEFAULT  # None: wait as long as it takes
    file: Optional[Path] = None  # streamed as the body, never read whole (opened again on every retry)
    anonymous: bool = False  # no API key: a presigned blob-store URL carries its own signature

    def build(self, http: Union[httpx.Client, httpx.AsyncClient]) -> httpx.Request:
        timeout = http.timeout
        if self.read_timeout != CLIENT_DEFAULT:
            read = None if self.read_timeout is None else float(self.read_timeout)
            timeout = httpx.Timeout(timeout.read, connect=timeout.connect, read=read, write=None)
        content: Any = self.content
        headers = self.headers
        if self.file is not None:
            content = _file_chunks(self.file) if isinstance(http, httpx.Client) else _async_file_chunks(self.file)
            # Declared, so a server refuses an upload over its limit before it is sent.
            headers = {**headers, "Content-Length": str(self.file.stat().st_size)}
        request = http.build_request(
            self.method,
            self.url,
            params=self.params,
            headers=headers,
            content=content,
            json=self.json,
            timeout=timeout,
        )
        if self.anonymous:
            request.headers.pop("authorization", None)
        return request


UPLOAD_CHUNK_BYTES = 1024 * 1024


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK_BYTES):
            yield chunk


async def _async_file_chunks(path: Path) -> AsyncIterator[bytes]:
    # A 1 MiB read from a local file is quick; the event loop is not held for long.
    for chunk in _file_chunks(path):
        yield chunk


@dataclass
class Sleep:
    seconds: float


@dataclass
class Notify:
    callback: ProgressCallback
    job: JobView


@dataclass
class Feed:
    """An opened stream: the response, and its events (httpx-sse's iterator, sync or
    async) when it is one; else None, the body read (an error answer)."""

    response: httpx.Response
    events: Any = None


@dataclass
class Dropped:
    """The reply to Open or NextEvent when the connection failed or dropped."""

    error: Exception


@dataclass
class Open:
    """Send a request whose answer is a stream; the reply is a Feed, or Dropped."""

    send: Send


@dataclass
class NextEvent:
    """The reply: the feed's next httpx_sse.ServerSentEvent, None at its end, or Dropped."""

    feed: Feed


@dataclass
class Close:
    feed: Feed


@dataclass
class Emit:
    """Hand `event` to whoever iterates the stream."""

    event: Event


Step = Union[Send, Sleep, Notify, Open, NextEvent, Close, Emit]
Call = Generator[Step, Any, Any]


def advance(call: Call, reply: Any) -> tuple[bool, Any]:
    """Give a call the reply to its last step: (False, its next step) or (True, its value)."""
    try:
        return False, call.send(reply)
    except StopIteration as stop:
        return True, stop.value


@contextmanager
def transport_errors(url: str):
    try:
        yield
    except httpx.TransportError as exc:
        raise ConnectionFailed(url, exc) from exc


@dataclass
class Body:
    """A request body: JSON, raw bytes or a file (streamed) with their content type,
    or a URL the server fetches (`input_url`, jobs only)."""

    json: Any = None
    content: Optional[bytes] = None
    content_type: Optional[str] = None
    file: Optional[Path] = None
    input_url: Optional[str] = None


def make_body(
    inputs: Any = None, content: Union[bytes, str, Path, None] = None, content_type: Optional[str] = None
) -> Body:
    """`inputs` is sent as JSON; `content` (bytes or a file path) as a raw body,
    a file streamed from disk; an http(s):// or s3:// URL is fetched by the server
    (`input_url`). A file's content type is guessed from its name (`audio/mpeg` for .mp3)."""
    if content is None:
        return Body(json=inputs, content_type=content_type)
    if isinstance(content, str) and is_url(content):
        return Body(input_url=content, content_type=content_type)
    if isinstance(content, (str, Path)):
        path = Path(content)
        content_type = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Body(file=path, content_type=content_type)
    return Body(content=content, content_type=content_type or "application/octet-stream")


def is_url(text: str) -> bool:
    """An input the server fetches rather than a file path."""
    return text.lower().startswith(("http://", "https://", "s3://"))


def input_query(body: Body) -> dict:
    """The query parameters of a URL input: where, and its media type when given."""
    if body.input_url is None:
        return {}
    return {"input_url": body.input_url, **({"input_type": body.content_type} if body.content_type else {})}


def job_id(job: JobRef) -> str:
    return job.id if isinstance(job, JobView) else job


def job_url(job: JobRef) -> str:
    return job.links.self if isinstance(job, JobView) else f"/v1/jobs/{job}"


@dataclass
class Retry:
    """Bounded backoff for 503 answers (a full queue refuses at once, so
    sending again is safe): wait what `Retry-After` says (at most `max_delay`),
    else exponentially from `base_delay`; give up after `attempts` retries."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, retry: int, response: httpx.Response) -> float:
        header = response.headers.get("retry-after", "")
        try:
            seconds = float(header)
        except ValueError:
            seconds = self.base_delay * 2**retry
        jitter = random.uniform(0, 0.1 * seconds)  # clients refused together do not return together
        return min(max(seconds, 0.0) + jitter, self.max_delay)


def error_body(response: httpx.Response) -> Optional[dict]:
    """The `error` object of a longserve error answer; None for any other body (a proxy's)."""
    try:
        error = response.json()["error"]
    except Exception:
        return None
    return error if isinstance(error, dict) else None


def error_of(response: httpx.Response) -> LongserveError:
    error = error_body(response)
    if error is None:  # not our shape (e.g. a proxy in between): keep what there is
        error = {"type": "http_error", "message": response.text[:500] or response.reason_phrase}
    return LongserveError(response.status_code, error, response.headers)


class Protocol:
    """The calls, I/O-free. `Client` and `AsyncClient` drive them."""

    def __init__(self, url: Optional[str], api_key: Optional[str], retry: Optional[Retry]):
        import os

        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.retry = retry or Retry()

    def headers(self) -> dict:
        headers = {"User-Agent": "longserve-client/0.1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    # -- the one place a request is sent ------------------------------------

    def request(self, send: Send, ok: tuple[int, ...] = (200,), idempotent: bool = False) -> Call:
        """Send, retrying 503s with bounded backoff; the response, or raise its error.
        When sending again is safe (a GET, or `idempotent`), also retry a 5xx that a
        proxy answered for a gateway that could not (its replica died mid-request)."""
        for retry in range(self.retry.attempts + 1):
            response = yield send
            if response.status_code in ok:
                return response
            yield from self._refused(send, response, retry, idempotent)
        raise AssertionError("unreachable: the last retry raises")

    def open(self, send: Send) -> Call:
        """Open a stream, retrying as `request` does; its Feed. Raises the error answer,
        or ConnectionFailed."""
        for retry in range(self.retry.attempts + 1):
            feed = yield Open(send)
            if isinstance(feed, Dropped):
                raise ConnectionFailed(self.url, feed.error)
            if feed.response.status_code == 200:
                return feed
            yield from self._refused(send, feed.response, retry, False)
        raise AssertionError("unreachable: the last retry raises")

    def _refused(self, send: Send, response: httpx.Response, retry: int, idempotent: bool) -> Call:
        """After an error answer: raise it, or sleep before the next try."""
        idempotent = idempotent or send.method == "GET"
        error = error_of(response)
        again = response.status_code == 503 or (
            idempotent and response.status_code >= 500 and error_body(response) is None
        )
        if not again or retry == self.retry.attempts:
            raise error
        delay = self.retry.delay(retry, response)
        logger.info(
            "%s %s: %d %s; retry %d/%d in %.2f s",
            send.method,
            send.url,
            response.status_code,
            error.type,
            retry + 1,
            self.retry.attempts,
            delay,
        )
        yield Sleep(delay)

    # -- calls ----------------------------------------------------------------

    def predict(
        self,
        model: str,
        body: Body,
        params: Optional[dict],
        request_timeout: Optional[float],
        prefer_wait: Optional[float],
        on_progress: Optional[ProgressCallback],
        wait_timeout: Optional[float],
    ) -> Call:
        headers = {}
        if body.input_url is not None:
            if prefer_wait is None:
                raise ValueError("a URL input is fetched by a job: use submit(), or predict(..., prefer_wait=N)")
            params = {**(params or {}), **input_query(body)}
        elif body.content_type:
            headers["Content-Type"] = body.content_type
        if request_timeout is not None:
            headers["Request-Timeout"] = f"{request_timeout:g}"
        if prefer_wait is not None:
            headers["Prefer"] = f"wait={prefer_wait:g}"
        # As long as the server's timeout in force allows (it answers 504 when that expires).
        send = Send("POST", f"/v1/models/{model}/predict", params, headers, body.content, body.json, None, body.file)
        response = yield from self.request(send, ok=(200, 202))
        if response.status_code == 200:
            return response.json()
        # Not done within prefer_wait: the server made it a job. Follow it.
        job = JobView.model_validate(response.json())
        location = response.headers.get("location", job.links.self)
        job = yield from self.wait(job, wait_timeout, on_progress, location)
        return (yield from self.result(job))

    def predict_stream(self, model: str, body: Body, params: Optional[dict], request_timeout: Optional[float]) -> Call:
        """Emit the events of a streamed predict: partials, then the result (its value).
        An `error` event raises what the same error raises unstreamed."""
        if body.input_url is not None:
            raise ValueError("a URL input is fetched by a job: use submit(), then jobs.events(job)")
        headers = {"Accept": EVENT_STREAM}
        if body.content_type:
            headers["Content-Type"] = body.content_type
        if request_timeout is not None:
            headers["Request-Timeout"] = f"{request_timeout:g}"
        url = f"/v1/models/{model}/predict"
        send = Send("POST", url, params, headers, body.content, body.json, None, body.file)
        feed = yield from self.open(send)
        if feed.events is None:  # a server that answered without streaming: the result, whole
            yield Emit(Event("result", feed.response.json()))
            return feed.response.json()
        while True:
            sse = yield NextEvent(feed)
            if sse is None or isinstance(sse, Dropped):
                why = "ended before its result" if sse is None else f"dropped: {sse.error!r}"
                raise StreamBroken(url, why)  # not resumed: a sync call's work stops with its connection
            event = Event(sse.event, json.loads(sse.data) if sse.data else None, sse.id or None)
            if event.type == "error":
                raise stream_error(event.data)
            yield Emit(event)
            if event.type == "result":
                return event.data

    def job_events(self, job: JobRef, last_event_id: Optional[str]) -> Call:
        """Emit a job's events (after `last_event_id`, when given) up to and with its final
        `result` or `error` event. A dropped or ended connection is opened again with
        `Last-Event-ID`, so no event is lost or repeated; after `retry.attempts` failed
        tries in a row, StreamBroken."""
        url = f"{job_url(job)}/events"
        failures = 0
        while True:
            headers = {"Accept": EVENT_STREAM}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            send = Send("GET", url, headers=headers, read_timeout=EVENTS_READ_TIMEOUT_S)
            retry_ms: Optional[int] = None
            why = "could not be opened"
            try:
                feed = yield from self.open(send)
            except ConnectionFailed as exc:
                feed, why = None, exc.message
            while feed is not None:
                sse = yield NextEvent(feed)
                if sse is None or isinstance(sse, Dropped):
                    why = "ended before the job's last event" if sse is None else f"dropped: {sse.error!r}"
                    yield Close(feed)
                    break
                retry_ms = sse.retry if sse.retry is not None else retry_ms
                if not sse.data:
                    continue
                failures = 0
                last_event_id = sse.id or last_event_id
                event = Event(sse.event, json.loads(sse.data), sse.id or None)
                yield Emit(event)
                if event.type in FINAL_EVENTS:
                    yield Close(feed)
                    return None
            failures += 1
            if failures > self.retry.attempts:
                raise StreamBroken(url, f"{why}, {failures} times in a row")
            delay = retry_ms / 1000 if retry_ms is not None else self.retry.base_delay * 2 ** (failures - 1)
            logger.info("%s: %s; again from event %s in %.2f s", url, why, last_event_id, delay)
            yield Sleep(min(delay, self.retry.max_delay))

    def submit(
        self,
        model: str,
        body: Body,
        params: Optional[dict],
        ttl_s: Optional[float],
        metadata: Optional[dict],
        idempotency_key: Optional[str],
        callback_url: Optional[str],
        callback_events: Optional[str],
    ) -> Call:
        import json

        query = {**(params or {}), **input_query(body)}
        for name, value in (("ttl_s", ttl_s), ("callback_url", callback_url), ("callback_events", callback_events)):
            if value is not None:
                query[name] = value
        if metadata is not None:
            query["metadata"] = json.dumps(metadata)
        headers = {"Content-Type": body.content_type} if body.content_type and body.input_url is None else {}
        # Always keyed, so a submission whose answer was lost can be sent again
        # without making a second job: the server replays the first.
        headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        send = Send("POST", f"/v1/models/{model}/jobs", query, headers, body.content, body.json, file=body.file)
        response = yield from self.request(send, ok=(202,), idempotent=True)
        return JobView.model_validate(response.json())

    def job(self, job: JobRef, wait: Optional[float] = None, url: Optional[str] = None) -> Call:
        params = {"wait": f"{wait:g}"} if wait else None
        # The long-poll may take `wait` s: read for that long, plus slack.
        send = Send("GET", url or job_url(job), params, read_timeout=CLIENT_DEFAULT if not wait else wait + 30)
        response = yield from self.request(send)
        return JobView.model_validate(response.json())

    def wait(
        self, job: JobRef, timeout: Optional[float], on_progress: Optional[ProgressCallback], url: Optional[str] = None
    ) -> Call:
        """Long-poll until the job finishes; `on_progress(view)` on every change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        view = job if isinstance(job, JobView) else (yield from self.job(job, url=url))
        seen = None
        while True:
            state = (view.status, view.progress)
            if on_progress is not None and state != seen:
                yield Notify(on_progress, view)
            seen = state
            if view.status not in PENDING:
                return view
            poll = POLL_S
            if deadline is not None:
                poll = min(poll, deadline - time.monotonic())
                if poll <= 0:
                    raise WaitTimeout(view, timeout)
            view = yield from self.job(job, wait=poll, url=url)

    def result(self, job: JobRef) -> Call:
        response = yield from self.request(Send("GET", f"{job_url(job)}/result"), ok=(200, 202, 302))
        if response.status_code == 202:
            raise JobNotFinished(JobView.model_validate(response.json()))
        if response.status_code == 302:  # a large result, downloaded from the blob store (blobs.presign_results)
            response = yield from self.request(Send("GET", response.headers["location"], anonymous=True))
        return response.json()

    def cancel(self, job: JobRef) -> Call:
        response = yield from self.request(Send("DELETE", job_url(job)))
        return JobView.model_validate(response.json())

    def jobs(self, model: Optional[str], status: Optional[str], limit: int, cursor: Optional[int]) -> Call:
        params = {
            k: v
            for k, v in (("model", model), ("status", status), ("limit", limit), ("cursor", cursor))
            if v is not None
        }
        response = yield from self.request(Send("GET", "/v1/jobs", params))
        return JobPage.model_validate(response.json())

    def models(self) -> Call:
        response = yield from self.request(Send("GET", "/v1/models"))
        return ModelList.model_validate(response.json())

    def model(self, name: str) -> Call:
        response = yield from self.request(Send("GET", f"/v1/models/{name}"))
        return ModelView.model_validate(response.json())
