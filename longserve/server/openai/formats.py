"""OpenAI's answer shapes, built from longserve models' results (pure functions)."""

import base64
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
}


def embedding_list(result: dict, model: str, encoding_format: str) -> dict:
    """The embedder's {"embeddings", "tokens"} as OpenAI's CreateEmbeddingResponse."""
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(vector, encoding_format)}
        for i, vector in enumerate(result["embeddings"])
    ]
    tokens = sum(result.get("tokens", []))
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def encode_vector(vector: list[float], encoding_format: str) -> Any:
    if encoding_format == "float":
        return vector
    # What OpenAI's SDKs decode: the float32 values, little-endian, base64. The model computes float32,
    # so nothing is lost.
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def transcription(result: dict, response_format: str, task: str, granularities: set[str]) -> Any:
    """The transcriber's result in one of OpenAI's response formats: a dict
    (JSON) or text (text, srt, vtt)."""
    if response_format == "text":
        return result["text"] + "\n"
    if response_format == "srt":
        return srt(result["segments"])
    if response_format == "vtt":
        return vtt(result["segments"])
    usage = {"type": "duration", "seconds": result["duration"]}
    if response_format == "json":
        return {"text": result["text"], "usage": usage}
    verbose: dict[str, Any] = {
        "task": task,
        "language": result["language"],
        "duration": result["duration"],
        "text": result["text"],
    }
    if "segment" in granularities or not granularities:
        verbose["segments"] = [{k: v for k, v in segment.items() if k != "words"} for segment in result["segments"]]
    if "word" in granularities:
        verbose["words"] = [
            {k: word[k] for k in ("word", "start", "end")}
            for segment in result["segments"]
            for word in segment.get("words", [])
        ]
    verbose["usage"] = usage
    return verbose


def timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def srt(segments: list[dict]) -> str:
    cues = [
        f"{i}\n{timestamp(s['start'], ',')} --> {timestamp(s['end'], ',')}\n{s['text']}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues) + ("\n" if cues else "")


def vtt(segments: list[dict]) -> str:
    cues = [f"{timestamp(s['start'], '.')} --> {timestamp(s['end'], '.')}\n{s['text']}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def segment_delta(segment: Any, first: bool) -> str:
    """The text a streamed segment adds to the transcript: the transcriber's text is
    its segments' texts joined with spaces, so each after the first starts with one."""
    text = segment.get("text", "") if isinstance(segment, dict) else str(segment)
    return text if first else " " + text


def text_delta(delta: str) -> dict:
    return {"type": "transcript.text.delta", "delta": delta}


def text_end(text: str, sent: str) -> Iterator[dict]:
    """The stream's last events once the transcript is `text`, `sent` having been
    streamed already: what the deltas lack as one more (all of it, from a model that
    emits no segments), then done, whose text is the transcript's either way."""
    if text != sent and text.startswith(sent):
        yield text_delta(text[len(sent) :])
    yield {"type": "transcript.text.done", "text": text}
