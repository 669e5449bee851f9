"""A job's events over SSE (GET /v1/jobs/{id}/events), read with a real SSE
client (httpx-sse): order and ids, Last-Event-ID reconnects (mid-stream, across
a JobStore restart), replay of a finished job, keep-alives; checkpoints fenced
by the attempt; and a job's compute spent once: the replica of a superseded or
cancelled attempt stops, the next attempt resumes from the last checkpoint.

The `counter` test model (tests/slow_models.py) counts steps, emitting one
partial per step, and logs what each run computed (start, step, stop, done)."""

import time
import uuid
from pathlib import Path

import httpx
import pytest
import ray
from httpx_sse import ServerSentEvent, connect_sse

from longserve.server.config import JobsConfig
from longserve.server.jobs.backends import make_backend
from longserve.server.jobs.events import MAX_EVENTS, JobEvent
from longserve.server.jobs.record import Job, JobRequest, new_job_id
from longserve.server.jobs.store import get_job_store, store_name
from tests.conftest import error_of
from tests.jobs_helpers import wait_for
from tests.test_job_faults import kill_actor_named, redis_url  # noqa: F401 (a fixture)

COUNTER = "/v1/models/counter/jobs"


def count(client: httpx.Client, n: int, delay: float = 0.0, every: int = 0) -> tuple[str, str]:
    """Submit a counter job: (its id, its tag in the run log)."""
    tag = uuid.uuid4().hex[:10]
    response = client.post(COUNTER, json={"n": n, "delay": delay, "every": every, "tag": tag})
    assert response.status_code == 202, response.text
    return response.json()["id"], tag


def follow(client: httpx.Client, job_id: str, after: int = 0, until=None) -> list[ServerSentEvent]:
    """The job's events after `after`, until the stream ends (or `until(event)` is true: a disconnect)."""
    headers = {"Last-Event-ID": str(after)} if after else {}
    seen = []
    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events", headers=headers) as source:
        assert source.response.headers["cache-control"] == "no-cache"
        for event in source.iter_sse():
            seen.append(event)
            if until is not None and until(event):
                break
    return seen


