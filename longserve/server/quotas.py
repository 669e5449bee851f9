"""Per-tenant quotas: the token bucket behind `requests_per_s` / `burst`, and
the 429 a tenant gets when over any quota.

A bucket's state lives in the JobStore actor's memory (one place that every
gateway replica asks, so the limit holds across replicas): one actor call per
request of a tenant that has a rate, none for the others. It is not persisted:
a restarted store starts every bucket full.

Headers follow the IETF RateLimit header fields draft
(draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "<quota>";q=<quota
units>;w=<window s>` and `RateLimit: "<quota>";r=<remaining>;t=<s until more>`,
with `Retry-After`.
"""

import math
from dataclasses import dataclass
from typing import Optional

from longserve.server.http.errors import ApiError


@dataclass
class TokenBucket:
    """`rate` tokens a second, up to `burst`; pure (every call is given `now`)."""

    rate: float
    burst: int
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, burst: int, now: float) -> "TokenBucket":
        return cls(rate, burst, float(burst), now)

    def take(self, rate: float, burst: int, now: float) -> tuple[bool, float, int]:
        """Spend one token if there is one: (allowed, seconds until the next token, tokens left).
        A changed rate or burst (a new deploy) applies from now on."""
        self.tokens = min(float(burst), self.tokens + max(now - self.at, 0.0) * self.rate)
        self.rate, self.burst, self.at = rate, burst, now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, 0.0, int(self.tokens)
        return False, (1 - self.tokens) / rate, 0


def burst_of(requests_per_s: float, burst: Optional[int]) -> int:
    return burst if burst is not None else max(1, math.ceil(requests_per_s))


def over_quota(
    tenant: str,
    quota: str,
    config_key: str,
    limit: float,
    message: str,
    retry_after_s: float,
    window_s: float,
    remaining: int = 0,
) -> ApiError:
    """429 naming the quota and the config key that sets it, with Retry-After and the RateLimit fields."""
    retry = max(1, math.ceil(retry_after_s))
    headers = {
        "Retry-After": str(retry),
        "RateLimit-Policy": f'"{quota}";q={limit:g};w={max(1, math.ceil(window_s))}',
        "RateLimit": f'"{quota}";r={remaining};t={retry}',
    }
    return ApiError(
        429,
        "quota_exceeded",
        f"{message}; set by {config_key} in serve_config.yaml. Retry after {retry} s.",
        headers,
        tenant=tenant,
        quota=quota,
        config_key=config_key,
        limit=limit,
    )
