"""Make a long test recording: tests/data/speech_long.ogg (67 s of speech)
repeated to the length asked for, written as MP3 (or .ogg / .wav / .flac, by
the output's name). 16 kHz mono: a 15-minute MP3 is about 3.6 MB.

    python scripts/make_podcast.py podcast.mp3 --minutes 15
"""

import argparse
from pathlib import Path

import av
import numpy as np
from faster_whisper import decode_audio

SOURCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech_long.ogg"
RATE = 16000
CODECS = {
    ".mp3": ("libmp3lame", "s16p"),
    ".ogg": ("libvorbis", "fltp"),
    ".wav": ("pcm_s16le", "s16"),
    ".flac": ("flac", "s16"),
}


def make(path: Path, seconds: float, source: Path = SOURCE) -> float:
    """Write `seconds` of speech to `path`; returns the length written."""
    clip = decode_audio(str(source), sampling_rate=RATE)
    samples = np.resize(clip, int(seconds * RATE))  # repeats the clip, cut to length
    codec, fmt = CODECS[path.suffix.lower()]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=RATE, layout="mono")
        if codec == "libmp3lame":
            stream.bit_rate = 32000
        pcm = (samples * 32767).astype(np.int16) if fmt.startswith("s16") else samples.astype(np.float32)
        step = 4096
        for start in range(0, len(pcm), step):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + step], format=fmt, layout="mono")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return len(samples) / RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="e.g. podcast.mp3 (.mp3, .ogg, .wav, .flac)")
    parser.add_argument("--minutes", type=float, default=15.0)
    args = parser.parse_args()
    seconds = make(args.output, args.minutes * 60)
    print(f"wrote {args.output}: {seconds / 60:g} min of speech, {args.output.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
