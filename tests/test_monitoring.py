"""Latency you can see, timeouts that set themselves, alerts on abnormal
tasks, and the metrics in Ray's Prometheus export. The models here are used by
this file only; what several tests build on (the `timed` history, the slow
request, the alert) is a fixture made once per session (not per module: a shuffled
run that leaves this file and comes back would make a module fixture twice), so
any order passes."""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import WEBHOOK_SECRET, AlertReceiver, error_of
from tests.webhooks import verify
from tests.test_timeouts import gateway_log_lines

SLEEPS = [0.05, 0.1, 0.2, 0.3] * 5
PROBE = "refresh_probe"  # timeout: auto that never leaves its fallback; its source counts its run times


def predict(client, model, seconds, **headers):
    return client.post(f"/v1/models/{model}/predict", json={"seconds": seconds}, headers=headers)


def model_info(client, model):
    return client.get(f"/v1/models/{model}").json()


def wait_until(check, timeout_s=10.0, every=0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met in {timeout_s} s"
        time.sleep(every)


def gateway_refreshed(client):
    """Return once the gateway has reloaded the slow thresholds and auto timeouts
    from what the stats hold now (it does every second; nothing else shows when):
    one more run time of PROBE is in the stats, then in the gateway's source."""
    assert predict(client, PROBE, 0).status_code == 200
    count = wait_until(lambda: model_info(client, PROBE)["latency"]["sync"]["latency_s"]["count"])
    wait_until(lambda: int(re.search(r"\(have (\d+)\)", model_info(client, PROBE)["timeout_source"])[1]) >= count)


@pytest.fixture(scope="session")
def history(client):
    """20 requests to `timed` (this module's own model), timed by the client, and
    the gateway's summary once it has all 20: the history the slow threshold and
    the metrics build on. Made once, whichever test asks first."""
    measured = []
    for seconds in SLEEPS:
        started = time.perf_counter()
        assert predict(client, "timed", seconds).status_code == 200
        measured.append(time.perf_counter() - started)
    sync = wait_until(lambda: (s := model_info(client, "timed")["latency"]["sync"])["latency_s"]["count"] == 20 and s)
    return sorted(measured), sync


def test_latency_percentiles_agree_with_what_the_client_measured(history):
    ordered, sync = history
    assert sync["outcomes"] == {"ok": 20}
    server, run = sync["latency_s"], sync["run_s"]
    # Each latency holds its run, and the gateway's clock runs inside the client's:
    # run <= gateway <= client, percentile by percentile (nearest-rank p50 of 20 is the 10th).
    # The runs are the sleeps (10th shortest 0.1 s, longest 0.3 s), give or take event delivery.
    assert 0.05 < run["p50"] <= server["p50"] <= ordered[9]
    assert 0.2 < run["p99"] <= server["max"] <= ordered[-1]
    assert 0 <= sync["queue_s"]["max"] <= server["max"]


def test_timeouts_are_counted_by_stage(client, history):
    before = model_info(client, "timed")["latency"]["sync"]["timeouts"]
    response = predict(client, "timed", 1, **{"Request-Timeout": "0.3"})
    assert error_of(response)["stage"] == "running"
    counted = {"queued": before["queued"], "running": before["running"] + 1}
    wait_until(lambda: model_info(client, "timed")["latency"]["sync"]["timeouts"] == counted)


@pytest.fixture(scope="session")
def slow(client, history):
    """One request over 3 x the p99 run time of the history (~0.3 s), sent once the
    gateway holds that threshold: its WARNING line, and the p99 the threshold came from."""
    p99 = model_info(client, "timed")["latency"]["sync"]["run_s"]["p99"]
    gateway_refreshed(client)
    response = predict(client, "timed", 1.5)
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    (line,) = wait_until(lambda: gateway_log_lines(rid, "slow sync"), timeout_s=10)
    return line, p99


def test_slow_request_is_logged_as_a_warning(slow):
    line, p99 = slow
    assert line.startswith("WARNING") and "model=timed" in line
    ran, threshold = map(float, re.search(r"ran ([\d.]+) s, over the abnormal threshold of ([\d.]+) s", line).groups())
    assert threshold == pytest.approx(3 * p99, abs=0.002) and ran > threshold  # slow_factor 3 x p99 run time


def test_auto_timeout_falls_back_then_follows_observed_run_times(client):
    info = model_info(client, "auto_sleeper")
    assert info["timeout_s"] == 5 and "fallback" in info["timeout_source"]

    def follows(requests: int, at_least: float) -> float:
        """The timeout once the gateway has read `requests` run times: 2 x their p99, which is >= the slept time."""
        info = wait_until(
            lambda: (
                (i := model_info(client, "auto_sleeper")) and f" over {requests} requests" in i["timeout_source"] and i
            )
        )
        observed = float(re.search(r"\(([\d.]+) s over", info["timeout_source"])[1])
        assert "auto: 2 x p99 run time" in info["timeout_source"] and observed >= at_least, info
        assert info["timeout_s"] == pytest.approx(2 * observed, abs=0.002), info
        return info["timeout_s"]

    with ThreadPoolExecutor(4) as pool:
        assert all(r.status_code == 200 for r in pool.map(lambda _: predict(client, "auto_sleeper", 0.3), range(12)))
    first = follows(12, 0.3)

    # Slower work (let through by the header) moves it up.
    with ThreadPoolExecutor(4) as pool:
        slow = pool.map(lambda _: predict(client, "auto_sleeper", 0.8, **{"Request-Timeout": "5"}), range(12))
        assert all(r.status_code == 200 for r in slow)
    seconds = follows(24, 0.8)
    assert seconds > first

    response = predict(client, "auto_sleeper", 8)
    error = error_of(response)
    assert response.status_code == 504 and error["timeout_s"] == seconds
    assert "auto: 2 x p99 run time" in error["timeout_source"]


@pytest.fixture(scope="session")
def alert(client, alerts):
    """8 of 8 requests to `alerting` time out: the alert it raises (once: it cools down for 600 s)."""
    _, received = alerts
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: predict(client, "alerting", 0.5, **{"Request-Timeout": "0.1"}), range(8)))
    assert all(r.status_code == 504 for r in responses)
    event = wait_until(lambda: next((e for e in received if e["model"] == "alerting"), None))
    assert event["alert"] == "timeout_rate" and event["rate"] == 1.0 and event["requests"] >= 6
    assert event["threshold"] == 0.5
    # Signed as job callbacks are (Standard Webhooks), and checked by the documented verifier.
    headers, body = next((h, b) for h, b in AlertReceiver.raw if json.loads(b)["model"] == "alerting")
    assert verify(WEBHOOK_SECRET, headers, body) == event and headers["webhook-id"].startswith("msg_alert_")
    return event


