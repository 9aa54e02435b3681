"""Audio basics every stage shares: the session rate, seconds to samples, fades, dB, resampling.

Input and output are ``samples: np.ndarray``, float32, 1-D mono, values in [-1, 1], at
``SAMPLE_RATE`` unless a rate is given. Nothing here knows about routines, tracks or files.

The resampler is polyphase with a steep anti-aliasing low-pass (a Kaiser-windowed FIR): scipy's
default filter passes the image of a 10 kHz tone at -20 dB, this one at about -80 dB. It is
scipy's ``resample_poly`` with that filter, rebuilt in numpy as one matrix product per block of
output, or for an awkward ratio each output phase with its own taps (tests/test_audio.py holds
both to scipy's samples): importing scipy.signal costs a second
of CPU, more than resampling every cue of a session. ``resample`` takes a whole signal;
``resample_blocks`` takes it a block at a time, for recordings too long to hold, and gives the
same samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


def fast_fft_length(n: int) -> int:
    """The smallest length >= ``n`` with no prime factor over 5: numpy's FFT is several times
    slower at lengths with a large prime factor."""
    best = 1 << max(0, (n - 1).bit_length())
    five = 1
    while five < best:
        three = five
        while three < best:
            length = three << max(0, (-(-n // three) - 1).bit_length())
            best = min(best, length)
            three *= 3
        five *= 5
    return best


def fft_convolve(samples: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The full linear convolution of two 1-D signals (``len(a) + len(b) - 1`` samples), by
    FFT, in ``samples``' type (float32 or float64): ``scipy.signal.fftconvolve`` to rounding."""
    dtype = np.float32 if samples.dtype == np.float32 else np.float64
    size = samples.shape[0] + kernel.shape[0] - 1
    if samples.shape[0] == 0 or kernel.shape[0] == 0:
        return np.zeros(0, dtype=dtype)
    length = fast_fft_length(size)
    spectrum = np.fft.rfft(samples.astype(dtype, copy=False), length)
    spectrum *= np.fft.rfft(kernel.astype(dtype, copy=False), length)
    return np.fft.irfft(spectrum, length)[:size].astype(dtype, copy=False)


class FixedKernel:
    """A kernel transformed once, to convolve many signals with: ``convolve`` is
    ``fft_convolve(samples, kernel)`` to rounding, by overlap-add. Each block of the signal
    takes one FFT there and one back of ``length`` (twice the kernel or more, a power of two),
    the kernel's never again: 1.4 to 2.3 times faster than ``fft_convolve`` for a voice's room
    on cues of 1 to 14 s. In the kernel's type (float32 or float64)."""

    def __init__(self, kernel: np.ndarray) -> None:
        kernel = np.asarray(kernel)
        self.dtype = np.float32 if kernel.dtype == np.float32 else np.float64
        self.taps = kernel.shape[0]
        self.length = 1 << max(1, (2 * self.taps - 1).bit_length())
        self.block = self.length - self.taps + 1
        self.spectrum = np.fft.rfft(kernel.astype(self.dtype), self.length)
        self.spectrum.setflags(write=False)

    def convolve(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples).astype(self.dtype, copy=False)
        n = x.shape[0]
        if n == 0 or self.taps == 0:
            return np.zeros(0, dtype=self.dtype)
        out = np.zeros(n + self.taps - 1, dtype=self.dtype)
        for start in range(0, n, self.block):
            spectrum = np.fft.rfft(x[start : start + self.block], self.length)
            spectrum *= self.spectrum
            y = np.fft.irfft(spectrum, self.length)
            end = min(out.shape[0], start + self.length)
            out[start:end] += y[: end - start]
        return out


_IIR_BLOCK = 64  # samples per block of the block filter
_IIR_COLUMNS = 64  # blocks per row: the loops are over columns, then rows, not samples


@dataclass(frozen=True)
class _BlockIIR:
    """Fixed matrices of second-order sections in cascade, for row vectors: a block's
    outputs are its samples times ``from_samples`` plus its start state times ``from_state``;
    the state at its end is the start state times ``block_step`` plus its samples times
    ``to_state``."""

    from_samples: np.ndarray  # n x n, float32
    from_state: np.ndarray  # states x n, float32
    to_state: np.ndarray  # n x states
    block_step: np.ndarray  # states x states: one block on
    into_row: np.ndarray  # states x (columns * states): c blocks on, for each c < columns
    row_step: np.ndarray  # one row of blocks on


