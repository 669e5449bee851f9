"""What can go wrong below the HTTP layer, as the client will read it.

Each class fixes the error `type` of the JSON body; an instance carries the
message and any extra fields. Which HTTP status each class answers with is
decided in one table, in server/http/errors.py.
"""

from collections.abc import Iterable
from typing import Any, ClassVar, Optional


class ServeError(Exception):
    """Base of longserve's domain errors; used as is, an internal error."""

    type: ClassVar[str] = "internal"

    def __init__(self, message: str, *, retry_after: Optional[int] = None, **fields: Any):
        super().__init__(message)
        self.message = message
        self.fields = fields
        self.retry_after = retry_after  # seconds after which trying again may succeed

    @property
    def body(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, **self.fields}


class InvalidRequest(ServeError):
    """A body, query or field the API cannot take."""

    type = "invalid_request"

    @classmethod
    def from_errors(cls, errors: Iterable[Any]) -> "InvalidRequest":
        """From pydantic's errors: each `loc: msg`, and the list in `details`."""
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in errors]
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in details)
        return cls(message, details=details)


class UnsupportedMediaType(ServeError):
    type = "unsupported_media_type"


class InvalidHeader(ServeError):
    type = "invalid_header"


class InvalidCallbackUrl(ServeError):
    type = "invalid_callback_url"


class InvalidInputUrl(ServeError):
    type = "invalid_input_url"


class InputRejected(ServeError):
    """The model refused the input (its `check_input` or `predict` raised
    longserve.InvalidInput)."""

    type = "invalid_input"


class InputUnavailable(ServeError):
    """A job's input could not be read: its blob is gone, its URL failed, or the
    blob store is down (`retryable`: the job is queued again, not failed)."""

    type = "input_unavailable"

    def __init__(self, message: str, *, retryable: bool = False, **fields: Any):
        super().__init__(message, **fields)
        self.retryable = retryable


class TimedOut(ServeError):
    """The timeout in force expired; `stage` says whether queued or running."""

    type = "timeout"


class Overloaded(ServeError):
    """The model's queue is full."""

    type = "overloaded"


class ReplicaDied(ServeError):
    """The replica running the call died; `kind` names Ray's error."""

    type = "unavailable"

    def __init__(self, model: str, kind: str, reason: str):
        super().__init__(f"model '{model}' replica died: {reason}", retry_after=1, model=model)
        self.kind = kind


class ModelFailed(ServeError):
    """The model raised an error of its own; `reason` is its last line."""

    type = "model_error"

    def __init__(self, model: str, reason: str):
        super().__init__(f"model '{model}' failed: {reason}", model=model)
        self.reason = reason


def first_line(exc: BaseException) -> str:
    """The line of an exception worth showing a client (a RayTaskError's last)."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
