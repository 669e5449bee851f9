"""`pip install longserve` is the client alone: the SDK and the CLI work
against the running app from a fresh virtualenv that has neither Ray nor
torch (a laptop that only submits jobs downloads no server, no weights)."""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SDK_CALL = """
import sys
from longserve.client import Client
with Client(sys.argv[1]) as client:
    vectors = client.predict("embedder", {"texts": ["A cat sits on the mat."]})["embeddings"]
    names = [m.name for m in client.models().models]
print(len(vectors), len(vectors[0]), ",".join(names))
"""


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("client-venv")
    venv.create(where, with_pip=True)
    # A copy of the tree, so the build leaves nothing in the checkout; the
    # environment without PYTHONPATH, so nothing leaks in from the test run.
    source = where / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "tests"))
    subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        env=clean_env(),
        timeout=600,
    )
    return where


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(client_venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=clean_env(), cwd=client_venv, timeout=120)


def test_base_install_has_neither_ray_nor_torch(client_venv):
    python = str(client_venv / "bin" / "python")
    for heavy in ("ray", "torch", "fastapi", "faster_whisper"):
        found = run(client_venv, python, "-c", f"import {heavy}")
        assert found.returncode != 0 and "ModuleNotFoundError" in found.stderr, f"{heavy} is installed"


def test_base_install_cli_and_sdk_reach_the_app(client_venv, serve_app):
    help_text = run(client_venv, str(client_venv / "bin" / "longserve"), "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "transcribe" in help_text.stdout

    models = run(client_venv, str(client_venv / "bin" / "longserve"), "--url", serve_app.url, "models")
    assert models.returncode == 0, models.stderr
    assert "embedder" in models.stdout

    sdk = run(client_venv, str(client_venv / "bin" / "python"), "-c", SDK_CALL, serve_app.url)
    assert sdk.returncode == 0, sdk.stderr
    count, dimensions, names = sdk.stdout.split()
    assert (count, dimensions) == ("1", "384")  # one MiniLM vector
    assert {"embedder", "transcriber"} <= set(names.split(","))
