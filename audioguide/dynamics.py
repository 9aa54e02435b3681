"""Dynamics: true-peak measurement and a smooth true-peak limiter, for the voice and the master.

Input and output: ``samples: np.ndarray``, float32, 1-D mono. True peak is the peak of the
4x oversampled signal (the ITU-R BS.1770 measure). It is found without oversampling a whole
track: a point of the oversampled signal is a weighted sum of the 21 samples around it, so it
can exceed a threshold only near a sample above ``threshold / overshoot_bound()``; only there is
anything oversampled (``hot_samples``). For a 20-minute session of speech that is a few per
cent of the samples.

numpy alone: the oversampling filter is scipy's firwin rebuilt (``kaiser_lowpass``), the
gain's minimum and moving average are scipy.ndimage's rebuilt (``moving_minimum``,
``moving_average``); tests/test_dynamics.py checks all three against scipy. Nothing here is
recursive, so nothing decays into subnormal floats: silence stays exact zeros.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .audio import SAMPLE_RATE

LIMITER_WINDOW_S = 0.02  # the gain leans into a peak over 20 ms and lets go over 20 ms

OVERSAMPLE = 4
_HALF_TAPS = 10 * OVERSAMPLE
_REACH = _HALF_TAPS // OVERSAMPLE  # input samples either side that feed an output point


def kaiser_lowpass(taps: int, cutoff: float, beta: float) -> np.ndarray:
    """A windowed-sinc low pass, float64, unit gain at DC: scipy.signal.firwin(taps, cutoff,
    window=("kaiser", beta)) with ``cutoff`` relative to the Nyquist rate, in numpy alone."""
    m = np.arange(taps) - (taps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(taps, beta)
    return h / h.sum()


@lru_cache(maxsize=1)
def _polyphase() -> np.ndarray:
    """scipy's resample_poly(x, 4, 1) filter, rebuilt so its worst-case gain is known exactly:
    oversampled point 4i+p is the dot product of row p with x[i-10 : i+11]."""
    upsampler = kaiser_lowpass(2 * _HALF_TAPS + 1, 1.0 / OVERSAMPLE, 5.0) * OVERSAMPLE
    polyphase = np.zeros((OVERSAMPLE, 2 * _REACH + 1))
    for j in range(-_REACH, _REACH + 1):
        for p in range(OVERSAMPLE):
            if 0 <= _HALF_TAPS + p - OVERSAMPLE * j < upsampler.size:
                polyphase[p, j + _REACH] = upsampler[_HALF_TAPS + p - OVERSAMPLE * j]
    polyphase.setflags(write=False)
    return polyphase


@lru_cache(maxsize=1)
def overshoot_bound() -> float:
    """No oversampled point can exceed the largest sample within its reach by more than this
    factor: the largest sum of |taps| over the four phases (2.24, +7 dB)."""
    return float(np.abs(_polyphase()).sum(axis=1).max())


@lru_cache(maxsize=1)
def _phases_by_tap() -> np.ndarray:
    return np.ascontiguousarray(_polyphase(), dtype=np.float32)


_ROWS_PER_CHUNK = 1 << 16


_SCAN_BLOCK = 1 << 20  # samples


def hot_samples(samples: np.ndarray, threshold: float) -> np.ndarray:
    """Indices ``i`` where an oversampled point 4i..4i+3 could exceed ``threshold``.

    A point is a weighted sum of the 21 samples around it, so it can exceed ``threshold``
    only if one of them exceeds ``threshold / overshoot_bound()``; everywhere else the true
    peak is known to be under ``threshold`` without oversampling anything.
    """
    x = np.asarray(samples, dtype=np.float32)
    level = threshold / overshoot_bound()
    # Scanned block by block, so a long track is never copied whole.
    loud = np.concatenate(
        [
            start + np.flatnonzero(np.abs(x[start : start + _SCAN_BLOCK]) > level)
            for start in range(0, x.shape[0], _SCAN_BLOCK)
        ]
        or [np.zeros(0, dtype=np.intp)]
    )
    if loud.size == 0:
        return loud
    # Merge loud samples whose reaches touch into runs, then list every index in each run.
    return _runs_around(loud, _REACH, x.size)


def _runs_around(points: np.ndarray, reach: int, n: int) -> np.ndarray:
    """Every index within ``reach`` of one of ``points`` (sorted, not empty) and inside
    ``0 .. n - 1``, in order, each once."""
    breaks = np.flatnonzero(np.diff(points) > 2 * reach + 1) + 1
    firsts = np.maximum(points[np.concatenate(([0], breaks))] - reach, 0)
    lasts = np.minimum(points[np.concatenate((breaks - 1, [points.size - 1]))] + reach, n - 1)
    lengths = lasts - firsts + 1
    offsets = np.repeat(firsts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(int(lengths.sum())) + offsets


def oversampled_envelope(samples: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """For each index ``i``, the largest |value| of the 4x oversampled signal at points
    4i..4i+3 (the sample and the three points after it); float64, one value per index.

    Equal to ``resample_poly(samples, 4, 1)`` at those points, computed only there.
    """
    x = np.asarray(samples, dtype=np.float32)
    n = x.shape[0]
    width = 2 * _REACH + 1  # the samples that feed a point
    # Row i - REACH of this view is x[i - REACH : i + REACH + 1], without copying x.
    view = np.lib.stride_tricks.sliding_window_view(x, width) if n >= width else None
    out = np.empty(indices.shape[0])
    for start in range(0, indices.shape[0], _ROWS_PER_CHUNK):
        chunk = indices[start : start + _ROWS_PER_CHUNK]
        if view is not None and chunk[0] >= _REACH and chunk[-1] < n - _REACH:
            windows = view[chunk - _REACH]
        else:
            # Near an end, where the signal is silent beyond it: the samples the chunk reaches,
            # copied with that silence either side, and their windows. (Gathering each row's
            # indices took 4.5 times the windows' memory: a 240-minute render's peak grew by
            # 16 MB, as long sessions' spans put more loud samples near their ends.)
            first, end = int(chunk[0]) - _REACH, int(chunk[-1]) + _REACH + 1
            reached = np.zeros(end - first, dtype=np.float32)
            lo, hi = max(first, 0), min(end, n)
            reached[lo - first : hi - first] = x[lo:hi]
            windows = np.lib.stride_tricks.sliding_window_view(reached, width)[
                chunk - first - _REACH
            ]
        # float32 sums of 21 products: within 1e-6 of float64, far inside the limiter's 0.1%.
        # One row per phase (4 x rows), so each phase's points lie contiguous in memory and the
        # maxima over the phases are three element-wise maxima: measured 2 to 4 times faster
        # than rows x 4 with a max over the short axis.
        points = _phases_by_tap() @ windows.T
        np.abs(points, out=points)
        out[start : start + chunk.shape[0]] = np.maximum(
            np.maximum(points[0], points[1]), np.maximum(points[2], points[3])
        )
    return out


def true_peak(samples: np.ndarray) -> float:
    """The 4x oversampled peak (linear), oversampling only where it could be found."""
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return 0.0
    best = float(np.max(np.abs(x)))
    if best == 0.0:
        return 0.0
    hot = hot_samples(x, best)
    return max(best, float(oversampled_envelope(x, hot).max())) if hot.size else best


def _edge_padded(x: np.ndarray, half: int, multiple: int = 1) -> np.ndarray:
    """``x`` with ``half`` copies of its first and last values either side, and more of the
    last up to a whole number of ``multiple``."""
    size = x.shape[0] + 2 * half
    extra = -size % multiple
    return np.concatenate((np.full(half, x[0]), x, np.full(half + extra, x[-1])))


def moving_minimum(x: np.ndarray, width: int) -> np.ndarray:
    """The minimum of each ``width`` (odd) values centred on each of ``x``, the ends extended
    with the end values: scipy.ndimage.minimum_filter1d(x, width, mode="nearest").

    In two running minima over blocks of ``width`` (van Herk, Gil and Werman), so the cost
    does not grow with the width: every window is the tail of one block and the head of the
    next."""
    half = width // 2
    n = x.shape[0]
    padded = _edge_padded(x, half, width).reshape(-1, width)
    ahead = np.minimum.accumulate(padded, axis=1).reshape(-1)
    behind = np.minimum.accumulate(padded[:, ::-1], axis=1)[:, ::-1].reshape(-1)
    return np.minimum(behind[:n], ahead[width - 1 : width - 1 + n])


def moving_average(x: np.ndarray, width: int, origin: float | None = None) -> np.ndarray:
    """The mean of each ``width`` (odd) values centred on each of ``x``, the ends extended
    with the end values: scipy.ndimage.uniform_filter1d(x, width, mode="nearest"), float64.

    Running sums of the values less ``origin`` (the first value unless given): a limiter's
    gain is 1 but near peaks, so with 1 as the origin the sums stay small and are exact
    wherever the gain is 1."""
    half = width // 2
    origin = float(x[0]) if origin is None else origin
    deviations = _edge_padded(x.astype(np.float64) - origin, half)
    sums = np.concatenate(([0.0], np.cumsum(deviations)))
    return (sums[width:] - sums[:-width]) / width + origin


def limit(
    samples: np.ndarray,
    ceiling: float,
    sample_rate: int = SAMPLE_RATE,
    *,
    oversample: bool = True,
    in_place: bool = False,
) -> np.ndarray:
    """Bring the true peak of ``samples`` to at most ``ceiling`` (linear), smoothly.

    ``oversample=False`` limits the sample peak instead: cheaper, for shaping a voice whose
    true peak the master limiter checks later anyway.

    Where the oversampled envelope is over the ceiling, the gain it needs is spread over
    LIMITER_WINDOW_S on both sides (a minimum filter, then a moving average of the same width,
    which never rises above the need), so the limiter anticipates a peak and lets go without
    a click. Elsewhere the samples are untouched. A sliding gain changes the interpolated
    shape a little, so the stretches it changed are measured again, until none is over.
    Returns a new float32 array; with ``in_place`` (float32 ``samples`` only), ``samples``
    itself, limited, so a long track is not held twice.
    """
    if in_place and samples.dtype != np.float32:
        raise TypeError("in_place limiting needs float32 samples")
    x = samples if in_place else samples.astype(np.float32, copy=True)
    n = x.shape[0]
    width = max(3, round(LIMITER_WINDOW_S * sample_rate)) | 1
    # The gain's ramps, and twice the filter's reach beyond them: every point the gain can
    # change is measured again from samples inside the stretch.
    margin = width + 2 * _REACH + 2

    def candidates(part: np.ndarray) -> np.ndarray:
        if oversample:
            return hot_samples(part, ceiling)
        return np.flatnonzero(np.abs(part) > ceiling)

    def envelope(indices: np.ndarray) -> np.ndarray:
        if oversample:
            return oversampled_envelope(x, indices)
        return np.abs(x[indices]).astype(np.float64)

    hot = candidates(x)
    for _ in range(6):
        if hot.size == 0:
            return x
        env = envelope(hot)
        is_over = env > ceiling
        if not is_over.any():
            return x
        over = hot[is_over]
        # The stretches within a margin of the peaks over, one after another in one array,
        # smoothed at once. Each begins and ends with a margin that needs nothing, and the
        # gain spreads a need by one width, so the gain of each is what it would be alone.
        stretches = _runs_around(over, margin, n)
        need = np.ones(stretches.size)
        # 0.1% under the ceiling, for the small change a sliding gain makes to the shape.
        need[np.searchsorted(stretches, over)] = np.minimum(1.0, 0.999 * ceiling / env[is_over])
        gain = moving_average(moving_minimum(need, width), width, origin=1.0)
        x[stretches] *= gain.astype(np.float32)
        # Looked at joined, the stretches may name a few points near where two of them meet
        # that neither would alone: measured for nothing, since no sample within their reach
        # was changed and none of them was over.
        hot = stretches[candidates(x[stretches])]
    peak = true_peak(x) if oversample else float(np.max(np.abs(x)))
    if peak > ceiling:  # pragma: no cover - a couple of passes have always sufficed
        x *= np.float32(ceiling / peak)
    return x
