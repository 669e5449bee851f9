"""The Python SDK against the real app: every test runs with `Client` and with
`AsyncClient` (the `sdk` fixture), so both I/O paths are exercised."""

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from longserve.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    JobPage,
    JobView,
    LongserveError,
    ModelList,
    ModelView,
    Retry,
    WaitTimeout,
)
from tests.conftest import DATA
from tests.test_timeouts import SLEEP, began, tagged, wait_idle
from tests.transcripts import assert_transcript

SLOW = "sleeper_false"  # no sync timeout, one request at a time, no job timeout


@pytest.fixture(params=["sync", "async"])
def sdk(request, serve_app):
    """(client, run): `run(client.method(...))` gives the value for either client."""
    if request.param == "sync":
        with Client(serve_app.url) as client:
            yield client, lambda value: value
    else:
        loop = asyncio.new_event_loop()
        client = AsyncClient(serve_app.url)
        yield client, loop.run_until_complete
        loop.run_until_complete(client.aclose())
        loop.close()


def test_predict_returns_the_result(sdk):
    client, run = sdk
    result = run(client.predict("embedder", {"texts": ["A cat sits on the mat.", "A dog."]}))
    assert result["dim"] == 384 and len(result["embeddings"]) == 2


def test_error_carries_the_server_error_body(sdk):
    client, run = sdk
    with pytest.raises(LongserveError) as caught:
        run(client.predict("no_such_model", {"texts": ["x"]}))
    assert caught.value.status == 404 and caught.value.type == "not_found"
    assert "served models" in caught.value.message and caught.value.request_id


def test_submit_wait_with_progress_result_and_listing(sdk):
    client, run = sdk
    seen: list[JobView] = []
    job = run(client.submit("transcriber", content=DATA / "speech.ogg", metadata={"episode": 1}))
    assert isinstance(job, JobView) and job.status == "queued" and job.metadata == {"episode": 1}

    if isinstance(client, AsyncClient):

        async def on_progress(view):  # AsyncClient also takes a coroutine function
            seen.append(view)
    else:
        on_progress = seen.append
    done = run(client.wait(job, timeout=60, on_progress=on_progress))

    assert done.status == "succeeded"
    assert_transcript(done.result["text"], "speech.ogg")
    assert seen[-1] == done and len(seen) >= 2
    assert any(v.status == "running" and v.progress.total for v in seen)  # progress seen while running
    assert run(client.result(job.id)) == done.result
    page = run(client.jobs(model="transcriber", limit=5))
    assert isinstance(page, JobPage) and job.id in [j.id for j in page.jobs]


def test_cancel_a_running_job(sdk):
    client, run = sdk
    job = run(client.submit(SLOW, {"seconds": 30}))
    with pytest.raises(WaitTimeout):
        run(client.wait(job, timeout=0.5))
    assert run(client.cancel(job)).status == "cancelled"
    with pytest.raises(LongserveError) as caught:
        run(client.result(job))
    assert caught.value.status == 409 and caught.value.type == "job_cancelled"


def test_prefer_wait_falls_back_to_the_job(sdk):
    client, run = sdk
    seen: list[JobView] = []
    result = run(client.predict(SLOW, {"seconds": 1.5}, prefer_wait=0.2, on_progress=seen.append))
    assert result["slept"] == 1.5
    assert seen and seen[-1].status == "succeeded"  # it became a job, and was followed to the end
    # Done within the wait: the result at once, no job to follow.
    seen.clear()
    assert run(client.predict(SLOW, {"seconds": 0}, prefer_wait=5, on_progress=seen.append))["slept"] == 0
    assert seen == []


def test_models(sdk):
    client, run = sdk
    listing = run(client.models())
    assert isinstance(listing, ModelList)
    assert {"embedder", "transcriber", "sleeper"} <= {m.name for m in listing.models}
    sleeper = run(client.model("sleeper"))
    assert isinstance(sleeper, ModelView) and sleeper.max_queued_requests == 2 and sleeper.timeout_s == 1.5


