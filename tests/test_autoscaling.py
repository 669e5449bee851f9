"""GPU placement and autoscaling on the job backlog.

The end-to-end part (`test_fake_gpu_cluster_scales_on_the_backlog`) starts a
two-node Ray cluster of its own in a subprocess (tests/multinode.py: a head
without GPUs and a raylet that advertises fake GPUs, explicit ports, its own
auth token, RAY_ADDRESS unset) so it never touches the session's cluster, and
stops exactly the processes it started. The rest are offline checks of the
policy's arithmetic, its non-blocking cache, and the device choice.
"""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.serve.config import AutoscalingConfig

from longserve.server.autoscaling import (
    POLICY_PATH,
    BacklogPolicy,
    cold_start_note,
    desired_replicas,
    model_serve_options,
)
from longserve.server.config import AppConfig
from longserve.server.devices import choose_device
from longserve.server.timeouts import TimeoutInForce, timeout_error
from tests.multinode import JOB_TIMEOUT, JOBS, MAX_REPLICAS

ROOT = Path(__file__).resolve().parent.parent
SLEEPER = "tests.slow_models:Sleeper"


def config(**model) -> AppConfig:
    return AppConfig.model_validate({"models": {"m": {"class": SLEEPER, **model}}})


# -- the policy ----------------------------------------------------------------------


def test_queued_jobs_bring_a_model_up_from_zero():
    # 0 replicas, no requests: the backlog alone decides, capped by the job slots.
    assert desired_replicas(current=0, target=0, requests=0, target_ongoing=1, backlog=5, job_slots=3) == 3
    assert desired_replicas(current=0, target=0, requests=0, target_ongoing=2, backlog=3, job_slots=8) == 2
    assert desired_replicas(current=0, target=0, requests=0, target_ongoing=1, backlog=0, job_slots=3) == 0
    # A scale-up already decided is kept while replicas start.
    assert desired_replicas(current=0, target=2, requests=0, target_ongoing=1, backlog=0, job_slots=3) == 2


def test_requests_and_jobs_the_larger_wins():
    assert desired_replicas(current=2, target=2, requests=6, target_ongoing=1, backlog=1, job_slots=4) == 6
    assert desired_replicas(current=2, target=2, requests=1, target_ongoing=1, backlog=4, job_slots=4) == 4
    # Idle: nothing asks for replicas; Serve's delays bring it to min_replicas.
    assert desired_replicas(current=2, target=2, requests=0, target_ongoing=1, backlog=0, job_slots=4) == 0


def test_build_app_adds_the_backlog_policy_only_to_autoscaling_models():
    cfg = config(
        autoscaling_config={"min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 1}, max_ongoing_requests=2
    )
    options = model_serve_options("m", cfg.models["m"], cfg.jobs)
    policy = options["autoscaling_config"]["policy"]
    assert policy["policy_function"] == POLICY_PATH
    assert policy["policy_kwargs"]["model"] == "m" and policy["policy_kwargs"]["job_slots"] == 3
    # Ray accepts it: imports the class and serializes it, as `serve deploy` does.
    assert AutoscalingConfig(**options["autoscaling_config"]).policy.policy_function == POLICY_PATH
    fixed = config(num_replicas=2)
    assert "autoscaling_config" not in model_serve_options("m", fixed.models["m"], fixed.jobs)
    own = config(autoscaling_config={"max_replicas": 2, "policy": {"policy_function": "x:y"}})
    assert model_serve_options("m", own.models["m"], own.jobs)["autoscaling_config"]["policy"] == {
        "policy_function": "x:y"
    }


def ctx(current=0, target=0, requests=0.0, target_ongoing=1.0):
    return SimpleNamespace(
        current_num_replicas=current,
        target_num_replicas=target,
        total_num_requests=requests,
        config=SimpleNamespace(get_target_ongoing_requests=lambda: target_ongoing),
    )


def test_policy_call_never_waits_for_the_store():
    """The controller calls the policy on its event loop: the call returns at once
    with the cached backlog while a refresh runs as a task, even when the store
    lookup hangs."""
    import asyncio

    async def scenario():
        policy = BacklogPolicy(
            store="no-such-store",
            namespace="nowhere",
            model="m",
            job_slots=2,
            refresh_s=0.05,
            call_timeout_s=0.2,
            stale_after_s=0.5,
        )
        policy.backlog, policy.fetched_at = 4, time.monotonic()  # as if read just now

        answered = []

        async def hang(*args, **kwargs):
            await asyncio.sleep(10)
            answered.append(True)

        policy._refresh = lambda: hang()  # a store that answers only after 10 s
        desired, state = policy(ctx())
        # Had the call waited for the store, the store would have answered by now.
        assert not answered
        assert desired == 2 and state["job_backlog"] == 4
        assert policy.task is not None and not policy.task.done()  # at most one in flight
        policy(ctx())
        await asyncio.sleep(0.6)  # the store stays silent past stale_after_s
        desired, state = policy(ctx())
        assert desired == 0 and state["job_backlog"] == 0  # scale on requests only
        policy.task.cancel()

    asyncio.run(scenario())


# -- devices and the cold-start 504 ---------------------------------------------------


def test_device_is_cpu_without_a_gpu_and_when_a_gpu_is_fake(caplog):
    assert choose_device([]) == "cpu"
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        # This machine has no CUDA: Ray may still assign GPU ids (a fake GPU resource).
        assert choose_device(["0"], "model m") == "cpu"
        assert choose_device(["0"], "model t", "ctranslate2") == "cpu"
    assert "Ray assigned GPU ['0']" in caplog.text and "running on the CPU" in caplog.text
    assert "not usable by torch" in caplog.text and "not usable by ctranslate2" in caplog.text


def fake_runtimes(monkeypatch, torch_cuda: bool, ct2_cuda: bool) -> None:
    torch = SimpleNamespace(
        __version__="2.x", version=SimpleNamespace(cuda="12.8"), cuda=SimpleNamespace(is_available=lambda: torch_cuda)
    )
    ct2 = SimpleNamespace(__version__="4.x", get_cuda_device_count=lambda: int(ct2_cuda))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "ctranslate2", ct2)


