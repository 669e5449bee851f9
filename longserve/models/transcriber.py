"""Speech to text with faster-whisper (CTranslate2).

Audio comes as a raw body (any format PyAV decodes) or as base64 in JSON.
The loop reports progress in seconds of audio and stops at the next segment
once the request is cancelled.

Long audio uses the whole long-work API (longserve/model.py):

- Each segment is emitted as it is decoded: `ctx.emit({"start", "end", "text"})`,
  always those three keys (seconds of audio, rounded to 0.01; the text stripped),
  in order. Joined with " ", the emitted texts are the result's "text".
- Every `checkpoint_every_s` seconds of audio (at the next start of one of
  Whisper's 30-s windows), it reports progress at that window's start and
  checkpoints the segments before it, that offset, the detected language and
  the decoder's prompt there (the last 223 tokens decoded): a few kB.
- A later attempt of the job (`ctx.resume`) keeps the checkpointed segments
  and decodes only the audio from the offset on. The cut is where an unbroken
  run began its next window, itself a segment boundary Whisper chose, so no
  word is cut in half and the rest is decoded as an unbroken run decodes it:
  from the same audio, primed with the same tokens and language. The new
  segments' times (and ids, seeks, word times) are shifted by the offset; the
  result has the same shape as a clean run's. The resumed attempt emits only
  the segments it decodes (the checkpointed ones were emitted by the attempt
  that decoded them); a watcher of both attempts may see the segments between
  the checkpoint and the fault twice: the later ones, by `start`, replace them.

An attempt decodes its first 30-s window alone, then the rest from where an
unbroken run starts its second window (the resume cut again): faster-whisper
computes the log-mel features of all the audio it is given before it decodes
a window, seconds for a long podcast, and the first partial should not wait
for them. The cost: the first call also decodes the few seconds after the
first window, which the second decodes again. For the same reason a first
attempt decodes only the head of the file to samples (the first window's
worth) before that first window, and the whole file after it, when the
file's header says how long it is.

Each attempt logs one INFO line when it ends: how many seconds of audio it
decoded, from which offset, and in how many seconds of wall time
("model-seconds"; benchmarks/resume_bench.py reads it).
"""

import base64
import binascii
import io
import logging
import time
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, Field, field_validator

from longserve.model import Context, InvalidInput, Model

SAMPLE_RATE = 16000
MAX_AUDIO_S = 4 * 3600.0
CHECKPOINT_EVERY_S = 60.0
FRAMES_PER_S = 100  # Whisper's mel frames (its `seek` unit): 10 ms, every model size
PROMPT_TOKENS = 223  # of the text decoded so far, faster-whisper primes each window with the last 223 tokens
PROMPT_RESET_ON_TEMPERATURE = 0.5  # faster-whisper's default: a window decoded hotter drops that context
FIRST_SPAN_S = 30.0  # one Whisper window: decoded first, alone, so the first segment comes soon
HEAD_S = FIRST_SPAN_S + 2.0  # of a first attempt's audio, decoded to samples before its first window
CHECKPOINT_VERSION = 1

logger = logging.getLogger("ray.serve")  # in the replica's log, as the server's own lines


class TranscribeInput(BaseModel):
    # A Path only from parse_file (a job's upload, decoded from its file); a JSON body's string is base64.
    audio: Union[bytes, Path] = Field(description="Audio file bytes; base64 in a JSON body.")
    language: Optional[str] = Field(None, description="ISO code such as 'en'; detected when omitted.")
    task: Literal["transcribe", "translate"] = Field("transcribe", description="translate: English text out.")
    prompt: Optional[str] = Field(None, max_length=2000, description="Text that primes the first window's style.")
    temperature: Optional[float] = Field(
        None,
        ge=0,
        le=1,
        description=("Sampling temperature; default: 0 with fallback to higher ones when decoding fails."),
    )
    word_timestamps: bool = Field(False, description="Each segment's words with their start and end.")
    segment_details: bool = Field(
        False,
        description=(
            "Each segment's id, seek, tokens, avg_logprob, compression_ratio, no_speech_prob and temperature."
        ),
    )

    @field_validator("audio", mode="before")
    @classmethod
    def _base64_in_json(cls, value):
        # A JSON body carries base64 text; a raw upload arrives as bytes already.
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"audio is not valid base64: {exc}") from None
        return value


