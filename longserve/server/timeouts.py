"""Which timeout is in force for one request, where it was set, and the 504
that explains it when it expires."""

from dataclasses import dataclass
from typing import Optional

from longserve.server.config import AUTO, AppConfig
from longserve.server.errors import InvalidHeader, TimedOut
from longserve.server.seconds import parse_seconds

HEADER = "Request-Timeout"
NO_TIMEOUT_WORDS = {"none", "false", "-1"}


@dataclass(frozen=True)
class TimeoutInForce:
    seconds: Optional[float]  # None: no timeout
    source: str


def parse_header(value: str) -> Optional[float]:
    try:
        return parse_seconds(value, no_limit=NO_TIMEOUT_WORDS)
    except ValueError:
        raise InvalidHeader(
            f"{HEADER}: {value!r} is not a timeout; send a positive number of seconds, or 'none' for no timeout",
            header=HEADER,
        ) from None


def configured(config: AppConfig, model: str, auto: dict[str, tuple[float, str]]) -> TimeoutInForce:
    """The timeout serve_config.yaml sets for `model`; for `auto`, its current value and why."""
    settings = config.models[model]
    if settings.timeout != AUTO:
        return TimeoutInForce(settings.timeout, settings.timeout_source)
    fallback = settings.auto_timeout.fallback
    seconds, why = auto.get(model, (fallback, f"auto: fallback {fallback:g} s until run times are observed"))
    return TimeoutInForce(seconds, f"{settings.timeout_source} = {why}")


def timeout_in_force(
    config: AppConfig, model: str, header: Optional[str], auto: dict[str, tuple[float, str]]
) -> TimeoutInForce:
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
    if note:
        hint = f"{note} {hint}"
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
