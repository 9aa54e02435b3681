"""Pass 1 measures only where something sounds (``mix.track_powers``, ``mix.measured_hops``):
its block powers against the K-weighting carried over the whole track, on real mixes."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from audioguide import loudness, mix
from audioguide.loudness import block_powers, gated_loudness
from audioguide.routine import load_routine
from audioguide.speech import Speech
from audioguide.timeline import build_timeline

HOP = 4_410
MEMORY = 22_050  # loudness.K_WEIGHTING_MEMORY_S at 44.1 kHz


class Sounding:
    """A stand-in mixer: only the sounding stretches ``measured_hops`` reads."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self.spans = spans

    def sounding_spans(self) -> list[tuple[int, int]]:
        return self.spans


def test_the_measured_hops_run_from_a_sound_to_the_k_weightings_memory_after_it():
    # A sound over samples 44,100 to 88,200 starts in hop 10; its filter runs until 22,050
    # after its end, 110,250, where hop 25 starts.
    assert mix.measured_hops(Sounding([(44_100, 88_200)]), 100) == [(10, 25)]
    assert mix.measured_hops(Sounding([(44_100, 88_200)]), 20) == [(10, 20)]  # the track ends
    assert mix.measured_hops(Sounding([(100, 200)]), 100) == [(0, 6)]
    assert mix.measured_hops(Sounding([(4_409, 4_410)]), 100) == [(0, 6)]
    # Runs whose hops meet are joined (a run starts only after the memory's silence); with a
    # hop of silence between, they are not.
    first = (44_100, 88_200)
    assert mix.measured_hops(Sounding([first, (114_659, 114_660)]), 100) == [(10, 31)]
    assert mix.measured_hops(Sounding([first, (114_660, 114_661)]), 100) == [(10, 25), (26, 32)]
    assert mix.measured_hops(Sounding([]), 100) == []


def test_the_sounding_spans_join_the_events_and_a_bed_sounds_everywhere(fake_speech):
    track = build_timeline(load_routine("back-pain-quick"), fake_speech.length_s).tracks[1]
    mixer = mix.TrackMixer(track, fake_speech, mix.MixSettings())
    spans = mixer.sounding_spans()
    whole = mixer.mix(0, mixer.length)
    silent = np.ones(whole.size, dtype=bool)
    for lo, hi in spans:
        silent[lo:hi] = False
    assert len(spans) > 1 and all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert np.count_nonzero(whole[silent]) == 0  # outside them, exact silence
    assert all(np.count_nonzero(whole[lo:hi]) > 0 for lo, hi in spans)
    bed = mix.TrackMixer(track, fake_speech, mix.MixSettings(ambient="brown"))
    assert bed.sounding_spans() == [(0, bed.length)]


@pytest.mark.parametrize("ambient", [None, "brown"])  # pauses of exact silence; a bed
def test_pass_1_gives_the_block_powers_of_the_filter_carried_over_the_whole_track(
    fake_engine, ambient
):
    speech = Speech(fake_engine, cache=None)
    tracks = build_timeline(load_routine("back-pain-quick"), speech.length_s).tracks
    settings = mix.MixSettings(ambient=ambient)
    measured, carried = [], []
    filtered = hops = 0
    for track in tracks:
        mixer = mix.TrackMixer(track, speech, settings)
        measured.append(mix.track_powers(mixer))
        carried.append(block_powers(mixer.mix(0, mixer.length)))  # one filter, from the start
        track_hops = mixer.length // HOP
        hops += track_hops
        filtered += sum(end - first for first, end in mix.measured_hops(mixer, track_hops))
        assert measured[-1].shape == carried[-1].shape
        if ambient is not None:  # one run over the whole track: the very same pieces
            assert np.array_equal(measured[-1], carried[-1])
            continue
        # To float32 rounding where anything sounds; a block of silence is the guard's,
        # alike (1e-20 is 200 dB under the absolute gate).
        np.testing.assert_allclose(measured[-1], carried[-1], rtol=1e-5, atol=1e-20)
        assert gated_loudness(measured[-1]) == pytest.approx(gated_loudness(carried[-1]), abs=1e-4)
    if ambient is None:  # the silence was skipped, not filtered
        assert filtered < 0.85 * hops  # 79% here, in 26 runs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the silent blocks' powers need no special case
        gain_db = mix.master_gain_db(measured, -16.0)
        levels = [mix.TrackLevels(p, np.zeros(p.shape, dtype=bool)) for p in measured]
        assert mix.master_gain(levels, -16.0) == mix.MasterGain(gain_db)
    assert gain_db == pytest.approx(mix.master_gain_db(carried, -16.0), abs=1e-6)


def test_a_hop_of_silence_is_given_the_energy_the_carried_filter_settles_at():
    rng = np.random.default_rng(3)
    x = np.zeros(8 * loudness.SAMPLE_RATE, dtype=np.float32)
    x[: 2 * loudness.SAMPLE_RATE] = rng.standard_normal(2 * loudness.SAMPLE_RATE) * 0.3
    meter = loudness.BlockMeter()
    meter.feed(x)
    energies = meter.energies()
    settled = energies[(2 * loudness.SAMPLE_RATE + MEMORY) // HOP + 1 :]
    silent = loudness.silent_hop_energy()
    assert 1e-28 < silent < 1e-24  # the guard, K-weighted: about 250 dB under the gate
    np.testing.assert_allclose(settled, silent, rtol=1e-5)
    assert energies[0] > 1e3 * silent