def test_sustained_timeouts_raise_an_alert(alert):
    assert alert["alert"] == "timeout_rate" and alert["rate"] == 1.0 and alert["requests"] >= 6
    assert alert["threshold"] == 0.5


def test_metrics_appear_in_rays_prometheus_export(client, serve_app, history, slow, alert):
    expected = [
        r'ray_longserve_requests_total\{[^}]*model="timed"[^}]*outcome="ok"',
        r'ray_longserve_requests_total\{[^}]*model="timed"[^}]*outcome="timeout_running"',
        r'ray_longserve_latency_seconds_bucket\{[^}]*kind="sync"[^}]*model="timed"',
        r'ray_longserve_run_seconds_bucket\{[^}]*kind="job"',
        r'ray_longserve_job_transitions_total\{[^}]*status="succeeded"',
        r'ray_longserve_jobs_backlog\{[^}]*state="queued"',
        r'ray_longserve_timeout_seconds\{[^}]*model="auto_sleeper"',
        r'ray_longserve_slow_total\{[^}]*model="timed"',
        r'ray_longserve_alerts_total\{[^}]*alert="timeout_rate"[^}]*model="alerting"',
        # Per tenant: the open app's one tenant (a tenant not named in `tenants:` would be "other").
        r'ray_longserve_requests_total\{[^}]*model="timed"[^}]*tenant="anonymous"',
        r'ray_longserve_model_seconds_total\{[^}]*kind="job"[^}]*tenant="anonymous"',
    ]
    # A timeout and a job of its own, so those metrics have something to show in any order.
    assert error_of(predict(client, "timed", 1, **{"Request-Timeout": "0.3"}))["stage"] == "running"
    job = client.post("/v1/models/timed/jobs", json={"seconds": 0}).json()
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")

    def timed_ok() -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in httpx.get(serve_app.metrics_url, timeout=5).text.splitlines()
            if line.startswith("ray_longserve_requests_total{") and 'model="timed"' in line and 'outcome="ok"' in line
        )

    def missing():
        text = httpx.get(serve_app.metrics_url, timeout=5).text
        return [pattern for pattern in expected if not re.search(pattern, text)]

    wait_until(lambda: not missing(), timeout_s=60, every=2)
    # Only the fixtures send `timed` requests that succeed: the history's 20 and the slow one.
    wait_until(lambda: timed_ok() == 21, timeout_s=30, every=2)
