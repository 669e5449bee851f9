"""Writing a result out: JSON, plain text, or subtitles (SRT, WebVTT) for a
transcript (a result with `segments` of `start`, `end`, `text`)."""

import json
from typing import Any

FORMATS = ("text", "json", "srt", "vtt")


def _timestamp(seconds: float, decimal: str) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _segments(result: Any, fmt: str) -> list[dict]:
    if not isinstance(result, dict) or not isinstance(result.get("segments"), list):
        raise ValueError(f"--format {fmt} needs a transcript (a result with segments)")
    return result["segments"]


def render(result: Any, fmt: str) -> str:
    """`result` as text in `fmt` (one of FORMATS), ending with a newline."""
    if fmt == "json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if fmt == "text":
        if isinstance(result, dict) and isinstance(result.get("text"), str):
            return result["text"] + "\n"
        return json.dumps(result, ensure_ascii=False) + "\n"
    if fmt == "srt":
        cues = [
            f"{i}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text']}\n"
            for i, s in enumerate(_segments(result, fmt), 1)
        ]
        return "\n".join(cues)
    if fmt == "vtt":
        cues = [
            f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text']}\n"
            for s in _segments(result, fmt)
        ]
        return "\n".join(["WEBVTT\n", *cues])
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def segment_text(partial: Any, fmt: str, number: int) -> str:
    """One streamed partial (a transcript's segment: `start`, `end`, `text`) as `fmt` writes
    it, ending with a newline: a line of text, an SRT or WebVTT cue (WebVTT's header before
    the first, `number` 1), or a JSON line. Any other partial is a JSON line."""
    segment = partial if isinstance(partial, dict) and {"start", "end", "text"} <= partial.keys() else None
    if fmt == "json" or segment is None:
        return json.dumps(partial, ensure_ascii=False) + "\n"
    if fmt == "text":
        return segment["text"] + "\n"
    cue = render({"segments": [segment]}, fmt)
    if fmt == "srt":
        return f"{number}{cue.removeprefix('1')}\n"
    return (cue if number == 1 else cue.removeprefix("WEBVTT\n\n")) + "\n"
