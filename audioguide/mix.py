"""Mix stage: timeline tracks and prepared sounds in, mastered track samples out.

Each track is mixed into one preallocated float32 buffer. An event's first sample is
``round(start_s * rate)`` counted from the session start, minus the track's own first sample,
so no rounding accumulates over a long session. Mastering is one gain for the whole session
(album gain, measured with the ITU-R BS.1770 gated loudness over every track's blocks) followed
by a true-peak limiter.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pyloudnorm.iirfilter import IIRfilter
from scipy import ndimage, signal

from .speech import Speech
from .synth import SAMPLE_RATE, breath_guide, seconds_to_samples, singing_bowl
from .timeline import Track

DEFAULT_LOUDNESS_LUFS = -16.0  # stereo-equivalent; a mono file is heard on both ears
MONO_OFFSET_DB = 3.0103  # a mono channel measures this much lower than its stereo equivalent
TRUE_PEAK_CEILING_DBTP = -1.5  # -1 dBTP target, with room for the MP3 encoder's overshoot
LIMITER_WINDOW_S = 0.02
BLOCK_S = 0.4
HOP_S = 0.1


@dataclass(frozen=True)
class MixSettings:
    """How tracks are made to sound. Defaults are the CLI's defaults."""

    breath_sound: str = "tone"
    bells: bool = True
    seed: int = 0
    loudness_lufs: float = DEFAULT_LOUDNESS_LUFS


