"""Job callbacks over real HTTP: signed the Standard Webhooks way, retried
with backoff, recorded on the job, and refused for internal addresses."""

import asyncio
import time

import httpx
import pytest

from longserve.server.jobs.callbacks import Outcome, check_url, deliver, new_client
from longserve.server.config import CallbacksConfig
from tests.conftest import WEBHOOK_SECRET, error_of
from tests.jobs_helpers import submit, wait_for
from tests.test_job_faults import kill_actor_named
from tests.webhooks import verify


def callback_state(client, job_id: str, status: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        callback = client.get(f"/v1/jobs/{job_id}").json()["callback"]
        if callback["status"] == status:
            return callback
        assert time.monotonic() < deadline, callback
        time.sleep(0.1)


def test_signed_callback_is_delivered_and_verifies(client, receiver):
    url = receiver.script("/signed", [])
    job = submit(client, "sleeper", 0.1, callback_url=url, metadata='{"episode": 7}')
    assert job["callback"] == {
        "url": url,
        "events": "completed",
        "status": "pending",
        "attempts": 0,
        "last_status": None,
        "last_error": None,
        "delivered_at": None,
    }
    done = wait_for(client, job["id"], ["succeeded"])
    ((headers, body),) = receiver.wait("/signed")
    event = verify(WEBHOOK_SECRET, headers, body)
    assert event["type"] == "job.completed"
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "succeeded"
    assert event["data"]["result"] == done["result"] and event["data"]["metadata"] == {"episode": 7}
    assert headers["webhook-id"].startswith("msg_")
    with pytest.raises(ValueError, match="signature does not match"):  # the check above can fail
        verify(WEBHOOK_SECRET, headers, body.replace(b"succeeded", b"failed"))
    callback = callback_state(client, job["id"], "delivered")
    assert callback["attempts"] == 1 and callback["last_status"] == 204 and callback["delivered_at"]


def test_failing_receiver_is_retried_with_backoff_then_delivered(client, receiver):
    url = receiver.script("/flaky", [(503, {}), (429, {"Retry-After": "1"})])
    job = submit(client, "sleeper", 0, callback_url=url)
    calls = receiver.wait("/flaky", count=3)
    callback = callback_state(client, job["id"], "delivered")
    assert callback["attempts"] == 3 and callback["last_status"] == 204 and callback["last_error"] is None
    # Every attempt is the same message, so the receiver can dedupe; each is signed afresh.
    assert len({headers["webhook-id"] for headers, _ in calls}) == 1
    for headers, body in calls:
        verify(WEBHOOK_SECRET, headers, body)
    # Retry-After: 1 was honoured between the second and the third attempt.
    stamps = [int(headers["webhook-timestamp"]) for headers, _ in calls]
    assert stamps[2] - stamps[1] >= 1


def test_receiver_that_never_succeeds_is_given_up_and_recorded(client, receiver):
    url = receiver.script("/down", [(500, {})] * 10)
    job = submit(client, "sleeper", 0, callback_url=url)
    callback = callback_state(client, job["id"], "failed", timeout_s=30)
    max_attempts = 4  # callbacks.max_attempts in the test app
    assert callback["attempts"] == max_attempts and callback["last_status"] == 500
    assert callback["last_error"] == "HTTP 500"
    assert len(receiver.received["/down"]) == max_attempts


def test_client_error_is_not_retried(client, receiver):
    url = receiver.script("/gone", [(410, {})])
    job = submit(client, "sleeper", 0, callback_url=url)
    callback = callback_state(client, job["id"], "failed")
    assert callback["attempts"] == 1 and callback["last_status"] == 410


def test_all_events_include_started_and_the_cancelled_ending(client, receiver):
    url = receiver.script("/all", [])
    job = submit(client, "sleeper_false", 5, callback_url=url, callback_events="all")
    wait_for(client, job["id"], ["running"])
    receiver.wait("/all", count=1)
    client.delete(f"/v1/jobs/{job['id']}")
    callback_state(client, job["id"], "delivered")
    events = [verify(WEBHOOK_SECRET, headers, body) for headers, body in receiver.received["/all"]]
    assert events[0]["type"] == "job.started" and events[0]["data"]["status"] == "running"
    assert events[-1]["type"] == "job.completed" and events[-1]["data"]["status"] == "cancelled"


def test_every_event_has_its_own_webhook_id(client, receiver):
    """Receivers dedupe on webhook-id: each progress event needs its own, or all but the first are dropped."""
    url = receiver.script("/ids", [])
    job = client.post(
        "/v1/models/sleeper_false/jobs",
        json={"seconds": 3, "progress": True},
        params={"callback_url": url, "callback_events": "all"},
    ).json()
    callback_state(client, job["id"], "delivered")
    received = [
        (headers["webhook-id"], verify(WEBHOOK_SECRET, headers, body)["type"])
        for headers, body in receiver.received["/ids"]
    ]
    progress = [msg_id for msg_id, kind in received if kind == "job.progress"]
    assert len(progress) >= 2, received
    assert len({msg_id for msg_id, _ in received}) == len(received), received


def test_delivery_survives_a_runner_restart(client, receiver):
    """The callback is durable job state: a receiver down while the runner is
    killed still gets it, from the new runner."""
    url = receiver.script("/restart", [(503, {"Retry-After": "2"})])
    job = submit(client, "sleeper", 0, callback_url=url)
    receiver.wait("/restart", count=1)
    kill_actor_named("longserve#JobRunner", restart=False)  # within the 2 s before the retry
    callback = callback_state(client, job["id"], "delivered", timeout_s=60)
    assert callback["attempts"] == 2 and len(receiver.received["/restart"]) == 2
    # Leave the app as we found it: the new runner runs jobs again. (Work the
    # killed runner had started on a replica is not cancelled by its death and
    # may still hold sleeper_false's one slot for a few seconds.)
    wait_for(client, submit(client, "sleeper_false", 0)["id"], ["succeeded"], timeout_s=60)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://0.0.0.0/hook", "resolves to 0.0.0.0"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com/", "only http and https"),
        ("http://user:pw@127.0.0.1/hook", "credentials"),
        ("http:///nohost", "no host"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
        ("http://[abc]/hook", "not a valid URL"),
        ("http://[::1/hook", "not a valid URL"),
        ("http://example.com:99999/hook", "port"),
        ("http://example.com:0/hook", "port"),
    ],
)
def test_internal_and_odd_callback_urls_are_refused_at_submit(client, url, reason):
    before = client.get("/v1/jobs", params={"model": "sleeper", "limit": 1}).json()["jobs"]
    response = client.post("/v1/models/sleeper/jobs", json={"seconds": 0}, params={"callback_url": url})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["type"] == "invalid_callback_url" and reason in error["message"], error
    # Nothing was stored.
    assert client.get("/v1/jobs", params={"model": "sleeper", "limit": 1}).json()["jobs"] == before