class Transcriber(Model):
    Input = TranscribeInput
    raw_body_field = "audio"
    runtime = "ctranslate2"  # faster-whisper: CTranslate2's own CUDA build, not torch's

    class Options(Model.Options):
        model_path: Optional[str] = Field(
            None,
            description=(
                'A CTranslate2 Whisper folder or a size name such as "large-v3"; default: the packaged base weights.'
            ),
        )
        compute_type: Optional[str] = Field(None, description="Default: int8 on CPU, float16 on CUDA.")
        beam_size: int = Field(1, ge=1)
        cpu_threads: int = Field(0, ge=0, description="0: CTranslate2's default.")
        max_audio_s: float = Field(MAX_AUDIO_S, gt=0, description="Longer audio is refused.")
        checkpoint_every_s: float = Field(
            CHECKPOINT_EVERY_S,
            gt=0,
            description=(
                "A job checkpoints its segments so far after each this many seconds of audio;"
                " a later attempt (after a fault) resumes from there."
            ),
        )

    options: Options

    @classmethod
    def parse_file(cls, path: Path, params: dict[str, str]) -> TranscribeInput:
        # PyAV reads the file itself: the audio is never whole in memory before decoding.
        return cls.Input.model_validate({**params, "audio": path})

    def load(self, device: str) -> None:
        from faster_whisper import WhisperModel

        from longserve.models.whisper_weights import whisper_base_path

        path = self.options.model_path or str(whisper_base_path())
        compute_type = self.options.compute_type or ("float16" if device == "cuda" else "int8")
        self.model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=self.options.cpu_threads)

    def predict(self, inputs: TranscribeInput, ctx: Context) -> dict:
        if inputs.language is not None and inputs.language not in self.model.supported_languages:
            raise InvalidInput(
                f"language {inputs.language!r} is not one this model knows; "
                f"one of: {', '.join(self.model.supported_languages)}, or none to detect it"
            )
        if inputs.task == "translate" and not self.model.model.is_multilingual:
            raise InvalidInput("this model is English-only and cannot translate; use a multilingual one")
        began = time.monotonic()  # model-seconds count the audio's decoding too: a resumed attempt does it again
        # A first attempt starts from the head of the file: its first window need not wait for all of it.
        audio, whole, header_s = _decode(inputs.audio, self.options.max_audio_s, None if ctx.resume else HEAD_S)
        if not whole and (header_s is None or header_s < HEAD_S):  # no usable length in the header: decode it all
            audio, whole, _ = _decode(inputs.audio, self.options.max_audio_s)
        duration = round(len(audio) / SAMPLE_RATE if whole else header_s or 0.0, 3)
        resumed = resume_state(ctx.resume, duration)
        ctx.report_progress(resumed["offset"] if resumed else 0.0, duration, "resumed" if resumed else "started")
        if resumed:
            run = Transcription(resumed["offset"], resumed["segments"], resumed["prompt_tokens"])
        else:
            run = Transcription(0.0, [], self._prompt_tokens(inputs.prompt))
        language = inputs.language or (resumed["language"] if resumed else None)
        detected: Optional[tuple[str, float]] = (inputs.language, 1.0) if inputs.language else None  # as faster-whisper
        if resumed and not inputs.language:
            detected = (resumed["language"], resumed["language_probability"])
        options = {"temperature": inputs.temperature} if inputs.temperature is not None else {}
        start, checkpointed, first_span = run.offset, run.offset, True
        try:
            while start < duration:
                # First one window alone: faster-whisper computes the log-mel features of all the audio it is
                # given before its first window, seconds for an hour, so the first partial would wait for them.
                end = min(duration, start + FIRST_SPAN_S) if first_span else duration
                segments, info = self.model.transcribe(
                    audio[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))],
                    # Primed as an unbroken run is at the cut: the same prompt tokens, the language it detected.
                    language=language,
                    beam_size=self.options.beam_size,
                    task=inputs.task,
                    initial_prompt=run.context or None,
                    word_timestamps=inputs.word_timestamps,
                    **options,
                )
                detected = detected or (info.language, round(info.language_probability, 3))
                language = language or info.language
                run.begin(start)
                before, cut = len(run.segments), None
                for segment in segments:  # each step decodes the next window of audio
                    if first_span and segment.seek > 0:
                        # A window after the first, cut short by the span's end: an unbroken run starts it here.
                        cut = run.cut(segment)
                        break
                    window = run.window_start(segment)
                    if window is not None and window - checkpointed >= self.options.checkpoint_every_s:
                        # A new window: its start is where an unbroken run went on, after the segments so far.
                        ctx.report_progress(window, duration)  # first: the job's resumed_from is this
                        ctx.checkpoint(run.state(window, duration, *detected))
                        checkpointed = window
                    item = run.add(segment, inputs)
                    ctx.emit({"start": item["start"], "end": item["end"], "text": item["text"]})
                    ctx.report_progress(min(item["end"], duration), duration)
                    ctx.check_cancelled()
                if not whole:  # the first window is out: now the rest of the file, and its exact length
                    audio, whole, _ = _decode(inputs.audio, self.options.max_audio_s)
                    duration = round(len(audio) / SAMPLE_RATE, 3)
                if cut is None:  # no later window showed: go on after the last segment (no word cut in half)
                    cut = min(end, run.reached) if len(run.segments) > before and end < duration else end
                    cut = cut if cut > start else end
                start, first_span = cut, False
        finally:
            logger.info(
                "transcriber decoded %.2f s of audio from offset %.2f s of %.2f s in %.2f s (model-seconds)",
                max(0.0, run.reached - run.started),
                run.started,
                duration,
                time.monotonic() - began,
            )
        detected = detected or (language or "", 0.0)  # only when there was nothing left to decode
        return {
            "text": " ".join(s["text"] for s in run.segments),
            "language": detected[0],
            "language_probability": detected[1],
            "duration": duration,
            "segments": run.segments,
        }

    def _prompt_tokens(self, prompt: Optional[str]) -> list[int]:
        # As faster-whisper encodes an initial_prompt string, so that a resumed run gets the same tokens.
        if not prompt:
            return []
        return self.model.hf_tokenizer.encode(" " + prompt.strip(), add_special_tokens=False).ids[-PROMPT_TOKENS:]


