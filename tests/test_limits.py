"""Hostile and broken input: every limit answers a clear 4xx (or fails the
job with a clear error), nothing is stored, and the model keeps serving."""

import io
import json
import wave

import pytest

from tests.conftest import error_of
from tests.jobs_helpers import wait_for
from tests.transcripts import assert_transcript

MAX_AUDIO_S = 600  # models.transcriber.options.max_audio_s in the test app


def silent_wav(seconds: float, rate: int = 8000) -> bytes:
    """8-bit 8 kHz silence: 11 minutes fit in 5.3 MB, under the test app's 8 MB body limit."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(b"\x80" * int(seconds * rate))
    return out.getvalue()


def test_too_many_texts_is_422(client):
    response = client.post("/v1/models/embedder/predict", json={"texts": ["a"] * 257})
    assert response.status_code == 422
    error = error_of(response)
    assert error["type"] == "invalid_input" and "257 texts; at most 256" in error["message"]


def test_a_text_over_the_length_limit_is_422(client):
    response = client.post("/v1/models/embedder/predict", json={"texts": ["short", "x" * 10_001]})
    assert response.status_code == 422
    assert "texts[1] has 10001 characters; at most 10000" in error_of(response)["message"]


def test_the_limits_hold_for_jobs_at_submit(client):
    response = client.post("/v1/models/embedder/jobs", json={"texts": ["a"] * 257})
    assert response.status_code == 422 and error_of(response)["type"] == "invalid_input"


def test_deep_json_is_refused_before_parsing(client):
    deep = b'{"texts": ["a"], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = client.post("/v1/models/embedder/predict", content=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "nested 5001 levels deep; at most 32" in error_of(response)["message"]
    # Brackets inside strings are text, not nesting.
    texts = {"texts": ["[[[[" * 100]}
    assert client.post("/v1/models/embedder/predict", json=texts).status_code == 200


def test_audio_over_the_duration_limit_is_422_sync_and_a_failed_job_async(client):
    audio = silent_wav(MAX_AUDIO_S + 60)
    headers = {"Content-Type": "audio/wav"}
    response = client.post("/v1/models/transcriber/predict", content=audio, headers=headers)
    assert response.status_code == 422
    assert "the audio is 660 s long; at most 600 s (options.max_audio_s)" in error_of(response)["message"]

    job = client.post("/v1/models/transcriber/jobs", content=audio, headers=headers).json()
    job = wait_for(client, job["id"], ["failed"])
    assert job["error"]["type"] == "invalid_input" and "at most 600 s" in job["error"]["message"]
    assert job["attempts"] == 1  # bad input is not retried


@pytest.mark.parametrize(
    "body, media_type, message",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 2000, "audio/mpeg", "could not decode"),  # lies about its type
        (silent_wav(0), "audio/wav", "no samples"),  # a valid file with no audio in it
        (json.dumps({"not": "audio"}).encode(), "audio/ogg", "could not decode"),
    ],
)
def test_broken_audio_fails_the_job_clearly_and_the_replica_keeps_serving(client, speech, body, media_type, message):
    response = client.post("/v1/models/transcriber/predict", content=body, headers={"Content-Type": media_type})
    assert response.status_code == 422 and message in error_of(response)["message"]

    job = client.post("/v1/models/transcriber/jobs", content=body, headers={"Content-Type": media_type}).json()
    job = wait_for(client, job["id"], ["failed"])
    assert job["error"]["type"] == "invalid_input" and message in job["error"]["message"]

    ok = client.post("/v1/models/transcriber/predict", content=speech, headers={"Content-Type": "audio/ogg"})
    assert ok.status_code == 200
    assert_transcript(ok.json()["text"], "speech.ogg")
