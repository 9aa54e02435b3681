"""Make the default sound assets shipped in ``sounds/`` (the package's ``audioguide/sounds``).

Every asset is synthesized from code in ``audioguide.synth`` with a fixed seed, so running
this again writes the same bytes; no recording is involved, and the files are released under
CC0 1.0 (see sounds/README.md). Run from the repository root:

    python scripts/make_sounds.py
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from audioguide.sounds import DEFAULT_BELL_FILE, INTERVAL_BELL_FILE
from audioguide.synth import (
    BOWL_FUNDAMENTAL_HZ,
    INTERVAL_BOWL_FUNDAMENTAL_HZ,
    SAMPLE_RATE,
    seconds_to_samples,
    singing_bowl,
)

OUT_DIR = Path(__file__).resolve().parent.parent / "audioguide" / "sounds"
PEAK_DBFS = -1.0
SEED = 2024

# (file name, fundamental Hz, length s): the session bowl, and a smaller one for interval bells.
ASSETS = (
    (DEFAULT_BELL_FILE, BOWL_FUNDAMENTAL_HZ, 12.0),
    (INTERVAL_BELL_FILE, INTERVAL_BOWL_FUNDAMENTAL_HZ, 6.0),
)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit mono PCM WAV, the one format pydub reads without ffmpeg."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def make_sounds(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write every asset into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (name, fundamental_hz, length_s) in enumerate(ASSETS):
        rng = np.random.default_rng([SEED, index])
        bowl = singing_bowl(seconds_to_samples(length_s), rng, fundamental_hz)
        bowl *= np.float32(10 ** (PEAK_DBFS / 20) / np.max(np.abs(bowl)))
        write_wav(out_dir / name, bowl)
        written.append(out_dir / name)
    return written


if __name__ == "__main__":
    for path in make_sounds():
        print(f"wrote {path}")
