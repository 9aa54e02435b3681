"""BS.1770 loudness: the K-weighting, block powers in pieces, the gates."""

from __future__ import annotations

import itertools

import numpy as np
import pyloudnorm
import pytest
from scipy import signal

from audioguide import audio, loudness
from audioguide.loudness import block_powers, gated_loudness
from audioguide.synth import SAMPLE_RATE

SR = SAMPLE_RATE


def integrated_loudness(samples: np.ndarray) -> float:
    """BS.1770 integrated loudness of mono samples on their one channel, as the render
    measures a session: block powers, then the gates."""
    return gated_loudness(block_powers(samples))


def sine(freq_hz: float, seconds: float, amplitude: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def test_loudness_of_a_sine_worked_by_hand():
    # BS.1770: a full-scale 997 Hz sine in one channel reads -3.01 LUFS; at half scale
    # (-6.02 dB) it reads -9.03 LUFS.
    x = sine(997.0, 10.0, 0.5)
    assert integrated_loudness(x) == pytest.approx(-9.03, abs=0.05)


def test_loudness_matches_pyloudnorm_on_speechlike_bursts():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(30 * SR).astype(np.float32) * 0.1
    gate = (np.sin(2 * np.pi * 0.3 * np.arange(noise.size) / SR) > 0).astype(np.float32)
    x = noise * (gate + 0.01)
    expected = pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64))
    assert integrated_loudness(x) == pytest.approx(expected, abs=0.05)


