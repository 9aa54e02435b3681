"""The true-peak limiter and its oversampled envelope: no subnormal numbers after a sound."""

from __future__ import annotations

import numpy as np
from test_loudness import sound_then_silence, subnormal_count

from audioguide.dynamics import hot_samples, limit, oversampled_envelope


def test_the_limiter_and_its_envelope_leave_no_subnormal_numbers_in_silence():
    x = sound_then_silence(silence_s=10.0) * np.float32(8.0)  # far over the ceiling
    ceiling = 0.5
    hot = hot_samples(x, ceiling)
    assert hot.size > 0
    assert subnormal_count(oversampled_envelope(x, hot)) == 0
    y = limit(x, ceiling)
    assert subnormal_count(y) == 0
    assert not y[44_100 + 2_000 :].any()  # the silence stays exact silence
