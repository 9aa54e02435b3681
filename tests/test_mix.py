"""Mixing and mastering: placement, ducking, ambient beds, loudness and the true-peak limiter.

Unit tests on the FakeEngine's speech; tests/test_sound.py renders and decodes real sessions.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import pytest
from conftest import FakeEngine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from audioguide import mix
from audioguide.dynamics import hot_samples, limit, overshoot_bound, true_peak
from audioguide.errors import RoutineError, SoundFileError
from audioguide.loudness import block_powers, gated_loudness
from audioguide.mix import (
    DUCK_DB,
    MixSettings,
    TrackMixer,
    db_to_gain,
    duck_gain,
    master_gain_db,
    track_span,
)
from audioguide.routine import parse_routine
from audioguide.speech import Speech
from audioguide.synth import SAMPLE_RATE
from audioguide.timeline import Event, Track, build_timeline

SR = SAMPLE_RATE


def sine(freq_hz: float, seconds: float, amplitude: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def track(events: tuple[Event, ...], duration_s: float, **fields) -> Track:
    return Track(1, "T", 0.0, duration_s, events, **fields)


def mix_track(track: Track, speech: Speech, settings: MixSettings) -> np.ndarray:
    """The whole track mixed in one range: what the render's spans must join into."""
    mixer = mix.TrackMixer(track, speech, settings)
    return mixer.mix(0, mixer.length)


def reference_master(
    samples: np.ndarray, gain_db: float, ceiling_dbtp: float = mix.TRUE_PEAK_CEILING_DBTP
) -> np.ndarray:
    """A whole track mastered at once, as the render's mastered spans must join into: the
    session gain, then the true-peak limiter."""
    return limit(samples * np.float32(db_to_gain(gain_db)), db_to_gain(ceiling_dbtp))


def loudness_lufs(samples: np.ndarray) -> float:
    return gated_loudness(block_powers(samples))


# -- loudness ---------------------------------------------------------------------------------


def test_album_gain_is_one_gain_for_the_session():
    loud = sine(997.0, 10.0, 0.5)  # -9.03 LUFS
    quiet = sine(997.0, 10.0, 0.05)  # -29.03 LUFS: gated out of the session's measure
    gain_db = master_gain_db([block_powers(loud), block_powers(quiet)], -16.0)
    # Mono target: -16 - 3.01 = -19.01; the quiet track is below the relative gate.
    assert gain_db == pytest.approx(-19.01 + 9.03, abs=0.05)
    assert master_gain_db([block_powers(np.zeros(SR * 2, np.float32))], -16.0) == 0.0


def test_a_session_without_speech_is_raised_all_the_way_to_the_target():
    # Only a quiet bed (-49.07 LUFS): no voice to shout, so the gain is the full +30 dB
    # (the bounds on the voice: tests/test_session_loudness.py).
    powers = block_powers(sine(997.0, 10.0, 0.005))
    levels = mix.TrackLevels(powers, np.zeros(powers.shape[0], dtype=bool))
    gain = mix.master_gain([levels], -16.0)
    assert gain == mix.MasterGain(master_gain_db([powers], -16.0), 0.0)
    assert gain.gain_db == pytest.approx(-19.01 + 49.07, abs=0.01)


def test_db_to_gain_worked_by_hand():
    assert db_to_gain(-6.0) == pytest.approx(0.5011872)
    assert db_to_gain(DUCK_DB) == pytest.approx(10 ** (DUCK_DB / 20))


# -- true peak and the limiter ----------------------------------------------------------------


def test_true_peak_of_a_quarter_rate_sine_worked_by_hand():
    # sin(pi n / 2 + pi / 4) samples at +-0.7071 only; the wave between them reaches 1.0.
    # The 4x interpolation lands exactly on the crests, within the filter's 2% ripple.
    n = np.arange(4000)
    x = np.sin(np.pi * n / 2 + np.pi / 4).astype(np.float32)
    assert np.max(np.abs(x)) == pytest.approx(0.7071, abs=1e-4)
    assert true_peak(x) == pytest.approx(1.0, abs=0.02)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.01, 0.9))
def test_true_peak_equals_oversampling_everything(seed, level):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(5000) * level).astype(np.float32)
    x[rng.integers(0, 5000, 3)] *= 4  # a few peaks
    full = np.max(np.abs(signal.resample_poly(x.astype(np.float64), 4, 1)))
    # The same points, summed in float32: equal to a few parts in ten million.
    assert true_peak(x) == pytest.approx(full, rel=1e-6)


