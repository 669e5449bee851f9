"""Test-only models whose run time the test chooses."""

import os
import threading
import time
import uuid
from typing import Optional

from pydantic import BaseModel, Field

from longserve import Cancelled, Context, Model
from longserve.models.embedder import EmbedInput


class SleepInput(BaseModel):
    seconds: float = Field(ge=0, le=120)
    fail: bool = False  # raise instead of answering
    progress: bool = False  # report progress (seconds slept) at every step


class Sleeper(Model):
    """Sleeps in 20 ms steps, checking for cancellation between steps.

    Reports how many calls this replica started and how many were stopped by
    cancellation, so tests can see what the replica really did."""

    Input = SleepInput

    def load(self, device: str) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.cancelled = 0

    def predict(self, inputs: SleepInput, ctx: Context) -> dict:
        with self.lock:
            self.started += 1
        deadline = time.monotonic() + inputs.seconds
        while time.monotonic() < deadline:
            if ctx.cancelled:
                with self.lock:
                    self.cancelled += 1
                ctx.check_cancelled()
            time.sleep(0.02)
            if inputs.progress:
                ctx.report_progress(inputs.seconds - max(deadline - time.monotonic(), 0), inputs.seconds)
        if inputs.fail:
            raise RuntimeError("asked to fail")
        return {"slept": inputs.seconds, "started": self.started, "cancelled": self.cancelled}


class TaggedSleep(SleepInput):
    tag: str = ""  # the client's name for this piece of work, written to the run log


class Recorder(Sleeper):
    """A Sleeper that appends "<tag> <pid>" to `log` each time it starts a run,
    so the reliability tests count real executions per job, across replicas and
    restarts (a line is one small O_APPEND write: atomic)."""

    Input = TaggedSleep

    class Options(Model.Options):
        log: str  # the run log's path

    def predict(self, inputs: TaggedSleep, ctx: Context) -> dict:
        if inputs.tag:
            with open(self.options.log, "a") as f:
                f.write(f"{inputs.tag} {os.getpid()}\n")
        return {**super().predict(inputs, ctx), "tag": inputs.tag}


class CountingEmbedder(Sleeper):
    """Takes an embedder's input; each text is a number of seconds to sleep.
    Every vector is [the number of calls this replica has started], so tests
    count the requests that reached the model (e.g. that a client did not retry)."""

    Input = EmbedInput

    def predict(self, inputs: EmbedInput, ctx: Context) -> dict:
        slept = super().predict(SleepInput(seconds=max(float(text) for text in inputs.texts)), ctx)
        return {
            "embeddings": [[float(slept["started"])] for _ in inputs.texts],
            "dim": 1,
            "tokens": [1] * len(inputs.texts),
        }


class TickInput(BaseModel):
    ticks: int = Field(3, ge=0, le=10_000)
    every: float = Field(0.02, ge=0, le=10)  # seconds between partials
    first_after: float = Field(0, ge=0, le=120)  # seconds before the first partial
    fail_after: Optional[int] = Field(None, ge=0)  # raise once this many partials are out
    tag: str = ""


class Ticker(Model):
    """Streams: emits {"tick": i} `ticks` times, `every` s apart (the first after
    `first_after` s), then returns {"ticks", "tag"}. Appends "<tag> began",
    "<tag> cancelled" or "<tag> done" to `log`, so a test sees what the replica did."""

    Input = TickInput

    class Options(Model.Options):
        log: str  # the run log's path

    def predict(self, inputs: TickInput, ctx: Context) -> dict:
        self._log(inputs.tag, "began")
        try:
            self._wait(inputs.first_after, ctx)
            for i in range(inputs.ticks):
                if i == inputs.fail_after:
                    raise RuntimeError("asked to fail")
                ctx.emit({"tick": i})
                self._wait(inputs.every, ctx)
        except Cancelled:
            self._log(inputs.tag, "cancelled")
            raise
        self._log(inputs.tag, "done")
        return {"ticks": inputs.ticks, "tag": inputs.tag}

    def _log(self, tag: str, what: str) -> None:
        if tag:
            with open(self.options.log, "a") as f:
                f.write(f"{tag} {what}\n")

    @staticmethod
    def _wait(seconds: float, ctx: Context) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ctx.check_cancelled()
            time.sleep(min(left, 0.02))
        ctx.check_cancelled()


class CountInput(BaseModel):
    n: int = Field(ge=1, le=10_000)  # steps
    delay: float = Field(0.0, ge=0, le=10)  # seconds per step
    every: int = Field(0, ge=0)  # checkpoint after every `every` steps; 0: never
    tag: str = ""  # the test's name for the job, in the run log


class Counter(Model):
    """Counts steps 0 .. n-1, one per `delay` s: emits {"step": i} and reports
    progress (i + 1 of n) at each, checkpoints the steps done every `every`
    steps, and resumes from ctx.resume. Returns every step, so a test sees
    that none was lost or done twice across attempts.

    Appends "<what> <tag> <run> <step> <time>" lines to `log` (start, step,
    stop when cancelled, done; run: an id per predict call), so tests see what
    each attempt really computed, and when it stopped."""

    Input = CountInput

    class Options(Model.Options):
        log: str

    def predict(self, inputs: CountInput, ctx: Context) -> dict:
        run = uuid.uuid4().hex[:8]
        steps: list[int] = list(ctx.resume["steps"]) if ctx.resume else []
        self.record("start", inputs.tag, run, len(steps))
        try:
            for i in range(len(steps), inputs.n):
                ctx.check_cancelled()
                time.sleep(inputs.delay)
                steps.append(i)
                self.record("step", inputs.tag, run, i)
                ctx.emit({"step": i})
                ctx.report_progress(i + 1, inputs.n)
                if inputs.every and (i + 1) % inputs.every == 0 and i + 1 < inputs.n:
                    ctx.checkpoint({"steps": steps})
        except Cancelled:
            self.record("stop", inputs.tag, run, len(steps))
            raise
        self.record("done", inputs.tag, run, len(steps))
        return {"steps": steps, "run": run}

    def record(self, what: str, tag: str, run: str, step: int) -> None:
        if tag:
            with open(self.options.log, "a") as f:
                f.write(f"{what} {tag} {run} {step} {time.time():.3f}\n")
