"""The shipped models, served by Ray Serve, over HTTP."""

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ray import serve

from tests.conftest import APP_NAME, error_of, speech_wav
from tests.transcripts import assert_transcript


def embed(client, texts):
    response = client.post("/v1/models/embedder/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"])


def test_embeddings_are_normalized_384_d(client):
    vectors = embed(client, ["A man is playing a guitar.", "The weather is nice today."])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_paraphrases_are_closer_than_unrelated_sentences(client):
    cat, kitten, stocks = embed(
        client,
        ["The cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply on Monday."],
    )
    assert cat @ kitten > cat @ stocks + 0.3


def test_batched_requests_get_their_own_vectors(client):
    # Concurrent requests share forward passes (@serve.batch); each must still
    # get exactly the vectors it would get alone.
    texts = [[f"sentence number {i}", f"another line {i * 7}"] for i in range(24)]
    alone = [embed(client, t) for t in texts[:3]]
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda t: embed(client, t), texts))
    for a, b in zip(alone, together[:3]):
        assert np.allclose(a, b, atol=1e-5)
    assert all(v.shape == (2, 384) for v in together)


def test_transcribes_a_raw_ogg_upload(client, speech):
    response = client.post("/v1/models/transcriber/predict", content=speech, headers={"Content-Type": "audio/ogg"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_transcript(body["text"], "speech.ogg")
    assert body["language"] == "en"
    assert 7.0 < body["duration"] < 7.6
    assert body["segments"] and body["segments"][0]["start"] == 0.0


def test_transcribes_base64_wav_in_json(client):
    audio = base64.b64encode(speech_wav()).decode()
    response = client.post("/v1/models/transcriber/predict", json={"audio": audio, "language": "en"})
    assert response.status_code == 200, response.text
    assert_transcript(response.json()["text"], "speech.ogg")


def test_undecodable_audio_is_422_and_the_replica_keeps_serving(client, speech):
    response = client.post(
        "/v1/models/transcriber/predict", content=b"this is not audio" * 100, headers={"Content-Type": "audio/mpeg"}
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["type"] == "invalid_input" and "decode" in error["message"]

    response = client.post("/v1/models/transcriber/predict", content=speech, headers={"Content-Type": "audio/ogg"})
    assert response.status_code == 200


def test_a_language_the_model_does_not_know_is_422(client, speech):
    response = client.post(
        "/v1/models/transcriber/predict",
        content=speech,
        params={"language": "zz"},
        headers={"Content-Type": "audio/ogg"},
    )
    assert response.status_code == 422, response.text
    assert "language 'zz' is not one this model knows" in error_of(response)["message"]


def test_bad_base64_is_422(client):
    response = client.post("/v1/models/transcriber/predict", json={"audio": "not base64!!"})
    assert response.status_code == 422
    assert "base64" in error_of(response)["message"]


def test_transcriber_reports_progress_in_audio_seconds(serve_app):
    # The hook the async-jobs runner uses: progress events stream from the replica.
    from longserve.models.transcriber import TranscribeInput

    handle = serve.get_deployment_handle("transcriber", APP_NAME).options(stream=True)
    events = list(handle.run.remote(TranscribeInput(audio=speech_wav("speech_long.ogg")), progress=True))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "started" and kinds[-1] == "result"
    progress = [value for kind, value in events if kind == "progress"]
    total = events[-1][1]["duration"]
    assert len(progress) >= 3
    assert all(p["total"] == total for p in progress)
    done = [p["done"] for p in progress]
    assert done == sorted(done) and done[0] == 0.0 and done[-1] > 0.9 * total
