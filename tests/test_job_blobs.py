"""Jobs at real size, over real HTTP: uploads streamed into the blob store
(a directory here; a real S3-compatible server in the S3 app below), the
replica reading its input as a file, large results stored as blobs and
served with ETag and Range, blobs deleted with their jobs, and the blob
store failing (stopped S3 server, a blob deleted behind the store's back)."""

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DIGEST, NO_CPU, SLEEPER, error_of
from tests.jobs_helpers import wait_for
from tests.s3_server import S3Server

MIB = 1024 * 1024
DIGEST_JOBS = "/v1/models/digest/jobs"
RAW = {"Content-Type": "application/octet-stream"}


def generated(size: int, seed: int = 0):
    """`size` bytes in 1 MiB chunks, sent chunked (no Content-Length)."""
    for i in range(0, size, MIB):
        yield bytes([(seed + i // MIB) % 251]) * min(MIB, size - i)


def sha256_of(size: int, seed: int = 0) -> str:
    digest = hashlib.sha256()
    for chunk in generated(size, seed):
        digest.update(chunk)
    return digest.hexdigest()


def blob_dir(serve_app) -> Path:
    return Path(serve_app.config.blobs.path)


def inputs_now(serve_app) -> set[str]:
    folder = blob_dir(serve_app) / "inputs"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def stored_record(serve_app, job_id: str) -> tuple[dict, int]:
    """The job's record in the sqlite backend, and how many bodies the backend holds for it."""
    db = sqlite3.connect(Path(serve_app.config.jobs.sqlite_path).expanduser())
    try:
        (record,) = db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        (bodies,) = db.execute("SELECT COUNT(*) FROM bodies WHERE id = ?", (job_id,)).fetchone()
    finally:
        db.close()
    return json.loads(record), bodies


def test_upload_over_max_body_mb_streams_to_the_blob_store_and_reaches_the_model_as_a_file(client, serve_app):
    size = 10 * MIB  # over max_body_mb (8), under jobs.max_input_mb (16)
    response = client.post(DIGEST_JOBS, content=generated(size), headers=RAW)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    record, bodies = stored_record(serve_app, job_id)
    assert record["input"] == {"key": f"inputs/{job_id}", "size": size, "sha256": sha256_of(size)}
    assert bodies == 0  # the backend holds the reference, not the bytes
    assert (blob_dir(serve_app) / "inputs" / job_id).stat().st_size == size

    job = wait_for(client, job_id, ["succeeded", "failed"])
    assert job["status"] == "succeeded", job
    assert job["result"] == {"size": size, "sha256": sha256_of(size), "via_file": True, "pad": ""}


def test_sync_predict_keeps_max_body_mb(client):
    response = client.post("/v1/models/digest/predict", content=generated(10 * MIB), headers=RAW)
    assert response.status_code == 413 and error_of(response)["type"] == "payload_too_large"


@pytest.mark.parametrize("declared", [True, False])
def test_job_input_over_max_input_mb_is_refused_and_nothing_is_kept(client, serve_app, declared):
    before = inputs_now(serve_app)
    size = 17 * MIB
    body = b"\0" * size if declared else generated(size)
    response = client.post(DIGEST_JOBS, content=body, headers=RAW)
    assert response.status_code == 413, response.text
    error = error_of(response)
    assert error["type"] == "payload_too_large" and "jobs.max_input_mb=16" in error["message"]
    assert inputs_now(serve_app) == before


def test_bad_input_is_refused_at_submit_and_its_blob_deleted(client, serve_app):
    before = inputs_now(serve_app)
    bad_json = client.post("/v1/models/sleeper/jobs", json={"seconds": "soon"})
    assert bad_json.status_code == 422 and error_of(bad_json)["type"] == "invalid_request"
    empty = client.post(DIGEST_JOBS, content=b"", headers=RAW)
    assert empty.status_code == 422 and "empty body" in error_of(empty)["message"]
    assert inputs_now(serve_app) == before


def test_idempotent_replay_keeps_one_blob(client, serve_app):
    before = inputs_now(serve_app)
    key = {"Idempotency-Key": f"blobs-{time.time_ns()}", **RAW}
    first = client.post(DIGEST_JOBS, content=generated(3 * MIB), headers=key)
    again = client.post(DIGEST_JOBS, content=generated(3 * MIB), headers=key)
    other = client.post(DIGEST_JOBS, content=generated(3 * MIB, seed=7), headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422  # the same key with a different request
    assert inputs_now(serve_app) - before == {first.json()["id"]}
    wait_for(client, first.json()["id"], ["succeeded"])


def test_large_result_is_a_blob_served_with_etag_and_ranges(client, serve_app):
    pad = 300 * 1024  # over inline_result_kb (256)
    response = client.post(DIGEST_JOBS, content=b"abc", headers=RAW, params={"pad": pad})
    job = wait_for(client, response.json()["id"], ["succeeded", "failed"])
    assert job["status"] == "succeeded", job
    assert "result" not in job and job["result_size"] > pad
    assert (blob_dir(serve_app) / "results" / job["id"]).stat().st_size == job["result_size"]
    url = job["links"]["result"]

    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["Accept-Ranges"] == "bytes"
    assert whole.json() == {"size": 3, "sha256": hashlib.sha256(b"abc").hexdigest(), "via_file": True, "pad": "x" * pad}
    assert whole.headers["ETag"] == f'"{hashlib.sha256(whole.content).hexdigest()}"'
    size = len(whole.content)
    assert size == job["result_size"]

    head = client.get(url, headers={"Range": "bytes=0-99"})
    assert head.status_code == 206 and head.content == whole.content[:100]
    assert head.headers["Content-Range"] == f"bytes 0-99/{size}"
    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    rest = client.get(url, headers={"Range": f"bytes={size - 5}-"})
    assert rest.status_code == 206 and rest.content == whole.content[-5:]
    past = client.get(url, headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{size}"
    assert client.get(url, headers={"If-None-Match": whole.headers["ETag"]}).status_code == 304


def test_inline_result_also_has_etag_and_ranges(client):
    response = client.post(DIGEST_JOBS, content=b"abc", headers=RAW)
    job = wait_for(client, response.json()["id"], ["succeeded"])
    assert job["result"]["size"] == 3 and "result_size" not in job
    whole = client.get(job["links"]["result"])
    assert whole.json() == job["result"] and whole.headers["ETag"]
    part = client.get(job["links"]["result"], headers={"Range": "bytes=1-4"})
    assert part.status_code == 206 and part.content == whole.content[1:5]


def test_a_blob_deleted_behind_the_stores_back_fails_the_job_clearly(client, serve_app):
    # digest runs one job at a time: the blocker keeps the victim queued while its blob is deleted.
    blocker = client.post(DIGEST_JOBS, content=b"x", headers=RAW, params={"hold": 60}).json()
    wait_for(client, blocker["id"], ["running"])
    victim = client.post(DIGEST_JOBS, content=b"doomed", headers=RAW).json()
    (blob_dir(serve_app) / "inputs" / victim["id"]).unlink()
    assert client.delete(f"/v1/jobs/{blocker['id']}").status_code == 200

    job = wait_for(client, victim["id"], ["succeeded", "failed"])
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["type"] == "input_unavailable" and "no longer in the blob store" in job["error"]["message"]
    result = client.get(f"/v1/jobs/{victim['id']}/result")
    assert result.status_code == 409 and error_of(result)["job_error"]["type"] == "input_unavailable"


def test_expired_jobs_delete_their_blobs(client, serve_app):
    response = client.post(DIGEST_JOBS, content=b"abc", headers=RAW, params={"pad": 300 * 1024, "ttl_s": 1})
    job_id = response.json()["id"]
    input_blob, result_blob = (blob_dir(serve_app) / kind / job_id for kind in ("inputs", "results"))
    wait_for(client, job_id, ["succeeded"])
    assert input_blob.exists() and result_blob.exists()
    wait_for(client, job_id, ["expired"])
    deadline = time.monotonic() + 30
    while input_blob.exists() or result_blob.exists():  # deleted in the background after the record
        assert time.monotonic() < deadline, "the expired job's blobs are still there"
        time.sleep(0.1)


# -- the blob store on S3 (moto's server on loopback) ------------------------------------

S3_PREFIX = "/s3app"


@pytest.fixture(scope="module")
def s3_app(serve_app, tmp_path_factory):
    """A second app on the session cluster whose blob store is a real S3-compatible server."""
    from ray import serve

    from longserve.server.app import build_app
    from longserve.server.config import AppConfig

    s3 = S3Server()
    bucket = s3.bucket("longserve-jobs")
    folder = tmp_path_factory.mktemp("s3app")
    config = AppConfig.model_validate(
        {
            "jobs": {"backend": "sqlite", "sqlite_path": str(folder / "jobs.sqlite3"), "lease_s": 2},
            "blobs": {
                "backend": "s3",
                "bucket": bucket,
                "endpoint_url": s3.url,
                "region": "us-east-1",
                "presign_results": True,
            },
            "monitoring": {"enabled": False},
            "models": {
                "digest": {"class": DIGEST, "ray_actor_options": NO_CPU},
                "sleeper": {"class": SLEEPER, "ray_actor_options": NO_CPU},
            },
        }
    )
    serve.run(build_app(config), name="s3app", route_prefix=S3_PREFIX)
    try:
        with httpx.Client(base_url=serve_app.url + S3_PREFIX, timeout=120) as client:
            yield client, s3, bucket
    finally:
        serve.delete("s3app")
        s3.stop()


def test_s3_upload_runs_and_large_result_redirects_to_a_presigned_url(s3_app):
    client, s3, bucket = s3_app
    size = 9 * MIB  # several multipart parts
    response = client.post("/v1/models/digest/jobs", content=generated(size), headers=RAW, params={"pad": 300_000})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"], ["succeeded", "failed"])
    assert job["status"] == "succeeded", job
    listing = httpx.get(f"{s3.url}/{bucket}", params={"list-type": 2, "prefix": "longserve/"}).text
    assert f"longserve/inputs/{job['id']}" in listing and f"longserve/results/{job['id']}" in listing

    redirect = client.get(job["links"]["result"])
    assert redirect.status_code == 302 and redirect.headers["location"].startswith(s3.url)
    downloaded = httpx.get(redirect.headers["location"])
    assert downloaded.status_code == 200
    result = downloaded.json()
    assert (result["size"], result["sha256"], result["via_file"]) == (size, sha256_of(size), True)


def test_s3_down_at_submit_answers_503_and_acknowledges_nothing(s3_app):
    client, s3, bucket = s3_app
    done = client.post("/v1/models/sleeper/jobs", json={"seconds": 0})
    assert done.status_code == 202
    wait_for(client, done.json()["id"], ["succeeded"])
    listed_before = client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
    s3.stop()
    try:
        for body in ({"json": {"seconds": 0}}, {"content": generated(2 * MIB), "headers": RAW}):
            model = "sleeper" if "json" in body else "digest"
            refused = client.post(f"/v1/models/{model}/jobs", **body)
            assert refused.status_code == 503, refused.text
            assert error_of(refused)["type"] == "blobs_unavailable" and refused.headers["Retry-After"]
        # Nothing was acknowledged: the listing holds the same jobs as before.
        listed = client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        assert [job["id"] for job in listed] == [job["id"] for job in listed_before]
        assert client.get(f"/v1/jobs/{done.json()['id']}").json()["status"] == "succeeded"
    finally:
        s3.start()
        s3.bucket(bucket)  # moto forgot it
    again = client.post("/v1/models/sleeper/jobs", json={"seconds": 0})
    assert again.status_code == 202
    assert wait_for(client, again.json()["id"], ["succeeded"])["result"]["slept"] == 0
