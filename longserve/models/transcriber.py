"""Speech to text with faster-whisper (CTranslate2).

Audio comes as a raw body (any format PyAV decodes) or as base64 in JSON.
The loop reports progress in seconds of audio and stops at the next segment
once the request is cancelled.
"""

import base64
import binascii
import io
from typing import Optional

from pydantic import BaseModel, Field, field_validator

from longserve.model import Context, InvalidInput, Model

SAMPLE_RATE = 16000


class TranscribeInput(BaseModel):
    audio: bytes = Field(description="Audio file bytes; base64 in a JSON body.")
    language: Optional[str] = Field(None, description="ISO code such as 'en'; detected when omitted.")

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
    """Options: `model_path` (a CTranslate2 Whisper folder or a size name such
    as "large-v3"; default: the packaged base weights), `compute_type`
    (default int8 on CPU, float16 on CUDA), `beam_size` (default 1),
    `cpu_threads` (0: CTranslate2's default)."""

    Input = TranscribeInput
    raw_body_field = "audio"

    def load(self, device: str) -> None:
        from faster_whisper import WhisperModel

        from longserve.models.whisper_weights import whisper_base_path

        path = self.options.get("model_path") or str(whisper_base_path())
        compute_type = self.options.get("compute_type") or ("float16" if device == "cuda" else "int8")
        self.beam_size = int(self.options.get("beam_size", 1))
        self.model = WhisperModel(
            path, device=device, compute_type=compute_type, cpu_threads=int(self.options.get("cpu_threads", 0))
        )

    def predict(self, inputs: TranscribeInput, ctx: Context) -> dict:
        audio = decode(inputs.audio)
        duration = round(len(audio) / SAMPLE_RATE, 3)
        ctx.report_progress(0.0, duration, "started")
        segments, info = self.model.transcribe(audio, language=inputs.language, beam_size=self.beam_size)
        out = []
        for segment in segments:  # each step decodes the next window of audio
            out.append({"start": round(segment.start, 2), "end": round(segment.end, 2), "text": segment.text.strip()})
            ctx.report_progress(min(segment.end, duration), duration)
            ctx.check_cancelled()
        return {
            "text": " ".join(s["text"] for s in out),
            "language": info.language,
            "language_probability": round(info.language_probability, 3),
            "duration": duration,
            "segments": out,
        }


def decode(data: bytes):
    from faster_whisper import decode_audio

    try:
        audio = decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV raises many kinds; all mean "not audio we can read"
        raise InvalidInput(f"could not decode the audio: {exc}") from None
    if len(audio) == 0:
        raise InvalidInput("the audio holds no samples")
    return audio
