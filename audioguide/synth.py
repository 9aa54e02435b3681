"""Synthesis: breath guides, the singing bowl, and fades, made from numpy.

Every function returns ``samples: np.ndarray``, float32, 1-D mono, values in [-1, 1], at
``SAMPLE_RATE``; lengths are given in samples so callers place them without rounding drift.
Randomness comes in as an explicit ``rng: np.random.Generator``.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

SAMPLE_RATE = 44_100

GUIDE_LOW_HZ = 220.0
GUIDE_HIGH_HZ = 330.0
GUIDE_PEAK = 0.07  # about -23 dBFS: clearly under a voice levelled to -20 dBFS RMS
BELL_PEAK = 0.35
BOWL_FUNDAMENTAL_HZ = 196.0
# Thin-shell (singing bowl) partial ratios and their decay times.
BOWL_RATIOS = (1.0, 2.828, 5.423, 8.771, 12.866)
BOWL_DECAYS_S = (30.0, 14.0, 7.0, 4.0, 2.5)
BOWL_AMPLITUDES = (1.0, 0.55, 0.32, 0.16, 0.08)
BOWL_DETUNES_HZ = (0.7, 1.3, 2.1, 2.9, 3.7)

BREATH_SOUNDS = ("tone", "noise", "none")


def seconds_to_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    return round(seconds * sample_rate)


def raised_cosine(n: int) -> np.ndarray:
    """A rising half-cosine of ``n`` samples, from 0 to 1 (exclusive of both ends)."""
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    x = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)


def apply_fades(samples: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    """Raised-cosine fade in over ``fade_in`` samples and out over ``fade_out``, in place."""
    n = samples.shape[0]
    fade_in = min(fade_in, n)
    fade_out = min(fade_out, n)
    if fade_in:
        samples[:fade_in] *= raised_cosine(fade_in)
    if fade_out:
        samples[n - fade_out :] *= raised_cosine(fade_out)[::-1]
    return samples


def breath_envelope(
    n: int, attack_fraction: float = 0.3, release_fraction: float = 0.35
) -> np.ndarray:
    """A swell for one breath phase: a slow rise, a plateau, and a fall to silence at the end."""
    env = np.ones(n, dtype=np.float32)
    return apply_fades(env, int(n * attack_fraction), int(n * release_fraction))


def glide_tone(
    n: int, start_hz: float, end_hz: float, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """A soft tone gliding exponentially from ``start_hz`` to ``end_hz`` over ``n`` samples.

    The phase is accumulated from the running frequency, so the glide has no discontinuity.
    A little second and third harmonic makes it warmer than a bare sine.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(n, dtype=np.float64) / max(n - 1, 1)
    freq = start_hz * (end_hz / start_hz) ** t
    phase = 2.0 * np.pi * np.cumsum(freq) / sample_rate
    wave = np.sin(phase) + 0.12 * np.sin(2 * phase) + 0.04 * np.sin(3 * phase)
    return (wave / 1.16).astype(np.float32)


