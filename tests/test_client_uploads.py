"""The SDK and CLI at real size: a file is streamed as the body (a job input
larger than the server's sync body limit goes through), and a URL is sent as
the job's input_url (fetched by the server from the tests' loopback origin)."""

import asyncio
import hashlib
import json

import httpx
import pytest

from longserve.client import AsyncClient, Client
from longserve.client.core import Body, Send, make_body
from tests.conftest import DATA
from tests.test_cli import longserve
from tests.test_job_blobs import MIB, generated, s3_app  # noqa: F401 (s3_app: the fixture)
from tests.test_job_inputs_by_url import Origin, origin  # noqa: F401 (origin: the fixture)


def test_a_file_becomes_a_streamed_body_with_its_length_declared(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(b"RIFF" + b"\0" * 100)
    body = make_body(content=path)
    assert body == Body(content_type="audio/x-wav", file=path)  # the path, not its bytes
    with httpx.Client() as http:
        request = Send("POST", "http://x/jobs", file=path).build(http)
    assert request.headers["Content-Length"] == "104" and not hasattr(request.stream, "__len__")
    assert make_body(content="https://example.com/a.mp3") == Body(input_url="https://example.com/a.mp3")
    assert make_body(content="s3://bucket/a.mp3", content_type="audio/mpeg").input_url == "s3://bucket/a.mp3"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sdk_submits_a_file_over_the_sync_body_limit(serve_app, tmp_path, kind):
    size = 10 * MIB  # over max_body_mb (8): only a job takes it
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        for chunk in generated(size):
            f.write(chunk)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    if kind == "sync":
        with Client(serve_app.url) as client:
            job = client.wait(client.submit("digest", content=path))
    else:

        async def run():
            async with AsyncClient(serve_app.url) as client:
                return await client.wait(await client.submit("digest", content=str(path)))

        job = asyncio.run(run())
    assert job.status == "succeeded", job
    assert job.result["size"] == size and job.result["sha256"] == expected


def test_sdk_sends_a_url_as_input_url(serve_app, origin):  # noqa: F811
    Origin.routes["/from-sdk.bin"] = (b"from the sdk", "application/octet-stream")
    with Client(serve_app.url) as client:
        job = client.wait(client.submit("digest", content=f"{origin}/from-sdk.bin"))
        assert job.status == "succeeded" and job.result["sha256"] == hashlib.sha256(b"from the sdk").hexdigest()
        with pytest.raises(ValueError, match="fetched by a job"):
            client.predict("digest", content=f"{origin}/from-sdk.bin")


def test_cli_transcribes_a_url_like_the_file(serve_app, origin, speech):  # noqa: F811
    Origin.routes["/speech.ogg"] = (speech, "audio/ogg")
    with Client(serve_app.url) as client:
        native = client.predict("transcriber", content=DATA / "speech.ogg")
    run = longserve(serve_app, "transcribe", f"{origin}/speech.ogg", "--format", "json", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["text"] == native["text"]
    sync = longserve(serve_app, "transcribe", f"{origin}/speech.ogg", "--sync")
    assert sync.returncode != 0 and "fetched by a job" in sync.stderr


def test_sdk_downloads_a_large_result_from_its_presigned_url(s3_app):  # noqa: F811
    client, _, _ = s3_app
    with Client(str(client.base_url).rstrip("/"), api_key="not-for-the-bucket") as sdk:
        job = sdk.wait(sdk.submit("digest", content=b"abc", params={"pad": 300_000}))
        assert job.status == "succeeded" and job.result is None and job.result_size > 300_000
        result = sdk.result(job)  # 302 to the bucket, followed without the API key
    assert result["pad"] == "x" * 300_000 and result["sha256"] == hashlib.sha256(b"abc").hexdigest()