def runs(log: Path, tag: str) -> dict[str, list[tuple[str, int, float]]]:
    """The counter's run log for `tag`: run id -> [(what, step, time)] in order."""
    out: dict[str, list[tuple[str, int, float]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        what, line_tag, run, step, at = line.split()
        if line_tag == tag:
            out.setdefault(run, []).append((what, int(step), float(at)))
    return out


def wait_until(check, timeout_s: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)
    return result


def assert_whole(events: list[ServerSentEvent], n: int) -> None:
    """One job's whole stream: ids 1, 2, ... with none lost or repeated, the lifecycle in order,
    every step's partial, and the final result with every step once."""
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    statuses = [e.json()["status"] for e in events if e.event == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
    assert events[-1].event == "result" and events[-2].json() == {"status": "succeeded"}
    final = events[-1].json()
    assert final["status"] == "succeeded" and final["result"]["steps"] == list(range(n))
    steps = [e.json()["step"] for e in events if e.event == "partial"]
    assert sorted(set(steps)) == list(range(n))
    done = [e.json()["done"] for e in events if e.event == "progress"]
    assert done == sorted(done) and all(0 < d <= n for d in done)


def test_events_come_in_order_with_ids_and_the_stream_ends_after_the_result(client):
    job_id, _ = count(client, 8, delay=0.05, every=3)
    events = follow(client, job_id)
    assert_whole(events, 8)
    assert events[0].json() == {"status": "queued"}
    running = [e.json() for e in events if e.event == "status" and e.json()["status"] == "running"]
    assert running == [{"status": "running", "attempt": 1, "resumed_from": None}]
    # One attempt: each step's partial once, in order, all after it started.
    assert [e.json()["step"] for e in events if e.event == "partial"] == list(range(8))
    assert events[-1].json() == client.get(f"/v1/jobs/{job_id}").json()  # the result event: the job's view


def test_a_reconnect_with_last_event_id_continues_with_the_next_event(client):
    job_id, _ = count(client, 20, delay=0.05)
    partials = 0

    def third_partial(event: ServerSentEvent) -> bool:
        nonlocal partials
        partials += event.event == "partial"
        return partials == 3

    first = follow(client, job_id, until=third_partial)  # the client drops the connection mid-stream
    assert first[-1].event == "partial" and wait_for(client, job_id, ["running", "succeeded"])
    rest = follow(client, job_id, after=int(first[-1].id))
    assert_whole(first + rest, 20)  # nothing lost, nothing repeated


def test_a_finished_job_replays_its_events_then_the_stream_ends(client):
    job_id, _ = count(client, 3)
    wait_for(client, job_id, ["succeeded"])
    events = follow(client, job_id)
    assert_whole(events, 3)
    assert follow(client, job_id, after=int(events[-1].id)) == []  # after the final event: nothing, and the end
    assert [e.id for e in follow(client, job_id, after=2)] == [e.id for e in events[2:]]


def test_a_keepalive_comment_comes_while_nothing_happens(client):
    job_id, _ = count(client, 2, delay=3)  # nothing for 3 s between events; events_keepalive_s is 1 here
    lines = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith(":"):
                break
    assert lines[-1] == ": keep-alive" and lines[:3] == ["event: status", 'data: {"status":"queued"}', "id: 1"]
    # A keep-alive is no event to an SSE client (no empty event repeating the last id).
    assert_whole(follow(client, job_id), 2)


def test_an_unknown_job_and_a_bad_last_event_id_are_refused(client):
    job_id = new_job_id()
    missing = client.get(f"/v1/jobs/{job_id}/events")
    assert missing.status_code == 404 and error_of(missing)["type"] == "not_found"
    known, _ = count(client, 1)
    bad = client.get(f"/v1/jobs/{known}/events", headers={"Last-Event-ID": "seven"})
    assert bad.status_code == 400 and error_of(bad)["type"] == "invalid_header"
    # Another tenant's job answers as an unknown id: tests/test_tenants.py covers this route too.


def test_a_reconnect_continues_across_a_job_store_restart(client, serve_app):
    job_id, _ = count(client, 30, delay=0.1, every=5)
    first = follow(client, job_id, until=lambda e: e.event == "partial")
    kill_actor_named(store_name(serve_app.config.jobs), restart=True)  # Ray restarts it; it reloads sqlite
    rest = follow(client, job_id, after=int(first[-1].id))
    assert_whole(first + rest, 30)


def test_a_reconnect_continues_on_another_gateway(client, serve_app):
    """A second app's gateway on the same job store stands for another gateway replica."""
    from ray import serve

    from longserve.server.app import build_app

    config = serve_app.config.model_copy(
        update={
            "models": {"counter": serve_app.config.models["counter"]},
            "monitoring": serve_app.config.monitoring.model_copy(update={"enabled": False}),
        }
    )  # the same jobs settings (and their deploy stamp): the store keeps following the session's app
    serve.run(build_app(config), name="other-gateway", route_prefix="/other-gateway")
    try:
        job_id, _ = count(client, 20, delay=0.1)
        first = follow(client, job_id, until=lambda e: e.event == "partial")
        with httpx.Client(base_url=serve_app.url + "/other-gateway", timeout=60) as other:
            rest = follow(other, job_id, after=int(first[-1].id))
        assert_whole(first + rest, 20)
    finally:
        serve.delete("other-gateway")


def test_an_erased_jobs_stream_ends_and_its_events_are_gone(client):
    job_id, _ = count(client, 200, delay=0.1)
    erased = None
    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events") as source:
        for event in source.iter_sse():
            if event.event == "partial" and erased is None:
                erased = client.delete(f"/v1/jobs/{job_id}", params={"erase": "true"}).json()
    assert erased == {"id": job_id, "erased": True}
    assert event.event in ("partial", "progress")  # the stream ended, with no final event
    gone = client.get(f"/v1/jobs/{job_id}/events")
    assert gone.status_code == 410 and error_of(gone)["type"] == "erased"


def test_a_stale_attempt_cannot_checkpoint_and_the_next_resumes_from_the_last_checkpoint(serve_app, tmp_path):
    """The store driven directly, as a replica (checkpoint, is_current) and runners (claim) call it."""
    config = JobsConfig(backend="sqlite", sqlite_path=str(tmp_path / "jobs.sqlite3"), lease_s=1)
    store = get_job_store(config)
    job_id, request = new_job_id(), JobRequest(media_type="application/json")
    ray.get(store.submit.remote(job_id, "m", request, b"{}", {}, 60.0))
    first, _ = ray.get(store.claim.remote("runner-a", {"m": 1}, 1.0))
    assert first.attempts == 1 and first.resumed_from is None
    assert ray.get(store.is_current.remote(job_id, 1)) and not ray.get(store.is_current.remote(job_id, 2))
    assert ray.get(store.heartbeat.remote(job_id, "runner-a", 1, {"done": 4.0, "total": 10.0}))
    assert ray.get(store.checkpoint.remote(job_id, 1, {"steps": [0, 1, 2, 3]}, 4.0))
    # runner-a stops renewing: its lease ends and the attempt is no longer the job's.
    wait_until(lambda: not ray.get(store.is_current.remote(job_id, 1)), 10, "the lease lapsed")
    assert not ray.get(store.checkpoint.remote(job_id, 1, {"steps": [0, 1, 2, 3, 4]}, 5.0))
    second = wait_until(lambda: ray.get(store.claim.remote("runner-b", {"m": 1}, 0.5)), 10, "claimed again")[0]
    assert second.attempts == 2 and second.resumed_from == 4.0 and second.checkpoint.state == {"steps": [0, 1, 2, 3]}
    assert not ray.get(store.checkpoint.remote(job_id, 1, {"late": True}, 6.0))  # refused: attempt 1 is over
    assert ray.get(store.checkpoint.remote(job_id, 2, {"steps": [0, 1, 2, 3, 4, 5]}, 6.0))
    ray.get(store.cancel.remote(job_id))
    assert not ray.get(store.is_current.remote(job_id, 2))
    assert not ray.get(store.checkpoint.remote(job_id, 2, {"late": True}, 7.0))
    events, more = ray.get(store.events.remote(job_id, 0, 0.0))
    assert not more and [(e.type, e.data.get("status")) for e in events] == [
        ("status", "queued"),
        ("status", "running"),
        ("progress", None),
        ("status", "queued"),
        ("status", "running"),
        ("status", "cancelled"),
        ("error", "cancelled"),
    ]
    assert events[4].data == {"status": "running", "attempt": 2, "resumed_from": 4.0}
    ray.kill(store, no_restart=True)
    store = get_job_store(config)  # a new process: the log and the checkpoint are in the backend
    assert ray.get(store.events.remote(job_id, 3, 0.0)) == (events[3:], False)
    assert ray.get(store.get.remote(job_id)).checkpoint.state == {"steps": [0, 1, 2, 3, 4, 5]}
    ray.kill(store, no_restart=True)


def test_a_superseded_attempt_stops_and_the_next_resumes_with_nothing_lost_or_done_twice(client, serve_app):
    job_id, tag = count(client, 100, delay=0.15, every=10)
    log = Path(serve_app.config.models["counter"].options.log)
    first = follow(client, job_id, until=lambda e: e.event == "partial" and e.json()["step"] >= 12)
    kill_actor_named("longserve#JobRunner", restart=False)  # Serve starts a new runner replica
    # The lease lapses (lease_s 8 here); the new runner claims attempt 2, which resumes from a checkpoint.
    rest = follow(client, job_id, after=int(first[-1].id))
    events = first + rest
    assert_whole(events, 100)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["attempts"] == 2 and job["resumed_from"] >= 10 and job["resumed_from"] % 10 == 0
    running = [e for e in events if e.event == "status" and e.json()["status"] == "running"]
    assert [e.json() for e in running] == [
        {"status": "running", "attempt": 1, "resumed_from": None},
        {"status": "running", "attempt": 2, "resumed_from": job["resumed_from"]},
    ]
    # After attempt 2 starts, partials go on from its checkpoint (those of attempt 1 past it are sent again).
    after = events[events.index(running[1]) + 1 :]
    assert [e.json()["step"] for e in after if e.event == "partial"] == list(range(int(job["resumed_from"]), 100))
    # The replica of attempt 1 stopped by itself, soon after its lease ended, and never finished.
    by_run = runs(log, tag)
    old, new = sorted(by_run, key=lambda run: by_run[run][0][2])
    assert by_run[old][0][:2] == ("start", 0) and by_run[new][0][:2] == ("start", job["resumed_from"])
    assert by_run[old][-1][0] == "stop" and not any(what == "done" for what, _, _ in by_run[old])
    started_again = by_run[new][0][2]
    assert by_run[old][-1][2] < started_again + 3, (by_run[old][-1], started_again)
    assert job["result"]["run"] == new


def test_a_cancelled_jobs_replica_stops(client, serve_app):
    job_id, tag = count(client, 200, delay=0.1)
    log = Path(serve_app.config.models["counter"].options.log)
    follow(client, job_id, until=lambda e: e.event == "partial")
    cancelled_at = time.time()
    assert client.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    events = follow(client, job_id, after=0)
    assert events[-1].event == "error" and events[-1].json()["status"] == "cancelled"
    (run,) = wait_until(lambda: [r for r, lines in runs(log, tag).items() if lines[-1][0] == "stop"], 10, "stopped")
    stopped = runs(log, tag)[run]
    assert stopped[-1][2] < cancelled_at + 3 and stopped[-1][1] < 200


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_backends_bound_each_log_and_delete_it_with_the_job(kind, tmp_path, request):
    redis = request.getfixturevalue("redis_url") if kind == "redis" else ""
    backend = make_backend(kind, str(tmp_path / "jobs.sqlite3"), redis)
    job = Job(id=new_job_id(), seq=1, model="m", request=JobRequest(media_type="application/json"), ttl_s=60)
    log = [JobEvent(n, "status" if n % 500 == 1 else "partial", {"n": n}) for n in range(1, 2501)]
    for start in range(0, len(log), 100):
        backend.save(job, None, log[start : start + 100])
    kept = backend.events(job.id, 0, 10 * MAX_EVENTS)
    # The newest MAX_EVENTS, and every status event before them.
    assert kept == [e for e in log if e.type == "status" and e.id <= 1500] + log[1500:]
    assert backend.events(job.id, 2400, 5) == log[2400:2405]
    backend.delete(job.id)
    assert backend.events(job.id, 0, 10) == []
    if kind == "sqlite":
        backend.db.close()
