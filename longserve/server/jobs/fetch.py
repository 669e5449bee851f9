"""Job inputs by URL (`POST .../jobs?input_url=`): checked at submit, fetched
by the model replica when the job runs.

The callbacks' SSRF rules apply (jobs/callbacks.py): loopback, private and
link-local addresses are refused unless `inputs.allow` permits them, the
address checked is the one connected to (a name re-pointed after the check is
never reached), and a redirect is followed only after its target passes the
same check. An http(s) input is streamed into the blob store (`inputs/<job
id>`, up to `jobs.max_input_mb`) and then read like an upload; an s3:// URL in
the blob store's own bucket is read in place. Connection errors and
408/425/429/5xx answers are tried again (`inputs.fetch_attempts`); a fetch
that fails for good raises InputUnavailable with the origin's status and the
URL without its query string (which may hold a token).
"""

import asyncio
from typing import Optional

import httpx

from longserve.server.blobs import Blobs, BlobsUnavailable, BlobTooLarge, Written
from longserve.server.config import BlobsConfig, InputsConfig
from longserve.server.errors import InputUnavailable, InvalidInputUrl
from longserve.server.jobs.callbacks import RETRY_STATUSES, check_public_url

MAX_REDIRECTS = 5
RETRY_BACKOFF_S = 1.0  # doubles per try


def without_query(url: str) -> str:
    try:
        return str(httpx.URL(url).copy_with(query=None, fragment=None))
    except httpx.InvalidURL:
        return url.split("?")[0][:200]


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


async def check_input_url(url: str, inputs: InputsConfig, blobs: BlobsConfig) -> None:
    """At submit: InvalidInputUrl (422) unless the job could fetch `url`."""
    if url.lower().startswith("s3://"):
        bucket, key = s3_location(url)
        if blobs.backend != "s3" or bucket != blobs.bucket or not key:
            raise InvalidInputUrl(
                f"input_url refused: s3:// inputs are read from the blob store's bucket "
                f"({blobs.bucket or 'none: blobs.backend is ' + blobs.backend}), as s3://<bucket>/<key>",
                input_url=without_query(url),
            )
        return
    await check_public_url(url, inputs.allow, "input_url", "inputs.allow", InvalidInputUrl)


class _Transient(Exception):
    def __init__(self, reason: str, status: Optional[int] = None):
        super().__init__(reason)
        self.reason, self.status = reason, status


class Fetcher:
    def __init__(self, inputs: InputsConfig, limit: int):
        self.inputs, self.limit = inputs, limit

    async def fetch(self, url: str, blobs: Blobs, key: str) -> tuple[Written, str]:
        """Stream `url` into `key`: what was written and the origin's media type."""
        tries = self.inputs.fetch_attempts
        for attempt in range(1, tries + 1):
            try:
                return await self._fetch_once(url, blobs, key)
            except _Transient as exc:
                if attempt == tries:
                    raise self._failed(url, f"{exc.reason} (tried {tries} times)", exc.status) from None
                await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _fetch_once(self, url: str, blobs: Blobs, key: str) -> tuple[Written, str]:
        # Redirects are followed by hand, each target checked; no pooled connections
        # (they are pooled by address, and one checked for one name must not serve another).
        async with httpx.AsyncClient(
            timeout=self.inputs.timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    address = await check_public_url(
                        current, self.inputs.allow, "input_url", "inputs.allow", InvalidInputUrl
                    )
                except InvalidInputUrl as exc:
                    raise self._failed(url, exc.message) from None
                named = httpx.URL(current)
                extensions = {"sni_hostname": named.host} if named.scheme == "https" else {}
                request = client.build_request(
                    "GET",
                    named.copy_with(host=address),
                    extensions=extensions,
                    headers={"host": named.netloc.decode("ascii")},
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise _Transient(f"{type(exc).__name__}: {exc}"[:300]) from None
                try:
                    if response.is_redirect and "location" in response.headers:
                        current = str(named.join(response.headers["location"]))
                        continue
                    return await self._store(url, response, blobs, key)
                finally:
                    await response.aclose()
            raise self._failed(url, f"more than {MAX_REDIRECTS} redirects")

    async def _store(self, url: str, response: httpx.Response, blobs: Blobs, key: str) -> tuple[Written, str]:
        status = response.status_code
        if status in RETRY_STATUSES or status >= 500:
            raise _Transient(f"the origin answered {status}", status)
        if status != 200:
            raise self._failed(url, f"the origin answered {status}", status)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise self._too_large(url, int(declared))
        try:
            written = await blobs.write(key, response.aiter_bytes(), self.limit)
        except BlobTooLarge as exc:
            raise self._too_large(url, exc.size) from None
        except BlobsUnavailable as exc:
            raise InputUnavailable(f"the blob store is unavailable: {exc}", retryable=True) from None
        except httpx.HTTPError as exc:  # the origin broke off mid-body
            raise _Transient(f"{type(exc).__name__} while reading the body: {exc}"[:300]) from None
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        return written, media_type

    def _too_large(self, url: str, size: int) -> InputUnavailable:
        return self._failed(
            url, f"the input is {size} bytes (or more), over the limit of {self.limit} bytes (jobs.max_input_mb)"
        )

    @staticmethod
    def _failed(url: str, reason: str, status: Optional[int] = None) -> InputUnavailable:
        plain = without_query(url)
        return InputUnavailable(f"could not fetch the input from {plain}: {reason}", url=plain, status=status)