def sos_state_space(sections: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(A, B, C, D) of second-order sections in cascade, each in transposed direct form II
    (scipy's sosfilt): state' = A state + B x, y = C state + D x."""
    size = 2 * sections.shape[0]
    a_matrix = np.zeros((size, size))
    b_vector = np.zeros(size)
    c_vector = np.zeros(size)
    d = 1.0
    for i, (b0, b1, b2, _, a1, a2) in enumerate(sections / sections[:, 3:4]):
        j = 2 * i
        feed = np.array([b1 - a1 * b0, b2 - a2 * b0])
        # This section's input is the output of the ones before: C state + D x.
        a_matrix[j : j + 2, :j] = np.outer(feed, c_vector[:j])
        a_matrix[j : j + 2, j : j + 2] = [[-a1, 1.0], [-a2, 0.0]]
        b_vector[j : j + 2] = feed * d
        c_vector[:j] *= b0
        c_vector[j] = 1.0
        d *= b0
    return a_matrix, b_vector, c_vector, d


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` without BLAS, for the filter's fixed matrices: OpenBLAS rounds a product
    differently with its settings, and the matrices must be the same whatever they are. (The
    products over samples run through BLAS, for speed; a render limits BLAS to one thread,
    where they are the same run to run.)"""
    return np.einsum("ij,jk->ik", a, b)


@lru_cache(maxsize=8)
def _block_iir(sections: tuple[tuple[float, ...], ...]) -> _BlockIIR:
    a_matrix, b_vector, c_vector, d = sos_state_space(np.array(sections, dtype=np.float64))
    n = _IIR_BLOCK
    powers = [np.eye(a_matrix.shape[0])]  # A^k, k <= n
    for _ in range(n):
        powers.append(_product(a_matrix, powers[-1]))
    impulse = np.array(
        [d] + [np.einsum("i,ij,j->", c_vector, powers[k - 1], b_vector) for k in range(1, n)]
    )
    toeplitz = np.zeros((n, n))  # output i from sample j <= i
    for i in range(n):
        toeplitz[i, : i + 1] = impulse[i::-1]
    block_step = powers[n].T
    into_row = [np.eye(a_matrix.shape[0])]
    for _ in range(_IIR_COLUMNS):
        into_row.append(_product(into_row[-1], block_step))
    return _BlockIIR(
        from_samples=np.ascontiguousarray(toeplitz.T, dtype=np.float32),
        from_state=np.array([np.einsum("i,ij->j", c_vector, powers[i]) for i in range(n)]).T.astype(
            np.float32
        ),
        to_state=np.array([np.einsum("ij,j->i", powers[n - 1 - j], b_vector) for j in range(n)]),
        block_step=block_step,
        into_row=np.concatenate(into_row[:_IIR_COLUMNS], axis=1),
        row_step=into_row[_IIR_COLUMNS],
    )


def sosfilt(sections: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfilt(sections, samples)`` from rest, for 1-D ``samples``, in numpy
    alone; float32 out (states float64, samples float32: float32 rounding).

    The signal is cut into blocks of 64 samples; a block's output is a fixed matrix times its
    samples plus a fixed matrix times the filter's state at its start, and those states
    follow from one another by one more matrix, first along rows of 64 blocks at once, then
    row by row: a few hundred small steps in Python for a minute of sound. A recursive filter
    fed exact silence can decay into subnormal floats, slow on some CPUs: guard its input
    (loudness.with_subnormal_guard) where it matters.
    """
    m = _block_iir(tuple(tuple(float(v) for v in row) for row in np.asarray(sections)))
    x = np.asarray(samples, dtype=np.float32)
    n = x.shape[0]
    block, columns = _IIR_BLOCK, _IIR_COLUMNS
    rows = max(1, -(-n // (block * columns)))
    padded = np.zeros(rows * columns * block, dtype=np.float32)
    padded[:n] = x
    blocks = padded.reshape(-1, block)
    # What each block's samples add to the state at its end; then the state at each block's
    # start, first within its row as if the row began at rest, then carried row to row.
    added = (blocks @ m.to_state).reshape(rows, columns, -1)
    local = np.empty_like(added)
    carried = np.zeros((rows, added.shape[2]))
    for c in range(columns):
        local[:, c] = carried
        carried = carried @ m.block_step + added[:, c]
    row_starts = np.empty_like(carried)
    state = np.zeros(added.shape[2])
    for r in range(rows):
        row_starts[r] = state
        state = state @ m.row_step + carried[r]
    starts = (row_starts @ m.into_row).reshape(local.shape) + local
    y = blocks @ m.from_samples
    y += starts.reshape(-1, added.shape[2]).astype(np.float32) @ m.from_state
    return y.reshape(-1)[:n]


def butter_band_pass_response(
    low_hz: float, high_hz: float, n: int, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """The frequency response, at the ``n // 2 + 1`` bins of an ``n``-point real FFT, of the
    second-order Butterworth band pass ``scipy.signal.butter(2, (low_hz, high_hz),
    "bandpass", fs=sample_rate)``: its analog prototype's poles moved to the band, then to
    the digital filter by the bilinear transform, with the band edges prewarped as scipy
    does. complex128.

    Multiplied into the FFT of a signal that repeats every ``n`` samples, it gives the
    filter's output once it has settled (what ``sosfilt`` gives over a second period).
    """
    fs2 = 2.0 * sample_rate
    w_low, w_high = (fs2 * np.tan(np.pi * f / sample_rate) for f in (low_hz, high_hz))
    width, centre = w_high - w_low, np.sqrt(w_low * w_high)
    prototype = np.exp(1j * np.pi * np.array([3, 5]) / 4)  # order 2: at 135 and 225 degrees
    half = prototype * width / 2
    root = np.sqrt(half**2 - centre**2)
    analog = np.concatenate([half + root, half - root])  # zeros: two at 0, two at infinity
    poles = (fs2 + analog) / (fs2 - analog)
    gain = width**2 * np.real(fs2**2 / np.prod(fs2 - analog))
    z = np.exp(-2j * np.pi * np.arange(n // 2 + 1) / n)  # 1/z on the unit circle
    # k (z - 1)^2 (z + 1)^2 / prod(z - p), in 1/z: k (1 - 1/z)^2 (1 + 1/z)^2 / prod(1 - p/z).
    response = gain * (1 - z) ** 2 * (1 + z) ** 2
    for pole in poles:
        response /= 1 - pole * z
    return response


def iir_impulse_response(sections: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` samples of the impulse response of second-order sections
    (b0, b1, b2, a0, a1, a2 rows, in cascade), float64, computed from their frequency
    response: exact for a filter that has decayed away by sample ``n`` (time aliasing is all
    the error), so a recursive filter of fixed coefficients runs as a convolution."""
    length = fast_fft_length(4 * n)  # the tail past n, folded onto the start, is 3n longer
    response = np.ones(length // 2 + 1, dtype=np.complex128)
    for section in np.asarray(sections, dtype=np.float64):
        response *= np.fft.rfft(section[:3], length) / np.fft.rfft(section[3:], length)
    return np.fft.irfft(response, length)[:n]


@dataclass(frozen=True)
class _Polyphase:
    """``resample_poly(x, up, down)``'s filter by output phase: output samples ``b*up`` to
    ``b*up + up - 1`` are the window ``x[b*down + first : b*down + first + width]`` times
    ``matrix`` (width x up), samples outside ``x`` being zeros.

    Only RESAMPLE_TAPS_PER_PHASE or so of each column are not zero, so when ``down`` is large
    (an awkward rate: 1,919/934) the matrix is mostly zeros, and would take tens of MB. Then
    ``matrix`` is None and each phase keeps only its own taps: phase ``r`` is the window's
    ``offsets[r]``-th sample on, times ``taps[r]`` (zeros past its last tap).
    """

    matrix: np.ndarray | None  # float64; float32 copy in matrix32
    matrix32: np.ndarray | None
    first: int
    width: int
    offsets: np.ndarray | None = None  # int, one per phase
    taps: np.ndarray | None = None  # float64, phases x taps; float32 copy in taps32
    taps32: np.ndarray | None = None


# The largest matrix kept whole (entries): every usual ratio (22.05 or 48 or 96 kHz to 44.1 kHz:
# at most some 50,000) is one matrix product per block; an awkward one goes phase by phase.
_DENSE_ENTRIES = 1 << 18


@lru_cache(maxsize=8)
def _resampler(up: int, down: int) -> _Polyphase:
    from .dynamics import kaiser_lowpass  # here: dynamics imports this module

    factor = max(up, down)
    taps = kaiser_lowpass(
        RESAMPLE_TAPS_PER_PHASE * factor + 1, RESAMPLE_CUTOFF / factor, RESAMPLE_KAISER_BETA
    )
    half = (taps.shape[0] - 1) // 2
    # Output j is up * sum over m of x[m] * taps[j*down + half - m*up]: with j = b*up + r and
    # m = b*down + t, tap r*down + half - t*up weighs window sample t of output r.
    first = -(half // up)
    last = ((up - 1) * down + half) // up
    width = last - first + 1
    if width * up > _DENSE_ENTRIES:
        return _sparse_resampler(taps, up, down, first, width)
    t = np.arange(first, last + 1)[:, None]
    index = np.arange(up)[None, :] * down + half - t * up
    inside = (index >= 0) & (index < taps.shape[0])
    matrix = np.where(inside, up * taps[np.clip(index, 0, taps.shape[0] - 1)], 0.0)
    matrix.setflags(write=False)
    matrix32 = matrix.astype(np.float32)
    matrix32.setflags(write=False)
    return _Polyphase(matrix, matrix32, int(first), int(width))


def _sparse_resampler(taps: np.ndarray, up: int, down: int, first: int, width: int) -> _Polyphase:
    """The same filter as ``_resampler``'s matrix, each phase's taps alone: phase r takes
    window samples t from ceil((r*down + half - len(taps) + 1) / up) to (r*down + half) // up."""
    half = (taps.shape[0] - 1) // 2
    r = np.arange(up)
    lowest = -(-(r * down + half - taps.shape[0] + 1) // up)
    count = -(-taps.shape[0] // up) + 1  # the most window samples a phase can take
    t = lowest[:, None] + np.arange(count)[None, :]
    index = r[:, None] * down + half - t * up
    inside = (index >= 0) & (index < taps.shape[0])
    kept = np.where(inside, up * taps[np.clip(index, 0, taps.shape[0] - 1)], 0.0)
    kept.setflags(write=False)
    kept32 = kept.astype(np.float32)
    kept32.setflags(write=False)
    offsets = lowest - first
    offsets.setflags(write=False)
    return _Polyphase(None, None, int(first), int(width), offsets, kept, kept32)


_POLYPHASE_ROWS = 1 << 14  # windows (or output samples, phase by phase) at a time: a few MB


def _polyphase(x: np.ndarray, up: int, down: int, *, exact: bool = False) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down, window=<the steep filter>)`` for 1-D ``x``
    (float32 or float64, computed and returned in that type), ``ceil(len(x) * up / down)``
    samples. ``exact``: without BLAS, whose rounding depends on its thread settings (for
    fixed data made once and kept, such as an impulse response)."""
    phases = _resampler(up, down)
    n = x.shape[0]
    n_out = -(-n * up // down)
    blocks = -(-n_out // up)
    if blocks == 0:
        return np.zeros(0, dtype=x.dtype)
    upsampling = phases.taps is None and down == 1 and not exact
    # Room for a phase's taps past the window's end (zeros), phase by phase; for upsampling,
    # for the last row of _UPSAMPLE_BLOCK inputs.
    spare = 0 if phases.taps is None else phases.taps.shape[1]
    if upsampling:
        spare = -blocks % _UPSAMPLE_BLOCK
    padded = np.zeros((blocks - 1) * down + phases.width + spare, dtype=x.dtype)
    kept = x[: max(0, min(n, padded.shape[0] - spare + phases.first))]
    padded[-phases.first : -phases.first + kept.shape[0]] = kept
    if upsampling:
        return _upsampled(padded, phases, up)[:n_out]
    out = np.empty((blocks, up), dtype=x.dtype)
    if phases.taps is not None:
        _by_phase(padded, phases, down, out)
        return out.reshape(-1)[:n_out]
    matrix = phases.matrix32 if x.dtype == np.float32 else phases.matrix
    assert matrix is not None
    windows = np.lib.stride_tricks.sliding_window_view(padded, phases.width)[::down]
    for start in range(0, blocks, _POLYPHASE_ROWS):
        stop = start + _POLYPHASE_ROWS
        # A contiguous copy of the windows first: matmul on the overlapping view does not
        # reach BLAS, and is several times slower.
        rows = np.ascontiguousarray(windows[start:stop])
        out[start:stop] = _product(rows, matrix) if exact else rows @ matrix
    return out.reshape(-1)[:n_out]


# Upsampling by a whole factor takes this many input samples a row: a row of the window, and
# the taps past it, times one matrix gives them all their output samples in order.
_UPSAMPLE_BLOCK = 64


def _upsampled(padded: np.ndarray, phases: _Polyphase, up: int) -> np.ndarray:
    """Upsampling by ``up`` (an engine's 22,050 Hz to 44,100): ``up`` output samples for each
    window of the padded input (whose length leaves whole rows of _UPSAMPLE_BLOCK windows),
    as matrix products over rows of _UPSAMPLE_BLOCK inputs.

    Output ``(k*B + i)*up + r`` is ``sum_t padded[k*B + i + t] * matrix[t, r]``: the row of
    ``B + width - 1`` samples from ``k*B`` times a fixed (B + width - 1) x (B*up) matrix
    holding ``matrix`` once per ``i``, a step down each time. Three times the multiplications
    of filtering each phase, but in BLAS's own kernels: 4 times faster than one
    ``np.correlate`` per phase on back-pain's cues, the same to float32 rounding.
    """
    block = _UPSAMPLE_BLOCK
    length = block + phases.width - 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, length)[::block]
    stepped = _stepped_matrix(up, padded.dtype.str)
    out = np.empty((windows.shape[0], block * up), dtype=padded.dtype)
    for start in range(0, windows.shape[0], _POLYPHASE_ROWS // block):
        stop = start + _POLYPHASE_ROWS // block
        # A contiguous copy of the rows (they overlap in the view): BLAS takes no other.
        out[start:stop] = np.ascontiguousarray(windows[start:stop]) @ stepped
    return out.reshape(-1)


@lru_cache(maxsize=8)
def _stepped_matrix(up: int, dtype: str) -> np.ndarray:
    phases = _resampler(up, 1)
    matrix = phases.matrix32 if np.dtype(dtype) == np.float32 else phases.matrix
    assert matrix is not None
    block = _UPSAMPLE_BLOCK
    stepped = np.zeros((block + phases.width - 1, block * up), dtype=matrix.dtype)
    for i in range(block):
        stepped[i : i + phases.width, i * up : (i + 1) * up] = matrix
    stepped.setflags(write=False)
    return stepped


def _by_phase(padded: np.ndarray, phases: _Polyphase, down: int, out: np.ndarray) -> None:
    """``out`` (blocks x up) from ``padded`` with a sparse resampler's taps, a few blocks at a
    time: each output sample gathers its own taps' window samples (no BLAS: exact)."""
    assert phases.taps is not None and phases.taps32 is not None and phases.offsets is not None
    taps = phases.taps32 if padded.dtype == np.float32 else phases.taps
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps.shape[1])
    blocks, up = out.shape
    step = max(1, _POLYPHASE_ROWS // up)
    for start in range(0, blocks, step):
        stop = min(start + step, blocks)
        starts = np.arange(start, stop)[:, None] * down + phases.offsets[None, :]
        out[start:stop] = np.einsum("bik,ik->bi", windows[starts], taps)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling with a steep anti-aliasing low-pass; float32 in and out."""
    x = np.asarray(samples, dtype=np.float32)
    g = gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    if up == down:
        return x.copy()
    return _polyphase(x, up, down)


def resample_blocks(
    blocks: Iterable[np.ndarray], up: int, down: int, block: int = RESAMPLE_BLOCK
) -> Iterator[np.ndarray]:
    """The steep polyphase resampling of ``x`` by ``up / down`` (``resample``'s, computed in
    float64), for ``x`` given as consecutive 1-D blocks of any sizes; yields the output
    (float64) in blocks.

    Each step filters ``block`` input samples (a whole number of ``down``s, so the output
    starts on a whole sample) with enough of their neighbours either side that no output
    sample sees the cut; joined, the blocks are the signal resampled whole (to rounding).
    Memory follows ``block``, not the signal.
    """
    if up == down:
        for x in blocks:
            yield np.asarray(x, dtype=np.float64)
        return
    phases = _resampler(up, down)
    step = down * max(1, -(-block // down))
    # An output sample sees the input samples of its window: that many either side, and a
    # few more, rounded up to whole downs.
    reach = phases.width + 2
    context = down * -(-reach // down)
    pending = np.zeros(0, dtype=np.float64)  # input samples from pending_start on
    pending_start = 0
    start = 0  # the input sample whose output comes next: a multiple of down
    for x in blocks:
        pending = np.concatenate((pending, np.asarray(x, dtype=np.float64)))
        while pending_start + pending.shape[0] >= start + step + context:
            lo = max(start - context, 0)
            piece = pending[lo - pending_start : start + step + context - pending_start]
            y = _polyphase(piece, up, down)
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
        y = _polyphase(pending[lo - pending_start :], up, down)
        first = (start - lo) // down * up
        out_start = start // down * up
        yield y[first : first + min(step // down * up, n_out - out_start)]
        start += step