def test_block_powers_are_the_same_in_chunks_as_in_one_piece():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SR * 30 + 123).astype(np.float32)  # several chunks
    powers = block_powers(x)
    assert powers.shape == ((x.size // 4410) - 3,)
    k = signal.lfilter(*_k_weighting_ba(), x.astype(np.float64))
    direct = np.mean(k[4410 * 5 : 4410 * 5 + 17640] ** 2)
    assert powers[5] == pytest.approx(direct, rel=1e-6)  # block_powers filters in float32


def _k_weighting_ba():
    sos = np.asarray(loudness.k_weighting(SR))
    b = np.polymul(sos[0, :3], sos[1, :3])
    a = np.polymul(sos[0, 3:], sos[1, 3:])
    return b, a


def test_loudness_blocks_fed_in_pieces_are_the_blocks_of_the_whole():
    x = np.random.default_rng(1).standard_normal(7 * SR).astype(np.float32) * 0.1
    meter = loudness.BlockMeter()
    for lo in range(0, x.size, 12_345):  # not a whole number of 100 ms hops
        meter.feed(x[lo : lo + 12_345])
    assert np.array_equal(meter.powers(), block_powers(x))  # chunks counted from sample 0
    meter.feed(x[:5_000])  # more after a look at the powers
    assert np.array_equal(meter.powers(), block_powers(np.concatenate((x, x[:5_000]))))


# -- no subnormal numbers ---------------------------------------------------------------------
# A recursive filter fed exact silence after a sound decays towards zero through the subnormal
# floats, whose arithmetic some CPUs run 40 to 50 times slower (half of a render's time on one
# measured here). Checked on the numbers, not timed, so it fails on any CPU.

SMALLEST_NORMAL = np.finfo(np.float32).smallest_normal


def subnormal_count(values: np.ndarray) -> int:
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    return int(np.count_nonzero((magnitude > 0) & (magnitude < SMALLEST_NORMAL)))


def sound_then_silence(silence_s: float = 30.0) -> np.ndarray:
    """One second of speech-like noise, then exact digital silence, as a pause in a session."""
    rng = np.random.default_rng(7)
    x = np.zeros(round((1.0 + silence_s) * SR), dtype=np.float32)
    x[:SR] = rng.standard_normal(SR).astype(np.float32) * np.float32(0.1)
    return x


def test_the_k_weighting_never_decays_into_subnormal_numbers():
    weighting = loudness.KWeighting()
    x = sound_then_silence()
    piece = 100_003  # the state is carried across pieces, as the meter feeds it
    for lo in range(0, x.size, piece):
        y = weighting.filter(x[lo : lo + piece])
        assert subnormal_count(y) == 0, f"subnormal outputs in samples {lo} to {lo + piece}"
        assert subnormal_count(weighting.state) == 0, f"subnormal state after sample {lo}"


def test_the_guard_is_the_same_in_pieces_and_changes_no_audible_sample():
    x = sound_then_silence(silence_s=1.0)
    whole = loudness.with_subnormal_guard(x)
    pieces = [loudness.with_subnormal_guard(x[lo : lo + 999], lo) for lo in range(0, x.size, 999)]
    assert np.array_equal(np.concatenate(pieces), whole)
    assert whole.dtype == np.float32
    loud = np.abs(x) > 1e-6
    assert np.array_equal(whole[loud], x[loud])
    assert np.all(np.abs(whole[~loud] - x[~loud]) <= 1.01 * loudness.SUBNORMAL_GUARD)
    assert np.all(np.sign(whole[x.size - 4 :]) == [1, -1, 1, -1])  # alternating in silence


@pytest.mark.parametrize(
    ("kind", "gain_db", "q", "corner_hz"),
    [
        ("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0),
        ("high_pass", 0.0, 0.5, 38.0),
        ("low_pass", 0.0, 0.707, 2500.0),
        ("low_shelf", 2.0, 0.707, 220.0),
        ("peaking", -3.5, 0.9, 3000.0),
    ],
)
def test_biquads_are_pyloudnorms(kind, gain_db, q, corner_hz):
    from pyloudnorm.iirfilter import IIRfilter

    reference = IIRfilter(gain_db, q, corner_hz, SR, kind)
    expected = np.concatenate([reference.b, reference.a]) / reference.a[0]
    np.testing.assert_allclose(
        loudness.biquad(kind, gain_db, q, corner_hz, SR), expected, rtol=1e-14
    )


def test_the_numpy_k_weighting_is_scipys_in_any_pieces():
    x = sound_then_silence(silence_s=2.0)
    x[2 * SR : 2 * SR + 5_000] = 0.5  # a step, for the slow high pass
    expected = signal.sosfilt(np.array(loudness.k_weighting()), x.astype(np.float64))
    weighting = loudness.KWeighting()
    cuts = [0, 1, 64, 63, 4_095, 4_097, 100_000, 4_096 * 64 + 1]
    bounds = np.minimum(np.cumsum([*cuts, x.size]), x.size)
    y = np.concatenate([weighting.filter(x[a:b]) for a, b in itertools.pairwise(bounds)])
    assert y.dtype == np.float32 and y.shape == x.shape
    # Float32 samples: within 4e-6 of float64 on this full-scale step, where scipy's sosfilt
    # in float32 (the meter's filter before) is 4e-5 off.
    assert np.max(np.abs(y - expected)) < 1e-5


# -- the K-weighting's memory --------------------------------------------------------------


def k_weighting_tail(start: int, summed: int = SR) -> float:
    """The most that inputs ``start`` or more samples ago, each at most 1 in magnitude, can
    add to the K-weighting's output: the sum of |h[k]| over k >= ``start`` of its impulse
    response h[k] = C A^(k-1) B (k >= 1), in float64. ``summed`` terms are added up; the rest
    is bounded by |C| |A^(start + summed - 1) B| times the sum of |A^j| over every j >= 0,
    which is at most the sum over j < summed divided by 1 - |A^summed| (norms: Frobenius,
    at least the spectral ones, so the bound holds)."""
    a_matrix, b_vector, c_vector, _ = audio.sos_state_space(np.asarray(loudness.k_weighting()))
    state = np.linalg.matrix_power(a_matrix, start - 1) @ b_vector
    power = np.eye(a_matrix.shape[0])  # A^j
    total, norms = 0.0, 0.0
    for _ in range(summed):
        total += abs(float(c_vector @ state))
        state = a_matrix @ state
        norms += float(np.linalg.norm(power))
        power = a_matrix @ power
    assert np.linalg.norm(power) < 1.0
    rest = np.linalg.norm(c_vector) * np.linalg.norm(state) * norms / (1 - np.linalg.norm(power))
    return total + float(rest)


def test_the_k_weighting_forgets_its_input_within_its_memory():
    # What the stem pass relies on (mix.stem_levels): an input K_WEIGHTING_MEMORY_S ago adds
    # at most 1.7e-50 of its peak to the output, a thousand dB under float32's rounding.
    memory = round(loudness.K_WEIGHTING_MEMORY_S * SR)
    assert k_weighting_tail(memory) < 1e-49
    assert k_weighting_tail(SR // 20) > 1e-6  # not so 50 ms on: the bound is not trivial


def test_a_k_weighting_started_at_rest_a_memory_before_is_the_carried_one():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(6 * SR).astype(np.float32) * np.float32(0.3)
    x[2 * SR : 3 * SR] += np.float32(0.5)  # a step, for the slow high pass
    start = 2 * SR + 1_234
    late = start + round(loudness.K_WEIGHTING_MEMORY_S * SR)
    sections = np.array(loudness.k_weighting())
    # In float64 (scipy): from the memory on, equal to float64's own rounding; before, not.
    carried = signal.sosfilt(sections, x.astype(np.float64))
    fresh = signal.sosfilt(sections, x[start:].astype(np.float64))
    assert np.max(np.abs(fresh[late - start :] - carried[late:])) < 1e-11
    assert np.max(np.abs(fresh[:100] - carried[start : start + 100])) > 0.01
    # The meter's filter started there (its guard in phase) is the carried one to its own
    # float32 rounding (within 1e-5 of float64: test_the_numpy_k_weighting_is_scipys...).
    ours = loudness.KWeighting(first_sample=start).filter(x[start:])
    assert np.max(np.abs(ours[late - start :] - carried[late:])) < 1e-5


def test_the_guard_keeps_the_voice_eq_out_of_subnormal_numbers():
    # The voice chain's EQ (speech.VOICE_EQ's kinds) run by scipy over a guarded signal.
    sections = np.array(
        [
            loudness.biquad("high_pass", 0.0, 0.707, 70.0, SR),
            loudness.biquad("low_shelf", 2.0, 0.707, 220.0, SR),
            loudness.biquad("peaking", -3.5, 0.9, 3000.0, SR),
            loudness.biquad("high_shelf", -2.0, 0.707, 7000.0, SR),
        ]
    ).astype(np.float32)
    x = sound_then_silence(silence_s=5.0)
    assert subnormal_count(signal.sosfilt(sections, x)) > 0  # unguarded: it decays into them
    assert subnormal_count(signal.sosfilt(sections, loudness.with_subnormal_guard(x))) == 0


# -- the meter on real mixes ------------------------------------------------------------------


def reference_powers(samples: np.ndarray) -> np.ndarray:
    """BS.1770 block powers worked in float64 throughout: scipy's sosfilt over the guarded
    track, whole, then the mean square of each 400 ms block every 100 ms."""
    guarded = loudness.with_subnormal_guard(samples).astype(np.float64)
    weighted = signal.sosfilt(np.array(loudness.k_weighting()), guarded)
    hop, block = 4_410, 17_640
    energies = np.square(weighted[: weighted.size - weighted.size % hop]).reshape(-1, hop).sum(1)
    cumulative = np.concatenate(([0.0], np.cumsum(energies)))
    return (cumulative[block // hop :] - cumulative[: -(block // hop)]) / block


@pytest.mark.parametrize("ambient", [None, "brown"])  # pauses of exact silence; a bed without
def test_the_meter_on_real_mixes_is_float64s_to_a_thousandth_of_a_lu(fake_engine, ambient):
    # Two sections of a built-in routine mixed as a render mixes them (breath tones, bells,
    # pauses, speech), fed to the meter in a render's spans; the tolerance is what a render
    # may move: every track within 0.001 LU, the session gain within 0.001 dB.
    from audioguide import mix
    from audioguide.routine import load_routine
    from audioguide.speech import Speech
    from audioguide.timeline import build_timeline

    speech = Speech(fake_engine, cache=None)
    tracks = build_timeline(load_routine("back-pain-quick"), speech.length_s).tracks[:2]
    settings = mix.MixSettings(ambient=ambient)
    measured, expected = [], []
    for track in tracks:
        mixer = mix.TrackMixer(track, speech, settings)
        whole = mixer.mix(0, mixer.length)
        assert (np.count_nonzero(whole == 0) > whole.size // 20) == (ambient is None)
        measured.append(mix.track_powers(mixer))
        expected.append(reference_powers(whole))
        assert measured[-1].shape == expected[-1].shape
        assert gated_loudness(measured[-1]) == pytest.approx(
            gated_loudness(expected[-1]), abs=0.001
        )
    assert mix.master_gain_db(measured, -16.0) == pytest.approx(
        mix.master_gain_db(expected, -16.0), abs=0.001
    )
