"""`GET /v1/jobs/{id}/events`: a job's event log (jobs/events.py) as
Server-Sent Events, in FastAPI's own SSE encoding.

The stream long-polls the JobStore (`events`), so it sends each event as it
is appended, and a comment (keep-alive) every `jobs.events_keepalive_s` while
nothing happens; it ends after the final event (`result` or `error`). The log
lives in the store's backend, so a reconnect with `Last-Event-ID` continues
with the next event on any gateway replica, across a store restart too.
"""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Optional

from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, format_sse_event

from longserve.server.http.errors import ApiError
from longserve.server.jobs.events import FINAL

logger = logging.getLogger("ray.serve")

# A comment line alone, with no blank line after it: a blank line would end an (empty) event, and
# some clients (httpx-sse) then dispatch an empty event carrying the last event's id.
KEEPALIVE = b": keep-alive\n"
EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The job's events (text/event-stream)", "content": {"text/event-stream": {}}}
}


def last_event_id(header: Optional[str]) -> int:
    """The id to continue after: a Last-Event-ID header (an id this stream sent), else 0 (from the start)."""
    if header is None or not header.strip():
        return 0
    try:
        after = int(header.strip())
    except ValueError:
        after = -1
    if after < 0:
        raise ApiError(400, "invalid_header", f"Last-Event-ID: {header!r} is not an event id", header="Last-Event-ID")
    return after


def event_response(store: Any, job_id: str, after: int, keepalive_s: float) -> EventSourceResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold events back
    return EventSourceResponse(_stream(store, job_id, after, keepalive_s), headers=headers)


async def _stream(store: Any, job_id: str, after: int, keepalive_s: float) -> AsyncIterator[bytes]:
    while True:
        try:
            answer = await store.events.remote(job_id, after, keepalive_s)
        except Exception as exc:  # the client reconnects with Last-Event-ID and loses nothing
            logger.warning("job events stream ended: the job store failed (%r)", exc)
            return
        if answer is None:  # forgotten or erased meanwhile
            return
        events, more = answer
        if not events and more:
            yield KEEPALIVE
        for event in events:
            data = json.dumps(jsonable_encoder(event.data), separators=(",", ":"))
            yield format_sse_event(id=str(event.id), event=event.type, data_str=data)
            if event.type in FINAL:
                return
        if not more:
            return
        after = events[-1].id if events else after
