"""Per-tenant quotas and fair turns on the keyed test app (secure_app_args in
conftest): `metered` has a request rate, `capped` one active job and a tiny
input limit, `fair_a` and `fair_b` share the `turns` model (one job slot)."""

import time

import httpx
import pytest

from tests.conftest import API_KEYS, TENANT_KEYS, error_of


def key(name: str) -> dict:
    return {"Authorization": f"Bearer {TENANT_KEYS[name]}"}


@pytest.fixture(scope="module")
def secure(serve_app):
    with httpx.Client(base_url=serve_app.secure_url, timeout=30) as client:
        yield client


def check_429(response: httpx.Response, quota: str, config_key: str, limit: float) -> dict:
    assert response.status_code == 429, response.text
    error = error_of(response)
    assert error["type"] == "quota_exceeded" and error["quota"] == quota and error["config_key"] == config_key
    assert config_key in error["message"] and error["limit"] == limit
    retry = int(response.headers["retry-after"])
    assert retry >= 1
    assert response.headers["ratelimit-policy"].startswith(f'"{quota}";q={limit:g};w=')
    assert response.headers["ratelimit"] == f'"{quota}";r=0;t={retry}'
    return error


def test_request_rate_answers_429_then_refills(secure):
    """metered: 0.5 requests/s, burst 2. Refused requests spend nothing, so the bucket refills."""
    answers = []
    deadline = time.monotonic() + 30
    while not answers or answers[-1].status_code != 429:
        assert time.monotonic() < deadline and len(answers) < 10
        answers.append(secure.get("/v1/jobs", params={"limit": 1}, headers=key("metered")))
    assert all(a.status_code == 200 for a in answers[:-1]) and len(answers) >= 3  # the burst of 2, at least
    check_429(answers[-1], "requests", "tenants.metered.requests_per_s", 2)
    # Another tenant is not held back by metered's bucket.
    assert secure.get("/v1/jobs", params={"limit": 1}, headers=key("capped")).status_code == 200
    # A token comes back (within 2 s): poll until one is there.
    deadline = time.monotonic() + 30
    while (again := secure.get("/v1/jobs", params={"limit": 1}, headers=key("metered"))).status_code == 429:
        assert time.monotonic() < deadline
        time.sleep(int(again.headers["retry-after"]) / 4)
    assert again.status_code == 200


def test_active_jobs_quota(secure):
    first = secure.post("/v1/models/sleeper/jobs", json={"seconds": 30}, headers=key("capped"))
    assert first.status_code == 202
    try:
        over = secure.post("/v1/models/sleeper/jobs", json={"seconds": 0}, headers=key("capped"))
        check_429(over, "active_jobs", "tenants.capped.max_active_jobs", 1)
        mine = secure.get("/v1/jobs", params={"limit": 500}, headers=key("capped")).json()["jobs"]
        assert [j["id"] for j in mine if j["status"] in ("queued", "running")] == [first.json()["id"]]  # no 2nd
    finally:
        assert secure.delete(f"/v1/jobs/{first.json()['id']}", headers=key("capped")).status_code == 200
    # Its job ended: the tenant may submit again; a replay of that job is not a new job, so not refused.
    same = {**key("capped"), "Idempotency-Key": f"capped-{time.time()}"}
    again = secure.post("/v1/models/sleeper/jobs", json={"seconds": 30}, headers=same)
    assert again.status_code == 202
    try:
        replay = secure.post("/v1/models/sleeper/jobs", json={"seconds": 30}, headers=same)
        assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
        # Running the cancelled job again would make two: refused the same way, and it stays cancelled.
        retry = secure.post(f"/v1/jobs/{first.json()['id']}/retry", headers=key("capped"))
        check_429(retry, "active_jobs", "tenants.capped.max_active_jobs", 1)
        assert secure.get(f"/v1/jobs/{first.json()['id']}", headers=key("capped")).json()["status"] == "cancelled"
    finally:
        assert secure.delete(f"/v1/jobs/{again.json()['id']}", headers=key("capped")).status_code == 200


def test_input_size_quota(secure):
    """capped: max_input_mb 0.0001 (104 bytes); the app's max_body_mb is the limit for the others."""
    small, large = {"seconds": 0}, {"seconds": 0, "pad": "x" * 200}
    assert secure.post("/v1/models/sleeper/predict", json=small, headers=key("capped")).status_code == 200
    response = secure.post("/v1/models/sleeper/predict", json=large, headers=key("capped"))
    assert response.status_code == 413, response.text
    error = error_of(response)
    assert error["limit_bytes"] == 104 and "tenants.capped.max_input_mb=0.0001" in error["message"]
    assert secure.post("/v1/models/sleeper/predict", json=large, headers=key("fair_b")).status_code == 200


def test_tenants_take_turns(secure):
    """fair_a queues five slow jobs on `turns` (one job slot), then fair_b one: it
    starts before fair_a's third job would have (first come, first served: after the fifth)."""
    jobs = [secure.post("/v1/models/turns/jobs", json={"seconds": 1}, headers=key("fair_a")).json() for _ in range(5)]
    try:
        theirs = secure.post("/v1/models/turns/jobs", json={"seconds": 0}, headers=key("fair_b")).json()
        deadline = time.monotonic() + 60
        while (b := secure.get(f"/v1/jobs/{theirs['id']}", params={"wait": 2}, headers=key("fair_b")).json())[
            "status"
        ] != "succeeded":
            assert time.monotonic() < deadline, b
        third = secure.get(f"/v1/jobs/{jobs[2]['id']}", headers=key("fair_a")).json()
        assert third["started_at"] is None or b["started_at"] < third["started_at"], (b, third)
    finally:
        for job in jobs:
            secure.delete(f"/v1/jobs/{job['id']}", headers=key("fair_a"))


def test_usage_shows_the_callers_own_jobs_requests_and_model_seconds(secure):
    def usage(who: str, **params) -> dict:
        response = secure.get(
            "/v1/usage",
            params=params,
            headers=key(who) if who != "admin" else {"Authorization": f"Bearer {API_KEYS['admin']}"},
        )
        assert response.status_code == 200, response.text
        return response.json()["tenants"]

    zero = {"jobs": 0, "requests": 0, "model_seconds": 0}
    before = usage("fair_b").get("fair_b", {}).get("sleeper", zero)
    for _ in range(2):
        answer = secure.post("/v1/models/sleeper/predict", json={"seconds": 0.2}, headers=key("fair_b"))
        assert answer.status_code == 200
    job = secure.post("/v1/models/sleeper/jobs", json={"seconds": 0.2}, headers=key("fair_b")).json()
    deadline = time.monotonic() + 30
    while (
        secure.get(f"/v1/jobs/{job['id']}", params={"wait": 2}, headers=key("fair_b")).json()["status"] != "succeeded"
    ):
        assert time.monotonic() < deadline
    mine = usage("fair_b")
    assert set(mine) == {"fair_b"}  # only the caller's own tenant
    after = mine["fair_b"]["sleeper"]
    assert after["requests"] == before["requests"] + 2 and after["jobs"] == before["jobs"] + 1
    assert after["model_seconds"] >= before["model_seconds"] + 0.6  # three runs of at least 0.2 s
    assert usage("admin", tenant="fair_b") == mine
    assert "fair_b" in usage("admin")
    forbidden = secure.get("/v1/usage", params={"tenant": "acme"}, headers=key("fair_b"))
    assert forbidden.status_code == 403 and error_of(forbidden)["type"] == "forbidden"