def test_loopback_needs_the_allowlist(serve_app, receiver):
    """The test app allows 127.0.0.1; the secure app keeps the default guard."""
    keys = {"Authorization": "Bearer jk-jobs-only-00000002"}
    response = httpx.post(
        f"{serve_app.secure_url}/v1/models/sleeper/jobs",
        json={"seconds": 0},
        headers=keys,
        params={"callback_url": receiver.base + "/nope"},
    )
    assert response.status_code == 422
    message = error_of(response)["message"]
    assert "127.0.0.1" in message and "loopback, private or link-local" in message and "callbacks.allow" in message


def test_delivery_goes_to_the_checked_address_not_a_new_lookup(receiver):
    """DNS rebinding: a name checked as public, then re-pointed inside before
    the connect. Delivery connects to the address check_url returned, never
    to a second lookup: here the name resolves nowhere at all, yet the POST
    arrives, with the name kept in the Host header."""
    port = httpx.URL(receiver.base).port
    checked = asyncio.run(check_url(f"http://127.0.0.1:{port}/", CallbacksConfig(allow=["127.0.0.1"])))
    assert checked == "127.0.0.1"

    async def post() -> Outcome:
        async with new_client(CallbacksConfig()) as http:
            return await deliver(
                http, f"http://rebound.invalid:{port}/pinned", checked, b"{}", {"content-type": "application/json"}
            )

    assert asyncio.run(post()).delivered
    ((headers, body),) = receiver.wait("/pinned")
    assert headers["host"] == f"rebound.invalid:{port}" and body == b"{}"
