"""Measure espeak-ng's pace on the built-in routines' cues, for audioguide.speech.espeak.

Every spoken cue of every built-in routine (default options) is synthesized by espeak-ng at a
few of its own rate settings, and its pace measured as Piper's is (engine.words_per_minute):
the words of the cues over the length of the prepared cues, pauses included. Prints the words
a minute at each setting and the straight line through them, the constants of
``espeak.ESPEAK_RATE_AT_0`` and ``ESPEAK_RATE_PER_WPM``.

    python scripts/calibrate_espeak.py [--voice gmw/en-us]
"""

from __future__ import annotations

import argparse

import numpy as np

from audioguide.pronounce import ESPEAK
from audioguide.routine import builtin_names, load_routine
from audioguide.speech import espeak, prepared_length
from audioguide.speech.engine import words_per_minute
from audioguide.synth import SAMPLE_RATE
from audioguide.timeline import RenderOptions, speech_texts

SETTINGS = (90, 110, 130, 150)  # espeak-ng's own rate parameter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voice", default=espeak.DEFAULT_VOICE)
    args = parser.parse_args()
    texts = sorted(
        {t for name in builtin_names() for t in speech_texts(load_routine(name), RenderOptions())}
    )
    measured = []
    for setting in SETTINGS:
        engine = espeak.Pyttsx3Engine(args.voice)
        engine.espeak_rate = setting
        clips = engine.synthesize_all([ESPEAK.respell(t) for t in texts])
        seconds = [prepared_length(clip) / SAMPLE_RATE for clip in clips]
        measured.append(words_per_minute(texts, seconds))
        print(f"espeak-ng rate {setting}: {measured[-1]:.1f} words a minute")
    slope, at_0 = np.polyfit(measured, SETTINGS, 1)
    print(f"{len(texts)} cues, {sum(len(t.split()) for t in texts)} words, voice {args.voice}")
    print(f"ESPEAK_RATE_AT_0 = {at_0:.2f}")
    print(f"ESPEAK_RATE_PER_WPM = {slope:.4f}")


if __name__ == "__main__":
    main()
