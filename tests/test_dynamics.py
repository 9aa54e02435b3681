"""The true-peak limiter: its filters against scipy's, no subnormal numbers after a sound.

tests/test_mix.py checks what it does to a track (the ceiling, smoothness, spans).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_loudness import sound_then_silence, subnormal_count

from audioguide.dynamics import (
    hot_samples,
    kaiser_lowpass,
    limit,
    moving_average,
    moving_minimum,
    oversampled_envelope,
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
    assert np.array_equal(kaiser_lowpass(41, 0.25, 5.0), expected)


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
