"""Measure what the voice chain, the resampler and the ducking do to a voice (docs/voices.md).

The same cues are taken at five points: the engine's raw output (22.05 kHz), the prepared cue
(trimmed, resampled to 44.1 kHz, levelled), the cue through the voice chain (``--voice-fx
warm``, run at the engine's rate before resampling, as a render does), the chain run at
44.1 kHz on the prepared cue instead (as before PREPARATION_VERSION 4: how much the order
changes), and the decoded MP3 of a real render. For each: the long-term spectrum
in octave bands (dB relative to the 1 kHz band), the spectral centroid, the voiced level and
crest factor, and, at 44.1 kHz, the energy above the engine's Nyquist (what a resampler's
images would add). A render with a pink ambient bed gives the duck as heard: the bed's level
in the gaps of speech against its level between cues.

    python scripts/measure_voice.py [--voice en_US-joe-medium] [--cues 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from audioguide.pipeline import choose_engine
from audioguide.routine import load_routine
from audioguide.speech import prepare_clip, resample, warm_voice
from audioguide.synth import SAMPLE_RATE
from audioguide.timeline import speech_texts

BANDS_HZ = (125, 250, 500, 1000, 2000, 4000, 8000)


def db(x: float) -> float:
    return 10 * np.log10(max(x, 1e-20))


def bands(x: np.ndarray, rate: int) -> dict[int, float]:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    power = {
        f: float(spectrum[(freqs >= f / np.sqrt(2)) & (freqs < f * np.sqrt(2))].sum())
        for f in BANDS_HZ
    }
    return {f: db(p) - db(power[1000]) for f, p in power.items()}


def describe(name: str, x: np.ndarray, rate: int) -> str:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    centroid = float((spectrum * freqs).sum() / spectrum.sum())
    peak = float(np.max(np.abs(x)))
    voiced = x[np.abs(x) > 0.05 * peak]
    rms = float(np.sqrt(np.mean(voiced.astype(np.float64) ** 2)))
    above = db(float(spectrum[freqs > 11_025].sum())) - db(float(spectrum.sum()))
    hf = f"{above:7.1f} dB" if rate > 22_050 else "     --"
    b = " ".join(f"{v:6.1f}" for v in bands(x, rate).values())
    return (
        f"{name:<18} {b}  {centroid:6.0f} Hz  {20 * np.log10(rms):6.1f} dBFS  "
        f"{20 * np.log10(peak / rms):5.1f} dB  {hf}"
    )


def render(routine: Path, out: Path, env: dict[str, str], *args: str) -> np.ndarray:
    subprocess.run(
        [sys.executable, "-m", "audioguide", "render", str(routine), "-o", str(out), "-q", *args],
        check=True,
        env=env,
    )
    decoded, _ = soundfile.read(next((out / routine.stem).glob("01 *.mp3")), dtype="float64")
    return decoded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voice", default=None)
    parser.add_argument("--cues", type=int, default=12)
    args = parser.parse_args()
    texts = speech_texts(load_routine("back-pain"))[: args.cues]
    engine = choose_engine(args.voice, 140, 2)
    raw = [engine.synthesize(t) for t in texts]
    close = getattr(engine, "close", None)
    if close is not None:
        close()
    rate = raw[0].sample_rate
    dry = [prepare_clip(c) for c in raw]
    # The chain as a render runs it (at the engine's rate, then resampled), and run on the
    # prepared cue at the session's rate instead, as it was before: what the order changes.
    wet = [prepare_clip(c, effect=warm_voice)[: d.size] for c, d in zip(raw, dry, strict=True)]
    at_session_rate = [warm_voice(d, SAMPLE_RATE)[: d.size] for d in dry]
    print(f"{len(texts)} cues of back-pain, {sum(d.size for d in dry) / SAMPLE_RATE:.0f} s")
    print(
        f"{'':<18} {' '.join(f'{f:>6}' for f in BANDS_HZ)}  centroid  voiced     crest  "
        "above 11 kHz"
    )
    print(describe("engine (22.05k)", np.concatenate([c.samples / 32768 for c in raw]), rate))
    joined = np.concatenate([c.samples / 32768 for c in raw]).astype(np.float32)
    print(describe("resampled only", resample(joined, rate, SAMPLE_RATE), SAMPLE_RATE))
    print(describe("prepared (44.1k)", np.concatenate(dry), SAMPLE_RATE))
    print(describe("voice chain", np.concatenate(wet), SAMPLE_RATE))
    print(describe("chain at 44.1k", np.concatenate(at_session_rate), SAMPLE_RATE))
    difference = np.concatenate(wet) - np.concatenate(at_session_rate)
    apart = db(float(np.sum(difference.astype(np.float64) ** 2)))
    apart -= db(float(np.sum(np.concatenate(at_session_rate).astype(np.float64) ** 2)))
    print(f"the chain at 22.05 kHz and at 44.1 kHz differ by a signal {-apart:.1f} dB under it")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        steps = "".join(f"      - say: {t!r}\n        pause: 2\n" for t in texts)
        routine = folder / "voice.yaml"
        routine.write_text(f"title: Voice\nsections:\n  - title: Cues\n    steps:\n{steps}")
        env = {**os.environ, "AUDIOGUIDE_CACHE_DIR": str(folder / "cache")}
        if args.voice:
            env["AUDIOGUIDE_VOICE"] = args.voice
        for fx in ("warm", "none"):
            decoded = render(routine, folder / fx, env, "--voice-fx", fx, "--no-bell")
            frame = SAMPLE_RATE // 100
            n = decoded.size // frame
            level = np.sqrt(np.mean(decoded[: n * frame].reshape(n, frame) ** 2, axis=1))
            speech = np.repeat(level > 10 ** (-50 / 20), frame)
            print(describe(f"decoded MP3 {fx}", decoded[: n * frame][speech], SAMPLE_RATE))
        ducked = render(routine, folder / "ambient", env, "--ambient", "pink", "--no-bell")
        plan = subprocess.run(
            [sys.executable, "-m", "audioguide", "plan", str(routine), "--json"],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        frame = SAMPLE_RATE // 100
        n = ducked.size // frame
        level = 20 * np.log10(
            np.sqrt(np.mean(ducked[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-12
        )
        says = [e for e in json.loads(plan)["tracks"][0]["events"] if e["kind"] == "say"]
        gaps, pauses = [], []
        for say, following in zip(says, [*says[1:], None], strict=True):
            start = round(say["start_s"] * 100)
            end = round((say["start_s"] + say["duration_s"]) * 100)
            gaps.append(np.percentile(level[start:end], 5))  # the gaps between words
            if following is not None:  # the middle of the pause: the duck has let go
                pauses.append(np.median(level[end + 80 : round(following["start_s"] * 100) - 30]))
        print(
            f"pink bed: {np.median(pauses):.1f} dBFS between cues, {np.median(gaps):.1f} dBFS in "
            f"the gaps of speech (bed ducked, plus the room's tail)"
        )


if __name__ == "__main__":
    main()
