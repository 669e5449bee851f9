"""Job callbacks (webhooks): where they may go, how they are signed, one delivery.

Signed the Standard Webhooks way (https://www.standardwebhooks.com):

    webhook-id:        msg_<job id>_<attempt>_<event>[_<n>]   (one per event, the same on its retries)
    webhook-timestamp: unix seconds
    webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>

The body is `{"type": "job.completed", "timestamp": ..., "data": <the job as GET /v1/jobs/{id} shows it>}`.
"""

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import random
import socket
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Optional

import httpx

from longserve.server.config import CallbacksConfig
from longserve.server.errors import InvalidCallbackUrl, ServeError

SECRET_PREFIX = "whsec_"
# Besides every 5xx: the 4xx answers that mean "not now" rather than "never".
RETRY_STATUSES = {408, 425, 429}
RESOLVE_TIMEOUT_S = 5.0  # a slow resolver must not hold a submit or a delivery lease
# Cloud metadata endpoints, refused even when their network is allowed.
METADATA_HOSTS = {"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "metadata.google.internal"}


def load_secret(config: CallbacksConfig) -> Optional[bytes]:
    """The signing key from the environment; None when unset (callbacks go unsigned)."""
    text = os.environ.get(config.secret_env, "").strip()
    if not text:
        if config.require_signing:
            raise ValueError(f"callbacks.require_signing is true but ${config.secret_env} is not set")
        return None
    try:
        return base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValueError(
            f"${config.secret_env} must be {SECRET_PREFIX}<base64>, as Standard Webhooks secrets are"
        ) from None


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers_for(secret: Optional[bytes], msg_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "user-agent": "longserve-webhooks",
    }
    if secret is not None:
        headers["webhook-signature"] = sign(secret, msg_id, timestamp, body)
    return headers


def payload(event: str, job_view: dict) -> bytes:
    return json.dumps(
        {"type": f"job.{event}", "timestamp": int(time.time()), "data": job_view}, separators=(",", ":")
    ).encode()


# -- where callbacks may go (SSRF guard) -------------------------------------------


def _allowed(host: str, address: ipaddress._BaseAddress, allow: list[str]) -> bool:
    for entry in allow:
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:  # a hostname entry
            continue
    return False


def _internal(address: "ipaddress.IPv4Address | ipaddress.IPv6Address") -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


async def check_url(url: str, config: CallbacksConfig) -> str:
    """The address to deliver to. InvalidCallbackUrl unless `url` is http(s) and every
    address its host resolves to is public or allowed. Checked at submit and
    again before each delivery, which then connects to this very address
    (`deliver`), so a name re-pointed inside after the check (DNS rebinding)
    is never reached."""
    return await check_public_url(url, config.allow, "callback_url", "callbacks.allow", InvalidCallbackUrl)


async def check_public_url(url: str, allow: list[str], field: str, allow_key: str, error: type[ServeError]) -> str:
    """check_url's rules for any URL the server will fetch or post to (`field` names
    it in the error, `allow_key` the setting that permits internal addresses)."""

    def refuse(reason: str) -> ServeError:
        fields: dict[str, Any] = {field: url[:200]}
        return error(f"{field} refused: {reason}", **fields)

    if len(url) > 2048:
        raise refuse("it is longer than 2048 characters")
    try:  # httpx's parser, the one `deliver` uses: no two readings of one URL
        parts = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise refuse(f"it is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise refuse(f"scheme {parts.scheme or 'none'!r}; only http and https are allowed")
    host = parts.raw_host.decode("ascii")  # IDNA-encoded, as resolvers take it
    if not host:
        raise refuse("it has no host")
    if parts.userinfo:
        raise refuse("credentials in the URL are not allowed; sign with the webhook secret instead")
    if host.lower() in METADATA_HOSTS:
        raise refuse(f"{host} is a cloud metadata address")
    port = parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise refuse("its port is not a number in 1-65535")
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise refuse(f"host {host!r} does not resolve ({exc})") from None
    except TimeoutError:
        raise refuse(f"host {host!r} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if str(address) in METADATA_HOSTS:
            raise refuse(f"{host} resolves to the cloud metadata address {address}")
        if _internal(address) and not _allowed(host, address, allow):
            raise refuse(
                f"{host} resolves to {address}, a loopback, private or link-local address; "
                f"add it to {allow_key} in serve_config.yaml to permit it"
            )
    return str(infos[0][4][0])  # getaddrinfo's first choice, as a plain connect would take


# -- one delivery -------------------------------------------------------------------


def backoff_s(attempt: int, config: CallbacksConfig, retry_after: Optional[float] = None) -> float:
    """Delay before retry number `attempt` (1-based): exponential with full jitter,
    or the receiver's Retry-After when it gave one (capped the same way)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), config.max_backoff_s)
    ceiling = min(config.backoff_s * 2 ** (attempt - 1), config.max_backoff_s)
    return random.uniform(ceiling / 2, ceiling)


def retry_after_s(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


@dataclass
class Outcome:
    """What one attempt gave: delivered, worth retrying, or not."""

    delivered: bool
    retry: bool
    status: Optional[int] = None
    error: Optional[str] = None
    retry_after: Optional[float] = None


def new_client(config: CallbacksConfig) -> httpx.AsyncClient:
    # Redirects are never followed: a public URL could redirect inside. No
    # kept-alive connections: they are pooled by address, and one verified for
    # one name must not carry a request for another name on the same address.
    return httpx.AsyncClient(
        timeout=config.timeout_s,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def deliver(client: httpx.AsyncClient, url: str, address: str, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST once to `address` (what check_url checked), not to whatever the
    name resolves to now; the Host header and TLS (SNI, certificate check)
    still use the URL's name. 2xx: delivered. Network errors, 408/425/429/5xx:
    retry. Other 4xx and redirects (never followed: they could point inside): give up."""
    named = httpx.URL(url)
    extensions = {"sni_hostname": named.host} if named.scheme == "https" else {}
    try:
        response = await client.post(
            named.copy_with(host=address),
            content=body,
            extensions=extensions,
            headers={**headers, "host": named.netloc.decode("ascii")},
        )
    except httpx.HTTPError as exc:
        return Outcome(False, True, error=f"{type(exc).__name__}: {exc}"[:300])
    if 200 <= response.status_code < 300:
        return Outcome(True, False, response.status_code)
    retry = response.status_code in RETRY_STATUSES or response.status_code >= 500
    return Outcome(
        False,
        retry,
        response.status_code,
        f"HTTP {response.status_code}",
        retry_after_s(response.headers.get("retry-after")),
    )
