"""Synthesis: breath guides, the singing bowl and ambient beds, as samples.

Input: what to sound and for how many samples (callers convert seconds with
``seconds_to_samples`` from an absolute start, so nothing drifts). Output: ``samples:
np.ndarray``, float32, 1-D mono, values in [-1, 1], at ``SAMPLE_RATE``. Randomness comes in as
an explicit ``rng: np.random.Generator``; the same generator state gives the same samples.

Sound files (a user's bell or ambient bed, and the bowls shipped in ``sounds/``) are read in
``sounds``; the session rate, fades and resampling are ``audio``'s.

Every filter is numpy's (``audio``): scipy is the tests' reference, not a dependency.
"""

from __future__ import annotations

import numpy as np

from .audio import (
    SAMPLE_RATE,
    apply_fades,
    butter_band_pass_response,
    iir_impulse_response,
    raised_cosine,
    seconds_to_samples,
)
from .breath import TOP_UP
from .loudness import BUTTERWORTH_Q, biquad
from .once import made_once
from .routine import AMBIENT_KINDS

# -- breath guide ---------------------------------------------------------------------------
BREATH_SOUNDS = ("tone", "noise", "none")
DEFAULT_BREATH_SOUND = "tone"
GUIDE_LOW_HZ = 220.0
GUIDE_HIGH_HZ = 330.0  # a fifth above: the glide is heard as a clear rise or fall
GUIDE_TOP_UP_HZ = GUIDE_HIGH_HZ * 9 / 8  # a double inhale's second sip rises a whole tone more
# Levels before mastering. The voice measures about -26 LUFS; the tone peaks here at -30 dBFS
# and measures about 10 LU under the voice: plain to follow, never competing with the words.
# Quiet enough, too, that a long breathing part barely moves the session's gated loudness.
GUIDE_PEAK = 0.032
HOLD_LEVEL = 0.3  # a held breath keeps a faint, steady tone: "stay here"
TICK_LEVEL = 0.5  # relative to GUIDE_PEAK: a soft wooden tick marks the start of a hold
NOISE_DARK_BAND_HZ = (150.0, 900.0)
NOISE_BRIGHT_BAND_HZ = (900.0, 3500.0)
NOISE_RMS = 0.017  # at the swell's plateau: the noise guide measures as loud as the tone
NOISE_POOL_S = 30.0
NOISE_POOL_SEED = 4_099  # the pool is fixed; --seed picks where each breath takes from it

# -- singing bowl ---------------------------------------------------------------------------
BOWL_FUNDAMENTAL_HZ = 196.0
INTERVAL_BOWL_FUNDAMENTAL_HZ = 392.0  # a smaller, higher bowl marks time inside a part
# Thin-shell (singing bowl) partial ratios, decay times, levels, and the detune of each
# partial's twin that gives a real bowl its slow beating.
BOWL_RATIOS = (1.0, 2.828, 5.423, 8.771, 12.866)
BOWL_DECAYS_S = (30.0, 14.0, 7.0, 4.0, 2.5)
BOWL_AMPLITUDES = (1.0, 0.55, 0.32, 0.16, 0.08)
BOWL_DETUNES_HZ = (0.7, 1.3, 2.1, 2.9, 3.7)
BOWL_STRIKE_S = 0.004
BOWL_ATTACK_S = 0.002
BOWL_PEAK = 0.3  # as synthesized; mix.BELL_PEAK sets where a bell sits in the mix
BELL_FADE_OUT_FRACTION = 0.3  # the last 30% of a ring fades to silence

# -- ambient bed ----------------------------------------------------------------------------
AMBIENT_LOOP_S = 30.0  # long enough that a loop of noise is not heard repeating
AMBIENT_HIGHPASS_HZ = 40.0  # below this a phone speaker plays nothing, it only eats headroom
DRONE_PARTIALS_HZ = (110.0, 165.0, 220.0, 277.5, 330.0)  # A2, E3, A3, C#4, E4: soft A major
DRONE_LEVELS = (1.0, 0.6, 0.45, 0.18, 0.25)
DRONE_SWELLS_PER_LOOP = (2, 3, 5, 4, 7)  # slow, unsynchronised swells of each partial


