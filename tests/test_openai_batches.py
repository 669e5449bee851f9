"""OpenAI files and batches over real HTTP with the official `openai`
package: each line a durable longserve job, answers keyed by custom_id."""

import base64
import io
import json
import time

import numpy as np
import openai
import pytest

from longserve.server.jobs.store import store_name
from tests.test_job_faults import kill_actor_named

ENDED = ("completed", "cancelled", "failed", "expired")


@pytest.fixture(scope="module")
def oai(serve_app):
    with openai.OpenAI(base_url=serve_app.url + "/openai/v1", api_key="unused", max_retries=0) as client:
        yield client


def jsonl(lines: list[dict]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(line).encode() + b"\n" for line in lines))


def line(custom_id: str, text: str, model: str = "text-embedding-3-small", **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": model, "input": text, **body},
    }


def upload(oai, lines: list[dict]) -> str:
    return oai.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch").id


def wait_ended(oai, batch_id: str, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # polls the batch until it ends; no fixed wait
        batch = oai.batches.retrieve(batch_id)
        if batch.status in ENDED:
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout_s} s")


def by_custom_id(oai, file_id: str) -> dict:
    lines = [json.loads(text) for text in oai.files.content(file_id).text.splitlines()]
    assert len({entry["custom_id"] for entry in lines}) == len(lines)
    return {entry["custom_id"]: entry for entry in lines}


def test_a_batch_of_50_embeddings_completes_keyed_by_custom_id(oai, client):
    texts = {f"req-{i:02d}": f"Sentence number {i} about {['cats', 'ships', 'rain'][i % 3]}." for i in range(50)}
    # Ids out of order, both encodings: the answers must follow the ids, not the positions.
    lines = [
        line(cid, text, encoding_format="base64" if i % 2 else "float")
        for i, (cid, text) in enumerate(reversed(texts.items()))
    ]
    file_id = upload(oai, lines)
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", metadata={"run": "test"}
    )
    assert batch.status in ("in_progress", "finalizing", "completed") and batch.request_counts.total == 50
    batch = wait_ended(oai, batch.id)
    assert batch.status == "completed" and batch.metadata == {"run": "test"}
    assert (batch.request_counts.completed, batch.request_counts.failed) == (50, 0)
    assert batch.error_file_id is None
    answers = by_custom_id(oai, batch.output_file_id)
    assert answers.keys() == texts.keys()
    native = client.post("/v1/models/embedder/predict", json={"texts": list(texts.values())}).json()["embeddings"]
    for (cid, _), expected in zip(texts.items(), native, strict=True):
        response = answers[cid]["response"]
        assert response["status_code"] == 200 and answers[cid]["error"] is None
        (item,) = response["body"]["data"]
        vector = item["embedding"]
        if isinstance(vector, str):
            vector = np.frombuffer(base64.b64decode(vector), dtype="<f4")
        np.testing.assert_allclose(vector, expected, atol=1e-6)
        assert response["body"]["usage"]["prompt_tokens"] > 0
    assert batch.id in {b.id for b in oai.batches.list()}


def test_a_batch_survives_a_job_store_restart(oai, serve_app):
    lines = [line(f"r{i}", "0.5", model="batch_sleeper") for i in range(4)]
    batch = oai.batches.create(input_file_id=upload(oai, lines), endpoint="/v1/embeddings", completion_window="24h")
    kill_actor_named(store_name(serve_app.config.jobs), restart=True)  # Ray restarts it; it reloads its backend
    batch = wait_ended(oai, batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 4
    assert by_custom_id(oai, batch.output_file_id).keys() == {f"r{i}" for i in range(4)}


def test_a_cancelled_batch_stops_its_jobs_and_reports_them(oai):
    lines = [line(f"c{i}", "60", model="batch_sleeper") for i in range(3)]
    batch = oai.batches.create(input_file_id=upload(oai, lines), endpoint="/v1/embeddings", completion_window="24h")
    assert oai.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    batch = wait_ended(oai, batch.id, timeout_s=30)  # 60 s jobs: ended only because they were cancelled
    assert batch.status == "cancelled"
    assert batch.request_counts.total == 3 and batch.request_counts.failed == 3
    errors = by_custom_id(oai, batch.error_file_id)
    assert errors.keys() == {"c0", "c1", "c2"}
    for entry in errors.values():
        assert entry["response"] is None and entry["error"]["code"] == "batch_cancelled"


def test_a_batch_past_its_completion_window_expires_its_unfinished_lines(oai):
    # The quick line finishes; the 60 s ones cannot within 3 s and are reported expired.
    lines = [line("quick", "0.1", model="batch_sleeper")] + [
        line(f"slow{i}", "60", model="batch_sleeper") for i in range(2)
    ]
    batch = oai.batches.create(input_file_id=upload(oai, lines), endpoint="/v1/embeddings", completion_window="3s")
    assert batch.expires_at == batch.created_at + 3
    batch = wait_ended(oai, batch.id, timeout_s=30)  # 60 s jobs: ended only because the window passed
    assert batch.status == "expired" and batch.expired_at is not None and batch.completed_at is None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)
    assert by_custom_id(oai, batch.output_file_id).keys() == {"quick"}
    errors = by_custom_id(oai, batch.error_file_id)
    assert errors.keys() == {"slow0", "slow1"}
    assert {entry["error"]["code"] for entry in errors.values()} == {"batch_expired"}


@pytest.mark.parametrize("window", ["25h", "0s", "1d", "24"])
def test_a_completion_window_over_a_day_or_malformed_is_refused(oai, window):
    file_id = upload(oai, [line("w", "hello")])
    with pytest.raises(openai.BadRequestError) as refused:
        oai.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window=window)
    assert refused.value.body["param"] == "completion_window"


def test_files_upload_list_read_delete(oai):
    lines = [line("only", "hello")]
    file_id = upload(oai, lines)
    assert oai.files.retrieve(file_id).purpose == "batch"
    assert file_id in {f.id for f in oai.files.list(limit=2)}  # the SDK follows the pages
    assert [json.loads(t) for t in oai.files.content(file_id).text.splitlines()] == lines
    assert oai.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(file_id)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([{"custom_id": "a", "method": "POST", "url": "/v1/embeddings"}], "line 1: body"),
        ([line("a", "x"), line("a", "y")], "line 2: custom_id 'a' is used twice"),
        ([line("a", "x"), {**line("b", "y"), "url": "/v1/chat/completions"}], "line 2: url"),
    ],
)
def test_a_bad_input_file_is_refused_by_line(oai, lines, problem):
    with pytest.raises(openai.BadRequestError) as caught:
        upload(oai, lines)
    error = caught.value.response.json()["error"]
    assert problem in error["message"] and error["param"] == "input_file_id"


def test_a_batch_naming_an_unknown_model_or_file_runs_nothing(oai):
    file_id = upload(oai, [line("a", "x", model="no-such-model")])
    with pytest.raises(openai.NotFoundError) as caught:
        oai.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    assert caught.value.response.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        oai.batches.create(input_file_id="file-doesnotexist", endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