def test_only_samples_near_loud_ones_are_oversampled():
    x = np.full(100_000, 0.01, dtype=np.float32)
    x[50_000] = 0.9
    hot = hot_samples(x, 0.9)
    assert hot.tolist() == list(range(50_000 - 10, 50_000 + 11))  # the filter's reach
    assert hot_samples(x, 0.9 * overshoot_bound() * 1.001).size == 0


def test_limiter_holds_the_true_peak_and_leaves_the_rest_untouched():
    x = sine(440.0, 3.0, 0.3)
    x[SR : SR + 2000] *= 3.0  # a burst to 0.9
    ceiling = db_to_gain(-1.5)
    y = limit(x, ceiling)
    assert y.dtype == np.float32
    assert true_peak(y) <= ceiling
    assert np.array_equal(y[: SR // 2], x[: SR // 2])  # far from the burst: untouched
    assert np.array_equal(y[2 * SR :], x[2 * SR :])
    # Smooth: the gain changes by at most a window's worth per sample, never in a step.
    gain = y[SR - 2000 : SR + 4000] / x[SR - 2000 : SR + 4000]
    finite = np.isfinite(gain) & (np.abs(x[SR - 2000 : SR + 4000]) > 0.05)
    assert np.max(np.abs(np.diff(gain[finite]))) < 0.01


def test_the_ceiling_leaves_room_for_low_bit_rates():
    assert mix.true_peak_ceiling_dbtp(None) == mix.true_peak_ceiling_dbtp(96) == -1.7
    assert mix.true_peak_ceiling_dbtp(32) < mix.true_peak_ceiling_dbtp(64) < -1.7
    x = sine(440.0, 1.0, 0.5)
    y = reference_master(x, 6.0, ceiling_dbtp=mix.true_peak_ceiling_dbtp(32))
    assert true_peak(y) <= db_to_gain(-2.6)


def test_master_keeps_silence_silent():
    x = np.zeros(3 * SR, dtype=np.float32)
    x[SR : SR + 1000] = sine(440.0, 1000 / SR, 0.5)
    y = reference_master(x, 12.0)
    assert not y[:SR].any() and not y[SR + 1000 :].any()
    assert true_peak(y) <= db_to_gain(mix.TRUE_PEAK_CEILING_DBTP)


# -- ducking and the ambient bed --------------------------------------------------------------


def test_duck_gain_worked_by_hand():
    say = Event("say", 2.0, 1.0, text="x")
    gain = duck_gain(track((say,), 5.0), 5 * SR, 0)
    ducked = db_to_gain(DUCK_DB)  # 0.5011872 at -6 dB
    assert gain.dtype == np.float32
    assert gain[: round(1.9 * SR)] == pytest.approx(1.0)
    assert gain[2 * SR : 3 * SR] == pytest.approx(ducked)
    assert gain[round(3.45 * SR) :] == pytest.approx(1.0)
    attack = gain[round((2.0 - mix.DUCK_ATTACK_S) * SR) : 2 * SR]
    release = gain[3 * SR : round((3.0 + mix.DUCK_RELEASE_S) * SR)]
    assert np.all(np.diff(attack) <= 0) and np.all(np.diff(release) >= 0)
    # Smooth: no step bigger than the release's raised cosine allows.
    assert np.max(np.abs(np.diff(gain))) < (1 - ducked) * np.pi / (mix.DUCK_ATTACK_S * SR)


def test_overlapping_cues_duck_once_not_twice():
    cues = (Event("say", 1.0, 1.0, text="a"), Event("say", 2.1, 1.0, text="b"))
    gain = duck_gain(track(cues, 4.0), 4 * SR, 0)
    assert gain.min() == pytest.approx(db_to_gain(DUCK_DB))


def quiet_track(ambient: str | None) -> tuple[Track, Event]:
    say = Event("say", 1.0, 1.2, text="Breathe in slowly.")
    pause = Event("pause", 3.5, 4.0)
    return track((say, pause), 8.0, ambient=ambient), pause


@pytest.mark.parametrize("ambient", [None, "none"])
def test_a_pause_is_digital_silence_without_ambient(fake_speech, ambient):
    tr, pause = quiet_track(ambient)
    x = mix_track(tr, fake_speech, MixSettings())
    assert x.dtype == np.float32
    lo, hi = round(pause.start_s * SR), round(pause.end_s * SR)
    assert not x[lo:hi].any()


@pytest.mark.parametrize("kind", ["pink", "brown", "drone"])
def test_ambient_fills_pauses_fades_and_ducks(fake_speech, kind):
    tr, pause = quiet_track(kind)
    x = mix_track(tr, fake_speech, MixSettings())
    bed_only = mix_track(tr, fake_speech, MixSettings(ambient=kind)) - mix_track(
        tr, fake_speech, MixSettings(ambient="none")
    )
    assert np.array_equal(x, mix_track(tr, fake_speech, MixSettings(ambient=kind)))
    lo, hi = round(pause.start_s * SR), round(pause.end_s * SR)
    rms = lambda s: float(np.sqrt(np.mean(s.astype(np.float64) ** 2)))  # noqa: E731
    assert rms(x[lo:hi]) > 0
    # Faded at both ends of the track.
    assert abs(x[0]) < 1e-4 and abs(x[-1]) < 1e-4
    # Under the cue (1.0 to 2.2 s) the bed is DUCK_DB down on the bed in the pause.
    under = rms(bed_only[round(1.1 * SR) : round(2.1 * SR)])
    free = rms(bed_only[lo + SR : hi - SR // 2])
    assert 20 * np.log10(under / free) == pytest.approx(DUCK_DB, abs=1.5)
    # The bed is quiet: its loop measures AMBIENT_LOUDNESS_LUFS, 19 LU under the voice.
    assert loudness_lufs(mix._bed_loop(kind, 0)) == pytest.approx(
        mix.AMBIENT_LOUDNESS_LUFS, abs=0.01
    )


def test_ambient_continues_across_tracks_from_absolute_time(fake_speech):
    a = Track(1, "A", 0.0, 5.0, (), ambient="brown")
    b = Track(2, "B", 5.0, 5.0, (), ambient="brown")
    settings = MixSettings(seed=3)
    xa, xb = mix_track(a, fake_speech, settings), mix_track(b, fake_speech, settings)
    loop = mix._bed_loop("brown", 3)
    first_b, _ = track_span(b)
    # In the middle of each track (away from its fades) the bed is the loop at session time.
    assert xa[2 * SR] == pytest.approx(loop[2 * SR])
    assert xb[2 * SR] == pytest.approx(loop[(first_b + 2 * SR) % loop.size])


def test_the_seed_changes_noise_and_only_noise(fake_speech):
    events = (
        Event("breath", 1.0, 4.0, phase="inhale"),
        Event("breath", 5.0, 6.0, phase="exhale"),
    )
    tr = track(events, 12.0, ambient="pink")
    noise = [
        mix_track(tr, fake_speech, MixSettings(breath_sound="noise", seed=s)) for s in (1, 1, 2)
    ]
    assert np.array_equal(noise[0], noise[1])
    assert not np.array_equal(noise[0], noise[2])
    tone = [mix_track(track(events, 12.0), fake_speech, MixSettings(seed=s)) for s in (1, 2)]
    assert np.array_equal(tone[0], tone[1])


def test_bells_and_chimes_ring_and_can_be_turned_off(fake_speech):
    tr = track((Event("bell", 0.5, 4.0), Event("chime", 5.0, 3.0)), 9.0)
    x = mix_track(tr, fake_speech, MixSettings())
    assert np.max(np.abs(x[: round(4.5 * SR)])) == pytest.approx(mix.BELL_PEAK, rel=0.05)
    assert np.max(np.abs(x[5 * SR :])) == pytest.approx(mix.CHIME_PEAK, rel=0.05)
    assert not x[: SR // 2].any()  # nothing before the bell
    assert not mix_track(tr, fake_speech, MixSettings(bells=False)).any()


def test_a_bell_file_replaces_the_bowl(fake_speech, tmp_path):
    import wave

    path = tmp_path / "gong.wav"
    t = np.arange(2 * SR) / SR
    pcm = (np.sin(2 * np.pi * 100 * t) * 20000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(SR)
        out.writeframes(pcm.tobytes())
    tr = track((Event("bell", 0.0, 3.0),), 3.0)
    x = mix_track(tr, fake_speech, MixSettings(bell_file=str(path)))
    spectrum = np.abs(np.fft.rfft(x[: 2 * SR]))
    assert np.argmax(spectrum) * SR / (2 * SR) == pytest.approx(100.0, abs=1.0)
    routine_bell = mix_track(
        track((Event("bell", 0.0, 3.0),), 3.0, bell_sound=str(path)), fake_speech, MixSettings()
    )
    assert np.array_equal(routine_bell, x)


def test_an_ambient_file_is_looped_and_levelled(fake_speech, tmp_path):
    import wave

    path = tmp_path / "stream.wav"
    rng = np.random.default_rng(4)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(SR)
        out.writeframes((rng.standard_normal(5 * SR) * 3000).astype("<i2").tobytes())
    tr = track((), 8.0, ambient=str(path))
    x = mix_track(tr, fake_speech, MixSettings())
    loop = mix._bed_loop(str(path), 0)
    assert loop.size == 4 * SR  # five seconds, one crossfaded into the start
    assert loudness_lufs(loop) == pytest.approx(mix.AMBIENT_LOUDNESS_LUFS, abs=0.01)
    # Between the fades the track plays the loop, going round from session time 2 s.
    assert np.array_equal(x[2 * SR : 6 * SR], np.roll(loop, -2 * SR))


def test_an_unreadable_ambient_file_is_named(fake_speech, tmp_path):
    path = tmp_path / "short.wav"
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(SR)
        out.writeframes((np.ones(SR // 2) * 1000).astype("<i2").tobytes())
    tr = track((), 3.0, ambient=str(path))
    with pytest.raises(SoundFileError, match=r"short\.wav: too short for an ambient bed"):
        mix_track(tr, fake_speech, MixSettings())


# -- routines: sounds, per-section ambient, interval bells -------------------------------------

SOUNDS_ROUTINE = """\
title: Bells
sounds:
  ambient: brown
sections:
  - title: One
    steps:
      - breathe:
          minutes: 2
          bell_every: 0.5
  - title: Two
    ambient: none
    steps:
      - pause:
          seconds: 100
          bells_at: [0.5, 1.5]
"""


def test_routine_sounds_reach_the_tracks():
    routine = parse_routine(SOUNDS_ROUTINE)
    timeline = build_timeline(routine, lambda text: 1.0)
    one, two = timeline.tracks
    assert one.ambient == "brown" and two.ambient == "none"
    # Every 30 s inside a 2-minute part of 10 s breaths: at 30, 60, 90 s, each on an inhale.
    chimes = [e for e in one.events if e.kind == "chime"]
    inhales = {round(e.start_s, 6) for e in one.events if e.phase == "inhale"}
    part_start = min(inhales)
    assert [round(e.start_s - part_start, 6) for e in chimes] == [30.0, 60.0, 90.0]
    assert all(round(e.start_s, 6) in inhales for e in chimes)
    # In a pause: at exactly 30 and 90 s.
    pause = next(e for e in two.events if e.kind == "pause")
    assert [e.start_s - pause.start_s for e in two.events if e.kind == "chime"] == [
        pytest.approx(30.0),
        pytest.approx(90.0),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sounds: {ambient: rain}",
            "sounds.ambient: unknown ambient 'rain'; use one of none, pink, brown, drone",
        ),
        ("sounds: {ambient: rain.ogg}", "sounds.ambient: no sound file 'rain.ogg'"),
        ("sounds: {bell: gong.wav}", "sounds.bell: no sound file 'gong.wav'"),
        ("sounds: {gong: x}", "sounds.gong: unknown field"),
    ],
)
def test_bad_sound_settings_name_the_line_and_field(text, message):
    source = f"title: T\n{text}\nsections:\n  - title: A\n    steps: [bell]\n"
    with pytest.raises(RoutineError, match=message) as e:
        parse_routine(source, source="my.yaml")
    assert str(e.value).startswith("my.yaml:2: ")


def test_bad_interval_bells_name_the_field():
    source = (
        "title: T\nsections:\n  - title: A\n    steps:\n"
        "      - pause: {seconds: 9, bell_every: 0}\n"
    )
    with pytest.raises(RoutineError, match=r"my.yaml:5: .*bell_every: must be a number"):
        parse_routine(source, source="my.yaml")


# -- a span at a time --------------------------------------------------------------------------

SPANS_ROUTINE = """\
title: Spans
sounds:
  ambient: pink
sections:
  - title: One
    steps:
      - bell: 4
      - say: Settle in and let the breath slow down.
      - breathe:
          minutes: 1
          bell_every: 0.5
          cues:
            inhale: In.
            exhale: Out.
      - move: {count: 4, tempo: 30}
"""


@pytest.fixture
def spans_track(fake_speech):
    timeline = build_timeline(parse_routine(SPANS_ROUTINE), fake_speech.length_s)
    return timeline.tracks[0]


@pytest.mark.parametrize("breath_sound", ["tone", "noise"])
def test_a_track_mixed_in_spans_is_the_track_mixed_whole(fake_speech, spans_track, breath_sound):
    settings = MixSettings(breath_sound=breath_sound, seed=5)
    whole = mix_track(spans_track, fake_speech, settings)
    mixer = mix.TrackMixer(spans_track, fake_speech, settings)
    assert mixer.length == whole.size
    span = 10_007  # cuts through cues, breaths, bells, ticks and the bed's fades
    pieces = [mixer.mix(lo, hi) for lo, hi in mixer.spans(span)]
    assert max(p.size for p in pieces) == span
    assert np.array_equal(np.concatenate(pieces), whole)
    # Any range, in any order, from a fresh mixer or not.
    assert np.array_equal(mixer.mix(5_000, 300_000), whole[5_000:300_000])
    fresh = mix.TrackMixer(spans_track, fake_speech, settings)
    assert np.array_equal(fresh.mix(whole.size - 9_000, whole.size), whole[-9_000:])


@lru_cache(maxsize=1)
def spans_case() -> tuple[mix.TrackMixer, np.ndarray]:
    """The SPANS_ROUTINE track with the noise guide and the pink bed: a mixer, and its whole
    mix to compare with (built once, shared by the property test's examples)."""
    speech = Speech(FakeEngine(), cache=None)
    track = build_timeline(parse_routine(SPANS_ROUTINE), speech.length_s).tracks[0]
    settings = MixSettings(breath_sound="noise", seed=9)
    return mix.TrackMixer(track, speech, settings), mix_track(track, speech, settings)


@given(st.lists(st.integers(1, 400_000), min_size=1, max_size=12))
@settings(max_examples=25, deadline=None)
def test_any_cut_of_a_track_into_ranges_mixes_to_the_whole(lengths):
    mixer, whole = spans_case()
    bounds = np.minimum(np.cumsum([0, *lengths]), whole.size)
    pieces = [mixer.mix(int(a), int(b)) for a, b in itertools.pairwise(bounds.tolist())]
    stop = int(bounds[-1])
    assert np.array_equal(np.concatenate(pieces), whole[:stop])


def test_a_track_mastered_in_spans_is_the_track_mastered_whole(fake_speech, spans_track):
    settings = MixSettings(seed=2)
    ceiling_dbtp = mix.true_peak_ceiling_dbtp(96)
    gain_db = 24.0  # pushes every cue and bell far into the limiter
    mixed = mix_track(spans_track, fake_speech, settings)
    whole = reference_master(mixed, gain_db, ceiling_dbtp)
    mixer = mix.TrackMixer(spans_track, fake_speech, settings)
    spans = mix.mastered_spans(mixer, gain_db, ceiling_dbtp=ceiling_dbtp, span=20_011)
    joined = np.concatenate(list(spans))
    assert joined.size == whole.size
    assert np.max(np.abs(joined - whole)) < 1e-6
    assert true_peak(joined) <= db_to_gain(ceiling_dbtp)
    assert true_peak(whole) > 0.9 * db_to_gain(ceiling_dbtp)  # the limiter had work to do


def test_mixing_measuring_and_mastering_import_no_scipy_signal():
    # scipy.signal costs a render 1 s of CPU and 50 MB to import: the warm path has no use
    # for it (the loudness filter and the limiter are numpy, the shipped sounds need no
    # resampling). Checked in a fresh interpreter, as a render starts.
    import subprocess
    import sys

    program = """
import sys
import numpy as np
from audioguide import mix
from audioguide.timeline import Event, Track
events = (Event("bell", 0.5, 4.0), Event("breath", 5.0, 4.0, phase="inhale"),
          Event("chime", 9.0, 3.0), Event("breath", 12.0, 6.0, phase="exhale"))
track = Track(1, "T", 0.0, 20.0, events)
mixer = mix.TrackMixer(track, None, mix.MixSettings())
gain_db = mix.master_gain_db([mix.track_powers(mixer)], -16.0)
mastered = np.concatenate(list(mix.mastered_spans(mixer, gain_db)))
assert mastered.any()
print(sorted(m for m in ("scipy.signal", "scipy.ndimage", "pyloudnorm") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@given(
    st.lists(st.floats(0.0, 4.0, width=32), min_size=1, max_size=40),
    st.sampled_from([np.float32, np.float64]),
)
def test_the_typical_cue_peak_is_np_median_to_the_bit(peaks, dtype):
    x = np.array(peaks, dtype=dtype)
    assert mix._median(x) == float(np.median(x))


def test_workers_wanting_the_same_tone_make_it_once(monkeypatch):
    # Both first tracks of a session may breathe at one tempo: the second worker waits for
    # the tone the first is making instead of making it again.
    import threading
    import time

    made = []

    def slow_guide(phase, n, sound, rng=None):
        made.append((phase, n))
        time.sleep(0.05)
        return np.zeros(n, dtype=np.float32)

    monkeypatch.setattr(mix, "breath_guide", slow_guide)
    mix._tone.cache_clear()
    try:
        workers = [threading.Thread(target=mix._tone, args=("inhale", 1_234)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        mix._tone("exhale", 1_234)
    finally:
        mix._tone.cache_clear()
    assert made == [("inhale", 1_234), ("exhale", 1_234)]


def test_workers_wanting_the_same_bell_read_it_once(monkeypatch):
    import threading
    import time

    from audioguide import sounds

    read = []
    real_blocks = sounds._mono_blocks

    def slow_blocks(path, *args):
        read.append(path)
        time.sleep(0.05)
        yield from real_blocks(path, *args)

    monkeypatch.setattr(sounds, "_mono_blocks", slow_blocks)
    sounds._load_sound.cache_clear()
    bells = track((), 1.0)
    try:
        workers = [
            threading.Thread(target=mix._bell_sound, args=(MixSettings(), bells)) for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sounds._load_sound.cache_clear()
    assert len(read) == 1


def test_every_breath_tone_is_made_before_the_tracks_are_mixed(monkeypatch, fake_speech):
    # Made inside pass 1, the first worker to need a tone made it while the others waited:
    # every tone the session sounds is made first, each once, on all the threads.
    from audioguide.routine import load_routine

    timeline = build_timeline(load_routine("back-pain"), fake_speech.length_s)
    made = []
    real_guide = mix.breath_guide

    def counted_guide(phase, n, sound, rng=None):
        made.append((phase, n))
        return real_guide(phase, n, sound, rng)

    monkeypatch.setattr(mix, "breath_guide", counted_guide)
    mix._tone.cache_clear()
    try:
        mix.make_breath_tones(timeline.tracks, MixSettings(), jobs=2)
        before = list(made)
        for each in timeline.tracks:
            mixer = TrackMixer(each, fake_speech, MixSettings())
            for lo, hi in mixer.spans():
                mixer.mix(lo, hi)
    finally:
        mix._tone.cache_clear()
    assert len(before) == len(set(before)) > 1  # each once
    assert made == before  # mixing the whole session made none of its own
    # A session with another breath sound makes none, nor one with more tones than are kept
    # (a tempo changing every cycle): they would be made again as they are mixed.
    mix.make_breath_tones(timeline.tracks, MixSettings(breath_sound="noise"), jobs=2)
    monkeypatch.setattr(mix, "_TONES_KEPT", len(before) - 1)
    mix.make_breath_tones(timeline.tracks, MixSettings(), jobs=2)
    assert made == before


def test_the_beds_a_routine_lays_are_made_in_the_background_each_once(monkeypatch):
    import threading

    made: list[tuple[str, str]] = []
    real = mix.ambient_loop

    def counted(kind, rng, *args):
        made.append((kind, threading.current_thread().name))
        return real(kind, rng, *args)

    monkeypatch.setattr(mix, "ambient_loop", counted)
    routine = parse_routine(
        "title: Beds\nsounds: {ambient: pink}\nsections:\n"
        "  - title: A\n    steps: [{pause: 1}]\n"
        "  - title: B\n    ambient: drone\n    steps: [{pause: 1}]\n"
        "  - title: C\n    ambient: none\n    steps: [{pause: 1}]\n"
    )
    seed = 987_654  # a seed no other test makes beds with: nothing kept from before
    mix._bed_loop.cache_clear()
    try:
        mix.bed_in_background(MixSettings(seed=seed), routine)
        for thread in threading.enumerate():
            if thread.name == "bed":
                thread.join(timeout=60)
        assert sorted(made) == [("drone", "bed"), ("pink", "bed")]
        # The mixers find them made: nothing is made again.
        mix._bed_loop("pink", seed)
        mix._bed_loop("drone", seed)
        assert len(made) == 2
        # --ambient lays one bed under every section, "none" none.
        made.clear()
        mix.bed_in_background(MixSettings(seed=seed, ambient="none"), routine)
        for thread in threading.enumerate():
            if thread.name == "bed":
                thread.join(timeout=60)
        assert made == []
    finally:
        mix._bed_loop.cache_clear()
