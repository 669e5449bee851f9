"""Tenants on the keyed test app: every job belongs to the tenant whose key
submitted it; another tenant's job answers exactly as an unknown id;
Idempotency-Keys are scoped to (tenant, model)."""

import time
import uuid

import httpx
import pytest

from longserve.server.jobs.record import new_job_id
from tests.conftest import API_KEYS, TENANT_KEYS, error_of

SLEEPER = "/v1/models/sleeper/jobs"


def key(name: str) -> dict:
    return {"Authorization": f"Bearer {TENANT_KEYS.get(name) or API_KEYS[name]}"}


@pytest.fixture(scope="module")
def secure(serve_app):
    with httpx.Client(base_url=serve_app.secure_url, timeout=30) as client:
        yield client


def finished(client: httpx.Client, job_id: str, who: str) -> dict:
    deadline = time.monotonic() + 30
    while (job := client.get(f"/v1/jobs/{job_id}", params={"wait": 2}, headers=key(who)).json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, job
    return job


def unknown_answer(response: httpx.Response, job_id: str) -> tuple:
    """What may differ between two 404s: nothing but the request id."""
    error = error_of(response)
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date", "content-length")}
    return response.status_code, {**error, "request_id": None}, headers, job_id


def test_another_tenant_gets_the_unknown_id_answer_on_every_job_route(secure):
    done = secure.post(SLEEPER, json={"seconds": 0}, headers=key("acme")).json()
    finished(secure, done["id"], "acme")
    running = secure.post(SLEEPER, json={"seconds": 30}, headers=key("acme")).json()  # the model's 1 job slot
    guessed = new_job_id()
    routes = [
        ("GET", "/v1/jobs/{id}", {}),
        ("GET", "/v1/jobs/{id}", {"wait": 1}),
        ("GET", "/v1/jobs/{id}/result", {}),
        ("GET", "/v1/jobs/{id}/events", {}),
        ("DELETE", "/v1/jobs/{id}", {}),
        ("POST", "/v1/jobs/{id}/retry", {}),
    ]
    try:
        for method, path, params in routes:
            # A guessed id and another tenant's ids answer alike, field for field and header for header.
            expected = secure.request(method, path.format(id=guessed), params=params, headers=key("globex"))
            assert expected.status_code == 404, expected.text
            for job_id in (running["id"], done["id"]):
                response = secure.request(method, path.format(id=job_id), params=params, headers=key("globex"))
                got, want = unknown_answer(response, job_id), unknown_answer(expected, guessed)
                assert got[:3] == (want[0], {**want[1], "job_id": job_id, "message": f"no job '{job_id}'"}, want[2]), (
                    method,
                    path,
                )
                assert want[1]["message"] == f"no job '{guessed}'"
        # Nothing was changed by globex: the running job still runs, the finished one is as it was.
        assert secure.get(f"/v1/jobs/{running['id']}", headers=key("acme")).json()["status"] in ("queued", "running")
        assert secure.get(f"/v1/jobs/{done['id']}", headers=key("acme")).json()["status"] == "succeeded"
        # Listing: globex never sees acme's jobs, and may not ask for them.
        listed = secure.get("/v1/jobs", params={"limit": 500}, headers=key("globex")).json()["jobs"]
        assert not {running["id"], done["id"]} & {job["id"] for job in listed}
        forbidden = secure.get("/v1/jobs", params={"tenant": "acme"}, headers=key("globex"))
        assert forbidden.status_code == 403 and error_of(forbidden)["type"] == "forbidden"
    finally:
        assert secure.delete(f"/v1/jobs/{running['id']}", headers=key("acme")).status_code == 200


def test_keys_of_one_tenant_share_its_jobs_and_admins_see_all(secure):
    job = secure.post(SLEEPER, json={"seconds": 0}, headers=key("acme")).json()
    theirs = secure.post(SLEEPER, json={"seconds": 0}, headers=key("globex")).json()
    assert finished(secure, job["id"], "acme2")["status"] == "succeeded"  # rotation: the other acme key
    assert secure.get(f"/v1/jobs/{job['id']}/result", headers=key("admin")).json()["slept"] == 0
    # Two plain keys are two tenants: the jobs-only key does not see the predict key's... nor acme's jobs.
    assert secure.get(f"/v1/jobs/{job['id']}", headers=key("jobs")).status_code == 404
    mine = secure.get("/v1/jobs", params={"model": "sleeper", "limit": 500}, headers=key("acme2")).json()["jobs"]
    assert job["id"] in {j["id"] for j in mine}
    admin = secure.get("/v1/jobs", params={"tenant": "acme", "limit": 500}, headers=key("admin")).json()["jobs"]
    assert job["id"] in {j["id"] for j in admin}
    everyone = secure.get("/v1/jobs", params={"limit": 500}, headers=key("admin")).json()["jobs"]
    assert theirs["id"] not in {j["id"] for j in admin} and {job["id"], theirs["id"]} <= {j["id"] for j in everyone}


def test_listing_filters_by_creation_time_and_pages(secure):
    since = time.time()
    ids = [secure.post(SLEEPER, json={"seconds": 0}, headers=key("globex")).json()["id"] for _ in range(3)]
    page = secure.get("/v1/jobs", params={"created_after": since, "limit": 2}, headers=key("globex")).json()
    assert [j["id"] for j in page["jobs"]] == ids[:0:-1] and page["next_cursor"]
    rest = secure.get(
        "/v1/jobs", params={"created_after": since, "limit": 2, "cursor": page["next_cursor"]}, headers=key("globex")
    ).json()
    assert [j["id"] for j in rest["jobs"]] == ids[:1]
    before = secure.get("/v1/jobs", params={"created_before": since, "limit": 500}, headers=key("globex")).json()
    assert not set(ids) & {j["id"] for j in before["jobs"]}
    bad = secure.get("/v1/jobs", params={"created_after": "yesterday"}, headers=key("globex"))
    assert bad.status_code == 422 and error_of(bad)


def test_idempotency_keys_replay_refuse_and_are_scoped_per_tenant(secure):
    idem = {"Idempotency-Key": uuid.uuid4().hex}
    first = secure.post(SLEEPER, json={"seconds": 0}, params={"ttl_s": 60}, headers={**key("acme"), **idem})
    again = secure.post(SLEEPER, json={"seconds": 0}, params={"ttl_s": 60}, headers={**key("acme2"), **idem})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # Anything else that differs is another request: 422, and the first job's id is not revealed.
    for change in (
        {"json": {"seconds": 1}},
        {"params": {"ttl_s": 61}},
        {"params": {"ttl_s": 60, "metadata": '{"a": 1}'}},
        {"content": b'{"seconds": 0}', "headers": {"content-type": "application/vnd.test+json"}},
    ):
        request = {"json": {"seconds": 0}, "params": {"ttl_s": 60}, **change}
        request["headers"] = {**key("acme"), **idem, **change.get("headers", {})}
        other = secure.post(SLEEPER, **request)
        assert other.status_code == 422, (change, other.text)
        assert error_of(other)["type"] == "idempotency_conflict" and first.json()["id"] not in other.text
    # The same key from another tenant is its own job.
    theirs = secure.post(SLEEPER, json={"seconds": 1}, params={"ttl_s": 60}, headers={**key("globex"), **idem})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in theirs.headers


def test_concurrent_submits_under_one_key_make_one_job(secure):
    """The store serializes submits: the second waits for the first to be stored, then replays it."""
    import concurrent.futures

    idem = {**key("acme"), "Idempotency-Key": uuid.uuid4().hex}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: secure.post(SLEEPER, json={"seconds": 0}, headers=idem), range(4)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 3


def test_a_bad_idempotency_key_is_refused(secure):
    response = secure.post(SLEEPER, json={"seconds": 0}, headers={**key("acme"), "Idempotency-Key": "k" * 256})
    assert response.status_code == 400 and error_of(response)["header"] == "Idempotency-Key"


def test_key_syntax(monkeypatch):
    from longserve.server.http.auth import ANONYMOUS, _digest, key_id, parse_keys

    keys = parse_keys("aaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbb:admin@ops cccccccccccccccc@ops dddddddddddddddd:jobs")
    assert keys[_digest("aaaaaaaaaaaaaaaa")].tenant == key_id("aaaaaaaaaaaaaaaa")  # a tenant of its own
    assert keys[_digest("dddddddddddddddd")].tenant == key_id("dddddddddddddddd") != key_id("aaaaaaaaaaaaaaaa")
    assert keys[_digest("bbbbbbbbbbbbbbbb")].tenant == keys[_digest("cccccccccccccccc")].tenant == "ops"
    assert keys[_digest("cccccccccccccccc")].scopes == {"predict", "jobs"}
    for bad, why in (
        ("aaaaaaaaaaaaaaaa@", "tenant ''"),
        ("aaaaaaaaaaaaaaaa@a/b", "tenant 'a/b'"),
        ("aaaaaaaaaaaaaaaa@" + ANONYMOUS, "reserved"),
        ("aaaaaaaaaaaaaaaa@key_1", "reserved"),
        ("short@ops", "shorter than 16"),
    ):
        with pytest.raises(ValueError, match=why) as info:
            parse_keys("x" * 16 + " " + bad)
        assert "entry 2" in str(info.value) and "aaaaaaaaaaaaaaaa" not in str(info.value)


def test_erase_on_request_leaves_a_tombstone(secure, serve_app):
    """DELETE ?erase=true: input, result and metadata gone from the store's sqlite now;
    the id answers 410 erased; a running job is cancelled first."""
    import sqlite3
    from pathlib import Path

    marker = uuid.uuid4().hex
    done = secure.post(
        SLEEPER,
        json={"seconds": 0, "note": marker},
        params={"metadata": f'{{"m": "{marker}"}}'},
        headers={**key("acme"), "Idempotency-Key": marker},
    ).json()
    assert finished(secure, done["id"], "acme")["status"] == "succeeded"
    running = secure.post(SLEEPER, json={"seconds": 30, "note": marker}, headers=key("acme")).json()
    secure_dir = Path(serve_app.config.jobs.sqlite_path).parent  # the secure app's store and blobs live here
    db = sqlite3.connect(secure_dir / "secure.sqlite3")
    inputs = secure_dir / "blobs-secure" / "inputs"  # the blob store's file backend

    def stored_input(job_id: str) -> bool:
        return any(path.name.startswith(job_id) for path in inputs.rglob("*"))

    assert stored_input(done["id"])
    # Another tenant cannot erase it: the unknown-id answer, and nothing changes.
    assert secure.delete(f"/v1/jobs/{done['id']}", params={"erase": "true"}, headers=key("globex")).status_code == 404
    assert secure.get(f"/v1/jobs/{done['id']}/result", headers=key("acme")).status_code == 200
    for job in (done, running):
        response = secure.delete(f"/v1/jobs/{job['id']}", params={"erase": "true"}, headers=key("acme"))
        assert response.status_code == 200 and response.json() == {"id": job["id"], "erased": True}
        for method, path in (
            ("GET", "/v1/jobs/{id}"),
            ("GET", "/v1/jobs/{id}/result"),
            ("DELETE", "/v1/jobs/{id}"),
            ("POST", "/v1/jobs/{id}/retry"),
        ):
            answer = secure.request(method, path.format(id=job["id"]), headers=key("acme"))
            assert answer.status_code == 410, (method, path, answer.text)
            error = error_of(answer)
            assert error["type"] == "erased" and error["erased"] is True
        deadline = time.monotonic() + 30  # blobs are deleted just after the record, off the store's lock
        while stored_input(job["id"]):
            assert time.monotonic() < deadline, "the erased job's input is still in the blob store"
            time.sleep(0.1)
        (record,) = db.execute("SELECT record FROM jobs WHERE id = ?", (job["id"],)).fetchone()
        assert marker not in record and '"erased":true' in record
    # The idempotency key is free again.
    again = secure.post(SLEEPER, json={"seconds": 0}, headers={**key("acme"), "Idempotency-Key": marker})
    assert again.status_code == 202 and again.json()["id"] != done["id"]
    # The running job was cancelled: the model's one job slot runs the next job.
    assert finished(secure, again.json()["id"], "acme")["status"] == "succeeded"


def test_openai_files_belong_to_the_tenant_that_uploaded_them(secure):
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}\n'
    files = {"file": ("mine.jsonl", line, "application/jsonl")}
    made = secure.post("/openai/v1/files", data={"purpose": "batch"}, files=files, headers=key("acme"))
    assert made.status_code == 200, made.text
    file_id = made.json()["id"]
    assert "owner" not in made.json()  # OpenAI's FileObject, nothing more
    try:
        # The other key of acme (rotation) sees it; globex gets the answer an unknown id gets.
        assert secure.get(f"/openai/v1/files/{file_id}", headers=key("acme2")).status_code == 200
        unknown = "file-" + "x" * 24
        for path in ("/openai/v1/files/{id}", "/openai/v1/files/{id}/content"):
            theirs = secure.get(path.format(id=file_id), headers=key("globex"))
            none = secure.get(path.format(id=unknown), headers=key("globex"))
            assert theirs.status_code == none.status_code == 404
            assert theirs.json()["error"]["message"].replace(file_id, "?") == none.json()["error"]["message"].replace(
                unknown, "?"
            )
        assert secure.delete(f"/openai/v1/files/{file_id}", headers=key("globex")).status_code == 404
        listed = {f["id"] for f in secure.get("/openai/v1/files", headers=key("globex")).json()["data"]}
        assert file_id not in listed
        assert file_id in {f["id"] for f in secure.get("/openai/v1/files", headers=key("acme")).json()["data"]}
        assert file_id in {f["id"] for f in secure.get("/openai/v1/files", headers=key("admin")).json()["data"]}
        refused = secure.post(
            "/openai/v1/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"},
            headers=key("globex"),
        )
        assert refused.status_code == 404 and refused.json()["error"]["param"] == "input_file_id"
    finally:
        assert secure.delete(f"/openai/v1/files/{file_id}", headers=key("acme")).status_code == 200