# ---------------------------------------------------------------------------------------------
# Breath guides


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
    A little second and third harmonic makes it warmer than a bare sine. Peak about 1.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(n, dtype=np.float64) / max(n - 1, 1)
    freq = start_hz * (end_hz / start_hz) ** t
    phase = 2.0 * np.pi * np.cumsum(freq) / sample_rate
    wave = np.sin(phase) + 0.12 * np.sin(2 * phase) + 0.04 * np.sin(3 * phase)
    return (wave / 1.16).astype(np.float32)


def tick(n: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A soft wooden tick at the start of ``n`` samples: two damped partials, 1 ms attack.

    Peak about 1; silent after the first 60 ms.
    """
    out = np.zeros(max(n, 0), dtype=np.float32)
    length = min(out.shape[0], int(0.06 * sample_rate))
    if length == 0:
        return out
    t = np.arange(length, dtype=np.float64) / sample_rate
    burst = 0.7 * np.sin(2 * np.pi * 1400.0 * t) * np.exp(-t / 0.012)
    burst += 0.3 * np.sin(2 * np.pi * 2350.0 * t) * np.exp(-t / 0.006)
    burst[: int(0.001 * sample_rate)] *= raised_cosine(int(0.001 * sample_rate))
    # End at exactly zero so the tick never leaves a step behind it.
    burst[-int(0.01 * sample_rate) :] *= raised_cosine(int(0.01 * sample_rate))[::-1]
    out[:length] = burst
    return out


def colored_noise(
    n: int, rng: np.random.Generator, exponent: float = 1.0, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (1: pink, 2: brown), unit RMS, ``n`` samples.

    Shaped in the frequency domain, so the result is exactly periodic: played in a loop it has
    no seam. Nothing below AMBIENT_HIGHPASS_HZ.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs_hz = np.fft.rfftfreq(n, 1.0 / sample_rate)
    shape = np.zeros_like(freqs_hz)
    audible = freqs_hz >= AMBIENT_HIGHPASS_HZ
    shape[audible] = freqs_hz[audible] ** (-exponent / 2.0)
    noise = np.fft.irfft(spectrum * shape, n)
    rms = float(np.sqrt(np.mean(noise**2))) or 1.0
    return (noise / rms).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise of ``n`` samples, unit RMS, seamless when looped."""
    return colored_noise(n, rng, 1.0)


@made_once(maxsize=1)
def _noise_bands() -> tuple[np.ndarray, np.ndarray]:
    """The dark and bright bands of one loop of pink noise, each seamless when looped; made
    once per process, however many tracks' workers ask for them at once (once.py).

    Filtering once and taking stretches from random places is 20x faster than filtering new
    noise for every breath, and a 30 s pool is not heard repeating under a breath's swell.
    Each band is the second-order Butterworth band pass's settled output, with no start-up in
    it: the pool repeats, so that is its spectrum times the filter's frequency response at
    the pool's bins (what filtering two periods and keeping the second gave, to rounding).
    """
    pool = pink_noise(seconds_to_samples(NOISE_POOL_S), np.random.default_rng(NOISE_POOL_SEED))
    n = pool.shape[0]
    spectrum = np.fft.rfft(pool.astype(np.float64))
    del pool
    bands = []
    for low_hz, high_hz in (NOISE_DARK_BAND_HZ, NOISE_BRIGHT_BAND_HZ):
        response = butter_band_pass_response(low_hz, high_hz, n, SAMPLE_RATE)
        response *= spectrum
        band = np.fft.irfft(response, n).astype(np.float32)
        del response
        band.setflags(write=False)
        bands.append(band)
    return bands[0], bands[1]


def breath_guide(
    phase: str,
    n: int,
    sound: str,
    rng: np.random.Generator | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """The guide sound for one breath phase (inhale, hold, exhale, rest) of ``n`` samples.

    ``tone``: rises from 220 to 330 Hz through the inhale and falls back through the exhale; a
    hold keeps its pitch, faint, after a soft tick. ``noise``: breath-like band-passed pink
    noise, brighter on the inhale and darker on the exhale; a hold is a tick and quiet. Every
    phase swells in and fades to silence, so phases join without clicks. The tone uses no
    randomness; ``rng`` feeds the noise (and must be given for it).
    """
    if sound not in BREATH_SOUNDS:
        raise ValueError(f"breath sound must be one of {BREATH_SOUNDS}, not {sound!r}")
    if sound == "none" or n <= 0:
        return np.zeros(max(n, 0), dtype=np.float32)
    holding = phase not in ("inhale", TOP_UP, "exhale")
    if sound == "tone":
        if phase == "inhale":
            out = glide_tone(n, GUIDE_LOW_HZ, GUIDE_HIGH_HZ, sample_rate)
            out *= breath_envelope(n, 0.3, 0.35)
        elif phase == TOP_UP:  # a second, short sip: on up from where the inhale ended
            out = glide_tone(n, GUIDE_HIGH_HZ, GUIDE_TOP_UP_HZ, sample_rate)
            out *= breath_envelope(n, 0.3, 0.35)
        elif phase == "exhale":
            out = glide_tone(n, GUIDE_HIGH_HZ, GUIDE_LOW_HZ, sample_rate)
            out *= breath_envelope(n, 0.2, 0.45)
        else:
            pitch_hz = GUIDE_HIGH_HZ if phase == "hold" else GUIDE_LOW_HZ
            out = glide_tone(n, pitch_hz, pitch_hz, sample_rate) * np.float32(HOLD_LEVEL)
            out *= breath_envelope(n, 0.15, 0.3)
    elif holding:
        out = np.zeros(n, dtype=np.float32)
    else:
        # A stretch of the pre-filtered noise from a place the generator picks.
        if rng is None:
            raise ValueError("the noise breath sound needs a random generator")
        dark, bright = _noise_bands()
        start = int(rng.integers(dark.shape[0]))
        inhaling = phase in ("inhale", TOP_UP)
        bright_weight = np.float32(0.75 if inhaling else 0.2)
        out = bright_weight * loop_span(bright, start, n)
        out += (1 - bright_weight) * loop_span(dark, start, n)
        rms = float(np.sqrt(np.mean(np.square(out, dtype=np.float64)))) or 1.0
        out *= np.float32(NOISE_RMS / rms)
        if inhaling:
            out *= breath_envelope(n, 0.4, 0.35)
        else:
            out *= breath_envelope(n, 0.15, 0.55)
        return out
    if holding:
        out += np.float32(TICK_LEVEL) * tick(n, sample_rate)
    return (out * np.float32(GUIDE_PEAK)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Singing bowl


def singing_bowl(
    n: int,
    rng: np.random.Generator,
    fundamental_hz: float = BOWL_FUNDAMENTAL_HZ,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """A struck singing bowl ringing for ``n`` samples, peak BOWL_PEAK, silent at the end.

    Inharmonic thin-shell partials, each with its own decay, each doubled with a slight
    detune for the slow beating of a real bowl; a soft felt-mallet strike of a few
    milliseconds (low-passed noise), a 2 ms attack so the onset does not click, and a fade
    over the last 30% so a short ring ends in silence rather than a cut.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(n, dtype=np.float64) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    for ratio, decay_s, amp, detune_hz in zip(
        BOWL_RATIOS, BOWL_DECAYS_S, BOWL_AMPLITUDES, BOWL_DETUNES_HZ, strict=True
    ):
        freq_hz = fundamental_hz * ratio
        if freq_hz + detune_hz > sample_rate * 0.45:
            continue
        phases = rng.uniform(0, 2 * np.pi, size=2)
        partial = np.sin(2 * np.pi * freq_hz * t + phases[0])
        partial += np.sin(2 * np.pi * (freq_hz + detune_hz) * t + phases[1])
        out += 0.5 * amp * np.exp(-t / decay_s) * partial
    strike_n = min(n, int(BOWL_STRIKE_S * sample_rate))
    strike = rng.standard_normal(strike_n) * np.hanning(strike_n + 2)[1:-1]
    mallet_pass = biquad("low_pass", 0.0, BUTTERWORTH_Q, 2500.0, sample_rate)
    mallet = iir_impulse_response(mallet_pass[None, :], strike_n)
    out[:strike_n] += 0.3 * np.convolve(strike, mallet)[:strike_n]
    out *= BOWL_PEAK / (np.max(np.abs(out)) or 1.0)
    samples = out.astype(np.float32)
    return apply_fades(samples, int(BOWL_ATTACK_S * sample_rate), int(n * BELL_FADE_OUT_FRACTION))


def fit_ring(sound: np.ndarray, n: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A bell sound cut or padded to ``n`` samples, starting and ending in silence (a new
    array): a user's file may begin or end mid-wave, and a step there is a click."""
    out = np.zeros(max(n, 0), dtype=np.float32)
    m = min(out.shape[0], sound.shape[0])
    out[:m] = sound[:m]
    # Cut short: fade the cut over its last 30%, as singing_bowl does; else a few ms.
    fade_out = int(m * BELL_FADE_OUT_FRACTION) if sound.shape[0] > m else int(0.005 * sample_rate)
    apply_fades(out[:m], int(BOWL_ATTACK_S * sample_rate), fade_out)  # in place, in out
    return out


# ---------------------------------------------------------------------------------------------
# Ambient beds


def ambient_loop(
    kind: str, rng: np.random.Generator, n: int | None = None, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """One seamless loop of an ambient bed (pink, brown or drone), unit RMS.

    ``n`` defaults to AMBIENT_LOOP_S. Every component is periodic in ``n`` samples, so the
    loop repeats without a seam.
    """
    n = seconds_to_samples(AMBIENT_LOOP_S, sample_rate) if n is None else n
    if kind == "pink":
        return colored_noise(n, rng, 1.0, sample_rate)
    if kind == "brown":
        return colored_noise(n, rng, 2.0, sample_rate)
    if kind == "drone":
        loop_s = n / sample_rate
        # Each partial is a pair of sines, twins a slow whole number of beats apart, swelling
        # (0.65 + 0.35 sin) a whole number of times a loop: a sum of a few sinusoids of whole
        # cycles per loop, made as their spectrum and one inverse FFT (a quarter of the time of
        # their samples one by one, the same to rounding).
        spectrum = np.zeros(n // 2 + 1, dtype=np.complex128)
        for freq_hz, level, swells in zip(
            DRONE_PARTIALS_HZ, DRONE_LEVELS, DRONE_SWELLS_PER_LOOP, strict=True
        ):
            cycles = round(freq_hz * loop_s)
            low, high, swell = rng.uniform(0, 2 * np.pi, size=3)
            # level (0.65 + 0.35 sin(S)) (sin(L) + sin(H)), with sin x sin y = (cos(x - y) -
            # cos(x + y)) / 2 and sin x = cos(x - pi/2).
            for m, amplitude, phase in (
                (cycles, 0.65, low - np.pi / 2),
                (cycles + swells, 0.65, high - np.pi / 2),
                (swells - cycles, 0.175, swell - low),
                (swells + cycles, -0.175, swell + low),
                (-cycles, 0.175, swell - high),
                (2 * swells + cycles, -0.175, swell + high),
            ):
                _add_cosine(spectrum, n, m, level * amplitude, phase)
        out = np.fft.irfft(spectrum, n)
        # A breath of dark air under the chord.
        air = colored_noise(n, rng, 2.0, sample_rate).astype(np.float64)
        out += 0.15 * air * float(np.sqrt(np.mean(out**2)))
        rms = float(np.sqrt(np.mean(out**2))) or 1.0
        return (out / rms).astype(np.float32)
    raise ValueError(f"ambient kind must be one of {AMBIENT_KINDS[1:]}, not {kind!r}")


def _add_cosine(spectrum: np.ndarray, n: int, m: int, amplitude: float, phase: float) -> None:
    """Add ``amplitude * cos(2 pi m k / n + phase)``, k the sample, to the ``n``-point real
    spectrum ``spectrum`` (``np.fft.irfft(spectrum, n)`` then holds it), for any whole ``m``."""
    m %= n
    if m > n - m:  # cos(2 pi (n - m) k / n - phase), the same samples
        m, phase = n - m, -phase
    if m == 0 or 2 * m == n:
        spectrum[m] += amplitude * n * np.cos(phase)
    else:
        spectrum[m] += amplitude * n / 2 * np.exp(1j * phase)


def loop_span(loop: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` samples of ``loop`` played forever, from absolute sample ``start`` (a new array).

    Indexing by absolute position means consecutive tracks continue the same bed.
    """
    size = loop.shape[0]
    out = np.empty(n, dtype=np.float32)
    offset = start % size
    done = min(n, size - offset)
    out[:done] = loop[offset : offset + done]
    while done < n:
        step = min(size, n - done)
        out[done : done + step] = loop[:step]
        done += step
    return out
