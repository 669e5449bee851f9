"""`python -m longserve.server.check` stops a bad serve_config.yaml before Ray starts."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def run_check(tmp_path, mutate) -> subprocess.CompletedProcess:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    mutate(config)
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "longserve.server.check", str(path)], capture_output=True, text=True, timeout=120
    )


def args(config) -> dict:
    return config["applications"][0]["args"]


def test_shipped_config_passes(tmp_path):
    result = run_check(tmp_path, lambda c: None)
    assert result.returncode == 0, result.stderr
    assert "embedder 10 s" in result.stdout and "transcriber 120 s" in result.stdout


@pytest.mark.parametrize("bad", [0, -5, "abc", float("nan"), True])
def test_bad_model_timeout_exits_1_naming_field_and_forms(tmp_path, bad):
    result = run_check(tmp_path, lambda c: args(c)["models"]["transcriber"].update(timeout=bad))
    assert result.returncode == 1
    assert "models.transcriber.timeout" in result.stderr
    assert "false / -1" in result.stderr


def test_ray_request_timeout_below_ours_is_refused(tmp_path):
    result = run_check(tmp_path, lambda c: c["http_options"].update(request_timeout_s=60))
    assert result.returncode == 1
    assert "request_timeout_s=60" in result.stderr and "408" in result.stderr


def test_ray_request_timeout_above_every_timeout_is_allowed(tmp_path):
    result = run_check(tmp_path, lambda c: c["http_options"].update(request_timeout_s=900))
    assert result.returncode == 0, result.stderr


def test_misspelt_model_option_exits_1_naming_the_field(tmp_path):
    result = run_check(tmp_path, lambda c: args(c)["models"]["embedder"].update(options={"batch_sise": 8}))
    assert result.returncode == 1
    assert "models.embedder.options.batch_sise: Extra inputs are not permitted" in result.stderr
