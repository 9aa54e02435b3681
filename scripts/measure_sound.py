"""Measure a rendered session the way the sound tests do: decode every MP3 and report.

For each track: length, integrated loudness (BS.1770, pyloudnorm), sample peak, true peak
(4x oversampled, whole file), and the largest sample-to-sample step; then the session's
loudness over the tracks back to back. Needs the test extras (soundfile, pyloudnorm).

    python scripts/measure_sound.py audioguide-out/back-pain
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyloudnorm
import soundfile
from scipy import signal


def db(value: float) -> float:
    return 20 * np.log10(max(value, 1e-12))


def main(folder: Path) -> None:
    tracks = sorted(p for p in folder.glob("*.mp3") if not p.stem.endswith("(full)"))
    if not tracks:
        sys.exit(f"{folder}: no MP3 tracks; render a session first")
    decoded = []
    for path in tracks:
        samples, rate = soundfile.read(path, dtype="float32")
        decoded.append(samples)
        meter = pyloudnorm.Meter(rate)
        true_peak = np.max(np.abs(signal.resample_poly(samples.astype(np.float64), 4, 1)))
        print(
            f"{path.name:<45} {samples.shape[0] / rate:7.1f} s  "
            f"{meter.integrated_loudness(samples.astype(np.float64)):6.2f} LUFS  "
            f"peak {db(float(np.max(np.abs(samples)))):6.2f} dBFS  "
            f"true peak {db(float(true_peak)):6.2f} dBTP  "
            f"max step {float(np.max(np.abs(np.diff(samples)))):.3f}"
        )
    session = np.concatenate(decoded).astype(np.float64)
    loudness = pyloudnorm.Meter(rate).integrated_loudness(session)
    print(
        f"session: {loudness:.2f} LUFS on its one channel "
        f"({loudness + 3.01:.2f} LUFS stereo-equivalent)"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
