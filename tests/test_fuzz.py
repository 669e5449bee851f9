"""Fuzz the whole API from its own OpenAPI document with schemathesis.

Every operation gets bounded, generated requests (valid and invalid). The
service must never answer 500/502, every answer must match the documented
schema (errors in the one JSON error shape), and it is healthy afterwards.
"""

import copy
from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from longserve.server.http.jobs import JOB_PARAMS
from tests.conftest import TENANT_KEYS
from tests.slow_models import SleepInput

# Models the fuzzer may call. Only short sleeps, and never `fail`, which
# exists to make the test model raise (a 500 by design).
FUZZED_MODELS = ["embedder", "transcriber", "sleeper"]
EXAMPLES_PER_OPERATION = 25


def with_model_bodies(spec: dict) -> dict:
    """The served spec takes any body on predict and jobs (the model decides);
    give the fuzzer the real models' input schemas so it reaches them."""
    from longserve.models.embedder import EmbedInput
    from longserve.models.transcriber import TranscribeInput

    spec = copy.deepcopy(spec)
    sleep = SleepInput.model_json_schema()
    sleep["properties"]["seconds"]["maximum"] = 0.3
    sleep["properties"]["fail"] = {"const": False}
    bodies = [EmbedInput.model_json_schema(), TranscribeInput.model_json_schema(), sleep]
    for path in ("/v1/models/{model}/predict", "/v1/models/{model}/jobs"):
        operation = spec["paths"][path]["post"]
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"anyOf": bodies}}}}
    # The job options (callback_url, ttl_s, ...) apply to predict only with a
    # Prefer header, which the document cannot express; without it a predict
    # refuses them (400, by design, tests/test_jobs.py). Fuzzed on predict they
    # would turn most requests into that 400, so the fuzzer fuzzes them on the
    # jobs operation, where they always apply, and predict reaches the models.
    predict = spec["paths"]["/v1/models/{model}/predict"]["post"]
    predict["parameters"] = [p for p in predict["parameters"] if p["name"] not in JOB_PARAMS]
    for item in spec["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model" and parameter["in"] == "path":
                    parameter["schema"] = {"type": "string", "enum": FUZZED_MODELS + ["no-such-model"]}
    return spec


def served_spec() -> dict:
    # The gateway's FastAPI app builds the same document it serves at /openapi.json.
    from longserve.server.http.gateway import app

    return app.openapi()


schema = schemathesis.openapi.from_dict(with_model_bodies(served_spec()))


def no_internal_errors(ctx, response, case):
    # 503 (queue full, with Retry-After) and 504 (the timeout, explained) are
    # documented answers; a 500 or 502 is a bug.
    assert response.status_code not in (500, 502), f"{response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["type"] and error["message"] and "request_id" in error, error


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_fuzz(case, serve_app):
    case.call_and_validate(
        base_url=serve_app.url,
        timeout=30,
        checks=[no_internal_errors, status_code_conformance, content_type_conformance, response_schema_conformance],
    )


AUTH_EXAMPLES_PER_OPERATION = 8


@schema.parametrize()
@settings(
    max_examples=AUTH_EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
def test_api_fuzz_with_auth_on(case, serve_app):
    """The same against the keyed app (tenants, quotas), with a tenant's key that has
    predict and jobs but not admin: ownership, scopes and quota paths are reached."""
    case.call_and_validate(
        base_url=serve_app.secure_url,
        headers={"Authorization": f"Bearer {TENANT_KEYS['acme']}"},
        timeout=30,
        checks=[no_internal_errors, status_code_conformance, content_type_conformance, response_schema_conformance],
    )


def test_the_fuzzed_document_is_the_served_one(client):
    def without_examples(spec: dict) -> dict:
        # Serve's ingress adds `"example": {}` to optional parameters; nothing else differs.
        for item in spec["paths"].values():
            for operation in item.values():
                for parameter in operation.get("parameters", []):
                    parameter.pop("example", None)
        return spec

    assert without_examples(client.get("/openapi.json").json()) == without_examples(served_spec())


def test_the_fuzzer_reached_the_models(serve_app):
    """The generated bodies get past validation to the models (2xx), not only 4xx.
    Counted here, from this test's own requests, so it holds in any test order."""
    seen: Counter = Counter()
    statuses: Counter = Counter()

    def fuzz(path: str) -> None:
        # Up to 4x the examples, but only until both a 2xx and a 4xx came: a job's fuzzed options make
        # most submits a 4xx, and 25 random ones all were once (a CI rehearsal).
        @given(case=schema[path]["POST"].as_strategy())
        @settings(
            max_examples=4 * EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case):
            if seen[(path, 2)] and seen[(path, 4)]:
                return
            status = case.call(base_url=serve_app.url, timeout=30).status_code
            seen[(path, status // 100)] += 1
            statuses[(path, status)] += 1

        call()

    predict, jobs = "/v1/models/{model}/predict", "/v1/models/{model}/jobs"
    fuzz(predict)
    fuzz(jobs)
    assert seen[(predict, 2)] > 0 and seen[(predict, 4)] > 0, statuses
    assert seen[(jobs, 2)] > 0, statuses


def test_service_is_healthy_after_the_fuzzing(client):
    assert client.get("/readyz").status_code == 200
    response = client.post("/v1/models/embedder/predict", json={"texts": ["still here"]})
    assert response.status_code == 200 and response.json()["dim"] == 384
