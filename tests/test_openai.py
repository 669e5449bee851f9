"""The OpenAI facade (/openai/v1) over real HTTP, spoken by the official
`openai` package: same models, timeouts and keys as the native routes."""

import base64

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import API_KEYS, DATA, speech_wav
from tests.transcripts import assert_transcript

TEXTS = ["A cat sits on the mat.", "Ray Serve scales model serving.", "The quick brown fox."]
SLOW = "slow_embedder"  # timeout 6 s, one call at a time; each text is seconds to sleep


@pytest.fixture(scope="module")
def oai(serve_app):
    with openai.OpenAI(base_url=serve_app.url + "/openai/v1", api_key="unused", max_retries=2) as client:
        yield client


@pytest.fixture(scope="module")
def native_transcript(client) -> dict:
    response = client.post(
        "/v1/models/transcriber/predict",
        content=(DATA / "speech.ogg").read_bytes(),
        headers={"Content-Type": "audio/ogg"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def speech():
    return ("speech.ogg", (DATA / "speech.ogg").read_bytes(), "audio/ogg")


def error_body(exc: openai.APIStatusError) -> dict:
    """The error object, checking OpenAI's shape; longserve's fields ride along."""
    error = exc.response.json()["error"]
    assert {"message", "type", "param", "code"} <= error.keys(), error
    assert error["request_id"] == exc.response.headers["x-request-id"]
    return error


def calls_so_far(oai) -> int:
    """Calls the slow embedder's replica has started, this one included."""
    return int(oai.embeddings.create(model=SLOW, input="0", encoding_format="float").data[0].embedding[0])


# -- models -------------------------------------------------------------------


def test_models_lists_served_models_and_aliases(oai, serve_app):
    ids = {model.id for model in oai.models.list()}
    assert set(serve_app.config.models) | {"whisper-1", "text-embedding-3-small"} <= ids
    assert oai.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError) as caught:
        oai.models.retrieve("gpt-nonexistent")
    assert "transcriber" in error_body(caught.value)["message"]


# -- embeddings ---------------------------------------------------------------


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])  # None: the SDK's default (base64)
def test_embeddings_equal_the_native_vectors(oai, client, encoding_format):
    native = client.post("/v1/models/embedder/predict", json={"texts": TEXTS}).json()
    options = {} if encoding_format is None else {"encoding_format": encoding_format}
    response = oai.embeddings.create(model="text-embedding-3-small", input=TEXTS, **options)
    assert [item.index for item in response.data] == [0, 1, 2]
    if encoding_format == "base64":  # asked for by name, the SDK hands the encoded float32s over as they came
        vectors = np.array([np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") for item in response.data])
    else:  # the SDK decodes what it asked for itself
        vectors = np.array([item.embedding for item in response.data])
    assert vectors.shape == (3, 384)
    # Float32 on both sides; a different batch of neighbours may move the last bits.
    np.testing.assert_allclose(vectors, np.array(native["embeddings"]), atol=1e-6)
    assert response.model == "text-embedding-3-small"
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(native["tokens"]) > len(TEXTS)


def test_embeddings_of_one_string(oai):
    one = oai.embeddings.create(model="embedder", input=TEXTS[0], encoding_format="float")
    many = oai.embeddings.create(model="embedder", input=TEXTS, encoding_format="float")
    assert len(one.data) == 1
    np.testing.assert_allclose(one.data[0].embedding, many.data[0].embedding, atol=1e-6)
    assert one.usage.prompt_tokens < many.usage.prompt_tokens


def test_dimensions_the_model_cannot_honour_are_refused(oai):
    assert len(oai.embeddings.create(model="embedder", input="hi", dimensions=384).data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model="embedder", input="hi", dimensions=256)
    error = error_body(caught.value)
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "dimensions",
        "unsupported_option",
    )
    assert "384" in error["message"]


def test_bad_embedding_requests_get_openai_shaped_400s(oai, client):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model="embedder", input=[[1, 2, 3]])
    assert error_body(caught.value)["param"] == "input"
    response = client.post("/openai/v1/embeddings", json={"model": "embedder"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
    assert response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:  # a model that does not embed
        oai.embeddings.create(model="whisper-1", input="hi")
    assert "embedder" in error_body(caught.value)["message"]


def test_unknown_model_is_a_404_listing_the_served_models(oai, serve_app):
    with pytest.raises(openai.NotFoundError) as caught:
        oai.embeddings.create(model="no-such-model", input="hi")
    error = error_body(caught.value)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    for name in [*serve_app.config.models, "text-embedding-3-small"]:
        assert name in error["message"]


# -- timeouts -----------------------------------------------------------------


def test_a_timeout_reaches_the_sdk_as_an_explained_504_after_one_request(oai):
    before = calls_so_far(oai)
    with pytest.raises(openai.InternalServerError) as caught:
        oai.embeddings.create(model=SLOW, input="30")
    response = caught.value.response
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"
    error = error_body(caught.value)
    assert error["code"] == "timeout" and error["stage"] == "running" and error["timeout_s"] == 6
    assert error["timeout_source"] == f"models.{SLOW}.timeout in serve_config.yaml"
    assert "async job" in error["message"]
    # The SDK (max_retries=2) sent it once: the replica started just one call between ours.
    assert calls_so_far(oai) == before + 2


def test_the_sdks_own_deadline_ends_the_work_first(oai):
    before = calls_so_far(oai)
    with pytest.raises(openai.InternalServerError) as caught:  # not APITimeoutError: the server answered first
        oai.with_options(timeout=4.0).embeddings.create(model=SLOW, input="30")
    error = error_body(caught.value)
    assert error["timeout_s"] == 3  # 4 s less the 1 s margin
    assert error["timeout_source"].startswith("x-stainless-read-timeout header (4.0 s")
    assert "OpenAI(timeout=" in error["hint"]
    assert calls_so_far(oai) == before + 2


def test_the_client_deadline_header_holds_on_native_routes_too(client):
    response = client.post(
        "/v1/models/sleeper/predict", json={"seconds": 10}, headers={"x-stainless-read-timeout": "1"}
    )
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["timeout_s"] == 0.75 and error["timeout_source"].startswith("x-stainless-read-timeout header")
    # A malformed one is refused, naming it.
    response = client.post("/v1/models/sleeper/predict", json={"seconds": 0}, headers={"X-Stainless-Timeout": "x"})
    assert response.status_code == 400 and response.json()["error"]["header"] == "x-stainless-timeout"


def test_waiting_for_a_job_ends_before_the_clients_deadline(serve_app):
    # A client that gives up after 3 s: without the header's cap, both waits would outlast it (ReadTimeout).
    headers = {"x-stainless-read-timeout": "2"}
    with httpx.Client(base_url=serve_app.url, timeout=3) as short:
        response = short.post(
            "/v1/models/sleeper_false/predict", json={"seconds": 30}, headers={**headers, "Prefer": "wait=60"}
        )
        assert response.status_code == 202 and response.headers["preference-applied"] == "wait=1.5"
        job_id = response.json()["id"]
        try:
            polled = short.get(f"/v1/jobs/{job_id}?wait=60", headers=headers)
            assert polled.status_code == 200 and polled.json()["status"] in ("queued", "running")
        finally:
            short.delete(f"/v1/jobs/{job_id}")  # frees the sleeper for other tests


# -- audio --------------------------------------------------------------------


def test_transcription_json_and_text(oai, native_transcript):
    answer = oai.audio.transcriptions.create(model="whisper-1", file=speech())
    assert answer.text == native_transcript["text"]
    assert answer.usage.seconds == native_transcript["duration"]
    text = oai.audio.transcriptions.create(model="whisper-1", file=speech(), response_format="text")
    assert text.strip() == native_transcript["text"]


@pytest.mark.parametrize("response_format", ["srt", "vtt"])
def test_transcription_subtitles(oai, native_transcript, response_format):
    answer = oai.audio.transcriptions.create(model="transcriber", file=speech(), response_format=response_format)
    blocks = [block.splitlines() for block in answer.strip().split("\n\n")]
    if response_format == "vtt":
        assert blocks.pop(0) == ["WEBVTT"]
    segments = native_transcript["segments"]
    assert len(blocks) == len(segments)
    separator = "," if response_format == "srt" else "."
    for block, segment in zip(blocks, segments, strict=True):
        cue = block[1:] if response_format == "srt" else block
        assert separator in cue[0] and " --> " in cue[0]
        assert " ".join(cue[1:]) == segment["text"]
    if response_format == "srt":
        assert [block[0] for block in blocks] == [str(i) for i in range(1, len(blocks) + 1)]


def test_transcription_verbose_json_with_words_and_segments(oai, native_transcript):
    answer = oai.audio.transcriptions.create(
        model="whisper-1", file=speech(), response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert answer.language == native_transcript["language"]
    assert answer.duration == native_transcript["duration"]
    assert answer.segments and answer.words
    assert " ".join(segment.text for segment in answer.segments) == answer.text
    for segment in answer.segments:
        assert segment.start <= segment.end and isinstance(segment.avg_logprob, float) and segment.tokens
    starts = [word.start for word in answer.words]
    assert starts == sorted(starts)
    # The words spell the transcript.
    assert "".join(word.word for word in answer.words).replace(" ", "") == answer.text.replace(" ", "")


def test_streamed_deltas_join_to_the_final_text(oai, native_transcript):
    events = list(oai.audio.transcriptions.create(model="whisper-1", file=speech(), stream=True))
    assert [event.type for event in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    assert "".join(event.delta for event in events[:-1]) == events[-1].text == native_transcript["text"]


def test_translation_matches_the_native_translate_task(oai, client):
    native = client.post(
        "/v1/models/transcriber/predict?task=translate",
        content=(DATA / "speech.ogg").read_bytes(),
        headers={"Content-Type": "audio/ogg"},
    ).json()
    assert oai.audio.translations.create(model="whisper-1", file=speech()).text == native["text"]


def test_audio_options_the_model_cannot_take_are_refused(oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.audio.transcriptions.create(model="whisper-1", file=speech(), timestamp_granularities=["word"])
    assert error_body(caught.value)["param"] == "timestamp_granularities"
    with pytest.raises(openai.BadRequestError) as caught:
        oai.audio.transcriptions.create(model="whisper-1", file=speech(), language="xx")
    assert "language" in error_body(caught.value)["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.audio.transcriptions.create(model="whisper-1", file=speech(), extra_body={"chunking_strategy": "auto"})
    assert error_body(caught.value)["param"] == "chunking_strategy"
    with pytest.raises(openai.BadRequestError) as caught:
        oai.audio.transcriptions.create(model="embedder", file=speech())
    assert "transcriber" in error_body(caught.value)["message"]


# -- keys ---------------------------------------------------------------------


def test_keys_hold_on_the_facade(serve_app):
    base = serve_app.secure_url + "/openai/v1"
    with openai.OpenAI(base_url=base, api_key="not-a-key-at-all-000", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.models.list()
        assert error_body(caught.value)["type"] == "authentication_error"
    with openai.OpenAI(base_url=base, api_key=API_KEYS["predict"], max_retries=0) as right:
        assert "sleeper" in {model.id for model in right.models.list()}


def test_a_streamed_transcription_sends_a_delta_per_segment(oai):
    """Two readings of the clip: several segments, each a delta as the model emits it."""
    clip = ("speech.wav", speech_wav("speech.ogg", repeat=2), "audio/wav")
    events = list(oai.audio.transcriptions.create(model="whisper-1", file=clip, stream=True))
    *deltas, done = events
    assert len(deltas) >= 2 and all(event.type == "transcript.text.delta" for event in deltas)
    assert done.type == "transcript.text.done"
    text = "".join(event.delta for event in deltas)
    assert text == done.text
    assert_transcript(text, "speech.ogg")


def test_a_deadline_mid_stream_is_an_error_the_sdk_raises(oai, tmp_path):
    """~530 s of speech: eighteen 30 s windows, 2-15 s of work each on these CPUs (~45 s
    in all on an idle one). The SDK's 25 s deadline (the server's: 24 s) passes after the
    first window's segments, long before the last: the stream ends with an OpenAI-shaped
    error, which the SDK raises, never a stream that just stops."""
    from scripts.make_podcast import make

    make(tmp_path / "talk.mp3", 530)  # an MP3 (2 MB): within the test app's max_body_mb, unlike a WAV
    clip = ("talk.mp3", (tmp_path / "talk.mp3").read_bytes(), "audio/mpeg")
    deltas = []
    with pytest.raises(openai.APIError) as caught:
        for event in oai.with_options(timeout=25.0).audio.transcriptions.create(
            model="whisper-1", file=clip, stream=True
        ):
            deltas.append(event)
    assert deltas and all(event.type == "transcript.text.delta" for event in deltas)  # it failed mid-stream
    error = caught.value.body
    assert error["code"] == "timeout" and error["stage"] == "running" and error["type"] == "server_error"
    assert "x-stainless-read-timeout" in error["timeout_source"]
