"""The rest of the HTTP surface: model info, health, and bad requests."""

from tests.conftest import error_of


def test_models_list_shows_the_timeout_in_force_and_its_source(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert {"embedder", "transcriber", "sleeper"} <= models.keys()
    assert models["embedder"]["timeout_s"] == 10
    assert models["embedder"]["timeout_source"] == "models.embedder.timeout in serve_config.yaml"
    assert models["embedder"]["batching"] == {"max_batch_size": 32, "batch_wait_timeout_s": 0.005}
    assert models["transcriber"]["max_ongoing_requests"] == 1
    assert models["transcriber"]["accepts_raw_body"] is True


def test_one_model_shows_its_queue_limits(client):
    info = client.get("/v1/models/sleeper").json()
    assert info["timeout_s"] == 1.5 and info["max_timeout_s"] == 5
    assert info["max_ongoing_requests"] == 1 and info["max_queued_requests"] == 2


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["models"]["embedder"] == "HEALTHY" and ready["models"]["transcriber"] == "HEALTHY"
    assert ready["jobs"] == "ok"


def test_unknown_model_is_404_json(client):
    for response in (client.get("/v1/models/nope"), client.post("/v1/models/nope/predict", json={})):
        assert response.status_code == 404
        error = error_of(response)
        assert error["type"] == "not_found" and "embedder" in error["message"]


def test_unknown_path_is_404_json(client):
    response = client.get("/v2/anything")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found"


def test_malformed_json_is_422(client):
    response = client.post(
        "/v1/models/embedder/predict", content=b'{"texts": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert error_of(response)["type"] == "invalid_request"


def test_wrong_fields_are_422_naming_the_field(client):
    response = client.post("/v1/models/embedder/predict", json={"text": "oops"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["details"][0]["loc"] == ["texts"]
    assert "texts" in error["message"]


def test_text_body_for_a_json_model_is_415(client):
    response = client.post("/v1/models/embedder/predict", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert error_of(response)["type"] == "unsupported_media_type"


def test_body_over_the_limit_is_413_by_content_length(client):
    big = b"\0" * (9 * 1024 * 1024)  # max_body_mb is 8 in the test config
    response = client.post("/v1/models/transcriber/predict", content=big, headers={"Content-Type": "audio/wav"})
    assert response.status_code == 413
    error = error_of(response)
    assert error["type"] == "payload_too_large" and error["limit_bytes"] == 8 * 1024 * 1024


def test_body_over_the_limit_is_413_while_streaming(client):
    # No Content-Length (chunked): refused as the running count passes the limit.
    def chunks():
        for _ in range(20):
            yield b"\0" * (1024 * 1024)

    response = client.post("/v1/models/transcriber/predict", content=chunks(), headers={"Content-Type": "audio/wav"})
    assert response.status_code == 413
    assert error_of(response)["type"] == "payload_too_large"


def test_empty_raw_body_is_422(client):
    response = client.post("/v1/models/transcriber/predict", content=b"", headers={"Content-Type": "audio/wav"})
    assert response.status_code == 422
    assert "empty body" in error_of(response)["message"]


def test_model_exception_is_500_model_error_and_the_replica_keeps_serving(client):
    response = client.post("/v1/models/sleeper_false/predict", json={"seconds": 0, "fail": True})
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "model_error" and "asked to fail" in error["message"], error
    assert client.post("/v1/models/sleeper_false/predict", json={"seconds": 0}).status_code == 200


def test_client_request_id_is_kept(client):
    response = client.post("/v1/models/nope/predict", json={}, headers={"X-Request-ID": "my-trace-42"})
    assert error_of(response)["request_id"] == "my-trace-42"
