"""API keys and scopes.

Keys come from an environment variable (see AuthConfig), one entry per key:

    <key>[:<scope>,<scope>...][@<tenant>]

`<key>` gets the scopes predict and jobs; `<key>:admin` or `<key>:predict,jobs`
names them. `@<tenant>` puts the key in a tenant (several keys may share one:
rotation); a key naming none is a tenant of its own, `key_<8 hex of its sha256>`
(what logs show of the key, never the key). With no keys configured the API is
open and everything belongs to the one tenant `anonymous`.

    predict  POST /v1/models/{model}/predict
    jobs     submit jobs; read, cancel, retry and list the tenant's own jobs
    admin    everything, every tenant's jobs, and models' config

A job belongs to the tenant that submitted it. With keys configured, another
tenant's job answers exactly as an unknown id does (404), so ids cannot be probed.
"""

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass
from typing import Literal, Optional

from fastapi import Request

from longserve.server.config import AuthConfig
from longserve.server.http.errors import ApiError

logger = logging.getLogger("ray.serve")

Scope = Literal["predict", "jobs", "admin"]
SCOPES = ("predict", "jobs", "admin")
DEFAULT_SCOPES = frozenset({"predict", "jobs"})
ANONYMOUS = "anonymous"  # the one tenant when no keys are configured
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SYNTAX = f"<key>[:{','.join(SCOPES)}][@<tenant>]"


@dataclass(frozen=True)
class Caller:
    """Who is calling: their tenant, their key's id (for logs) and whether they are an admin."""

    tenant: str
    key_id: Optional[str] = None
    admin: bool = False

    def owns(self, tenant: str) -> bool:
        return self.admin or tenant == self.tenant


OPEN = Caller(ANONYMOUS, admin=True)  # no keys: one tenant, who may do everything


@dataclass(frozen=True)
class KeyEntry:
    scopes: frozenset[str]
    tenant: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    """What logs may show of a key: a short hash, never the key."""
    return "key_" + _digest(key).hex()[:8]


def parse_keys(text: str) -> dict[bytes, KeyEntry]:
    """sha256(key) -> scopes and tenant. Raises ValueError naming the bad entry's position, not its key."""
    keys: dict[bytes, KeyEntry] = {}
    for position, entry in enumerate(text.split(), start=1):
        rest, at, tenant = entry.partition("@")
        key, _, scopes_text = rest.partition(":")
        scopes = frozenset(s for s in scopes_text.split(",") if s) if scopes_text else DEFAULT_SCOPES
        unknown = scopes - set(SCOPES)
        problem = (
            f"unknown scopes {sorted(unknown)}"
            if unknown
            else "no scopes"
            if not scopes
            else "the key is shorter than 16 characters"
            if len(key) < 16
            else f"tenant {tenant!r} is not a name of 1-64 letters, digits, '_', '.', '-'"
            if at and not TENANT_NAME.fullmatch(tenant)
            else f"tenant {tenant!r} is reserved"
            if at and (tenant == ANONYMOUS or tenant.startswith("key_"))
            else ""
        )
        if problem:
            raise ValueError(f"API key entry {position}: {problem} (expected {SYNTAX})")
        keys[_digest(key)] = KeyEntry(scopes, tenant if at else key_id(key))
    return keys


class Auth:
    def __init__(self, config: AuthConfig):
        self.keys = parse_keys(os.environ.get(config.api_keys_env, ""))
        if config.required and not self.keys:
            raise ValueError(f"auth.required is true but ${config.api_keys_env} holds no API keys")
        logger.info(
            "API keys: %s",
            f"{len(self.keys)} from ${config.api_keys_env}" if self.keys else "none configured; the API is open",
        )

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @property
    def tenants(self) -> frozenset[str]:
        """The tenants the keys name (and derive), or just `anonymous` when the API is open."""
        return frozenset(e.tenant for e in self.keys.values()) if self.keys else frozenset({ANONYMOUS})

    def check(self, request: Request, scope: Scope) -> Caller:
        """Raise 401/403 unless the request's bearer key has `scope` (or admin).
        Returns the caller: OPEN when auth is off."""
        if not self.keys:
            return OPEN
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "unauthorized",
                "this API needs a key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # Look the key up by its hash, then compare the hashes in constant time:
        # no timing difference depends on how much of a guessed key is right.
        digest = _digest(key)
        entry = next((e for d, e in self.keys.items() if hmac.compare_digest(d, digest)), None)
        if entry is None:
            raise ApiError(
                401,
                "unauthorized",
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        admin = "admin" in entry.scopes
        if scope not in entry.scopes and not admin:
            raise ApiError(403, "forbidden", f"this API key lacks the '{scope}' scope", scope=scope, key_id=key_id(key))
        return Caller(entry.tenant, key_id(key), admin)