class Transcription:
    """One attempt's segments (the checkpointed ones first when it resumed)
    and the decoder's context, as faster-whisper keeps it: the last tokens
    decoded, dropped after a window decoded at a high temperature."""

    def __init__(self, offset: float, segments: list[dict], context: list[int]):
        self.started = offset  # where this attempt began in the whole audio
        self.offset = offset  # where the audio given to the decoder now begins
        self.segments = list(segments)
        self.context = list(context)
        self.reached = offset
        self.seek: Optional[int] = None  # the window of the last segment, in mel frames of the decoder's audio
        self.reset = False  # whether that window's decoding resets the context after it

    def begin(self, offset: float) -> None:
        """The decoder is given the audio from `offset` on (seeks count from there)."""
        self.offset, self.seek = offset, None

    def cut(self, segment) -> float:
        """Where `segment`'s window starts in the whole audio, as the place to go on
        from, unbroken: what decoding the window before it leaves behind is applied."""
        if self.reset:
            self.context = []
        return round(self.offset + segment.seek / FRAMES_PER_S, 2)

    def window_start(self, segment) -> Optional[float]:
        """Where `segment`'s window starts in the whole audio, when it starts a
        new window after one of this attempt's; else None."""
        if self.seek is None or segment.seek == self.seek:
            return None
        return self.cut(segment)

    def add(self, segment, inputs: TranscribeInput) -> dict:
        item = segment_dict(segment, inputs, self.offset, len(self.segments))
        self.segments.append(item)
        self.seek, self.reset = segment.seek, (segment.temperature or 0.0) > PROMPT_RESET_ON_TEMPERATURE
        self.context = (self.context + list(segment.tokens))[-PROMPT_TOKENS:]
        self.reached = max(self.reached, item["end"])
        return item

    def state(self, offset: float, duration: float, language: str, probability: float) -> dict:
        """The checkpoint: the segments before `offset` (a window's start) and the context there."""
        return {
            "version": CHECKPOINT_VERSION,
            "offset": offset,
            "duration": duration,
            "language": language,
            "language_probability": probability,
            "prompt_tokens": self.context,
            "segments": list(self.segments),
        }


