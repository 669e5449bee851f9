"""The OpenAI facade's shapes, without Ray: subtitles, vectors, errors, aliases."""

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from longserve.server.config import AppConfig
from longserve.server.http.errors import retry_advice
from longserve.server.openai import formats
from longserve.server.openai.errors import openai_error

SEGMENTS = [{"start": 0.0, "end": 2.5, "text": "Hello there."}, {"start": 2.5, "end": 3661.0, "text": "Bye."}]
RESULT = {"text": "Hello there. Bye.", "language": "en", "duration": 3662.0, "segments": SEGMENTS}


def test_srt_numbers_its_cues_and_uses_commas():
    assert formats.srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:02,500 --> 01:01:01,000\nBye.\n\n"
    )


def test_vtt_has_its_header_and_uses_dots():
    assert formats.vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n00:00:02.500 --> 01:01:01.000\nBye.\n"
    )


def test_json_and_verbose_json():
    assert formats.transcription(RESULT, "json", "transcribe", set()) == {
        "text": "Hello there. Bye.",
        "usage": {"type": "duration", "seconds": 3662.0},
    }
    verbose = formats.transcription(RESULT, "verbose_json", "translate", set())
    assert verbose["task"] == "translate" and verbose["segments"] == SEGMENTS and "words" not in verbose
    words = [{"word": "Hi", "start": 0.0, "end": 0.4, "probability": 0.9}]
    with_words = {**RESULT, "segments": [{**SEGMENTS[0], "words": words}]}
    verbose = formats.transcription(with_words, "verbose_json", "transcribe", {"word"})
    assert verbose["words"] == [{"word": "Hi", "start": 0.0, "end": 0.4}] and "segments" not in verbose


def test_streamed_segments_are_deltas_that_join_to_the_text():
    segments = [{"start": 0.0, "end": 1.0, "text": "Hi there."}, {"start": 1.0, "end": 2.0, "text": "Bye."}]
    deltas = [formats.segment_delta(segment, first=i == 0) for i, segment in enumerate(segments)]
    assert deltas == ["Hi there.", " Bye."]
    assert list(formats.text_end("Hi there. Bye.", "".join(deltas))) == [
        {"type": "transcript.text.done", "text": "Hi there. Bye."}
    ]


def test_a_model_that_emits_nothing_streams_one_delta_then_done():
    assert list(formats.text_end("Hi there.", "")) == [
        {"type": "transcript.text.delta", "delta": "Hi there."},
        {"type": "transcript.text.done", "text": "Hi there."},
    ]


def test_base64_vectors_are_the_float32_values():
    vector = list(np.float32([0.1, -0.25, 3.0]).astype(float))
    encoded = formats.encode_vector(vector, "base64")
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == vector
    answer = formats.embedding_list({"embeddings": [vector], "tokens": [4]}, "m", "float")
    assert answer["usage"] == {"prompt_tokens": 4, "total_tokens": 4} and answer["data"][0]["embedding"] == vector


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (504, {"type": "timeout", "message": "m", "timeout_s": 3}, ("server_error", None, "timeout")),
        (
            422,
            {"type": "invalid_request", "message": "m", "details": [{"loc": ["body", "input"], "msg": "x"}]},
            ("invalid_request_error", "input", "invalid_request"),
        ),
        (
            404,
            {"type": "not_found", "message": "m", "model": "x"},
            ("invalid_request_error", "model", "model_not_found"),
        ),
        (401, {"type": "unauthorized", "message": "m"}, ("authentication_error", None, "unauthorized")),
        (
            400,
            {"type": "invalid_header", "message": "m", "header": "Request-Timeout"},
            ("invalid_request_error", "Request-Timeout", "invalid_header"),
        ),
    ],
)
def test_errors_in_openai_shape_keep_longserve_fields(status, body, expected):
    error = openai_error(status, body)
    assert (error["type"], error["param"], error["code"]) == expected
    assert error["message"] == "m"
    assert {k: v for k, v in body.items() if k not in ("type", "message")}.items() <= error.items()


def test_retry_advice():
    assert retry_advice(504, {}) == {"x-should-retry": "false"}
    assert retry_advice(503, {"Retry-After": "1"}) == {"x-should-retry": "true"}
    assert retry_advice(503, {}) == {} and retry_advice(400, {}) == {}


MODELS = {"embedder": {"class": "longserve.models.embedder:Embedder"}}


def test_default_aliases_name_only_served_models():
    assert AppConfig.model_validate({"models": MODELS}).openai.aliases == {
        "text-embedding-3-small": "embedder",
        "text-embedding-ada-002": "embedder",
    }


@pytest.mark.parametrize(
    ("aliases", "problem"),
    [
        ({"whisper-1": "transcriber"}, "no model named 'transcriber'"),
        ({"embedder": "embedder"}, "already the name of a served model"),
    ],
)
def test_explicit_aliases_must_name_served_models(aliases, problem):
    with pytest.raises(ValidationError, match=problem):
        AppConfig.model_validate({"models": MODELS, "openai": {"aliases": aliases}})
    assert AppConfig.model_validate({"models": MODELS, "openai": {"aliases": {"e": "embedder"}}}).openai.aliases == {
        "e": "embedder"
    }


def test_cursor_pages_follow_after_and_say_when_more_are_left():
    from longserve.server.http.openai_batches import page

    items = [{"id": f"file-{i}"} for i in range(5)]
    first = page(items, 2, None)
    assert [i["id"] for i in first["data"]] == ["file-0", "file-1"] and first["has_more"]
    last = page(items, 2, "file-3")
    assert [i["id"] for i in last["data"]] == ["file-4"] and not last["has_more"]
    assert page(items, 2, "file-gone")["data"] == []


@pytest.mark.parametrize("path", ["/v1/fail", "/openai/v1/fail"])
def test_a_full_queue_says_retry_and_when_on_every_route(path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from longserve.server.errors import Overloaded
    from longserve.server.http.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get(path)
    async def fail():
        raise Overloaded("model 'm' is at capacity", retry_after=2, model="m")

    response = TestClient(app).get(path)
    assert response.status_code == 503
    assert (response.headers["retry-after"], response.headers["x-should-retry"]) == ("2", "true")
    error = response.json()["error"]
    if path.startswith("/openai"):
        assert (error["type"], error["code"], error["model"]) == ("server_error", "overloaded", "m")
    else:
        assert error["type"] == "overloaded"
