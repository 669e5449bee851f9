"""Streamed predictions (`Accept: text/event-stream`) over real HTTP: partials in
order then the plain predict's body; the deadline over the whole stream (a plain
504 before the first byte, an `error` event after it, the replica's work stopped
either way); failures mid-stream; a batched model; the request id and metrics."""

import re
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from httpx_sse import ServerSentEvent, connect_sse

from tests.conftest import error_of

TICKER = "/v1/models/ticker/predict"  # timeout 5 s; emits {"tick": i}
STREAM = {"Accept": "text/event-stream"}


def ticker_body(**fields) -> tuple[dict, str]:
    tag = f"s-{uuid.uuid4().hex}"
    return {**fields, "tag": tag}, tag


def streamed(client: httpx.Client, path: str, body: dict, headers=None) -> tuple[httpx.Response, list[ServerSentEvent]]:
    """The response and, when it is a stream, all its events (the body read otherwise)."""
    with connect_sse(client, "POST", path, json=body, headers={**STREAM, **(headers or {})}) as source:
        if source.response.status_code != 200:
            source.response.read()
            return source.response, []
        return source.response, list(source.iter_sse())


def ran(serve_app, tag: str, what: str, timeout_s: float = 30) -> None:
    """Wait until the ticker's log says run `tag` `what` (began, cancelled, done)."""
    log = Path(serve_app.config.models["ticker"].options.log)
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and f"{tag} {what}\n" in log.read_text()):
        assert time.monotonic() < deadline, f"the ticker's run {tag} never logged '{what}'"
        time.sleep(0.05)


def test_partials_in_order_then_the_plain_predict_body(client):
    body, _ = ticker_body(ticks=4)
    response, events = streamed(client, TICKER, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"]
    assert [e.event for e in events] == ["partial"] * 4 + ["result"]
    assert [e.id for e in events] == ["1", "2", "3", "4", "5"]
    assert [e.json() for e in events[:-1]] == [{"tick": i} for i in range(4)]
    plain = client.post(TICKER, json=body)
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    assert events[-1].json() == plain.json()


def test_deadline_mid_stream_ends_with_an_error_event_and_stops_the_work(client, serve_app):
    body, tag = ticker_body(ticks=10_000, every=0.1)
    response, events = streamed(client, TICKER, body, {"Request-Timeout": "1.5"})
    assert response.status_code == 200  # sent with the first partial; the end is told in the stream
    *partials, last = events
    assert partials and all(e.event == "partial" for e in partials)
    assert last.event == "error" and last.id == str(len(events))
    error = last.json()["error"]  # the body of a 504
    assert error["type"] == "timeout" and error["stage"] == "running"
    assert error["timeout_s"] == 1.5 and error["timeout_source"] == "Request-Timeout header"
    assert error["request_id"] == response.headers["x-request-id"]
    assert "async job" in error["hint"]
    ran(serve_app, tag, "cancelled")  # the replica stopped at its next check


def test_deadline_before_the_first_partial_is_the_plain_504(client, serve_app):
    body, tag = ticker_body(ticks=3, first_after=60)
    response, events = streamed(client, TICKER, body, {"Request-Timeout": "2"})
    assert response.status_code == 504 and not events
    error = error_of(response)  # a JSON answer, not a stream
    assert error["type"] == "timeout" and error["stage"] == "running" and error["timeout_s"] == 2
    ran(serve_app, tag, "cancelled")


def test_model_failure_mid_stream_ends_with_its_error_event(client):
    body, _ = ticker_body(ticks=5, fail_after=2)
    response, events = streamed(client, TICKER, body)
    assert response.status_code == 200
    assert [e.event for e in events] == ["partial", "partial", "error"]
    error = events[-1].json()["error"]
    assert error["type"] == "model_error" and "asked to fail" in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


def test_errors_before_any_partial_keep_their_status(client):
    response, _ = streamed(client, TICKER, {"ticks": -1})
    assert response.status_code == 422 and error_of(response)["type"] == "invalid_request"
    body, _ = ticker_body(ticks=3, fail_after=0)
    response, _ = streamed(client, TICKER, body)
    assert response.status_code == 500 and error_of(response)["type"] == "model_error"


def test_a_client_that_leaves_mid_stream_stops_the_work(client, serve_app):
    body, tag = ticker_body(ticks=10_000, every=0.05)
    with connect_sse(client, "POST", TICKER, json=body, headers=STREAM) as source:
        events = source.iter_sse()
        assert [next(events).event for _ in range(3)] == ["partial"] * 3
    ran(serve_app, tag, "cancelled")


def test_a_batched_model_streams_just_the_result(client):
    texts = {"texts": ["A cat sits on the mat."]}
    response, events = streamed(client, "/v1/models/embedder/predict", texts)
    assert response.status_code == 200
    assert [(e.event, e.id) for e in events] == [("result", "1")]
    plain = client.post("/v1/models/embedder/predict", json=texts).json()
    streamed_vectors = events[0].json()["embeddings"]
    # A different batch of neighbours may move the last bits.
    np.testing.assert_allclose(np.array(streamed_vectors), np.array(plain["embeddings"]), atol=1e-6)


def test_a_stream_counts_as_a_sync_request_in_the_metrics(client, serve_app):
    def timeouts() -> float:
        text = httpx.get(serve_app.metrics_url, timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if re.match(r'ray_longserve_requests_total\{.*model="ticker"', line) and 'outcome="timeout_running"' in line
        )

    before = timeouts()
    body, _ = ticker_body(ticks=10_000, every=0.1)
    streamed(client, TICKER, body, {"Request-Timeout": "1"})  # a 504 or an error event: timeout_running either way
    deadline = time.monotonic() + 60
    while timeouts() < before + 1:  # Ray exports metrics every few seconds
        assert time.monotonic() < deadline, "the stream's timeout never reached the metrics"
        time.sleep(1)
