"""The transcriber's partials, checkpoints and resume, on real audio, without
a cluster: the real model runs in this process with a Context that keeps what
it is given. A fault is simulated the way the server sees one: a new attempt
gets `resume=` a checkpoint (taken at about 70% of the audio, through JSON as
the job store keeps it) and must decode only the rest, yet give the result a
clean run gives (same shape; the text within 2% word error rate: int8 kernels
may hear a word differently when the audio is cut elsewhere).

The end-to-end form (a replica killed mid-job under Ray Serve) is in
tests/reliability.py."""

import json

import numpy as np
import pytest

from longserve.model import Cancelled, Context
from longserve.models.transcriber import (
    FIRST_SPAN_S,
    SAMPLE_RATE,
    TranscribeInput,
    Transcriber,
    decode,
    resume_state,
)
from tests.conftest import speech_wav
from tests.transcripts import assert_transcript, segments_problem, word_error_rate

CLIP = "speech_long.ogg"  # 67 s of speech
REPEAT = 3  # 200 s: seven or so of Whisper's 30-s windows, a checkpoint near 70%
EVERY_S = 10.0  # checkpoint_every_s: a checkpoint at every window


class Run:
    """One attempt: a Context that records what the model reports, in order."""

    def __init__(self, resume=None, accept=lambda n: True):
        self.events: list[tuple[str, object]] = []
        self.checkpoints: list[dict] = []
        self.accept = accept  # whether the n-th checkpoint is still this attempt's

        def checkpoint(state, done):
            self.checkpoints.append({"state": json.loads(json.dumps(state)), "done": done})  # as a store keeps it
            self.events.append(("checkpoint", done))
            return self.accept(len(self.checkpoints))

        self.ctx = Context(
            on_progress=lambda p: self.events.append(("progress", p)),
            on_partial=lambda p: self.events.append(("partial", p)),
            on_checkpoint=checkpoint,
            resume=resume,
        )

    @property
    def partials(self) -> list[dict]:
        return [value for kind, value in self.events if kind == "partial"]  # type: ignore[misc]


@pytest.fixture(scope="module")
def transcriber():
    model = Transcriber(checkpoint_every_s=EVERY_S)
    model.load("cpu")
    decoded: list = []  # the audio each call of the decoder was given
    transcribe = model.model.transcribe

    def spy(audio, **kwargs):
        decoded.append(audio)
        return transcribe(audio, **kwargs)

    model.model.transcribe = spy
    model.decoded = decoded
    return model


@pytest.fixture(scope="module")
def inputs() -> TranscribeInput:
    return TranscribeInput(audio=speech_wav(CLIP, REPEAT))


@pytest.fixture(scope="module")
def clean(transcriber, inputs):
    run = Run()
    calls = len(transcriber.decoded)
    run.result = transcriber.predict(inputs, run.ctx)
    run.calls = transcriber.decoded[calls:]
    return run


@pytest.fixture(scope="module")
def resumed(transcriber, inputs, clean):
    # The checkpoint nearest 70% of the audio: the one a fault there would leave.
    duration = clean.result["duration"]
    taken = min(clean.checkpoints, key=lambda c: abs(c["state"]["offset"] - 0.7 * duration))
    run = Run(resume=taken["state"])
    run.taken = taken
    calls = len(transcriber.decoded)
    run.result = transcriber.predict(inputs, run.ctx)
    run.calls = transcriber.decoded[calls:]
    return run


def seconds(calls: list) -> float:
    """Seconds of audio given to the decoder in all."""
    return sum(len(audio) for audio in calls) / SAMPLE_RATE


def assert_well_formed(segments: list[dict], duration: float) -> None:
    problem = segments_problem(segments, duration)
    assert not problem, problem


def test_a_clean_run_is_the_clip_and_well_formed(clean):
    assert_transcript(clean.result["text"], CLIP)
    assert_well_formed(clean.result["segments"], clean.result["duration"])
    # One window alone first (the first partial comes without waiting for the features of all the audio),
    # then the rest from where an unbroken run began its second window: a few seconds decoded twice at most.
    first, rest = clean.calls
    assert len(first) == FIRST_SPAN_S * SAMPLE_RATE
    assert 0 < len(first) + len(rest) - clean.result["duration"] * SAMPLE_RATE <= FIRST_SPAN_S * SAMPLE_RATE


