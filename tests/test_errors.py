"""Domain errors raised below the HTTP layer reach the client in the one JSON
error shape, with the status from http/errors.py's table (a FastAPI app with
the gateway's handlers; the gateway's own answers are tested over Serve in
test_api, test_limits, test_timeouts, test_overload)."""

import inspect

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from longserve.server import errors
from longserve.server.http.errors import STATUS, install_error_handlers

# The statuses clients see: changing one changes the API.
EXPECTED = [
    (errors.InvalidRequest("bad", details=[]), 422, None),
    (errors.UnsupportedMediaType("json only"), 415, None),
    (errors.InvalidHeader("bad header", header="Request-Timeout"), 400, None),
    (errors.InvalidCallbackUrl("refused", callback_url="http://10.0.0.1/"), 422, None),
    (errors.InputRejected("too long", model="m"), 422, None),
    (errors.InputUnavailable("gone", status=404, url="http://example.com/a.wav"), 502, None),
    (errors.InvalidInputUrl("refused", input_url="http://10.0.0.1/"), 422, None),
    (errors.TimedOut("late", model="m", stage="queued"), 504, None),
    (errors.Overloaded("full", retry_after=3, model="m", retry_after_s=3), 503, "3"),
    (errors.ReplicaDied("m", "ActorDiedError", "gone"), 503, "1"),
    (errors.ModelFailed("m", "ZeroDivisionError: division by zero"), 500, None),
    (errors.ServeError("model 'm' ended without a result", model="m"), 500, None),
]


def client_raising(exc: Exception) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fail")
    async def fail():
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("exc, status, retry_after", EXPECTED, ids=lambda v: type(v).__name__)
def test_a_domain_error_answers_its_status_in_the_error_shape(exc, status, retry_after):
    response = client_raising(exc).get("/fail", headers={"x-request-id": "rid-1"})
    assert response.status_code == status
    assert response.json() == {"error": {**exc.body, "request_id": "rid-1"}}
    assert list(response.json()["error"])[:2] == ["type", "message"]
    assert response.headers.get("retry-after") == retry_after


def test_every_domain_error_has_its_own_row_in_the_table():
    classes = {cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.ServeError)}
    assert classes == set(STATUS) == {type(exc) for exc, _, _ in EXPECTED}


def test_model_failed_and_replica_died_bodies_are_the_gateways():
    assert errors.ModelFailed("m", "boom").body == {
        "type": "model_error",
        "message": "model 'm' failed: boom",
        "model": "m",
    }
    assert errors.ReplicaDied("m", "ActorDiedError", "gone").body == {
        "type": "unavailable",
        "message": "model 'm' replica died: gone",
        "model": "m",
    }