def test_503_is_retried_after_retry_after(sdk, client, caplog, serve_app):
    sdk_client, run = sdk
    wait_idle(client)
    with ThreadPoolExecutor(3) as pool:
        # One running + max_queued_requests=2 waiting: the sleeper is full for ~3 s.
        body, tag = tagged(1.0)
        fill = [pool.submit(client.post, SLEEP, json=body, headers={"Request-Timeout": "5"})]
        began(serve_app, tag)
        fill += [
            pool.submit(client.post, SLEEP, json={"seconds": 1.0}, headers={"Request-Timeout": "5"}) for _ in range(2)
        ]
        time.sleep(0.3)  # the two reach the queue (nothing shows when they have)
        with Client(sdk_client.url, retry=Retry(attempts=0)) as no_retry:
            with pytest.raises(LongserveError) as caught:
                no_retry.predict("sleeper", {"seconds": 0})
        assert caught.value.status == 503 and caught.value.type == "overloaded"

        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="longserve.client"):
            result = run(sdk_client.predict("sleeper", {"seconds": 0}, request_timeout=5))
        assert result["slept"] == 0
        assert [r.status_code for r in (f.result() for f in fill)] == [200, 200, 200]
    retries = [r.getMessage() for r in caplog.records if "503 overloaded; retry" in r.getMessage()]
    assert retries, caplog.text
    assert time.monotonic() - started >= 1.0  # it waited for Retry-After (>= 1 s) before retrying


def test_unreachable_server_is_connection_failed():
    from tests.conftest import free_port

    with Client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ConnectionFailed):
            client.models()


class StandIn(BaseHTTPRequestHandler):
    """A local server in the app's place: what the client sends, or an answer the app would not give."""

    def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def standing_in(handler: type[StandIn]) -> Iterator[str]:
    """The stand-in's base URL while it serves."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_api_key_and_callback_are_sent():
    """What the client puts on the wire (the server's callback support comes with issue 3):
    the key as a bearer token, callback_url / callback_events as query parameters."""
    seen = []
    job = {
        "id": "job_x",
        "model": "m",
        "status": "queued",
        "progress": {"done": 0},
        "attempts": 0,
        "max_attempts": 3,
        "created_at": "2026-01-01T00:00:00.000+00:00",
        "queue_wait_s": 0,
        "links": {"self": "/v1/jobs/job_x", "result": "/v1/jobs/job_x/result"},
    }

    class Recorder(StandIn):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers.get("Authorization")))
            self.answer(202, json.dumps(job).encode())

    with standing_in(Recorder) as url, Client(url, api_key="k3y") as client:
        client.submit("m", {"x": 1}, callback_url="http://127.0.0.1:9/hook", callback_events="all")
    assert seen == [
        ("/v1/models/m/jobs?callback_url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&callback_events=all", "Bearer k3y")
    ]


def test_a_submission_whose_answer_was_lost_is_sent_again_without_a_second_job(serve_app, client, caplog):
    """When a gateway replica dies mid-request, Ray Serve's proxy answers a bare
    `500 Internal Server Error`: the job may or may not exist. The stand-in
    below passes the first submission to the real app, then answers that bare
    500 instead of its 202. The client sends it again under the same
    Idempotency-Key, and the server replays the job the first one made."""
    forwarded = []  # (Idempotency-Key, the app's status, job id)

    class DiesOnce(StandIn):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "idempotency-key")}
            answer = client.post(self.path, content=body, headers=headers)
            forwarded.append((headers.get("Idempotency-Key"), answer.status_code, answer.json().get("id")))
            if len(forwarded) == 1:
                self.answer(500, b"Internal Server Error", "text/plain")
            else:
                self.answer(answer.status_code, answer.content)

    with standing_in(DiesOnce) as url, Client(url, retry=Retry(base_delay=0.1)) as sdk:
        with caplog.at_level(logging.INFO, logger="longserve.client"):
            job = sdk.submit("embedder", {"texts": ["once"]})
    (key, first, made), (again_key, second, replayed) = forwarded
    assert key and again_key == key, "the resend must carry the first key"
    assert (first, second) == (202, 202) and job.id == made == replayed, "a second job was made"
    assert "500 http_error; retry 1/5" in caplog.text
    with Client(serve_app.url) as direct:
        assert direct.wait(job.id, timeout=60).status == "succeeded"