def test_the_device_is_chosen_by_the_models_own_runtime(monkeypatch):
    """CUDA for torch says nothing about CTranslate2's CUDA (its own build), and the
    other way round: each model asks only the library that will load it."""
    fake_runtimes(monkeypatch, torch_cuda=True, ct2_cuda=False)
    assert choose_device(["0"], "model e", "torch") == "cuda"
    assert choose_device(["0"], "model t", "ctranslate2") == "cpu"
    fake_runtimes(monkeypatch, torch_cuda=False, ct2_cuda=True)
    assert choose_device(["0"], "model e", "torch") == "cpu"
    assert choose_device(["0"], "model t", "ctranslate2") == "cuda"
    assert choose_device([], "model t", "ctranslate2") == "cpu"  # no GPU from Ray: never CUDA
    with pytest.raises(ValueError, match="unknown model runtime"):
        choose_device(["0"], "model x", "jax")


def test_each_shipped_model_names_its_runtime():
    from longserve.server.model_server import load_model_class

    assert load_model_class("longserve.models.embedder:Embedder").runtime == "torch"
    assert load_model_class("longserve.models.transcriber:Transcriber").runtime == "ctranslate2"
    assert load_model_class(SLEEPER).runtime == "torch"  # the default


def test_an_unknown_runtime_fails_when_the_class_is_loaded(monkeypatch):
    from longserve.server.model_server import load_model_class
    from tests.slow_models import Sleeper

    monkeypatch.setattr(Sleeper, "runtime", "jax")
    with pytest.raises(TypeError, match="runtime is 'jax'"):
        load_model_class(SLEEPER)


def test_a_queued_504_of_a_model_that_scales_to_zero_says_so():
    zero = config(autoscaling_config={"min_replicas": 0, "max_replicas": 2}).models["m"]
    warm = config(autoscaling_config={"min_replicas": 1, "max_replicas": 2}).models["m"]
    error = timeout_error("m", TimeoutInForce(2.0, "models.m.timeout"), "queued", 600, cold_start_note("m", zero))
    assert "scales to zero" in error.body["hint"] and "cold start" in error.body["message"]
    assert cold_start_note("m", warm) == "" and cold_start_note("m", config().models["m"]) == ""


# -- end to end, on a cluster of its own ---------------------------------------------------


def test_fake_gpu_cluster_scales_on_the_backlog(tmp_path):
    out = tmp_path / "multinode.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.multinode", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    result = json.loads(out.read_text()) if out.exists() else {}
    print(json.dumps(result, indent=1))  # the measured numbers, with -s or on failure
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["nodes"] == 2 and len(result["gpu_node"]) == 1
    # The model's job slots held by a runner that never calls it: the app's runner
    # claimed nothing (every job still queued) and no request reached the model, so
    # Serve's request-based scaling alone would have left it at zero. The backlog
    # policy brought it from 0 to max_replicas, on the GPU node only.
    assert result["scale_by_backlog_s"] is not None
    assert result["stalled_at_scale"] == MAX_REPLICAS and result["queued_at_scale"] == JOBS
    assert result["replica_nodes"] == result["gpu_node"]
    # Released, the queued jobs all ran, each once.
    assert result["job_statuses"] == ["succeeded"] and result["job_attempts"] == [1]
    # Idle, it went back to zero.
    assert result["scale_to_0_s"] is not None
    # At zero, a job claimed with no replica waited for one: it ran once, and its
    # job_timeout (shorter than the cold start it waited through) counted only the run.
    cold_job = result["cold_job"]
    assert cold_job["status"] == "succeeded" and cold_job["attempts"] == 1 and cold_job["run_s"] > JOB_TIMEOUT
    # At zero, a short sync timeout says why; a long enough one waits for the cold start.
    cold = result["cold_short"]
    assert cold["status"] == 504 and cold["error"]["stage"] == "queued"
    assert "scales to zero" in cold["error"]["hint"]
    assert result["cold_long"]["status"] == 200
    assert result["leftover_pids"] == []
