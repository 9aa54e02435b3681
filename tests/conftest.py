"""Shared fixtures: an isolated speech cache, a fast fake speech engine, small routines."""

from __future__ import annotations

import numpy as np
import pytest

from audioguide.speech import Speech
from audioguide.tts import SpeechClip, VoiceInfo

FAKE_RATE = 22_050
FAKE_SECONDS_PER_WORD = 0.3


class FakeEngine:
    """Speech-like audio whose length is known: 0.3 s per word of a 180 Hz buzz.

    Deterministic, about a thousand times faster than espeak; for unit tests only.
    """

    identity = "fake-engine/1"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def synthesize(self, text: str) -> SpeechClip:
        self.calls.append(text)
        n = int(len(text.split()) * FAKE_SECONDS_PER_WORD * FAKE_RATE)
        t = np.arange(n) / FAKE_RATE
        wave = 0.5 * np.sign(np.sin(2 * np.pi * 180 * t)) * np.sin(np.pi * t / t[-1])
        # A little silence around it, as a real engine leaves.
        pad = np.zeros(int(0.1 * FAKE_RATE))
        samples = np.concatenate([pad, wave, pad])
        return SpeechClip((samples * 20000).astype(np.int16), FAKE_RATE)

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("fake", "Fake", ("en",))]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never touch the user's cache folder from a test."""
    monkeypatch.setenv("AUDIOGUIDE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake_speech(fake_engine: FakeEngine) -> Speech:
    return Speech(fake_engine, cache=None)


SHORT_ROUTINE = """\
title: Short Test Session
sections:
  - title: Arrive
    steps:
      - bell: 4
      - say: Welcome. Sit comfortably.
        pause: 1
  - title: Breathe
    steps:
      - say: Follow the tone.
      - breathe:
          cycles: 3
          cues:
            inhale: In.
            exhale: Out.
          cue_cycles: 1
      - pause: 2
"""


@pytest.fixture
def short_routine_file(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text(SHORT_ROUTINE, encoding="utf-8")
    return path
