"""The benchmarks still run, at tiny sizes (their own Ray, in a subprocess):
LitServe and the bare Ray Serve app beside longserve, timeouts, jobs with
stored jobs preloaded, and the results file they write."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_all_writes_its_tables(tmp_path):
    out = tmp_path / "RESULTS.md"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own cluster, not the session's
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--quick", "--phases", "echo,timeouts,jobs", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for heading in (
        "## Sync serving overhead: echo model",
        "## Timeout precision",
        "## Jobs: latency",
        "## JobStore actor memory per stored job",
        "## Issue 19's goals against this run",
    ):
        assert heading in text
    # An unmet goal says where the CPU goes: ms per request of each kind of process.
    assert "| ↳ where the CPU goes: finished-job poll, 16 clients" in text and "gateway " in text
    for server in ("| longserve |", "| bare Ray Serve |", "| LitServe |"):
        assert server in text
    # Only the writer's own lines: no log output (ANSI colours, "(raylet)" prefixes) slipped in.
    assert "\x1b[" not in text and "(raylet)" not in text and "(ServeReplica" not in text
    ratio = next(line for line in text.splitlines() if line.startswith("| 4 | bare Ray Serve |"))
    assert float(ratio.split("|")[6]) > 0
