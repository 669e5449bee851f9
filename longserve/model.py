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
    """Per-request handle a model uses to report progress and see cancellation."""

    def __init__(self, on_progress: Optional[Callable[[dict], None]] = None):
        self._cancelled = threading.Event()
        self._on_progress = on_progress

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled()

    def report_progress(self, done: float, total: Optional[float] = None, message: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress({"done": done, "total": total, "message": message})


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
