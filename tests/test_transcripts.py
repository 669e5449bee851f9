"""The transcript rule (tests/transcripts.py) passes what another CPU hears and
fails what a broken transcriber returns. No cluster."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.transcripts import REFERENCES, THRESHOLD, assert_transcript, check, share_heard

SHORT, LONG = REFERENCES["speech.ogg"], REFERENCES["speech_long.ogg"]

# What whisper base int8 really answered for speech.ogg on an Intel Xeon and an AMD EPYC.
HEARD = [
    "The quick brown fox jump over the lazy dog. Serving models with timeout snatch users control.",
    "the quick round fox jump over the lazy dog. serving models with timeout snatch users control.",
]


@pytest.mark.parametrize("heard", HEARD + [SHORT, SHORT.upper()])
def test_a_few_misheard_words_pass(heard):
    assert_transcript(heard, "speech.ogg")


def test_the_long_clip_passes_with_its_misheard_words_and_repeated():
    heard = LONG.replace("embeddings", "and adding").replace("batches", "matches").replace("an asyn", "a syn")
    assert_transcript(heard, "speech_long.ogg")
    assert_transcript(heard + " " + heard[:400], "speech_long.ogg")  # a clip repeated, cut anywhere


@pytest.mark.parametrize(
    "wrong",
    [
        "",  # the transcriber returned nothing
        "Le rapide renard brun saute par-dessus le chien paresseux. Servir des modèles avec des délais.",  # French
        "Der schnelle braune Fuchs springt über den faulen Hund.",  # German
        LONG,  # the other clip
    ],
)
def test_a_wrong_transcript_of_the_short_clip_fails(wrong):
    assert check(wrong, "speech.ogg")
    with pytest.raises(AssertionError, match="transcript is not speech.ogg"):
        assert_transcript(wrong, "speech.ogg")


@pytest.mark.parametrize("wrong", ["", SHORT, LONG[: len(LONG) // 2]])  # nothing, the other clip, half of it
def test_a_wrong_transcript_of_the_long_clip_fails(wrong):
    assert share_heard(wrong, LONG) < THRESHOLD
    assert check(wrong, "speech_long.ogg")


def test_the_command_line_reads_text_or_a_json_answer():
    def run(text, *args):
        return subprocess.run(
            [sys.executable, "-m", "tests.transcripts", *args], input=text, cwd=ROOT, capture_output=True, text=True
        )

    assert run(HEARD[1], "speech.ogg").returncode == 0
    assert run(json.dumps({"text": HEARD[1], "language": "en"}), "--json").returncode == 0
    wrong = run('{"text": ""}', "speech.ogg", "--json")
    assert wrong.returncode == 1 and "transcript is not speech.ogg" in wrong.stdout
