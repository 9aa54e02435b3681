"""Measure a Piper voice's pace on the built-in routines' cues, for audioguide.speech.piper.

Every spoken cue of every built-in routine (default options) is synthesized at two length
scales, one ONNX thread per process, and the seconds of speech per word (the model's clauses,
edges trimmed, without the pauses the engine adds) are fitted as a + b * length_scale. The
pauses add a fixed time per word, counted here too. Prints the constants and the words a minute
the voice reads at length scale 1.0.

    python scripts/calibrate_piper.py [--voice en_US-joe-medium] [--jobs 2]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from audioguide.pronounce import PIPER
from audioguide.routine import builtin_names, load_routine
from audioguide.speech import piper as pe
from audioguide.timeline import RenderOptions, speech_texts

SCALES = (1.0, 1.5)


def measure(text: str, scale: float) -> tuple[float, float]:
    """(seconds of speech, seconds of added pause and margin) for one cue."""
    voice = pe._WORKER_VOICE
    rate = voice.config.sample_rate
    pieces = pe.speak_pieces(voice, PIPER.respell(text), scale)
    speech_s = sum(audio.size for _, audio in pieces) / rate
    pause_s = sum(p for p, _ in pieces) + 2 * pe.EDGE_MARGIN_S
    return speech_s, pause_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voice", default=None)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    voice = pe.PiperEngine._find(args.voice)
    texts = sorted(
        {t for name in builtin_names() for t in speech_texts(load_routine(name), RenderOptions())}
    )
    words = sum(len(t.split()) for t in texts)
    per_word = {}
    with ProcessPoolExecutor(
        args.jobs,
        mp_context=get_context("spawn"),
        initializer=pe._worker_init,
        initargs=(str(voice.model), str(voice.config)),
    ) as pool:
        for scale in SCALES:
            results = list(pool.map(measure, texts, [scale] * len(texts), chunksize=4))
            per_word[scale] = sum(s for s, _ in results) / words
            pause_per_word = sum(p for _, p in results) / words
            print(
                f"length scale {scale}: {60 / per_word[scale]:.0f} words/min speaking, "
                f"{60 / (per_word[scale] + pause_per_word):.0f} with pauses"
            )
    low, high = SCALES
    slope = (per_word[high] - per_word[low]) / (high - low)
    at_0 = per_word[low] - slope * low
    print(f"{len(texts)} cues, {words} words of {voice.name}")
    print(f"SPEECH_S_PER_WORD_AT_0 = {at_0:.4f}")
    print(f"SPEECH_S_PER_WORD_SLOPE = {slope:.4f}")
    print(f"PAUSE_S_PER_WORD = {pause_per_word:.4f}")


if __name__ == "__main__":
    main()
