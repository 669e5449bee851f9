"""Which timeout is in force for one request, where it was set, and the 504
that explains it when it expires.

Besides `Request-Timeout`, a client may say how long it will wait itself: the
OpenAI SDKs send their read timeout on every request (Python:
`x-stainless-read-timeout`, TypeScript: `X-Stainless-Timeout`, seconds). Work
past that deadline is wasted, so such a header may only lower the timeout in
force, never raise it (that is `Request-Timeout`'s job, capped by
max_timeout): the request gets the explained 504 CLIENT_MARGIN before the
client would give up, and the client can read why instead of a dropped socket.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from longserve.server.config import AppConfig
from longserve.server.errors import InvalidHeader, TimedOut
from longserve.server.seconds import parse_seconds

HEADER = "Request-Timeout"
NO_TIMEOUT_WORDS = {"none", "false", "-1"}
# The clients' own deadlines, in seconds: OpenAI's Python SDK, then its TypeScript SDK.
CLIENT_HEADERS = ("x-stainless-read-timeout", "x-stainless-timeout")
# Answer this long before the client's deadline: 1 s, or a quarter of a deadline under 4 s. Enough for
# the 504 to travel back through a busy proxy; small beside the minutes a long deadline allows.
CLIENT_MARGIN_S = 1.0
CLIENT_MARGIN_FRACTION = 0.25


@dataclass(frozen=True)
class TimeoutInForce:
    seconds: Optional[float]  # None: no timeout
    source: str
    advice: str = ""  # said first in the 504's hint


def parse_header(value: str, header: str = HEADER) -> Optional[float]:
    try:
        return parse_seconds(value, no_limit=NO_TIMEOUT_WORDS if header == HEADER else ())
    except ValueError:
        forms = ", or 'none' for no timeout" if header == HEADER else ""
        raise InvalidHeader(
            f"{header}: {value!r} is not a timeout; send a positive number of seconds{forms}",
            header=header,
        ) from None


def client_deadline(headers: Mapping[str, str]) -> Optional[tuple[str, str]]:
    """(header, value) of the client's own deadline, when it sent one."""
    for name in CLIENT_HEADERS:
        value = headers.get(name)
        if value is not None:
            return name, value
    return None


def client_margin(seconds: float) -> float:
    return min(CLIENT_MARGIN_S, CLIENT_MARGIN_FRACTION * seconds)


def within_client_deadline(headers: Mapping[str, str], seconds: float) -> float:
    """`seconds` of waiting (a long-poll, `Prefer: wait`), cut to end before the client's own deadline."""
    client = client_deadline(headers)
    if client is None:
        return seconds
    waits = parse_header(client[1], client[0])
    assert waits is not None
    return min(seconds, round(waits - client_margin(waits), 3))


def configured(config: AppConfig, model: str, auto: dict[str, tuple[float, str]]) -> TimeoutInForce:
    """The timeout serve_config.yaml sets for `model`; for `auto`, its current value and why."""
    settings = config.models[model]
    if not isinstance(settings.timeout, str):  # a number, or None for no timeout; else `auto`
        return TimeoutInForce(settings.timeout, settings.timeout_source)
    assert settings.auto_timeout is not None  # AppConfig fills it in for every model
    fallback = settings.auto_timeout.fallback
    seconds, why = auto.get(model, (fallback, f"auto: fallback {fallback:g} s until run times are observed"))
    return TimeoutInForce(seconds, f"{settings.timeout_source} = {why}")


def timeout_in_force(
    config: AppConfig,
    model: str,
    header: Optional[str],
    auto: dict[str, tuple[float, str]],
    client: Optional[tuple[str, str]] = None,
) -> TimeoutInForce:
    """`header`: Request-Timeout's value; `client`: the client's own deadline
    (client_deadline), which only ever lowers the result."""
    timeout = requested(config, model, header, auto)
    if client is None:
        return timeout
    name, value = client
    waits = parse_header(value, name)
    assert waits is not None  # a client header has no "none" form
    seconds = round(waits - client_margin(waits), 3)
    if timeout.seconds is not None and timeout.seconds <= seconds:
        return timeout
    return TimeoutInForce(
        seconds,
        f"{name} header ({value.strip()} s: the client's own deadline, answered {waits - seconds:g} s before it)",
        f"The client gives up after {value.strip()} s, so the server stops first: "
        "raise the client's timeout (OpenAI(timeout=...)) to let the model run longer.",
    )


def requested(
    config: AppConfig, model: str, header: Optional[str], auto: dict[str, tuple[float, str]]
) -> TimeoutInForce:
    """The configured timeout, or what Request-Timeout asks for, capped by max_timeout."""
    if header is None:
        return configured(config, model, auto)
    asked = parse_header(header)
    cap = config.max_timeout
    if cap is not None and (asked is None or asked > cap):
        return TimeoutInForce(cap, f"{HEADER} header ({header.strip()}), capped by max_timeout in serve_config.yaml")
    return TimeoutInForce(asked, f"{HEADER} header")


def timeout_error(
    model: str, timeout: TimeoutInForce, stage: str, max_timeout: Optional[float], note: str = ""
) -> TimedOut:
    """`note`: said first in the hint (e.g. that the model was cold-starting from zero replicas)."""
    where = "waiting in the queue for a replica" if stage == "queued" else "running on a replica"
    cap = f"up to max_timeout={max_timeout:g} s" if max_timeout is not None else "no cap"
    hint = (
        f"To allow more time: raise models.{model}.timeout in serve_config.yaml, "
        f"or send the header '{HEADER}: <seconds>' ({cap}); "
        "to disable the timeout set it to false or -1. "
        f"Work that takes minutes belongs in an async job, which no request timeout bounds: "
        f"POST /v1/models/{model}/jobs, or send 'Prefer: wait=<seconds>' to get a job back instead of a 504."
    )
    hint = " ".join(filter(None, (note, timeout.advice, hint)))
    message = (
        f"Model '{model}' did not answer within {timeout.seconds:g} s "
        f"(timeout set by {timeout.source}). The request was {where} and has been cancelled. {hint}"
    )
    return TimedOut(
        message,
        model=model,
        timeout_s=timeout.seconds,
        timeout_source=timeout.source,
        stage=stage,
        hint=hint,
    )
