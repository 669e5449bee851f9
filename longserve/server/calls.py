"""One call of a model replica, read in one place for sync predict and for jobs.

A plain sync predict needs no stream: `call_model_once` (below). For the rest,
`ModelServer.run` yields a stream of (Event, value): STARTED when a replica
begins the request, PROGRESS updates when asked for, then RESULT or INVALID.
`call_model` reads it, tells the caller when the request started and how it
progresses, returns the result, and turns every way it can fail, Ray's
errors included, into a domain error (server/errors.py). Whatever ends the
call early (the caller's timeout, a cancelled task) cancels the replica's
work: it stops at the model's next `ctx.check_cancelled()`.

Timeouts stay with the callers, around the call: the gateway's deadline runs
from the request's arrival, a job's timeout from STARTED.
"""

import contextlib
import enum
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any, Optional

from pydantic import BaseModel
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from longserve.server.config import ModelConfig
from longserve.server.errors import (
    InputRejected,
    InputUnavailable,
    ModelFailed,
    Overloaded,
    ReplicaDied,
    ServeError,
    first_line,
)

RETRY_AFTER_S = 1  # when Ray gives no better figure


class Event(enum.StrEnum):
    """What a model replica's `run` stream yields, each with a value."""

    STARTED = "started"  # the replica began the request; value: its device
    PROGRESS = "progress"  # value: {"done", "total", "message"} from ctx.report_progress
    PARTIAL = "partial"  # value: what the model passed to ctx.emit
    RESULT = "result"  # value: what predict returned
    INVALID = "invalid"  # value: the message of the model's InvalidInput
    UNAVAILABLE = "unavailable"  # value: InputUnavailable's body and `retryable` (jobs only)


async def call_model(
    handle: DeploymentHandle,
    name: str,
    config: ModelConfig,
    inputs: BaseModel,
    on_started: Optional[Callable[[], None]] = None,
    on_progress: Optional[Callable[[dict], None]] = None,
    on_partial: Optional[Callable[[Any], Any]] = None,
) -> Any:
    """The model's result for `inputs`, from `handle` (a streaming handle of
    the model `name`). Progress and partial outputs are streamed only when
    `on_progress` / `on_partial` is given; `on_partial` may be a coroutine
    function (awaited before the next event: a slow reader slows the stream).

    Raises InputRejected, InputUnavailable, Overloaded, ReplicaDied, ModelFailed, or ServeError
    when the stream ends without a result."""
    # A stream: handle.options(stream=True).
    response: Any = handle.run.remote(inputs, progress=on_progress is not None, partials=on_partial is not None)
    with model_errors(name, config, response):
        async for kind, value in response:
            if kind == Event.STARTED and on_started is not None:
                on_started()
            elif kind == Event.PROGRESS and on_progress is not None:
                on_progress(value)
            elif kind == Event.PARTIAL and on_partial is not None:
                sent = on_partial(value)
                if inspect.isawaitable(sent):
                    await sent
            elif kind == Event.RESULT:
                return value
            elif kind == Event.INVALID:
                raise InputRejected(value, model=name)
            elif kind == Event.UNAVAILABLE:
                fields = {k: v for k, v in value.items() if k not in ("type", "message", "retryable")}
                raise InputUnavailable(value["message"], retryable=value["retryable"], **fields)
        raise ServeError(f"model '{name}' ended without a result", model=name)


async def call_model_once(
    handle: DeploymentHandle,
    name: str,
    config: ModelConfig,
    inputs: BaseModel,
    on_started: Optional[Callable[[], None]] = None,
) -> Any:
    """`call_model` for a plain predict, without a stream: `handle` is a unary
    handle of `ModelServer.call`. Started is when a replica accepts the request:
    Ray's router hands a request over only once a replica has taken it into one
    of its `max_ongoing_requests` slots (and the replica's answer to that tells
    it so), where `run` begins at once; so a timeout before then is `queued`,
    after it `running`, as with the STARTED event, with one message less each way."""
    response: Any = handle.call.remote(inputs)
    with model_errors(name, config, response):
        # What `await response` does, in its two steps: assigned to a replica, then its result.
        replica = await response._fetch_future_result_async()
        if on_started is not None:
            on_started()
        kind, value = await replica.get_async()
        if kind == Event.INVALID:
            raise InputRejected(value, model=name)
        return value


@contextlib.contextmanager
def model_errors(name: str, config: ModelConfig, response: Any) -> Iterator[None]:
    """Around a call of the model `name`: Ray's errors raised as longserve's, and the
    replica's work cancelled unless the call ended (a result, the model's answer about
    its input, or its error): timed out, cancelled, or the replica gone."""
    ended = False
    try:
        yield
        ended = True
    except (InputRejected, InputUnavailable):
        ended = True
        raise
    except BackPressureError as exc:
        ended = True
        raise overloaded(name, config, exc) from None
    except RayTaskError as exc:
        ended = True
        cause = exc.as_instanceof_cause()
        if isinstance(cause, BackPressureError):
            raise overloaded(name, config, cause) from None
        raise ModelFailed(name, first_line(exc)) from exc  # the cause keeps the model's traceback, for logs
    except RayActorError as exc:
        raise ReplicaDied(name, type(exc).__name__, first_line(exc)) from None
    finally:
        if not ended:
            response.cancel()


def overloaded(name: str, config: ModelConfig, exc: BackPressureError) -> Overloaded:
    retry_after = math.ceil(exc.retry_after_s) if exc.retry_after_s else RETRY_AFTER_S
    return Overloaded(
        f"model '{name}' is at capacity: {config.max_ongoing_requests} running per replica and "
        f"{config.max_queued_requests} queued (max_queued_requests in serve_config.yaml). "
        f"Retry after {retry_after} s, or submit the work as an async job.",
        retry_after=retry_after,
        model=name,
        retry_after_s=retry_after,
    )
