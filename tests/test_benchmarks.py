"""The benchmarks still run, at tiny sizes (their own Ray, in a subprocess)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("module, args, heading", [
    ("benchmarks.jobs_latency", ["--stored", "20", "--samples", "5", "--concurrency", "2"], "| submit p50 ms |"),
    ("benchmarks.metrics_overhead", ["--rounds", "1", "--seconds", "0.5", "--concurrency", "2"], "| req/s |"),
])
def test_benchmark_prints_its_table(module, args, heading):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own cluster, not the session's
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith(heading))
    ratio = float(row.rstrip(" |").rsplit("|", 1)[1])
    assert ratio > 0