def test_partials_come_per_segment_in_order_and_join_into_the_text(clean):
    segments = clean.result["segments"]
    assert clean.partials == [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in segments]
    assert " ".join(p["text"] for p in clean.partials) == clean.result["text"]
    # Each partial goes out with the progress it brings, as its segment is decoded, not at the end.
    kinds = [kind for kind, _ in clean.events]
    nexts = [*kinds[1:], None]
    kinds = [k for k, after in zip(kinds, nexts, strict=True) if "checkpoint" not in (k, after)]
    assert kinds == ["progress"] + ["partial", "progress"] * len(segments)


def test_checkpoints_come_every_n_seconds_of_audio_at_a_window_start(clean):
    duration, segments = clean.result["duration"], clean.result["segments"]
    offsets = [c["state"]["offset"] for c in clean.checkpoints]
    assert len(offsets) >= duration / 30 - 2, offsets  # one per 30-s window at most, as EVERY_S is shorter
    steps = [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
    assert all(step >= EVERY_S for step in steps), steps
    for c in clean.checkpoints:
        state = c["state"]
        before = [s for s in segments if s["end"] <= state["offset"]]
        assert state["segments"] == before
        assert segments[len(before)]["start"] >= state["offset"]  # no segment across the cut: no word cut in half
        assert c["done"] == state["offset"]  # progress reported first: the job's resumed_from
        assert state["language"] == clean.result["language"] and state["prompt_tokens"]
        assert len(json.dumps(state)) < 200 * (len(before) + 10)  # small: about the segments' text


def test_a_resumed_run_decodes_only_the_rest(inputs, clean, resumed):
    offset, duration = resumed.taken["state"]["offset"], clean.result["duration"]
    assert 0.5 * duration < offset < 0.9 * duration
    # The decoder's audio begins at the offset and is the rest (a window of it first, alone), no more.
    audio = decode(inputs.audio)
    start = round(offset * SAMPLE_RATE)
    assert np.array_equal(resumed.calls[0], audio[start : start + len(resumed.calls[0])])
    assert duration - offset < seconds(resumed.calls) <= duration - offset + FIRST_SPAN_S
    assert seconds(resumed.calls) < 0.6 * seconds(clean.calls)
    first = [value for kind, value in resumed.events if kind == "progress"][0]
    assert first == {"done": offset, "total": duration, "message": "resumed"}


def test_a_resumed_result_is_a_clean_one(clean, resumed):
    assert resumed.result.keys() == clean.result.keys()
    for key in ("duration", "language", "language_probability"):
        assert resumed.result[key] == clean.result[key], key
    segments = resumed.result["segments"]
    assert_well_formed(segments, clean.result["duration"])
    kept = resumed.taken["state"]["segments"]
    assert segments[: len(kept)] == kept  # the checkpointed part is kept as it was
    assert segments[len(kept)]["start"] >= kept[-1]["end"]
    assert " ".join(s["text"] for s in segments) == resumed.result["text"]
    wer = word_error_rate(resumed.result["text"], clean.result["text"])
    assert wer <= 0.02, f"resumed vs clean: {wer:.1%} word error rate\n{resumed.result['text']}\n{clean.result['text']}"
    assert_transcript(resumed.result["text"], CLIP)


def test_a_resumed_run_emits_only_what_it_decodes(resumed):
    new = resumed.result["segments"][len(resumed.taken["state"]["segments"]) :]
    assert resumed.partials == [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in new]


def test_a_checkpoint_that_is_no_longer_the_jobs_stops_the_attempt(transcriber, inputs):
    run = Run(accept=lambda n: False)  # the store says: another attempt holds the job
    with pytest.raises(Cancelled):
        transcriber.predict(inputs, run.ctx)
    assert len(run.checkpoints) == 1 and run.ctx.cancelled


def test_a_checkpoint_this_audio_cannot_resume_from_is_ignored(clean):
    good = clean.checkpoints[-1]["state"]
    duration = clean.result["duration"]
    assert resume_state(good, duration) == good
    for bad in (
        None,
        "junk",
        {**good, "version": 0},  # another version's layout
        {**good, "duration": duration + 1},  # other audio
        {**good, "offset": good["segments"][-1]["end"] - 1},  # before the last segment's end
        {**good, "offset": 0},
        {**good, "segments": ["a"]},
        {**good, "prompt_tokens": "a"},
        {**good, "language": None},
    ):
        assert resume_state(bad, duration) is None, bad
