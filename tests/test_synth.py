"""Synthesis: breath guides, bowl and ambient loops, checked by measurement."""

from __future__ import annotations

import numpy as np
import pytest

from audioguide import synth
from audioguide.synth import (
    GUIDE_PEAK,
    SAMPLE_RATE,
    ambient_loop,
    apply_fades,
    breath_guide,
    colored_noise,
    fit_ring,
    glide_tone,
    loop_span,
    raised_cosine,
    singing_bowl,
    tick,
)

SR = SAMPLE_RATE


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def zero_crossing_hz(x: np.ndarray) -> float:
    """Frequency of a near-sine from its rising zero crossings (interpolated)."""
    rising = np.flatnonzero((x[:-1] < 0) & (x[1:] >= 0))
    exact = rising + x[rising] / (x[rising] - x[rising + 1])
    return (len(exact) - 1) * SR / (exact[-1] - exact[0])


def band_power(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[(freqs >= low_hz) & (freqs < high_hz)].sum())


def centroid_hz(x: np.ndarray) -> float:
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return float((freqs * power).sum() / power.sum())


# -- fades ------------------------------------------------------------------------------------


def test_raised_cosine_values_worked_by_hand():
    # 0.5 - 0.5 cos(pi (k + 0.5) / 2) for k = 0, 1
    assert raised_cosine(2) == pytest.approx([0.1464466, 0.8535534], abs=1e-6)
    assert raised_cosine(2).dtype == np.float32
    assert raised_cosine(0).size == 0


def test_apply_fades_shapes_only_the_edges():
    x = np.ones(100, dtype=np.float32)
    apply_fades(x, 10, 20)
    assert x[10:80] == pytest.approx(1.0)
    assert x[0] < 0.03 and x[-1] < 0.01
    assert np.all(np.diff(x[:10]) > 0) and np.all(np.diff(x[80:]) < 0)


# -- breath guide -----------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 7, 15, 33, 60, 99])
def test_fading_the_parts_of_a_signal_is_fading_the_whole(cut):
    whole = apply_fades(np.ones(100, dtype=np.float32), 30, 45)
    parts = [np.ones(cut, dtype=np.float32), np.ones(100 - cut, dtype=np.float32)]
    apply_fades(parts[0], 30, 45, start=0, length=100)
    apply_fades(parts[1], 30, 45, start=cut, length=100)
    assert np.array_equal(np.concatenate(parts), whole)


