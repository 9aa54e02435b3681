"""The true-peak limiter: its filters against scipy's, no subnormal numbers after a sound.

tests/test_mix.py checks what it does to a track (the ceiling, smoothness, spans).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_loudness import sound_then_silence, subnormal_count

from audioguide import dynamics
from audioguide.dynamics import (
    _polyphase,
    hot_samples,
    kaiser_lowpass,
    limit,
    moving_average,
    moving_minimum,
    oversampled_envelope,
    overshoot_bound,
)


def test_the_limiter_and_its_envelope_leave_no_subnormal_numbers_in_silence():
    x = sound_then_silence(silence_s=10.0) * np.float32(8.0)  # far over the ceiling
    ceiling = 0.5
    hot = hot_samples(x, ceiling)
    assert hot.size > 0
    assert subnormal_count(oversampled_envelope(x, hot)) == 0
    y = limit(x, ceiling)
    assert subnormal_count(y) == 0
    assert not y[44_100 + 2_000 :].any()  # the silence stays exact silence


def test_the_oversampling_filter_is_scipys_firwin():
    from scipy import signal

    expected = signal.firwin(41, 0.25, window=("kaiser", 5.0))
    # To rounding: the taps at the sinc's zero crossings are sin(k pi) / (k pi), some 1e-18,
    # whose last bits follow the CPU (numpy computes sin with the widest SIMD it finds).
    np.testing.assert_allclose(kaiser_lowpass(41, 0.25, 5.0), expected, rtol=1e-13, atol=1e-17)


@pytest.mark.parametrize("n", [1, 2, 882, 883, 884, 5_000])
def test_the_gains_moving_minimum_and_average_are_scipys(n):
    from scipy import ndimage

    rng = np.random.default_rng(n)
    need = np.ones(n)
    need[rng.integers(0, n, 4)] = rng.uniform(0.2, 1.0, 4)  # a few peaks to duck under
    width = 883  # the limiter's: 20 ms, odd
    low = moving_minimum(need, width)
    assert np.array_equal(low, ndimage.minimum_filter1d(need, width, mode="nearest"))
    smooth = moving_average(low, width)
    expected = ndimage.uniform_filter1d(low, width, mode="nearest")
    assert np.max(np.abs(smooth - expected)) < 1e-12
    assert np.all(smooth <= need + 1e-12)  # never above what a peak needs


# -- the fast path: where the true peak cannot reach the ceiling, nothing is computed ---------
# limit() looks at the oversampled envelope only near a sample over ceiling / overshoot_bound()
# (hot_samples); everywhere else the gain is exactly 1 and the samples are returned as they
# came. These tests hold that path against looking at every sample.


def envelope_index_by_index(samples: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """oversampled_envelope's points summed in float64, each index on its own. The limiter's
    own sums are float32 from BLAS, which may round a point differently with the number of
    points it is given: the two paths below share this one, so they can differ only in which
    indices they look at."""
    x = np.concatenate((np.zeros(10), samples.astype(np.float64), np.zeros(10)))
    windows = np.lib.stride_tricks.sliding_window_view(x, 21)[indices]
    return np.max(np.abs(windows @ _polyphase().T), axis=1)


def limited_both_ways(monkeypatch, x: np.ndarray, ceiling: float) -> tuple[np.ndarray, ...]:
    monkeypatch.setattr(dynamics, "oversampled_envelope", envelope_index_by_index)
    fast = limit(x, ceiling)
    with monkeypatch.context() as everywhere:
        everywhere.setattr(dynamics, "hot_samples", lambda part, _: np.arange(part.shape[0]))
        full = limit(x, ceiling)
    return fast, full


def speech_like(seed: int, n: int = 60_000) -> np.ndarray:
    """Band-limited noise in bursts (a 4 kHz low pass of white noise, gated), peak 1."""
    rng = np.random.default_rng(seed)
    noise = np.convolve(rng.standard_normal(n + 40), kaiser_lowpass(41, 0.18, 5.0), "valid")
    gate = (np.sin(2 * np.pi * np.arange(n) / rng.integers(4_000, 20_000)) > -0.3) * 1.0
    x = noise[:n] * np.convolve(gate, np.ones(441) / 441, "same")
    return (x / np.max(np.abs(x))).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("peak_over_ceiling", [0.3, 0.445, 0.9, 1.0, 1.05, 1.3, 3.0])
def test_the_fast_path_is_looking_at_every_sample(monkeypatch, seed, peak_over_ceiling):
    ceiling = 0.8
    x = speech_like(seed) * np.float32(peak_over_ceiling * ceiling)
    fast, full = limited_both_ways(monkeypatch, x, ceiling)
    assert fast.dtype == full.dtype == np.float32
    assert np.array_equal(fast, full)
    if peak_over_ceiling * overshoot_bound() <= 1.0:  # nothing can reach it: untouched
        assert np.array_equal(fast, x)


def test_an_inter_sample_peak_over_the_ceiling_is_limited_though_every_sample_is_under():
    # Every sample at +-a, the signs of the filter's taps for the point halfway between two
    # samples: that point is a * overshoot_bound(), just over the ceiling, while the samples
    # peak at 0.45 of it. A bound that underrated the overshoot would pass this by.
    ceiling = 0.8
    phase = int(np.argmax(np.abs(_polyphase()).sum(axis=1)))
    a = ceiling / overshoot_bound() * 1.01
    x = np.zeros(20_000, dtype=np.float32)
    x[10_000 - 10 : 10_000 + 11] = a * np.sign(_polyphase()[phase])
    assert np.max(np.abs(x)) < 0.46 * ceiling
    over = envelope_index_by_index(x, np.arange(x.size))
    assert np.max(over) == pytest.approx(1.01 * ceiling, rel=1e-6)
    y = limit(x, ceiling)
    assert np.max(envelope_index_by_index(y, np.arange(y.size))) <= ceiling
    assert not np.array_equal(y, x)
    assert np.array_equal(y[:5_000], x[:5_000])  # far from it: untouched


@pytest.mark.parametrize(("oversample", "rate"), [(False, 22_050), (True, 44_100)])
def test_peaks_far_apart_are_limited_as_if_each_were_alone(oversample, rate):
    """The limiter smooths the gain of every stretch around its peaks in one pass over them
    joined; each must get the gain it would get alone, whatever lies between."""
    rng = np.random.default_rng(11)
    x = (0.2 * rng.standard_normal(3 * rate)).astype(np.float32)
    for at in (int(0.5 * rate), int(0.52 * rate), int(1.5 * rate), int(2.9 * rate)):
        x[at : at + 40] *= 6.0  # bursts over the ceiling; two close enough to share a stretch
    x[-5:] *= 8.0  # and one at the very end
    cut = int(1.0 * rate)  # far from every burst: more than the limiter reaches
    whole = limit(x, 0.7, rate, oversample=oversample)
    parts = np.concatenate(
        [
            limit(x[:cut], 0.7, rate, oversample=oversample),
            limit(x[cut:], 0.7, rate, oversample=oversample),
        ]
    )
    assert not np.array_equal(whole, x)
    assert np.max(np.abs(whole.astype(np.float64) - parts)) < 1e-6


def test_the_envelope_near_an_end_is_the_silence_beyond_it_and_takes_little_memory():
    """Points near either end see silence beyond it, exactly as the same signal with that
    silence written out does; and a chunk that reaches an end no longer gathers its windows
    through a table of every row's indices, which took 4.5 times the windows' memory (a
    240-minute render's peak grew by 16 MB through it)."""
    import tracemalloc

    rng = np.random.default_rng(4)
    x = rng.uniform(-1.0, 1.0, 1 << 19).astype(np.float32)
    indices = np.unique(np.concatenate(([0, 1, 5], rng.integers(0, x.size, 70_000), [x.size - 1])))
    padded = np.concatenate((np.zeros(64, np.float32), x, np.zeros(64, np.float32)))
    expected = oversampled_envelope(padded, indices + 64)  # every window inside: no end near
    tracemalloc.start()
    try:
        got = oversampled_envelope(x, indices)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, expected)
    windows_bytes = 65_536 * 21 * 4  # one chunk's windows, float32
    assert peak_bytes < 2 * windows_bytes
