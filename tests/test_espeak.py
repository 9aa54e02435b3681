"""The real speech engine: every cue synthesized, checked, and silent on the terminal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from audioguide.errors import SpeechError
from audioguide.speech import DEFAULT_RATE_WPM
from audioguide.speech.engine import expected_length_s
from audioguide.speech.espeak import Pyttsx3Engine, list_voices


@pytest.fixture(scope="module")
def engine() -> Pyttsx3Engine:
    return Pyttsx3Engine()


def test_each_cue_gets_its_own_audio(engine):
    # pyttsx3's espeak driver can hand a cue the previous cue's audio; lengths tell them apart.
    short = engine.synthesize("In.")
    long = engine.synthesize(
        "Let your shoulders soften and your breath settle into a slow easy rhythm."
    )
    again = engine.synthesize("In.")
    assert short.samples.dtype == np.int16
    assert short.sample_rate == 22_050
    assert long.samples.size > 4 * short.samples.size
    assert abs(again.samples.size - short.samples.size) < 0.1 * short.samples.size


def test_length_follows_the_rate():
    words = "Slowly lift your arms in front of you to the height of your shoulders."
    slow = Pyttsx3Engine(rate_wpm=100).synthesize(words)
    fast = Pyttsx3Engine(rate_wpm=200).synthesize(words)
    ratio = (slow.samples.size / slow.sample_rate) / (fast.samples.size / fast.sample_rate)
    assert 1.5 < ratio < 2.5
    expected = expected_length_s(words, DEFAULT_RATE_WPM)
    assert expected == pytest.approx(14 * 60 / DEFAULT_RATE_WPM)


def test_unknown_voice_is_refused_with_matches():
    with pytest.raises(SpeechError, match=r"--voice: no voice 'en-usa'\. Close matches: .*en-us"):
        Pyttsx3Engine(voice="en-usa")


def test_rate_outside_range_is_refused():
    with pytest.raises(SpeechError, match="--rate must be between 80 and 260"):
        Pyttsx3Engine(rate_wpm=500)


def test_voices_lists_english():
    ids = {v.id for v in list_voices()}
    assert "gmw/en-us" in ids


def test_nothing_reaches_the_terminal(short_routine_file, tmp_path):
    # espeak's driver prints "Audio saved to ..." from its own code for every cue.
    env_cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "audioguide", "plan", str(short_routine_file), "--no-cache"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "AUDIOGUIDE_CACHE_DIR": str(env_cache)},
        check=True,
    )
    assert "Audio saved" not in result.stdout + result.stderr
    assert result.stdout.startswith("Short Test Session")
    assert result.stderr == ""
