"""The SDK's streams: `predict(..., stream=True)` against the real app, and
`jobs.events(job)` with its reconnection (Last-Event-ID) when the connection drops,
for `Client` and `AsyncClient` alike."""

import asyncio
import json
import uuid
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from longserve.client import AsyncClient, Client, Event, LongserveError, Retry
from tests.test_client import StandIn, standing_in

TICKER = "ticker"  # timeout 5 s; emits {"tick": i} (tests/slow_models.py)


@pytest.fixture(params=["sync", "async"])
def sdk(request, serve_app):
    """(client, events, run): `events(stream, into)` appends a stream's events to `into` as they
    come and returns them; `run(call)` gives a call's value, for either client."""
    yield from both(request.param, serve_app.url)


def both(kind: str, url: str, **options):
    def events(stream, into=None):
        into = [] if into is None else into
        into.extend(stream)
        return into

    if kind == "sync":
        with Client(url, **options) as client:
            yield client, events, lambda value: value
        return
    loop = asyncio.new_event_loop()
    client = AsyncClient(url, **options)

    async def collect(stream, into):
        async for event in stream:
            into.append(event)
        return into

    yield (
        client,
        lambda stream, into=None: loop.run_until_complete(collect(stream, [] if into is None else into)),
        loop.run_until_complete,
    )
    loop.run_until_complete(client.aclose())
    loop.close()


def test_predict_stream_yields_partials_then_the_result(sdk):
    client, events, _ = sdk
    tag = uuid.uuid4().hex
    got = events(client.predict(TICKER, {"ticks": 3, "tag": tag}, stream=True))
    assert [(e.type, e.id) for e in got] == [("partial", "1"), ("partial", "2"), ("partial", "3"), ("result", "4")]
    assert [e.data for e in got[:-1]] == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
    assert got[-1].data == {"ticks": 3, "tag": tag}


def test_predict_stream_raises_what_the_unstreamed_call_raises(sdk):
    client, events, run = sdk
    seen: list[Event] = []
    body = {"ticks": 10_000, "every": 0.1}
    with pytest.raises(LongserveError) as streamed:
        events(client.predict(TICKER, body, stream=True, request_timeout=1.5), seen)
    assert seen and all(e.type == "partial" for e in seen)  # the error came mid-stream
    assert (streamed.value.status, streamed.value.type) == (504, "timeout")
    assert streamed.value.error["stage"] == "running" and streamed.value.request_id
    with pytest.raises(LongserveError) as plain:
        run(client.predict(TICKER, body, request_timeout=1.5))
    assert type(plain.value) is type(streamed.value)
    assert (plain.value.status, plain.value.type) == (streamed.value.status, streamed.value.type)


# -- jobs.events: reconnection ---------------------------------------------------

EVENTS = [
    ("status", {"status": "queued"}),
    ("status", {"status": "running"}),
    ("partial", {"tick": 0}),
    ("partial", {"tick": 1}),
    ("progress", {"done": 2, "total": 3}),
    ("partial", {"tick": 2}),
    ("result", {"ticks": 3}),
]


def sse(number: int) -> bytes:
    kind, data = EVENTS[number - 1]
    return f"id: {number}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


class Flaky(StandIn):
    """A job's event stream (ids 1..7, honouring Last-Event-ID) that cuts its first two
    connections: one in the middle of an event, one at an event's end without the final event."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection does, as a cut stream's would
    connections: list = []

    def do_GET(self):
        after = int(self.headers.get("Last-Event-ID") or 0)
        Flaky.connections.append(self.headers.get("Last-Event-ID"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b": ping\n\n")
        attempt = len(Flaky.connections)
        last = {1: 3, 2: 5}.get(attempt, len(EVENTS))
        for number in range(after + 1, last + 1):
            self.wfile.write(sse(number))
        if attempt == 1:
            self.wfile.write(sse(last + 1)[:12])  # half an event, then the cut
        self.wfile.flush()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_job_events_reconnect_from_the_last_event_without_loss_or_repeat(kind):
    Flaky.connections = []
    with standing_in(Flaky) as url:
        for client, events, _ in both(kind, url, retry=Retry(base_delay=0.05)):
            got = events(client.jobs.events("job_x"))
    assert [(e.type, e.data) for e in got] == EVENTS
    assert [e.id for e in got] == [str(n) for n in range(1, len(EVENTS) + 1)]
    assert Flaky.connections == [None, "3", "5"]


def test_job_events_start_after_a_given_event():
    Flaky.connections = [None, None]  # no more cuts
    with standing_in(Flaky) as url, Client(url) as client:
        got = list(client.jobs.events("job_x", last_event_id="5"))
    assert [e.id for e in got] == ["6", "7"] and got[-1].type == "result"


# -- jobs.events against the app (GET /v1/jobs/{id}/events) --------------------------------


def test_job_events_from_the_app_survive_a_dropped_connection(serve_app, client):
    """A proxy in front of the app cuts the first events connection mid-event; the SDK
    opens it again with Last-Event-ID, and sees exactly the events an uncut read sees."""
    app = serve_app.url
    seen_ids = []

    class CutOnce(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            last = self.headers.get("Last-Event-ID")
            seen_ids.append(last)
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last} if last else {})}
            with httpx.stream("GET", app + self.path, headers=headers, timeout=120) as upstream:
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", upstream.headers["content-type"])
                self.end_headers()
                events = 0
                for line in upstream.iter_lines():
                    if len(seen_ids) == 1 and events == 2 and line.startswith("data:"):
                        self.wfile.write(line[:5].encode())  # half an event, then the cut
                        return
                    self.wfile.write(f"{line}\n".encode())
                    self.wfile.flush()
                    events += line == ""

        def log_message(self, *args):
            pass

    job = client.post(f"/v1/models/{TICKER}/jobs", json={"ticks": 4, "every": 0.3}).json()
    with standing_in(CutOnce) as url, Client(url, retry=Retry(base_delay=0.05)) as sdk:
        got = list(sdk.jobs.events(job["id"]))
    assert len(seen_ids) >= 2 and seen_ids[1] is not None  # it reconnected from an event
    with Client(app) as direct:
        whole = list(direct.jobs.events(job["id"]))  # the job is over: its whole record
    assert [(e.id, e.type, e.data) for e in got] == [(e.id, e.type, e.data) for e in whole]
    assert got[-1].type == "result" and [e.data for e in got if e.type == "partial"] == [{"tick": i} for i in range(4)]