def track_span(track: Track, sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(first sample, number of samples) of a track, counted from the session start."""
    first = seconds_to_samples(track.start_s, sample_rate)
    return first, seconds_to_samples(track.end_s, sample_rate) - first


def _add(buffer: np.ndarray, offset: int, samples: np.ndarray) -> None:
    end = min(buffer.shape[0], offset + samples.shape[0])
    if end > offset >= 0:
        buffer[offset:end] += samples[: end - offset]


@lru_cache(maxsize=64)
def _tone(phase: str, n: int) -> np.ndarray:
    # The tone guide has no randomness: every cycle at one tempo reuses the same phase sound.
    out = breath_guide(phase, n, "tone", np.random.default_rng(0))
    out.setflags(write=False)
    return out


def mix_track(track: Track, speech: Speech, settings: MixSettings) -> np.ndarray:
    """Mix one track, before mastering: float32 mono samples, silent where nothing happens."""
    first, n = track_span(track)
    buffer = np.zeros(n, dtype=np.float32)
    rng = np.random.default_rng([settings.seed, track.index])
    for event in track.events:
        offset = seconds_to_samples(event.start_s) - first
        length = seconds_to_samples(event.end_s) - seconds_to_samples(event.start_s)
        if event.kind == "say":
            assert event.text is not None
            _add(buffer, offset, speech.samples(event.text))
        elif event.kind == "breath":
            assert event.phase is not None
            if settings.breath_sound == "tone":
                _add(buffer, offset, _tone(event.phase, length))
            else:
                _add(buffer, offset, breath_guide(event.phase, length, settings.breath_sound, rng))
        elif event.kind == "bell" and settings.bells:
            _add(buffer, offset, singing_bowl(length, rng))
    return buffer


# ---------------------------------------------------------------------------------------------
# Loudness (ITU-R BS.1770-4), measured across tracks


@lru_cache(maxsize=4)
def _k_weighting(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    shelf = IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sample_rate, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
    return ((shelf.b, shelf.a), (high_pass.b, high_pass.a))


def block_powers(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mean square of the K-weighted signal in 400 ms blocks every 100 ms (BS.1770 eq. 1)."""
    x = samples.astype(np.float64)
    for b, a in _k_weighting(sample_rate):
        x = signal.lfilter(b, a, x)
    block, hop = round(BLOCK_S * sample_rate), round(HOP_S * sample_rate)
    if x.shape[0] < block:
        return np.zeros(0)
    cumulative = np.concatenate(([0.0], np.cumsum(x * x)))
    starts = np.arange(0, x.shape[0] - block + 1, hop)
    return (cumulative[starts + block] - cumulative[starts]) / block


def gated_loudness(powers: np.ndarray) -> float:
    """Integrated loudness in LUFS of one channel from its block powers (BS.1770 gating).

    Returns -inf for silence.
    """
    if powers.size == 0:
        return float("-inf")
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(powers)
    gated = powers[loudness > -70.0]
    if gated.size == 0:
        return float("-inf")
    relative = -0.691 + 10 * np.log10(gated.mean()) - 10.0
    gated = powers[(loudness > -70.0) & (loudness > relative)]
    return float(-0.691 + 10 * np.log10(gated.mean()))


def integrated_loudness(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    return gated_loudness(block_powers(samples, sample_rate))


# ---------------------------------------------------------------------------------------------
# True peak and limiting

OVERSAMPLE = 4
_CHUNK = 8192


def true_peak(samples: np.ndarray) -> float:
    """The 4x-oversampled peak (linear). Oversamples only the chunks that could matter.

    A band-limited signal's inter-sample peak stays within a few dB of its sample peak, so
    chunks whose sample peak is far below the loudest are skipped.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return 0.0
    n_chunks = -(-x.shape[0] // _CHUNK)
    padded = np.zeros(n_chunks * _CHUNK, dtype=np.float32)
    padded[: x.shape[0]] = np.abs(x)
    chunk_peaks = padded.reshape(n_chunks, _CHUNK).max(axis=1)
    sample_peak = float(chunk_peaks.max())
    if sample_peak == 0.0:
        return 0.0
    best = sample_peak
    for i in np.flatnonzero(chunk_peaks > sample_peak * 10 ** (-4 / 20)):
        lo = max(0, i * _CHUNK - 64)
        hi = min(x.shape[0], (i + 1) * _CHUNK + 64)
        up = signal.resample_poly(x[lo:hi].astype(np.float64), OVERSAMPLE, 1)
        best = max(best, float(np.max(np.abs(up))))
    return best


def limit(samples: np.ndarray, ceiling: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Bring the true peak of ``samples`` to at most ``ceiling`` (linear), smoothly.

    The gain needed at each sample is spread over a short window on both sides (a minimum
    filter, then a moving average of the same width, which never exceeds it), so the limiter
    anticipates peaks and releases without clicks. Returns a new array.
    """
    x = samples.astype(np.float32, copy=True)
    for _ in range(4):
        peak = true_peak(x)
        if peak <= ceiling:
            return x
        # Work on the oversampled envelope where it matters, approximated per sample by the
        # sample magnitude scaled by the measured overshoot.
        overshoot = peak / max(float(np.max(np.abs(x))), 1e-12)
        need = np.minimum(1.0, ceiling / np.maximum(np.abs(x) * overshoot, 1e-12))
        width = max(3, int(LIMITER_WINDOW_S * sample_rate)) | 1
        gain = ndimage.minimum_filter1d(need, width, mode="nearest")
        gain = ndimage.uniform_filter1d(gain, width, mode="nearest")
        x *= gain.astype(np.float32)
    return x


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


def master_gain_db(powers: list[np.ndarray], loudness_lufs: float, channels: int = 1) -> float:
    """The one gain (dB) that brings a session with these block powers to ``loudness_lufs``
    (stereo-equivalent). Zero for a silent session."""
    target = loudness_lufs - (MONO_OFFSET_DB if channels == 1 else 0.0)
    measured = gated_loudness(np.concatenate(powers) if powers else np.zeros(0))
    if not np.isfinite(measured):
        return 0.0
    return target - measured


def master(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """Apply the session gain and the true-peak limiter; float32, within [-1, 1]."""
    x = samples * np.float32(db_to_gain(gain_db))
    return limit(x, db_to_gain(TRUE_PEAK_CEILING_DBTP))
