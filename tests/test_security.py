"""API keys and scopes, on the second test app (auth.required, keys from
$LONGSERVE_TEST_API_KEYS in the replicas' environment)."""

import time

import httpx
import pytest

from tests.conftest import API_KEYS, TENANT_KEYS, WEBHOOK_SECRET, error_of


def bearer(scope: str) -> dict:
    return {"Authorization": f"Bearer {API_KEYS[scope]}"}


@pytest.fixture(scope="module")
def secure(serve_app):
    with httpx.Client(base_url=serve_app.secure_url, timeout=30) as client:
        yield client


ROUTES = [
    ("POST", "/v1/models/sleeper/predict", "predict"),
    ("POST", "/v1/models/sleeper/jobs", "jobs"),
    ("GET", "/v1/jobs", "jobs"),
    ("GET", "/v1/models", "admin"),
    ("GET", "/v1/models/sleeper", "admin"),
]


def call(client, method: str, path: str, headers: dict) -> httpx.Response:
    return client.request(method, path, json={"seconds": 0} if method == "POST" else None, headers=headers)


@pytest.mark.parametrize("method, path, scope", ROUTES)
def test_no_key_or_a_wrong_key_is_401(secure, method, path, scope):
    for headers in ({}, {"Authorization": "Bearer not-a-key-at-all-000"}, {"Authorization": "Basic abc"}):
        response = call(secure, method, path, headers)
        assert response.status_code == 401, (headers, response.text)
        assert error_of(response)["type"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method, path, scope", ROUTES)
def test_each_scope_opens_its_routes_only(secure, method, path, scope):
    for key_scope in API_KEYS:
        response = call(secure, method, path, bearer(key_scope))
        if key_scope in (scope, "admin"):
            assert response.status_code in (200, 202), (key_scope, response.text)
        else:
            assert response.status_code == 403, (key_scope, response.text)
            error = error_of(response)
            assert error["type"] == "forbidden" and error["scope"] == scope
            assert API_KEYS[key_scope] not in response.text  # only a hash of the key is echoed


def test_prefer_on_predict_needs_the_jobs_scope_too(secure):
    """Prefer: respond-async / wait stores a job: a predict-only key may not."""
    for prefer in ("respond-async", "wait=5"):
        response = secure.post(
            "/v1/models/sleeper/predict", json={"seconds": 0}, headers={**bearer("predict"), "Prefer": prefer}
        )
        assert response.status_code == 403 and error_of(response)["scope"] == "jobs", response.text
    response = secure.post(
        "/v1/models/sleeper/predict", json={"seconds": 0}, headers={**bearer("admin"), "Prefer": "respond-async"}
    )
    assert response.status_code == 202


def test_reading_a_job_takes_a_key_of_its_tenant(secure):
    job = secure.post("/v1/models/sleeper/jobs", json={"seconds": 0}, headers=bearer("jobs")).json()
    # With keys configured the id alone is not enough: no key is 401, a predict-only key 403.
    assert secure.get(f"/v1/jobs/{job['id']}").status_code == 401
    assert secure.get(f"/v1/jobs/{job['id']}/result", headers=bearer("predict")).status_code == 403
    assert secure.get(f"/v1/jobs/{job['id']}/events").status_code == 401
    assert secure.get(f"/v1/jobs/{job['id']}/events", headers=bearer("predict")).status_code == 403
    assert secure.get(f"/v1/jobs/{job['id']}", params={"wait": 5}, headers=bearer("jobs")).status_code == 200
    deadline = time.monotonic() + 30
    while (result := secure.get(f"/v1/jobs/{job['id']}/result", headers=bearer("admin"))).status_code != 200:
        assert result.status_code == 202 and time.monotonic() < deadline
        secure.get(f"/v1/jobs/{job['id']}", params={"wait": 2}, headers=bearer("jobs"))
    assert result.json()["slept"] == 0
    # Changing it takes a key with the jobs scope.
    assert secure.delete(f"/v1/jobs/{job['id']}").status_code == 401
    assert secure.post(f"/v1/jobs/{job['id']}/retry", headers=bearer("predict")).status_code == 403
    assert secure.delete(f"/v1/jobs/{job['id']}", headers=bearer("jobs")).status_code == 409  # finished


def test_probes_and_docs_need_no_key(secure):
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert secure.get(path).status_code == 200, path


def test_the_open_local_app_needs_no_key(client):
    assert client.get("/v1/models").status_code == 200


def test_keys_and_job_ids_never_reach_the_logs(secure, serve_app):
    """After calls with every key and a failed job, no key and no full job id
    (a capability) appears in any Ray or Serve log; shortened job ids do."""
    for scope in API_KEYS:
        call(secure, "POST", "/v1/models/sleeper/predict", bearer(scope))
    job = secure.post("/v1/models/sleeper/jobs", json={"seconds": 0, "fail": True}, headers=bearer("jobs")).json()
    deadline = time.monotonic() + 30
    while secure.get(f"/v1/jobs/{job['id']}", params={"wait": 2}, headers=bearer("jobs")).json()["status"] != "failed":
        assert time.monotonic() < deadline
    secure.get(f"/v1/jobs/{job['id']}/result", headers=bearer("jobs"))

    def log_texts() -> list[str]:
        return [
            p.read_text(errors="ignore")
            for p in serve_app.logs_dir.rglob("*")
            if p.is_file() and p.suffix in (".log", ".out", ".err")
        ]

    # Log files are flushed line by line: wait for the failed run's line (its id shortened).
    while not any(job["id"][:10] + "…" in text for text in log_texts()):
        assert time.monotonic() < deadline, "the failed job was not logged"
        time.sleep(0.2)
    texts = log_texts()
    for secret in [
        *API_KEYS.values(),
        *TENANT_KEYS.values(),
        WEBHOOK_SECRET,
        WEBHOOK_SECRET.removeprefix("whsec_"),
        job["id"],
    ]:
        assert not any(secret in text for text in texts), f"{secret} found in the logs"


def test_the_cluster_posture_refuses_to_start_without_its_secrets(monkeypatch):
    """auth.required and callbacks.require_signing (set in the RayService): a
    missing Secret stops the deploy instead of opening the API or sending
    unsigned callbacks."""
    from longserve.server.jobs.callbacks import load_secret
    from longserve.server.config import AuthConfig, CallbacksConfig
    from longserve.server.http.auth import Auth

    monkeypatch.delenv("LONGSERVE_API_KEYS", raising=False)
    monkeypatch.delenv("LONGSERVE_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ValueError, match=r"auth.required is true but \$LONGSERVE_API_KEYS holds no API keys"):
        Auth(AuthConfig(required=True))
    with pytest.raises(ValueError, match=r"require_signing is true but \$LONGSERVE_WEBHOOK_SECRET is not set"):
        load_secret(CallbacksConfig(require_signing=True))
    assert not Auth(AuthConfig()).enabled and load_secret(CallbacksConfig()) is None  # the local default: open
    monkeypatch.setenv("LONGSERVE_API_KEYS", API_KEYS["admin"] + ":admin")
    monkeypatch.setenv("LONGSERVE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    assert Auth(AuthConfig(required=True)).enabled and load_secret(CallbacksConfig(require_signing=True))