def test_glide_tone_runs_from_start_to_end_pitch():
    x = glide_tone(4 * SR, 220.0, 330.0)
    assert x.dtype == np.float32
    # Exponential glide: 220 * 1.5 ** t; the first and last 0.2 s average near the ends.
    assert zero_crossing_hz(x[: SR // 5]) == pytest.approx(220 * 1.5**0.025, rel=0.01)
    assert zero_crossing_hz(x[-SR // 5 :]) == pytest.approx(220 * 1.5**0.975, rel=0.01)
    # Continuous phase: no step steeper than the waveform's own slope at 330 Hz, which the
    # harmonics (0.12 at 2f, 0.04 at 3f, over 1.16) raise to 1.17 times a sine's.
    assert np.max(np.abs(np.diff(x))) < 2 * np.pi * 330 / SR * (1 + 0.24 + 0.12) / 1.16 * 1.01


@pytest.mark.parametrize("sound", ["tone", "noise"])
@pytest.mark.parametrize("phase", ["inhale", "top-up", "hold", "exhale", "rest"])
def test_every_guide_phase_starts_and_ends_in_silence(sound, phase):
    n = 3 * SR
    x = breath_guide(phase, n, sound, rng())
    assert x.dtype == np.float32 and x.shape == (n,)
    peak = np.max(np.abs(x))
    # The tone peaks at GUIDE_PEAK; noise, levelled by RMS, peaks a few times its RMS.
    assert 0 < peak <= (GUIDE_PEAK if sound == "tone" else 5 * synth.NOISE_RMS)
    assert abs(x[0]) < 0.02 * peak and abs(x[-1]) < 0.02 * peak


def test_tone_rises_on_the_inhale_and_falls_on_the_exhale():
    n = 4 * SR
    inhale = breath_guide("inhale", n, "tone", rng())
    exhale = breath_guide("exhale", n, "tone", rng())
    early, late = slice(int(0.3 * n), int(0.4 * n)), slice(int(0.6 * n), int(0.7 * n))
    assert zero_crossing_hz(inhale[late]) > zero_crossing_hz(inhale[early]) * 1.08
    assert zero_crossing_hz(exhale[late]) < zero_crossing_hz(exhale[early]) / 1.08


def test_a_top_up_sip_rises_on_from_where_the_inhale_ended():
    # The sigh's double inhale: a long sip up to 330 Hz, then a short one a whole tone higher,
    # as loud as an inhale and without a hold's tick.
    n = SR
    top_up = breath_guide("top-up", n, "tone", rng())
    inhale = breath_guide("inhale", 3 * SR, "tone", rng())
    assert zero_crossing_hz(top_up[: n // 5]) == pytest.approx(330 * 1.125**0.1, rel=0.02)
    assert zero_crossing_hz(top_up[-n // 5 :]) == pytest.approx(330 * 1.125**0.9, rel=0.02)
    assert np.max(np.abs(top_up)) == pytest.approx(np.max(np.abs(inhale)), rel=0.05)
    assert np.argmax(np.abs(top_up)) > 0.1 * n  # a swell, not a tick
    # With the noise guide it is bright, like an inhale.
    sip = breath_guide("top-up", n, "noise", rng())
    out = breath_guide("exhale", n, "noise", rng())
    assert centroid_hz(sip) > 1.5 * centroid_hz(out)


def test_a_hold_is_a_tick_then_a_faint_steady_tone():
    n = 3 * SR
    hold = breath_guide("hold", n, "tone", rng())
    inhale = breath_guide("inhale", n, "tone", rng())
    # The tick: the loudest moment is in the first 60 ms.
    assert np.argmax(np.abs(hold)) < 0.06 * SR
    middle = slice(n // 3, 2 * n // 3)
    assert np.sqrt(np.mean(hold[middle] ** 2)) < 0.5 * np.sqrt(np.mean(inhale[middle] ** 2))
    # Steady: the pitch at the start of the middle equals the pitch at its end (330 Hz).
    thirds = np.array_split(hold[middle], 2)
    assert zero_crossing_hz(thirds[0]) == pytest.approx(330.0, rel=0.01)
    assert zero_crossing_hz(thirds[1]) == pytest.approx(330.0, rel=0.01)


def test_noise_inhale_is_brighter_than_the_exhale():
    n = 4 * SR
    inhale = breath_guide("inhale", n, "noise", rng(1))
    exhale = breath_guide("exhale", n, "noise", rng(1))
    assert centroid_hz(inhale) > 1.5 * centroid_hz(exhale)
    assert np.abs(breath_guide("hold", n, "noise", rng())[SR:]).max() == 0.0  # quiet after tick


def test_noise_guide_follows_its_generator():
    a = breath_guide("inhale", SR, "noise", rng(5))
    assert np.array_equal(a, breath_guide("inhale", SR, "noise", rng(5)))
    assert not np.array_equal(a, breath_guide("inhale", SR, "noise", rng(6)))


def test_no_guide_is_silence_and_an_unknown_one_is_refused():
    assert not breath_guide("inhale", SR, "none", rng()).any()
    with pytest.raises(ValueError, match="breath sound"):
        breath_guide("inhale", SR, "whistle", rng())


def test_tick_is_short_and_ends_at_zero():
    x = tick(SR)
    assert np.max(np.abs(x)) > 0.5
    assert not x[int(0.06 * SR) :].any()
    assert abs(x[int(0.06 * SR) - 1]) < 1e-3


# -- singing bowl -----------------------------------------------------------------------------


def test_bowl_has_its_partials_and_decays():
    x = singing_bowl(8 * SR, rng(), 196.0)
    assert x.dtype == np.float32
    assert np.max(np.abs(x)) == pytest.approx(synth.BOWL_PEAK, rel=1e-5)
    for ratio in synth.BOWL_RATIOS[:3]:
        f = 196.0 * ratio
        near = band_power(x, f - 5, f + 5)
        between = band_power(x, f * 1.15 - 5, f * 1.15 + 5)
        assert near > 100 * between, f
    early = np.sqrt(np.mean(x[SR : 2 * SR] ** 2))
    late = np.sqrt(np.mean(x[4 * SR : 5 * SR] ** 2))
    assert late < early
    # A 2 ms attack: the first sample is near zero; the end is faded to silence.
    assert abs(x[0]) < 0.01 and abs(x[-1]) < 1e-4


def test_fit_ring_fades_both_ends_and_pads_with_silence():
    # A file that starts and ends at full level: fit_ring must not leave a step at either end.
    bowl = np.ones(SR, dtype=np.float32)
    short = fit_ring(bowl, SR // 2)
    assert short.shape == (SR // 2,)
    assert short[0] < 0.01 and short[-1] < 0.01 and short[SR // 4] == 1.0
    long = fit_ring(bowl, 2 * SR)
    assert long.shape == (2 * SR,) and long[0] < 0.01 and long[SR - 1] < 0.01
    assert not long[SR:].any()
    assert np.max(np.abs(np.diff(long))) < 0.02  # a 2 ms rise, a 5 ms fall


# -- ambient ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("exponent", "octave_drop_db"), [(1.0, 0.0), (2.0, 3.01)])
def test_colored_noise_slope(exponent, octave_drop_db):
    x = colored_noise(10 * SR, rng(2), exponent)
    assert x.dtype == np.float32
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    # Pink: equal power per octave; brown: 3.01 dB less each octave up.
    drop_db = 10 * np.log10(band_power(x, 500, 1000) / band_power(x, 1000, 2000))
    assert drop_db == pytest.approx(octave_drop_db, abs=0.5)
    assert band_power(x, 0, synth.AMBIENT_HIGHPASS_HZ) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["pink", "brown", "drone"])
def test_ambient_loops_have_no_seam(kind):
    loop = ambient_loop(kind, rng(3), n=5 * SR)
    assert loop.dtype == np.float32
    steps = np.abs(np.diff(loop))
    seam = abs(float(loop[0]) - float(loop[-1]))
    # The jump from the last sample back to the first is an ordinary step of the loop.
    assert seam <= np.percentile(steps, 99.9)


def test_loop_span_indexes_by_absolute_position():
    loop = np.arange(10, dtype=np.float32)
    assert loop_span(loop, 7, 15).tolist() == [7, 8, 9, *range(10), 0, 1]
    assert loop_span(loop, 20, 3).tolist() == [0, 1, 2]


def test_the_noise_bands_are_made_once_when_two_tracks_ask_at_once(monkeypatch):
    # Two tracks' workers meet the first noise breath together; each making the bands (some
    # 60 MB of transforms) doubled a render's peak memory and its work.
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    made: list[int] = []
    real = synth.pink_noise
    together = threading.Barrier(2)

    def counted(n, rng):
        made.append(n)
        time.sleep(0.2)  # long enough for the other thread to arrive meanwhile
        return real(n, rng)

    def ask():
        together.wait(30)
        return synth._noise_bands()

    synth._noise_bands.cache_clear()
    monkeypatch.setattr(synth, "pink_noise", counted)
    try:
        with ThreadPoolExecutor(2) as pool:
            first, second = (f.result(timeout=60) for f in [pool.submit(ask) for _ in range(2)])
    finally:
        synth._noise_bands.cache_clear()
    assert len(made) == 1
    assert first is second


def _drone_by_samples(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """The drone as it is defined, sample by sample: each partial's twin sines, swelling."""
    t = np.arange(n, dtype=np.float64) / n
    out = np.zeros(n)
    for freq_hz, level, swells in zip(
        synth.DRONE_PARTIALS_HZ, synth.DRONE_LEVELS, synth.DRONE_SWELLS_PER_LOOP, strict=True
    ):
        cycles = round(freq_hz * n / sample_rate)
        low, high, swell = rng.uniform(0, 2 * np.pi, size=3)
        pair = np.sin(2 * np.pi * cycles * t + low) + np.sin(
            2 * np.pi * (cycles + swells) * t + high
        )
        out += level * (0.65 + 0.35 * np.sin(2 * np.pi * swells * t + swell)) * pair
    air = synth.colored_noise(n, rng, 2.0, sample_rate).astype(np.float64)
    out += 0.15 * air * float(np.sqrt(np.mean(out**2)))
    return (out / (float(np.sqrt(np.mean(out**2))) or 1.0)).astype(np.float32)


@pytest.mark.parametrize(
    ("n", "rate"), [(1_323_000, 44_100), (44_100, 44_100), (999, 8_000), (300, 44_100), (2, 44_100)]
)
def test_the_drone_made_as_a_spectrum_is_its_sines_sample_by_sample(n, rate):
    # Short loops too, where the partials lie past half the loop's bins and fold back.
    got = synth.ambient_loop("drone", np.random.default_rng(11), n, rate)
    expected = _drone_by_samples(np.random.default_rng(11), n, rate)
    assert got.dtype == np.float32 and got.shape == (n,)
    assert np.all(np.abs(got - expected) <= 2 * np.spacing(np.abs(expected)) + 1e-7)
