"""Test-only models whose run time the test chooses."""

import os
import threading
import time

from pydantic import BaseModel, Field

from longserve import Context, Model
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
