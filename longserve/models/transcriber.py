"""Speech to text with faster-whisper (CTranslate2).

Audio comes as a raw body (any format PyAV decodes) or as base64 in JSON.
The loop reports progress in seconds of audio and stops at the next segment
once the request is cancelled.
"""

import base64
import binascii
import io
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, Field, field_validator

from longserve.model import Context, InvalidInput, Model

SAMPLE_RATE = 16000
MAX_AUDIO_S = 4 * 3600.0


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
        audio = decode(inputs.audio, self.options.max_audio_s)
        duration = round(len(audio) / SAMPLE_RATE, 3)
        ctx.report_progress(0.0, duration, "started")
        options = {"temperature": inputs.temperature} if inputs.temperature is not None else {}
        segments, info = self.model.transcribe(
            audio,
            language=inputs.language,
            beam_size=self.options.beam_size,
            task=inputs.task,
            initial_prompt=inputs.prompt,
            word_timestamps=inputs.word_timestamps,
            **options,
        )
        out = []
        for segment in segments:  # each step decodes the next window of audio
            out.append(segment_dict(segment, inputs))
            ctx.report_progress(min(segment.end, duration), duration)
            ctx.check_cancelled()
        return {
            "text": " ".join(s["text"] for s in out),
            "language": info.language,
            "language_probability": round(info.language_probability, 3),
            "duration": duration,
            "segments": out,
        }


def segment_dict(segment, inputs: TranscribeInput) -> dict:
    out = {"start": round(segment.start, 2), "end": round(segment.end, 2), "text": segment.text.strip()}
    if inputs.segment_details:
        out.update(
            id=segment.id,
            seek=segment.seek,
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
                "start": round(w.start, 2),
                "end": round(w.end, 2),
                "probability": round(w.probability, 3),
            }
            for w in segment.words or []
        ]
    return out


def decode(data: Union[bytes, Path], max_s: float = MAX_AUDIO_S):
    """16 kHz mono float32 samples. Refuses audio over max_s seconds from its
    header when it has one, else as soon as decoding passes max_s, so a
    small upload cannot expand into hours of samples in memory."""
    import av
    import numpy as np

    chunks, samples, limit = [], 0, int(max_s * SAMPLE_RATE)
    try:
        source = str(data) if isinstance(data, Path) else io.BytesIO(data)
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidInput("could not decode the audio: the body holds no audio stream")
            if container.duration is not None and container.duration / av.time_base > max_s:
                raise InvalidInput(_too_long(container.duration / av.time_base, max_s))
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    samples += chunks[-1].size
                if samples > limit:
                    raise InvalidInput(_too_long(samples / SAMPLE_RATE, max_s, "at least "))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except InvalidInput:
        raise
    except Exception as exc:  # PyAV raises many kinds; all mean "not audio we can read"
        raise InvalidInput(f"could not decode the audio: {exc}") from None
    if not chunks or sum(c.size for c in chunks) == 0:
        raise InvalidInput("the audio holds no samples")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def _too_long(seconds: float, max_s: float, qualifier: str = "") -> str:
    return f"the audio is {qualifier}{seconds:.0f} s long; at most {max_s:g} s (options.max_audio_s)"
