"""What a user writes to serve a model: one `Model` subclass.

    class Reverser(Model):
        class Input(BaseModel):
            text: str

        class Options(Model.Options):   # `options:` in serve_config.yaml
            upper: bool = False

        def load(self, device: str) -> None:
            ...                      # read weights; device is "cuda" or "cpu"

        def predict(self, inputs: Input, ctx: Context) -> dict:
            text = inputs.text[::-1]
            return {"text": text.upper() if self.options.upper else text}

A replica that Ray gave a GPU gets device "cuda" only when the model's
`runtime` (torch unless the class says "ctranslate2") sees CUDA.

`predict` runs in a worker thread, so it may block. Long loops call
`ctx.report_progress(done, total)` and `ctx.check_cancelled()` between steps:
a request that timed out or was cancelled then stops at the next step.

Long work can also show and keep what it has done so far:

- `ctx.emit(partial)` sends a JSON-serializable partial output to whoever
  watches: the SSE stream of a streamed predict, a job's events.
- `ctx.checkpoint(state)` saves a small JSON state with a job, durably, before
  it returns. It is fenced by the job's attempt: once the job was cancelled or
  another attempt took it over, it raises Cancelled, so a stale attempt stops
  there. A sync request has nothing to resume: there it does nothing.
- `ctx.resume` is the last checkpointed state when a later attempt of the job
  runs (after a fault), else None: start from there, not from zero.

A batched model (`predict_batch`) gets no Context: no progress, partials or
checkpoints.
"""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict


class InvalidInput(Exception):
    """Raised by a model for input it cannot use (422 for the client)."""


class Cancelled(Exception):
    """Raised by `Context.check_cancelled` once the request is cancelled."""


class Context:
    """Per-request handle a model uses to report progress and partial outputs,
    to checkpoint, and to see cancellation. The callables are the server's:
    a Context built with none (a test, a script) accepts every call and keeps nothing."""

    def __init__(
        self,
        on_progress: Optional[Callable[[dict], None]] = None,
        on_partial: Optional[Callable[[Any], None]] = None,
        on_checkpoint: Optional[Callable[[Any, Optional[float]], bool]] = None,
        resume: Any = None,
    ):
        self._cancelled = threading.Event()
        self._on_progress = on_progress
        self._on_partial = on_partial
        self._on_checkpoint = on_checkpoint
        self._done: Optional[float] = None  # the last progress reported, kept with a checkpoint
        self.resume = resume

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled()

    def report_progress(self, done: float, total: Optional[float] = None, message: str = "") -> None:
        self._done = done
        if self._on_progress is not None:
            self._on_progress({"done": done, "total": total, "message": message})

    def emit(self, partial: Any) -> None:
        """Send a partial output (JSON-serializable) to whoever watches."""
        if self._on_partial is not None:
            self._on_partial(partial)

    def checkpoint(self, state: Any) -> None:
        """Save `state` (small, JSON-serializable) with the job; a later attempt
        gets it as `ctx.resume`. Raises Cancelled when this attempt is no longer
        the job's (cancelled, or its lease passed to another attempt)."""
        if self._on_checkpoint is not None and not self._on_checkpoint(state, self._done):
            self.cancel()
            raise Cancelled()


class Model:
    """Base class of a served model. Subclasses set `Input` (and `Options`,
    when the model takes settings) and implement `load` and `predict` (or
    `predict_batch` for dynamic batching)."""

    # Pydantic model of a JSON request body; the gateway validates against it.
    Input: ClassVar[type[BaseModel]]
    # Name of the Input field that a raw (non-JSON) body fills, e.g. audio
    # bytes; None: the model accepts only JSON.
    raw_body_field: ClassVar[Optional[str]] = None
    # The library that runs the model on a GPU: "torch" or "ctranslate2". A
    # replica Ray gave a GPU loads on "cuda" only if this library sees CUDA.
    runtime: ClassVar[str] = "torch"

    class Options(BaseModel):
        """The model's settings: `options:` under the model in serve_config.yaml,
        checked when the config is loaded, so a misspelt key or a wrong type
        stops `serve run` with the field named. Subclasses declare theirs as
        `class Options(Model.Options)`; this one takes none."""

        model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    def __init__(self, **options: Any):
        # Checked again here, so a model built by hand also gets typed options.
        self.options = self.Options(**options)

    def load(self, device: str) -> None:
        """Load weights onto `device` ("cuda" or "cpu"). Called once per replica."""

    def predict(self, inputs: BaseModel, ctx: Context) -> Any:
        return self.predict_batch([inputs])[0]

    def predict_batch(self, inputs: list[BaseModel]) -> list[Any]:
        """Optional: the whole batch at once, used when batching is configured."""
        raise NotImplementedError(f"{type(self).__name__} implements neither predict nor predict_batch")

    @classmethod
    def check_input(cls, inputs: BaseModel, options: "Model.Options") -> None:
        """Optional: refuse input over the limits set in this model's `options`
        (raise InvalidInput: a 422 before any replica sees the request)."""

    @classmethod
    def parse_raw(cls, body: bytes, params: dict[str, str]) -> BaseModel:
        """Input from a raw body plus query parameters (e.g. ?language=en)."""
        return cls.Input.model_validate({**params, cls.raw_body_field: body})

    @classmethod
    def parse_file(cls, path: Path, params: dict[str, str]) -> BaseModel:
        """Input from a raw body kept in a file (an async job's upload). The file
        lives while predict runs; override to pass the path on instead of the
        bytes (a 2 GB recording need not be read into memory). Default: parse_raw."""
        return cls.parse_raw(path.read_bytes(), params)
