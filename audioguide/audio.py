"""Audio basics every stage shares: the session rate, seconds to samples, fades, dB, resampling.

Input and output are ``samples: np.ndarray``, float32, 1-D mono, values in [-1, 1], at
``SAMPLE_RATE`` unless a rate is given. Nothing here knows about routines, tracks or files.

The resampler is polyphase with a steep anti-aliasing low-pass (a Kaiser-windowed FIR through
scipy's ``resample_poly``): scipy's default filter passes the image of a 10 kHz tone at -20 dB,
this one at about -80 dB. ``resample`` takes a whole signal; ``resample_blocks`` takes it a
block at a time, for recordings too long to hold, and gives the same samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from math import gcd

import numpy as np

SAMPLE_RATE = 44_100

# The resampler's low-pass: scipy's default (41 taps for 22.05 -> 44.1 kHz) passes the image of
# a 10 kHz tone at -20 dB; 65 taps cut at 0.9 of the engine's Nyquist with a Kaiser window of
# beta 8 take it to -79 dB, for 60% more time (0.2 s per minute of speech here).
RESAMPLE_TAPS_PER_PHASE = 32
RESAMPLE_CUTOFF = 0.9
RESAMPLE_KAISER_BETA = 8.0
RESAMPLE_BLOCK = 1 << 16  # input samples per step of resample_blocks, about 1.5 s


def seconds_to_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    return round(seconds * sample_rate)


def db_to_gain(gain_db: float) -> float:
    """-6 dB is 0.5011872."""
    return float(10 ** (gain_db / 20))


@lru_cache(maxsize=256)
def raised_cosine(n: int) -> np.ndarray:
    """A rising half-cosine of ``n`` samples, from 0 to 1 (exclusive of both ends).

    Read-only and cached: a session fades with a handful of lengths, thousands of times.
    """
    x = (np.arange(max(n, 0), dtype=np.float64) + 0.5) / max(n, 1)
    ramp = (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)
    ramp.setflags(write=False)
    return ramp


def apply_fades(
    samples: np.ndarray, fade_in: int, fade_out: int, *, start: int = 0, length: int | None = None
) -> np.ndarray:
    """Raised-cosine fade in over ``fade_in`` samples and out over ``fade_out``, in place.

    ``samples`` may be a part of a longer signal: its samples ``start`` onward, of ``length``
    in all (default: the part is the whole). The part gets the stretch of each fade that falls
    in it, so fading the parts one by one is fading the whole.
    """
    end = start + samples.shape[0]
    length = end if length is None else length
    fade_in = min(fade_in, length)
    fade_out = min(fade_out, length)
    if start < fade_in:
        stop = min(fade_in, end)
        samples[: stop - start] *= raised_cosine(fade_in)[start:stop]
    out_from = length - fade_out
    first = max(out_from, start)
    if first < end:
        samples[first - start :] *= raised_cosine(fade_out)[::-1][first - out_from : end - out_from]
    return samples


@lru_cache(maxsize=8)
def _resampler(up: int, down: int) -> np.ndarray:
    from scipy import signal

    factor = max(up, down)
    taps = RESAMPLE_TAPS_PER_PHASE * factor + 1
    return signal.firwin(taps, RESAMPLE_CUTOFF / factor, window=("kaiser", RESAMPLE_KAISER_BETA))


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling with a steep anti-aliasing low-pass; float32 out."""
    from scipy import signal

    g = gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    out = signal.resample_poly(samples, up, down, window=_resampler(up, down))
    return out.astype(np.float32)


def resample_blocks(
    blocks: Iterable[np.ndarray], up: int, down: int, block: int = RESAMPLE_BLOCK
) -> Iterator[np.ndarray]:
    """``resample_poly(x, up, down)`` with the steep filter, for ``x`` given as consecutive
    1-D blocks of any sizes; yields the output (float64) in blocks.

    Each step filters ``block`` input samples (a whole number of ``down``s, so the output
    starts on a whole sample) with enough of their neighbours either side that no output
    sample sees the cut; joined, the blocks are the signal resampled whole (to rounding).
    Memory follows ``block``, not the signal.
    """
    if up == down:
        for x in blocks:
            yield np.asarray(x, dtype=np.float64)
        return
    from scipy import signal  # only to resample: a sound at the session rate needs none

    window = _resampler(up, down)
    step = down * max(1, -(-block // down))
    # The filter reaches half its length either side of an output sample, in the upsampled
    # domain: that many input samples, and a few more, rounded up to whole downs.
    reach = (window.shape[0] // 2) // up + 2
    context = down * -(-reach // down)
    pending = np.zeros(0, dtype=np.float64)  # input samples from pending_start on
    pending_start = 0
    start = 0  # the input sample whose output comes next: a multiple of down
    for x in blocks:
        pending = np.concatenate((pending, np.asarray(x, dtype=np.float64)))
        while pending_start + pending.shape[0] >= start + step + context:
            lo = max(start - context, 0)
            piece = pending[lo - pending_start : start + step + context - pending_start]
            y = signal.resample_poly(piece, up, down, window=window)
            first = (start - lo) // down * up
            yield y[first : first + step // down * up]
            start += step
            drop = max(start - context, 0) - pending_start
            pending = pending[drop:]
            pending_start += drop
    total = pending_start + pending.shape[0]
    n_out = -(-total * up // down)
    while start < total:
        lo = max(start - context, 0)
        y = signal.resample_poly(pending[lo - pending_start :], up, down, window=window)
        first = (start - lo) // down * up
        out_start = start // down * up
        yield y[first : first + min(step // down * up, n_out - out_start)]
        start += step