def resume_state(state, duration: float) -> Optional[dict]:
    """A checkpoint this audio can resume from, else None (start over): one
    from another version or another length of audio is not trusted."""
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        return None
    segments, offset, tokens = state.get("segments"), state.get("offset"), state.get("prompt_tokens")
    if state.get("duration") != duration or not isinstance(segments, list) or not isinstance(tokens, list):
        return None
    if not all(isinstance(s, dict) for s in segments) or not all(isinstance(t, int) for t in tokens):
        return None
    if not isinstance(offset, (int, float)) or not 0 < offset <= duration or not isinstance(state.get("language"), str):
        return None
    if segments and not segments[-1].get("end", offset + 1) <= offset:
        return None
    return state


def segment_dict(segment, inputs: TranscribeInput, offset: float = 0.0, first_id: int = 0) -> dict:
    """A segment as the result lists it; `offset`: where the decoded audio began
    in the whole (a resumed run's cut), added to every time; `first_id`: the
    number of segments before it."""
    out = {
        "start": round(offset + segment.start, 2),
        "end": round(offset + segment.end, 2),
        "text": segment.text.strip(),
    }
    if inputs.segment_details:
        out.update(
            id=first_id + segment.id,
            seek=segment.seek + int(round(offset * SAMPLE_RATE / 160)),  # in mel frames of 10 ms
            tokens=segment.tokens,
            avg_logprob=segment.avg_logprob,
            compression_ratio=segment.compression_ratio,
            no_speech_prob=segment.no_speech_prob,
            temperature=segment.temperature,
        )
    if inputs.word_timestamps:
        out["words"] = [
            {
                "word": w.word.strip(),
                "start": round(offset + w.start, 2),
                "end": round(offset + w.end, 2),
                "probability": round(w.probability, 3),
            }
            for w in segment.words or []
        ]
    return out


def decode(data: Union[bytes, Path], max_s: float = MAX_AUDIO_S):
    """16 kHz mono float32 samples. Refuses audio over max_s seconds from its
    header when it has one, else as soon as decoding passes max_s, so a
    small upload cannot expand into hours of samples in memory."""
    return _decode(data, max_s)[0]


def _decode(data: Union[bytes, Path], max_s: float = MAX_AUDIO_S, head_s: Optional[float] = None):
    """(samples, whole, the length the header gives or None). With head_s, decoding
    stops once that many seconds are in: `whole` says whether the audio ended first."""
    import av
    import numpy as np

    chunks, samples, limit = [], 0, int(max_s * SAMPLE_RATE)
    head = None if head_s is None else int(head_s * SAMPLE_RATE)
    whole, header_s = True, None
    try:
        source = str(data) if isinstance(data, Path) else io.BytesIO(data)
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidInput("could not decode the audio: the body holds no audio stream")
            if container.duration is not None:
                header_s = container.duration / av.time_base
                if header_s > max_s:
                    raise InvalidInput(_too_long(header_s, max_s))
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    samples += chunks[-1].size
                if samples > limit:
                    raise InvalidInput(_too_long(samples / SAMPLE_RATE, max_s, "at least "))
                if head is not None and samples >= head:
                    whole = False
                    break
            if whole:
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except InvalidInput:
        raise
    except Exception as exc:  # PyAV raises many kinds; all mean "not audio we can read"
        raise InvalidInput(f"could not decode the audio: {exc}") from None
    if not chunks or sum(c.size for c in chunks) == 0:
        raise InvalidInput("the audio holds no samples")
    return np.concatenate(chunks).astype(np.float32) / 32768.0, whole, header_s


def _too_long(seconds: float, max_s: float, qualifier: str = "") -> str:
    return f"the audio is {qualifier}{seconds:.0f} s long; at most {max_s:g} s (options.max_audio_s)"
