"""audio's numpy resampler and filters, held to scipy.signal's samples (the tests' reference)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import signal

from audioguide import audio
from audioguide.loudness import BUTTERWORTH_Q, biquad
from audioguide.speech import voice_fx


def steep_taps(up: int, down: int) -> np.ndarray:
    factor = max(up, down)
    return signal.firwin(
        audio.RESAMPLE_TAPS_PER_PHASE * factor + 1,
        audio.RESAMPLE_CUTOFF / factor,
        window=("kaiser", audio.RESAMPLE_KAISER_BETA),
    )


# The last three are awkward rates (21,464 Hz to 44.1 kHz is 1,919/934), resampled phase by
# phase: their whole matrices would take tens of MB.
RATIOS = [(2, 1), (1, 2), (3, 2), (147, 160), (160, 147), (1919, 934), (934, 1919), (1103, 1280)]


@pytest.mark.parametrize(("up", "down"), RATIOS)
def test_the_resampler_is_resample_poly_with_the_steep_filter(up, down):
    x = np.random.default_rng(up * 1000 + down).standard_normal(40_000)
    expected = signal.resample_poly(x, up, down, window=steep_taps(up, down))
    got = audio._polyphase(x, up, down)
    assert got.dtype == np.float64 and got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 1e-12
    blocks = [x[:9_000], x[9_000:9_001], x[9_001:]]
    joined = np.concatenate(list(audio.resample_blocks(blocks, up, down, block=4_096)))
    assert np.max(np.abs(joined - expected)) < 1e-12


@pytest.mark.parametrize("up", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 33, 63, 64, 65, 40_000, 1_048_600])
def test_upsampling_by_a_whole_factor_in_float32_is_resample_poly(up, n):
    """A whole factor (an engine's 22,050 Hz to 44,100) goes as products over rows of 64
    input samples: around a row's end, and past the rows taken at a time (16,384)."""
    x = np.random.default_rng(up * n).standard_normal(n).astype(np.float32)
    expected = signal.resample_poly(x.astype(np.float64), up, 1, window=steep_taps(up, 1))
    got = audio._polyphase(x, up, 1)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 1e-5


@pytest.mark.parametrize(("up", "down"), [(1919, 934), (1103, 1280)])
def test_an_awkward_ratio_resampled_phase_by_phase_takes_little_memory(up, down):
    """Each output phase of an awkward ratio keeps only its own 33 taps: its whole matrix, of
    (about down + 32) x up entries nearly all zero, took 48 MB to make for 1,919/934 (a
    bell recorded at 21,464 Hz), and more than a second for each block."""
    audio._resampler.cache_clear()
    x = np.random.default_rng(up).standard_normal(5_000).astype(np.float32)
    tracemalloc.start()
    try:
        y = audio._polyphase(x, up, down)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.shape == (-(-x.size * up // down),) and np.all(np.isfinite(y))
    assert peak_bytes < 12_000_000


@pytest.mark.parametrize("n", [1, 2, 5, 33, 100, 22_050])
def test_resample_keeps_float32_and_every_length(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    expected = signal.resample_poly(x.astype(np.float64), 2, 1, window=steep_taps(2, 1))
    got = audio.resample(x, 22_050, 44_100)
    assert got.dtype == np.float32 and got.shape == (2 * n,)
    assert np.max(np.abs(got - expected)) < 1e-6
    assert audio.resample(np.zeros(0, np.float32), 22_050, 44_100).shape == (0,)


def test_sosfilt_is_scipys_for_the_voice_eq():
    for rate in (22_050, 44_100):
        sections = np.array([biquad(*section, rate) for section in voice_fx.VOICE_EQ])
        for n in (1, 63, 64, 65, 4_097, 100_000):
            x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
            got = audio.sosfilt(sections, x)
            assert got.dtype == np.float32 and got.shape == (n,)
            assert np.max(np.abs(got - signal.sosfilt(sections, x.astype(np.float64)))) < 1e-5


def test_fft_convolution_and_lengths():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(10_001).astype(np.float32), rng.standard_normal(777)
    got = audio.fft_convolve(a, b)
    assert got.dtype == np.float32
    assert np.max(np.abs(got - signal.fftconvolve(a.astype(np.float64), b))) < 1e-4
    for n in (1, 7, 97, 1_000, 4_097, 123_457):
        length = audio.fast_fft_length(n)
        rest = length
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        assert rest == 1 and length >= n
        assert not any(_smooth(m) for m in range(n, length))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fixed_kernel_convolves_as_fft_convolve_does(dtype):
    kernel = np.random.default_rng(5).standard_normal(8_820).astype(dtype)
    fixed = audio.FixedKernel(kernel)
    assert fixed.length == 32_768 and fixed.block == 32_768 - 8_820 + 1
    block = fixed.block
    for n in (0, 1, 100, block - 1, block, block + 1, 3 * block + 7):
        x = np.random.default_rng(n).standard_normal(n).astype(dtype)
        got = fixed.convolve(x)
        expected = signal.fftconvolve(x.astype(np.float64), kernel.astype(np.float64))
        assert got.dtype == dtype and got.shape == (n + 8_820 - 1 if n else 0,)
        if n:
            scale = np.max(np.abs(expected))
            assert np.max(np.abs(got - expected)) < (1e-5 if dtype == np.float32 else 1e-12) * scale


def _smooth(m: int) -> bool:
    for p in (2, 3, 5):
        while m % p == 0:
            m //= p
    return m == 1


def test_the_iir_impulse_response_and_the_butterworth_low_pass():
    section = biquad("low_pass", 0.0, BUTTERWORTH_Q, 4_000.0, 44_100)
    assert np.max(np.abs(section - signal.butter(2, 4_000.0, fs=44_100, output="sos")[0])) < 1e-12
    impulse = np.zeros(2_000)
    impulse[0] = 1.0
    expected = signal.sosfilt(section[None, :], impulse)
    got = audio.iir_impulse_response(section[None, :], 2_000)
    assert np.max(np.abs(got - expected)) < 1e-12


@pytest.mark.parametrize("rate", [22_050, 44_100, 48_000])
@pytest.mark.parametrize(
    "band", [(150.0, 900.0), (900.0, 3500.0), (1_000.0, 1_100.0), (20.0, 20_000.0)]
)
def test_the_butterworth_band_pass_response_is_scipys(band, rate):
    if band[1] >= rate / 2:
        band = (band[0], 0.45 * rate)
    n = 6_000
    sos = signal.butter(2, band, "bandpass", fs=rate, output="sos")
    _, expected = signal.sosfreqz(sos, worN=np.fft.rfftfreq(n, 1 / rate), fs=rate)
    got = audio.butter_band_pass_response(*band, n, rate)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 1e-10


def test_the_breath_noise_bands_are_the_band_pass_settled_over_the_looped_pool():
    # What filtering the pool twice over with scipy and keeping the second period gave: the
    # same float32 samples but for a last-bit rounding in a few.
    from audioguide import synth

    pool = synth.pink_noise(
        audio.seconds_to_samples(synth.NOISE_POOL_S), np.random.default_rng(synth.NOISE_POOL_SEED)
    )
    twice = np.concatenate([pool, pool]).astype(np.float64)
    bands = synth._noise_bands()
    for (low_hz, high_hz), got in zip(
        (synth.NOISE_DARK_BAND_HZ, synth.NOISE_BRIGHT_BAND_HZ), bands, strict=True
    ):
        sos = signal.butter(2, (low_hz, high_hz), "bandpass", fs=audio.SAMPLE_RATE, output="sos")
        expected = signal.sosfilt(sos, twice)[pool.shape[0] :].astype(np.float32)
        assert got.dtype == np.float32 and got.shape == expected.shape
        ulp = np.spacing(np.abs(expected))
        assert np.all(np.abs(got - expected) <= ulp)
        assert np.count_nonzero(got != expected) < 1e-4 * got.size