def tick(n: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A soft wooden tick: a damped 1.2 kHz burst of a few tens of milliseconds."""
    length = min(n, int(0.04 * sample_rate))
    t = np.arange(length, dtype=np.float64) / sample_rate
    out = np.zeros(n, dtype=np.float32)
    burst = np.sin(2 * np.pi * 1200 * t) * np.exp(-t / 0.008)
    burst *= raised_cosine(length).astype(np.float64) ** 0.1
    out[:length] = burst.astype(np.float32)
    return out


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise of ``n`` samples (spectral shaping of white noise), scaled to unit RMS."""
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    spectrum /= np.sqrt(freqs)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    rms = float(np.sqrt(np.mean(noise**2))) or 1.0
    return (noise / rms).astype(np.float32)


_DARK_SOS = signal.butter(2, (150.0, 900.0), btype="bandpass", fs=SAMPLE_RATE, output="sos")
_BRIGHT_SOS = signal.butter(2, (900.0, 3500.0), btype="bandpass", fs=SAMPLE_RATE, output="sos")


def breath_guide(
    phase: str, n: int, sound: str, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """The guide sound for one breath phase of ``n`` samples.

    ``tone``: rises from 220 to 330 Hz through the inhale and falls back through the exhale; a
    hold keeps its pitch, quieter, after a soft tick. ``noise``: breath-like filtered noise,
    brighter on the inhale and darker on the exhale. Both swell in and fade to silence, so
    phases join without clicks.
    """
    if sound == "none" or n <= 0:
        return np.zeros(max(n, 0), dtype=np.float32)
    if sound == "tone":
        if phase == "inhale":
            out = glide_tone(n, GUIDE_LOW_HZ, GUIDE_HIGH_HZ, sample_rate)
            out *= breath_envelope(n)
        elif phase == "exhale":
            out = glide_tone(n, GUIDE_HIGH_HZ, GUIDE_LOW_HZ, sample_rate)
            out *= breath_envelope(n, 0.2, 0.45)
        else:
            pitch = GUIDE_HIGH_HZ if phase == "hold" else GUIDE_LOW_HZ
            out = glide_tone(n, pitch, pitch, sample_rate) * 0.35
            out *= breath_envelope(n, 0.15, 0.3)
            out += 0.6 * tick(n, sample_rate)
        return (out * GUIDE_PEAK).astype(np.float32)
    if sound == "noise":
        if phase in ("hold", "rest"):
            return (0.6 * GUIDE_PEAK * tick(n, sample_rate)).astype(np.float32)
        noise = pink_noise(n, rng).astype(np.float64)
        dark = signal.sosfilt(_DARK_SOS, noise)
        bright = signal.sosfilt(_BRIGHT_SOS, noise)
        bright_weight = 0.7 if phase == "inhale" else 0.25
        mix = bright_weight * bright + (1.0 - bright_weight) * dark
        peak = float(np.max(np.abs(mix))) or 1.0
        out = (mix / peak).astype(np.float32)
        out *= breath_envelope(n, 0.35, 0.4) if phase == "inhale" else breath_envelope(n, 0.15, 0.5)
        return (out * GUIDE_PEAK * 1.3).astype(np.float32)
    raise ValueError(f"breath sound must be one of {BREATH_SOUNDS}, not {sound!r}")


def singing_bowl(
    n: int,
    rng: np.random.Generator,
    fundamental_hz: float = BOWL_FUNDAMENTAL_HZ,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """A struck singing bowl ringing for ``n`` samples and faded to silence by the end.

    Inharmonic thin-shell partials, each with its own decay, each doubled with a slight
    detune for the slow beating of a real bowl; a soft mallet strike of a few milliseconds.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(n, dtype=np.float64) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    for ratio, decay, amp, detune in zip(
        BOWL_RATIOS, BOWL_DECAYS_S, BOWL_AMPLITUDES, BOWL_DETUNES_HZ, strict=True
    ):
        freq = fundamental_hz * ratio
        if freq > sample_rate * 0.45:
            continue
        phases = rng.uniform(0, 2 * np.pi, size=2)
        partial = np.sin(2 * np.pi * freq * t + phases[0])
        partial += np.sin(2 * np.pi * (freq + detune) * t + phases[1])
        out += 0.5 * amp * np.exp(-t / decay) * partial
    strike_n = min(n, int(0.004 * sample_rate))
    strike = rng.standard_normal(strike_n) * np.exp(-np.arange(strike_n) / (strike_n / 4 + 1))
    out[:strike_n] += 0.15 * strike
    out *= BELL_PEAK / (np.max(np.abs(out)) or 1.0)
    samples = out.astype(np.float32)
    apply_fades(samples, int(0.003 * sample_rate), int(n * 0.3))
    return samples
