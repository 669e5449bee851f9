"""Streamed answers (Server-Sent Events): a call's partial outputs as they come.

The call runs in a task of its own: the gateway's usual sync path (`_sync`),
so its deadline, metrics and log lines are a plain predict's. Its partials and
then its end (result or error) go through a queue to the response.

The first byte goes out with the first partial, or with the result of a model
that emits none. Until then nothing is sent, so any failure before it (a 504,
whether still queued or already running; a 422; a 503) is the same JSON error
a plain predict gets, with its status. Once the 200 is sent, a failure can only
be told in the stream: it ends with an `error` event carrying that same JSON
body. Whatever ends the stream early (the deadline, a client that leaves)
cancels the call, so the replica stops at its next check_cancelled.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Optional

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, ServerSentEvent, format_sse_event

from longserve.server.http.errors import answer_of

EVENT_STREAM = "text/event-stream"
# Partials sent by the model but not yet read by the client. When it is full
# the replica's stream waits (call_model awaits on_partial): a slow reader
# slows the model rather than filling the gateway's memory.
QUEUE_SIZE = 64
# A comment line after this long without an event, so proxies keep an idle stream open (FastAPI's own interval).
PING_S = 15.0

PARTIAL, RESULT, ERROR, PING = "partial", "result", "error", "ping"
Output = tuple[str, Any]  # (PARTIAL, value) ... then (RESULT, value) or (ERROR, exception); PING while idle
OnPartial = Callable[[Any], Awaitable[None]]


def wants_events(request: Request) -> bool:
    """Whether the client asked for a stream: `Accept: text/event-stream`."""
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == EVENT_STREAM for part in accept.split(","))


class CallStream:
    """One call's outputs in order: its partials, then its result or its error.

    `call(on_partial)` runs the call, awaiting `on_partial(value)` for each partial."""

    def __init__(self, call: Callable[[OnPartial], Awaitable[Any]]):
        self.queue: asyncio.Queue[Output] = asyncio.Queue(QUEUE_SIZE)
        self.task = asyncio.get_running_loop().create_task(self._run(call))

    async def _run(self, call: Callable[[OnPartial], Awaitable[Any]]) -> None:
        try:
            result = await call(self._partial)
        except Exception as exc:
            await self.queue.put((ERROR, exc))
        else:
            await self.queue.put((RESULT, result))

    async def _partial(self, value: Any) -> None:
        await self.queue.put((PARTIAL, value))

    async def first(self) -> Output:
        """The first output: a partial or the result. An error before any is raised
        here, to be answered as a plain predict's error is."""
        try:
            kind, value = await self.queue.get()
        except BaseException:  # the client left before the first byte
            self.task.cancel()
            raise
        if kind == ERROR:
            raise value
        return kind, value

    async def outputs(self, first: Output) -> AsyncIterator[Output]:
        """`first`, then the rest, up to and with the result or the error. When the
        reader stops early (the client left), the call is cancelled."""
        try:
            output = first
            while True:
                yield output
                if output[0] in (RESULT, ERROR):
                    return
                try:
                    output = await asyncio.wait_for(self.queue.get(), PING_S)
                except TimeoutError:
                    output = (PING, None)
        finally:
            self.task.cancel()  # nothing once the call ended; else the replica's work stops


def native_events(request: Request, outputs: AsyncIterator[Output]) -> AsyncIterator[ServerSentEvent]:
    """A streamed predict's events: `partial`s, then `result` (the body of a plain
    predict) or `error` (the body of the error answer), numbered from 1."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        number = 0
        async for kind, value in outputs:
            if kind == PING:
                yield ServerSentEvent(comment="ping")
                continue
            number += 1
            data = answer_of(request, value)[1] if kind == ERROR else value
            yield ServerSentEvent(id=str(number), event=kind, data=data)

    return events()


def event_stream(events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    """The 200 response that sends `events`. (FastAPI encodes events itself only for a route
    that is a generator; predict answers JSON unless asked for a stream, so it encodes here.)"""
    return EventSourceResponse(encoded(events), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def encoded(events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        # A ping is a comment alone; any other event has data, `null` included (a model may return None).
        ping = event.comment is not None and event.data is None
        data: Optional[str] = None if ping else json.dumps(jsonable_encoder(event.data))
        yield format_sse_event(data_str=data, event=event.event, id=event.id, comment=event.comment)
