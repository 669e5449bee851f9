"""Job inputs by URL over real HTTP: a loopback origin (allowed in the
session app's inputs.allow) serves the input; the secure app keeps the
default SSRF guard; the S3 app reads s3:// inputs of its bucket in place."""

import hashlib
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.conftest import API_KEYS, error_of
from tests.jobs_helpers import wait_for
from tests.test_job_blobs import MIB, generated, s3_app, sha256_of  # noqa: F401 (s3_app: the fixture)
from tests.test_job_faults import kill_actor_named

DIGEST_JOBS = "/v1/models/digest/jobs"


class Origin(BaseHTTPRequestHandler):
    """Serves `routes[path] = (body, content type)`; `failures[path]` answers 503
    that many times first; `redirects[path]` answers 302 to another path."""

    routes: dict = {}
    stalls: dict = {}  # path -> Event: the first GET sends half the body, then waits for it
    failures: dict = defaultdict(int)
    redirects: dict = {}
    hits: dict = defaultdict(int)

    def do_GET(self):
        path = self.path.split("?")[0]
        Origin.hits[path] += 1
        if path in Origin.redirects:
            self.send_response(302)
            self.send_header("Location", Origin.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if Origin.failures[path] > 0:
            Origin.failures[path] -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path not in Origin.routes:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, content_type = Origin.routes[path]
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        stall = Origin.stalls.get(path)
        if stall is not None and Origin.hits[path] == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            stall.wait(120)
            body = body[len(body) // 2 :]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_raw_input_is_fetched_streamed_and_read_as_a_file(client, origin):
    size = 5 * MIB
    Origin.routes["/big.bin"] = (b"".join(generated(size)), "application/octet-stream")
    response = client.post(DIGEST_JOBS, params={"input_url": f"{origin}/big.bin"})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"], ["succeeded", "failed"])
    assert job["status"] == "succeeded", job
    assert job["result"] == {"size": size, "sha256": sha256_of(size), "via_file": True, "pad": ""}


def test_a_json_input_takes_the_origins_content_type(client, origin):
    Origin.routes["/sleep.json"] = (b'{"seconds": 0.1}', "application/json; charset=utf-8")
    response = client.post("/v1/models/sleeper/jobs", params={"input_url": f"{origin}/sleep.json"})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"], ["succeeded", "failed"])
    assert job["status"] == "succeeded" and job["result"]["slept"] == 0.1, job


def test_input_type_overrides_the_origin(client, origin):
    Origin.routes["/sleep.txt"] = (b'{"seconds": 0.2}', "text/plain")
    response = client.post(
        "/v1/models/sleeper/jobs", params={"input_url": f"{origin}/sleep.txt", "input_type": "application/json"}
    )
    assert wait_for(client, response.json()["id"], ["succeeded", "failed"])["result"]["slept"] == 0.2


def test_transient_failures_are_retried_and_redirects_followed(client, origin):
    Origin.routes["/flaky.bin"] = (b"flaky", "application/octet-stream")
    Origin.failures["/flaky.bin"] = 2
    Origin.redirects["/moved.bin"] = "/flaky.bin"
    response = client.post(DIGEST_JOBS, params={"input_url": f"{origin}/moved.bin"})
    job = wait_for(client, response.json()["id"], ["succeeded", "failed"])
    assert job["status"] == "succeeded" and job["result"]["sha256"] == hashlib.sha256(b"flaky").hexdigest(), job
    assert Origin.hits["/flaky.bin"] == 3


def test_a_failed_fetch_fails_the_job_with_the_status_and_the_url_without_its_query(client, origin):
    response = client.post(DIGEST_JOBS, params={"input_url": f"{origin}/missing.bin?token=s3cr3t"})
    assert response.status_code == 202
    job = wait_for(client, response.json()["id"], ["succeeded", "failed"])
    assert job["status"] == "failed" and job["attempts"] == 1
    error = job["error"]
    assert error["type"] == "input_unavailable" and error["status"] == 404
    assert error["url"] == f"{origin}/missing.bin" and "s3cr3t" not in str(job)


def test_a_bad_input_url_is_refused_at_submit(client, origin):
    for url in ("ftp://example.com/a.wav", "file:///etc/passwd", "not a url", "s3://some-bucket/a.wav"):
        response = client.post(DIGEST_JOBS, params={"input_url": url})
        assert response.status_code == 422, (url, response.text)
        assert error_of(response)["type"] == "invalid_input_url"
    both = client.post(
        DIGEST_JOBS,
        params={"input_url": f"{origin}/big.bin"},
        content=b"audio",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert both.status_code == 400 and "not both" in error_of(both)["message"]
    stray = client.post("/v1/models/sleeper/jobs", params={"input_type": "application/json"}, json={"seconds": 0})
    assert stray.status_code == 400


def test_internal_addresses_are_refused_without_an_allowlist(serve_app, origin):
    # The secure app has no inputs.allow: loopback is refused, as for callbacks.
    headers = {"Authorization": f"Bearer {API_KEYS['jobs']}"}
    response = httpx.post(
        f"{serve_app.secure_url}/v1/models/sleeper/jobs", headers=headers, params={"input_url": f"{origin}/sleep.json"}
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["type"] == "invalid_input_url" and "inputs.allow" in error["message"]


def test_s3_inputs_of_the_buckets_are_read_in_place(s3_app):  # noqa: F811
    client, s3, bucket = s3_app
    httpx.put(f"{s3.url}/{bucket}/uploads/clip.bin", content=b"in place").raise_for_status()
    response = client.post(DIGEST_JOBS, params={"input_url": f"s3://{bucket}/uploads/clip.bin"})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"], ["succeeded", "failed"])
    assert job["status"] == "succeeded", job
    assert job["result"]["sha256"] == hashlib.sha256(b"in place").hexdigest() and job["result"]["via_file"]
    other = client.post(DIGEST_JOBS, params={"input_url": "s3://another-bucket/uploads/clip.bin"})
    assert other.status_code == 422


def test_a_runner_killed_while_its_job_fetches_leaves_the_fetch_to_the_next_attempt(client, origin):
    Origin.routes["/stalls.bin"] = (b"s" * MIB, "application/octet-stream")
    Origin.stalls["/stalls.bin"] = stall = threading.Event()
    try:
        job = client.post(DIGEST_JOBS, params={"input_url": f"{origin}/stalls.bin"}).json()
        deadline = time.monotonic() + 60
        while Origin.hits["/stalls.bin"] == 0:  # the first attempt is fetching (and stalled)
            assert time.monotonic() < deadline, "the input was never fetched"
            time.sleep(0.05)
        kill_actor_named("longserve#JobRunner", restart=False)  # Serve starts a new runner
        while Origin.hits["/stalls.bin"] < 2:  # the lease (2 s) ends: the next attempt fetches again
            assert time.monotonic() < deadline + 60, "the input was not fetched again"
            time.sleep(0.05)
        job = wait_for(client, job["id"], ["succeeded", "failed"], timeout_s=90)
    finally:
        stall.set()
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert job["result"]["sha256"] == hashlib.sha256(b"s" * MIB).hexdigest()
