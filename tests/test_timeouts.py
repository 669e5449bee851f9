"""Timeouts over real HTTP: the explained 504, its stages, the forms that
turn it off, the per-request header, and cancellation of timed-out work."""

import glob
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import error_of, speech_wav

SLEEP = "/v1/models/sleeper/predict"  # timeout 1.5 s, one request at a time, queue of 2


def sleep(client, seconds, path=SLEEP, **headers):
    return client.post(path, json={"seconds": seconds}, headers=headers)


def gateway_log_lines(request_id: str, marker: str = "timeout: model=") -> list[str]:
    """The gateway's log lines about `request_id` that contain `marker`."""
    import ray

    logs = os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs", "serve")
    lines = []
    for path in glob.glob(os.path.join(logs, "replica_*Gateway*.log")):
        with open(path) as f:
            lines += [line for line in f if request_id in line and marker in line]
    return lines


def began(serve_app, tag: str, timeout_s: float = 30) -> None:
    """Wait until the sleeper replica has begun the run tagged `tag` (it logs each run it starts)."""
    log = Path(serve_app.config.models["sleeper"].options.log)
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and f"{tag} " in log.read_text()):
        assert time.monotonic() < deadline, f"the sleeper did not begin {tag} in {timeout_s} s"
        time.sleep(0.05)


def tagged(seconds: float) -> tuple[dict, str]:
    """A sleeper body with a unique tag, and the tag."""
    tag = f"t-{uuid.uuid4().hex}"
    return {"seconds": seconds, "tag": tag}, tag


def wait_idle(client, path=SLEEP) -> dict:
    """Block until the sleeper replica has nothing running or queued; its counts
    of calls started and cancelled so far."""
    response = sleep(client, 0, path, **{"Request-Timeout": "10"})
    assert response.status_code == 200, response.text
    return response.json()


def test_running_request_past_its_timeout_gets_the_explained_504(client):
    wait_idle(client)
    response = sleep(client, 5)
    assert response.status_code == 504
    error = error_of(response)
    assert error["type"] == "timeout"
    assert error["model"] == "sleeper"
    assert error["timeout_s"] == 1.5
    assert error["timeout_source"] == "models.sleeper.timeout in serve_config.yaml"
    assert error["stage"] == "running"
    for advice in ("models.sleeper.timeout", "Request-Timeout", "false or -1", "async job"):
        assert advice in error["message"] and advice in error["hint"]

    # The same facts on the gateway's ERROR log line.
    for _ in range(50):  # the log file is flushed asynchronously
        lines = gateway_log_lines(error["request_id"])
        if lines:
            break
        time.sleep(0.1)
    (line,) = lines
    assert line.startswith("ERROR")
    for fact in ("model=sleeper", "timeout_s=1.5", "models.sleeper.timeout in serve_config.yaml", "stage=running"):
        assert fact in line


def test_queued_request_past_its_timeout_is_504_queued_and_never_runs(client, serve_app):
    wait_idle(client)
    with ThreadPoolExecutor(2) as pool:
        body, tag = tagged(1.2)
        busy = pool.submit(client.post, SLEEP, json=body)
        began(serve_app, tag)  # the first request holds the only slot
        queued = sleep(client, 0.1, **{"Request-Timeout": "0.5"})
        assert busy.result().status_code == 200
    assert queued.status_code == 504
    error = error_of(queued)
    assert error["stage"] == "queued"
    assert error["timeout_s"] == 0.5 and error["timeout_source"] == "Request-Timeout header"
    assert "waiting in the queue" in error["message"]

    # Removed from the queue: the replica started the busy request and this one, nothing between.
    started_before = busy.result().json()["started"]
    after = sleep(client, 0)
    assert after.json()["started"] == started_before + 1


@pytest.mark.parametrize("model", ["sleeper_false", "sleeper_minus_one"])
def test_timeout_false_and_minus_one_let_long_work_finish(client, model):
    response = sleep(client, 2.5, path=f"/v1/models/{model}/predict")
    assert response.status_code == 200, response.text
    assert response.json()["slept"] == 2.5
    info = client.get(f"/v1/models/{model}").json()
    assert info["timeout_s"] is None


def test_request_timeout_header_raises_the_timeout(client):
    wait_idle(client)
    assert sleep(client, 2.0, **{"Request-Timeout": "2.8"}).status_code == 200


def test_request_timeout_header_is_capped_by_max_timeout(client):
    wait_idle(client)
    for asked in ("100", "none"):
        response = sleep(client, 5.5, **{"Request-Timeout": asked})
        assert response.status_code == 504
        error = error_of(response)
        assert error["timeout_s"] == 5  # max_timeout in the test config
        assert "capped by max_timeout" in error["timeout_source"]


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", ""])
def test_bad_request_timeout_header_is_400(client, value):
    response = sleep(client, 0, **{"Request-Timeout": value})
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_header" and "Request-Timeout" in error["message"]


def test_timed_out_request_is_cancelled_and_frees_the_replica(client):
    cancelled = wait_idle(client)["cancelled"]
    response = sleep(client, 60, **{"Request-Timeout": "0.5"})
    assert error_of(response)["stage"] == "running"
    # One slot per replica: this answers within the 1.5 s timeout only if the
    # 60 s request stopped when it timed out, and the replica counted it cancelled.
    after = sleep(client, 0.1)
    assert after.status_code == 200, after.text
    assert after.json()["cancelled"] == cancelled + 1


def test_timed_out_transcription_stops_and_frees_the_replica(client, speech):
    # 200 s of speech: over ten seconds of work on this CPU.
    long_audio = speech_wav("speech_long.ogg", repeat=3)
    response = client.post(
        "/v1/models/transcriber/predict",
        content=long_audio,
        headers={"Content-Type": "audio/wav", "Request-Timeout": "1.5"},
    )
    assert response.status_code == 504
    assert error_of(response)["stage"] == "running"
    # The transcriber runs one request at a time; the short clip gets the
    # replica inside max_timeout (5 s) only because the long one stopped at its
    # next segment instead of running on for ten seconds more. Had it run on,
    # the short one would time out still queued; a slow CPU may still time it
    # out once running, which proves the same.
    short = client.post(
        "/v1/models/transcriber/predict",
        content=speech,
        headers={"Content-Type": "audio/ogg", "Request-Timeout": "5"},
    )
    assert short.status_code == 200 or error_of(short)["stage"] == "running", short.text
