"""The blob store, on both backends: a directory and a real S3-compatible
server (moto's, on loopback) spoken to over HTTP."""

import asyncio
import hashlib

import httpx
import pytest

from longserve.server.blobs import BlobMissing, Blobs, BlobsConfig, BlobsUnavailable, BlobTooLarge
from tests.s3_server import S3Server

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(params=["file", "s3"])
def blobs(request, tmp_path, s3) -> Blobs:
    if request.param == "file":
        return Blobs(BlobsConfig(backend="file", path=str(tmp_path / "blobs")))
    bucket = s3.bucket(f"blobs-{tmp_path.name.lower().replace('_', '-')[-40:]}")
    return Blobs(
        BlobsConfig(backend="s3", bucket=bucket, endpoint_url=s3.url, region="us-east-1", presign_results=True)
    )


async def chunks(count: int, size: int = MIB):
    for i in range(count):
        yield bytes([i % 251]) * size


def run(coroutine):
    return asyncio.run(coroutine)


def test_streamed_write_reads_back_whole_and_by_range(blobs):
    expected = b"".join(bytes([i % 251]) * MIB for i in range(20))  # 20 MiB: several multipart parts on S3
    written = run(blobs.write("inputs/job_a", chunks(20)))
    assert written.size == len(expected)
    assert written.sha256 == hashlib.sha256(expected).hexdigest()
    assert run(blobs.stat("inputs/job_a")).size == len(expected)
    assert run(blobs.read_all("inputs/job_a")) == expected

    async def ranged(start, end):
        return b"".join([c async for c in blobs.read("inputs/job_a", start, end)])

    assert run(ranged(MIB - 2, MIB + 2)) == expected[MIB - 2 : MIB + 2]
    assert run(ranged(19 * MIB + 5, None)) == expected[19 * MIB + 5 :]


def test_an_upload_over_its_limit_is_refused_and_nothing_is_kept(blobs):
    with pytest.raises(BlobTooLarge) as refused:
        run(blobs.write("inputs/job_big", chunks(12), limit=10 * MIB))
    assert refused.value.limit == 10 * MIB and refused.value.size > 10 * MIB
    with pytest.raises(BlobMissing):
        run(blobs.stat("inputs/job_big"))


def test_delete_is_idempotent_and_a_missing_blob_says_so(blobs):
    run(blobs.put("results/job_b", b'{"text": "hello"}'))
    run(blobs.delete("results/job_b"))
    run(blobs.delete("results/job_b"))
    with pytest.raises(BlobMissing):
        run(blobs.read_all("results/job_b"))
    with pytest.raises(BlobMissing):
        run(blobs.stat("results/job_b"))


def test_local_file_gives_a_path_a_decoder_can_open(blobs):
    run(blobs.put("inputs/job_c", b"RIFF....WAVE"))

    async def read_through_path():
        async with blobs.local_file("inputs/job_c") as path:
            return path.read_bytes()

    assert run(read_through_path()) == b"RIFF....WAVE"


def test_presigned_url_serves_the_blob_over_plain_http(blobs):
    run(blobs.put("results/job_d", b"a large result"))
    url = run(blobs.presigned_url("results/job_d"))
    if blobs.config.backend == "file":
        assert url is None  # a directory cannot sign
        return
    assert "X-Amz-Signature" in url
    assert httpx.get(url).content == b"a large result"


def test_an_unreachable_store_is_unavailable_not_missing(tmp_path):
    # Nothing listens on this port: the S3 client must say "unavailable" (a 503 upstream), not "missing".
    down = Blobs(BlobsConfig(backend="s3", bucket="nowhere", endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    with pytest.raises(BlobsUnavailable):
        run(down.stat("inputs/job_e"))
    with pytest.raises(BlobsUnavailable):
        run(down.write("inputs/job_e", chunks(1)))
