"""Issue 19's goals against one run_all run: each goal, what this run measured, met or
not, and under each unmet one where the CPU goes: the CPU milliseconds per request of
each kind of process (benchmarks/collapse.py), and the request rate those milliseconds
allow on this machine's cores if nothing else ran."""

import os
from typing import Optional

# The points whose CPU is accounted: (phase, clients)
CPU_CLIENTS = {"echo": 16, "embedder": 64}
KIND_LABELS = {
    "ProxyActor": "proxy",
    "Gateway": "gateway",
    "model": "model",
    "JobStore": "JobStore",
    "JobRunner": "runner",
    "other": "other",
}


def cpu_point(concurrencies: tuple, phase: str) -> int:
    """The concurrency whose CPU is accounted: the goal's, or the highest run (a --quick run)."""
    target = CPU_CLIENTS[phase]
    return target if target in concurrencies else max(concurrencies)


def note_cpu(report, phase: str, results: dict) -> None:
    for clients, sides in results.items():
        if "cpu" in sides.get("longserve", {}):
            report.cpu[f"{phase}, {clients} clients"] = sides["longserve"]["cpu"]


def where_the_cpu_goes(cpu: dict[str, float]) -> str:
    total = sum(cpu.values())
    parts = " + ".join(f"{label} {cpu[k]:.1f}" for k, label in KIND_LABELS.items() if cpu.get(k, 0) >= 0.05)
    ceiling = (os.cpu_count() or 1) * 1000 / total if total else float("inf")
    return f"{parts} = **{total:.1f} ms** CPU a request: at most {ceiling:,.0f} req/s on {os.cpu_count()} CPUs"


def section(report) -> None:
    m, rows = report.measured, []

    def goal(text: str, measured: str, met: bool, cpu_keys: tuple = ()) -> None:
        rows.append(f"| {text} | {measured} | {'yes' if met else '**no**'} |")
        if not met:
            for key in cpu_keys:
                if key in report.cpu:
                    rows.append(f"| ↳ where the CPU goes: {key} | {where_the_cpu_goes(report.cpu[key])} | |")

    emb, echo = m.get("embedder", {}), m.get("echo", {})
    emb_cpu = tuple(k for k in report.cpu if k.startswith("embedder"))
    echo_cpu = tuple(k for k in report.cpu if k.startswith("echo"))
    if at := [c for c in (16, 64) if c in emb]:
        shown = ", ".join(f"{emb[c]:.2f} at {c}" for c in at)
        goal("embedder ≥ 1.0x LitServe at c=16 and c=64", shown, all(emb[c] >= 1.0 for c in at), emb_cpu)
    if 1 in emb:
        goal("embedder ≥ 0.7x LitServe at c=1", f"{emb[1]:.2f}", emb[1] >= 0.7, emb_cpu)
    if 64 in emb and 256 in emb:
        answers = m["embedder answers"]
        plateau = answers[256]["req/s"] / max(answers[64]["req/s"], 0.5)
        explained = all(200 <= s < 300 or s in (503, 504) for s in answers[256]["statuses"])
        clean = explained and not answers[256]["client timeouts"]
        goal(
            "embedder: c=256 within 10% of c=64, every answer 200 or an explained 503/504, no client timeout",
            f"{plateau:.2f}; answers {'all 2xx/503/504, no client timeouts' if clean else 'NOT clean'}",
            plateau >= 0.9 and clean,
            emb_cpu,
        )
    if echo:
        shown = " / ".join(f"{v:.2f}" for v in echo.values())
        goal("echo ≥ 0.5x LitServe at every concurrency", shown, min(echo.values()) >= 0.5, echo_cpu)
    if jobs := m.get("jobs"):
        submit, poll, polls = (span([j[k] for j in jobs]) for k in ("submit p50 ms", "poll p50 ms", "polls/s"))
        met = all(j["submit p50 ms"] <= 5 and j["poll p50 ms"] <= 3 and j["polls/s"] >= 1000 for j in jobs)
        cpu_keys = tuple(k for k in report.cpu if "poll" in k or "submit" in k)[-2:]  # the largest store's
        goal(
            "submit p50 ≤ 5 ms, finished-job poll p50 ≤ 3 ms, ≥ 1,000 polls/s at c=16",
            f"{submit} ms, {poll} ms, {polls} polls/s",
            met,
            cpu_keys,
        )
    if (late := m.get("late p99 ms at 16")) is not None:
        goal("504 lateness p99 ≤ 50 ms under 16-client echo load", f"{late:.0f} ms", late <= 50, echo_cpu)
    if (tx := m.get("transcription")) is not None:
        goal("transcription through a job ≥ 0.97x direct", f"{tx:.2f}x", tx >= 0.97)
    if not rows:
        return
    report.section(
        "Issue 19's goals against this run",
        "Ratios longserve ÷ LitServe from the tables above. Under each unmet goal, where the CPU goes: "
        "CPU ms per request of each kind of process of the Ray cluster (from /proc over that wrk point or "
        "those requests, `benchmarks/collapse.py`; proxy: Ray Serve's ProxyActor; other: raylet, GCS, "
        "controller and the rest), and the rate that CPU allows if the machine did nothing else.",
    )
    report.add("| goal | measured | met |", "|---|---|---|", *rows)


def span(values: list[float]) -> Optional[str]:
    lo, hi = min(values), max(values)
    fmt = "{:,.0f}" if hi >= 100 else "{:.1f}"
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"
