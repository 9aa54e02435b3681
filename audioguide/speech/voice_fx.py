"""The voice effect: levelled speech in, speech as it is mixed out (float32 mono, any rate:
speech/cues.py runs it at the engine's, before resampling).

The voice chain (``voice_effect("warm")``, on by default) makes synthetic speech easier to
listen to: a gentle cut of the harsh upper mids, a touch of low warmth, a soft saturation and a
smooth peak limiter that round the sharpest peaks, and a short, quiet room. Its reverb tail
rings on after the spoken length, into the pause that follows.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from math import gcd

import numpy as np

from ..audio import (
    SAMPLE_RATE,
    FixedKernel,
    _polyphase,
    apply_fades,
    fft_convolve,
    iir_impulse_response,
    sosfilt,
)
from ..dynamics import limit
from ..loudness import BUTTERWORTH_Q, biquad, with_subnormal_guard
from ..once import made_once

EDGE_FADE_S = 0.008
# Voice peaks held to 10 dB over the voiced level (-10 dBFS at SPEECH_RMS, about 15 dB over
# the voice's loudness): espeak's raw peaks stand 18 dB over its loudness, which a
# sparse session's master gain would drive into the master limiter. Held here, per cue, the
# master limiter has little left to do and the session measures what the master gain aimed at.
VOICE_PEAK_OVER_RMS_DB = 10.0


VOICE_FX = ("warm", "none")
DEFAULT_VOICE_FX = "warm"
# RBJ biquads (filter type, gain dB, Q, corner Hz), applied in order.
VOICE_EQ = (
    ("high_pass", 0.0, 0.707, 70.0),  # rumble and DC out
    ("low_shelf", 2.0, 0.707, 220.0),  # a touch of chest: warmth
    ("peaking", -3.5, 0.9, 3000.0),  # the buzzy upper mids of formant synthesis
    ("high_shelf", -2.0, 0.707, 7000.0),  # fizz
)
SATURATION_DRIVE = 2.0  # tanh(drive * x) / drive: linear at speaking level, rounds the peaks
ROOM_RT60_S = 0.35  # a small furnished room
ROOM_LENGTH_S = 0.4  # the tail is 69 dB down by here; cut and faded
ROOM_PREDELAY_S = 0.012
ROOM_EARLY_TAPS = ((0.007, 0.5), (0.011, -0.35), (0.017, 0.28), (0.023, -0.2))  # (s, gain)
ROOM_LOWPASS_HZ = 4000.0  # soft furnishings swallow the highs
ROOM_WET_DB = -17.0  # energy of the room relative to the dry voice: felt more than heard
ROOM_SEED = 1_411  # one fixed room: the voice sounds the same whatever --seed is


def equalize(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The voice chain's EQ (VOICE_EQ), float32, in numpy (audio.sosfilt).

    Guarded: the filter's state would otherwise decay into subnormal floats in every pause
    after a sound, which some CPUs compute 40 times slower (loudness.with_subnormal_guard).
    """
    return sosfilt(_voice_eq(sample_rate), with_subnormal_guard(samples))


@lru_cache(maxsize=4)
def _voice_eq(sample_rate: int) -> np.ndarray:
    return np.array([biquad(*section, sample_rate) for section in VOICE_EQ])


@lru_cache(maxsize=4)
def room_impulse(sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The short room the voice is heard in: an impulse response, float64.

    Exponentially decaying, low-passed noise after a few early reflections; its energy is
    ROOM_WET_DB relative to the direct sound, which it does not contain. One room, made at
    the session's rate: at another rate (the engine's, where the chain runs) it is that room
    resampled, scaled so that it colours a voice the same.
    """
    if sample_rate != SAMPLE_RATE:
        g = gcd(SAMPLE_RATE, sample_rate)
        room = _polyphase(room_impulse(SAMPLE_RATE), sample_rate // g, SAMPLE_RATE // g, exact=True)
        return room * (SAMPLE_RATE / sample_rate)
    rng = np.random.default_rng(ROOM_SEED)
    n = round(ROOM_LENGTH_S * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    tail = rng.standard_normal(n) * 10 ** (-3.0 * t / ROOM_RT60_S)  # -60 dB at RT60
    tail[: round(ROOM_PREDELAY_S * sample_rate)] = 0.0
    for delay_s, gain in ROOM_EARLY_TAPS:
        tail[round(delay_s * sample_rate)] += gain * 4.0
    # Low-passed from the first reflection on: before it the room stays exactly silent.
    first = int(np.flatnonzero(tail)[0])
    soft_pass = biquad("low_pass", 0.0, BUTTERWORTH_Q, ROOM_LOWPASS_HZ, sample_rate)
    soft = iir_impulse_response(soft_pass[None, :], n - first)
    tail[first:] = fft_convolve(tail[first:], soft)[: n - first]
    fade = n // 5
    tail[n - fade :] *= np.cos(0.5 * np.pi * (np.arange(fade) + 0.5) / fade)
    energy = float(np.sum(tail**2))
    return tail * np.sqrt(10 ** (ROOM_WET_DB / 10) / energy)


@made_once(maxsize=4)
def _room(sample_rate: int) -> FixedKernel:
    """The room's impulse response, float32, transformed once for every cue (37 ms of CPU:
    made once however many threads preparing cues ask for it at once)."""
    return FixedKernel(room_impulse(sample_rate).astype(np.float32))


def voiced_rms(x: np.ndarray) -> float:
    """RMS over the voiced part: samples within 26 dB of the peak."""
    if x.size == 0:
        return 0.0
    magnitude = np.abs(x)  # once: a cue is measured three times on its way
    voiced = x[magnitude > float(magnitude.max()) * 0.05].astype(np.float64)
    return float(np.sqrt(np.mean(np.square(voiced, out=voiced)))) if voiced.size else 0.0


def warm_voice(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The voice chain: EQ, soft saturation and a short room; float32, longer by the tail.

    The voiced level is kept as it came in, so the chain changes the colour, not the balance
    against the breath guide and bells.
    """
    if samples.size == 0:
        return samples.astype(np.float32)
    # float32 throughout: tanh and the FFTs run 1.5 to 4 times faster than in float64, and the
    # result is written as 16-bit audio anyway.
    dry = samples.astype(np.float32)
    level = voiced_rms(dry)
    x = equalize(dry, sample_rate)
    x = np.tanh(np.float32(SATURATION_DRIVE) * x) / np.float32(SATURATION_DRIVE)
    shaped = voiced_rms(x)
    if shaped > 0:
        x *= np.float32(level / shaped)
        ceiling = level * 10 ** (VOICE_PEAK_OVER_RMS_DB / 20)
        x = limit(x, ceiling, sample_rate, oversample=False, in_place=True)
    out = _room(sample_rate).convolve(x)
    out[: x.shape[0]] += x
    # The room's tail ends at zero by construction; the fade keeps the last sample exact.
    edge = int(EDGE_FADE_S * sample_rate)
    return apply_fades(out, edge, edge)


def voice_effect(name: str) -> Callable[[np.ndarray, int], np.ndarray] | None:
    """The effect for ``--voice-fx NAME``: ``warm`` (the chain) or ``none`` (dry)."""
    if name == "none":
        return None
    if name == "warm":
        return warm_voice
    raise ValueError(f"voice effect must be one of {VOICE_FX}, not {name!r}")
