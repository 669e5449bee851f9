"""API keys and scopes.

Keys come from an environment variable (see AuthConfig), one entry per key:
`<key>` gets the scopes predict and jobs; `<key>:admin` or
`<key>:predict,jobs` names them. With no keys configured the API is open.

    predict  POST /v1/models/{model}/predict
    jobs     POST /v1/models/{model}/jobs, cancel and retry a job
    admin    everything, plus listing jobs and reading models' config

Reading a job (`GET /v1/jobs/{id}` and its result) needs no key: the job id
(144 random bits) is the capability, so it can be handed to whoever should see it.
"""

import hashlib
import hmac
import logging
import os
from typing import Literal, Optional

from fastapi import Request

from longserve.server.config import AuthConfig
from longserve.server.http.errors import ApiError

logger = logging.getLogger("ray.serve")

Scope = Literal["predict", "jobs", "admin"]
SCOPES = ("predict", "jobs", "admin")
DEFAULT_SCOPES = frozenset({"predict", "jobs"})


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    """What logs may show of a key: a short hash, never the key."""
    return "key_" + _digest(key).hex()[:8]


def parse_keys(text: str) -> dict[bytes, frozenset[str]]:
    """sha256(key) -> scopes. Raises ValueError naming the bad entry's position, not its key."""
    keys: dict[bytes, frozenset[str]] = {}
    for position, entry in enumerate(text.split(), start=1):
        key, _, scopes_text = entry.partition(":")
        scopes = frozenset(s for s in scopes_text.split(",") if s) if scopes_text else DEFAULT_SCOPES
        unknown = scopes - set(SCOPES)
        if len(key) < 16 or unknown or not scopes:
            problem = f"unknown scopes {sorted(unknown)}" if unknown else "no scopes" if not scopes else \
                "the key is shorter than 16 characters"
            raise ValueError(f"API key entry {position}: {problem} (expected <key> or <key>:{','.join(SCOPES)})")
        keys[_digest(key)] = scopes
    return keys


class Auth:
    def __init__(self, config: AuthConfig):
        self.keys = parse_keys(os.environ.get(config.api_keys_env, ""))
        if config.required and not self.keys:
            raise ValueError(f"auth.required is true but ${config.api_keys_env} holds no API keys")
        logger.info("API keys: %s", f"{len(self.keys)} from ${config.api_keys_env}" if self.keys else
                    "none configured; the API is open")

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, request: Request, scope: Scope) -> Optional[str]:
        """Raise 401/403 unless the request's bearer key has `scope` (or admin).
        Returns the key's id for logs, or None when auth is off."""
        if not self.keys:
            return None
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "this API needs a key: send 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
        # Look the key up by its hash, then compare the hashes in constant time:
        # no timing difference depends on how much of a guessed key is right.
        digest = _digest(key)
        scopes = next((s for d, s in self.keys.items() if hmac.compare_digest(d, digest)), None)
        if scopes is None:
            raise ApiError(401, "unauthorized", "the API key is not valid",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if scope not in scopes and "admin" not in scopes:
            raise ApiError(403, "forbidden", f"this API key lacks the '{scope}' scope", scope=scope,
                           key_id=key_id(key))
        return key_id(key)
