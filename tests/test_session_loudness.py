"""Every session at its loudness target, the voice never shouting (``mix.master_gain``,
``mix.balanced_gain``, ``mix.stem_levels``, ``loudness.StemMeter``).

Unit tests of the solver on block powers worked from known signals, then real sessions of
little speech rendered through the CLI with espeak-ng and LAME, decoded and measured with
pyloudnorm (another meter than ours) against the plan's cue times.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile
from click.testing import CliRunner
from scipy import signal
from threadpoolctl import threadpool_limits

from audioguide import mix
from audioguide.cli import cli
from audioguide.loudness import StemMeter, blend_powers, block_powers, gated_loudness
from audioguide.mix import (
    MAX_VOICE_LIMITING_DB,
    MAX_VOICE_OVER_TARGET_LU,
    MasterGain,
    StemLevels,
    TrackLevels,
    balanced_gain,
    db_to_gain,
    master_gain,
    master_gain_db,
    voice_blocks,
    voice_gain_limit_db,
)
from audioguide.routine import parse_routine
from audioguide.synth import SAMPLE_RATE
from audioguide.timeline import build_timeline

SR = SAMPLE_RATE
MONO_TARGET_LUFS = -16.0 - mix.MONO_OFFSET_DB


def sine(freq_hz: float, n: int, amplitude: float) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq_hz * np.arange(n) / SR)).astype(np.float32)


class Spans:
    """A stand-in mixer for ``voice_blocks``: only the cues' sample spans."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self.spans = spans

    def voice_spans(self) -> list[tuple[int, int]]:
        return self.spans


def little_speech() -> tuple[np.ndarray, np.ndarray, list]:
    """60 s: two 2-second 'cues' (a 300 Hz tone, peak 0.1: -26.9 LUFS, about espeak's) and a
    soft guide under everything (a 440 Hz tone at 0.02: -37.7 LUFS). The voice's stem, the
    rest's, and the cues' spans."""
    n = 60 * SR
    voice = np.zeros(n, dtype=np.float32)
    spans = [(1 * SR, 3 * SR), (30 * SR, 32 * SR)]
    for lo, hi in spans:
        voice[lo:hi] = sine(300.0, hi - lo, 0.1) * np.hanning(hi - lo).astype(np.float32)
    return voice, sine(440.0, n, 0.02), spans


def stems_of(voice: np.ndarray, rest: np.ndarray, spans: list) -> StemLevels:
    meter = StemMeter()
    for lo in range(0, voice.size, 100_003):  # pieces that cut hops and blocks anywhere
        meter.feed(voice[lo : lo + 100_003], rest[lo : lo + 100_003])
    a, b, ab = meter.powers()
    peaks = np.array([np.max(np.abs(voice[lo:hi])) for lo, hi in spans])
    return StemLevels(a, b, ab, voice_blocks(Spans(spans), a.shape[0]), peaks)


def astuple_of(stems: StemLevels) -> tuple[np.ndarray, ...]:
    return (stems.voice, stems.rest, stems.cross, stems.spoken, stems.voice_peaks)


def mastered(voice: np.ndarray, rest: np.ndarray, gain: MasterGain) -> np.ndarray:
    """The two stems mixed and mastered as TrackMixer and mastered_spans would, unlimited."""
    return db_to_gain(gain.gain_db) * (db_to_gain(gain.voice_gain_db) * voice + rest)


# -- the stems' blocks -------------------------------------------------------------------------


@pytest.mark.parametrize(("gain_a", "gain_b"), [(1.0, 1.0), (0.3, 2.5), (1.7, -0.4)])
def test_any_blend_of_two_stems_has_the_block_powers_of_that_mix(gain_a, gain_b):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(7 * SR) * 0.1).astype(np.float32)
    b = sine(1_200.0, 7 * SR, 0.2) + (rng.standard_normal(7 * SR) * 0.02).astype(np.float32)
    stems = stems_of(a, b, [(0, SR)])
    expected = block_powers(gain_a * a + gain_b * b)
    blended = blend_powers(stems.voice, stems.rest, stems.cross, gain_a, gain_b)
    assert blended.shape == expected.shape and blended.dtype == np.float64
    np.testing.assert_allclose(blended, expected, rtol=1e-4)


def test_the_spoken_blocks_are_those_whose_middle_falls_in_a_cue():
    # Blocks of 17,640 samples every 4,410: block i's middle is 8,820 + 4,410 i. A cue over
    # samples 44,100 to 88,200 holds the middles of blocks 8 (44,100) to 17 (83,790).
    spoken = voice_blocks(Spans([(44_100, 88_200)]), 30)
    assert spoken.dtype == bool
    assert np.flatnonzero(spoken).tolist() == list(range(8, 18))
    assert not voice_blocks(Spans([]), 30).any()
    # A cue at the very start, shorter than half a block, holds no block's middle.
    assert not voice_blocks(Spans([(0, 8_000)]), 30).any()


def test_the_voice_gain_limit_worked_by_hand():
    # The median cue peaks at 0.25 (-12.04 dBFS): it may be mastered to peak 1 dB over a
    # -1.7 dBTP ceiling, so by -1.7 + 1 + 12.04 = 11.34 dB.
    peaks = np.array([0.5, 0.25, 0.125])
    assert voice_gain_limit_db(peaks, -1.7) == pytest.approx(11.341, abs=0.001)
    assert MAX_VOICE_LIMITING_DB == 1.0
    assert voice_gain_limit_db(np.zeros(0), -1.7) == float("inf")


# -- the plain gain, where the voice fits -------------------------------------------------------


def test_a_session_of_much_speech_gets_the_plain_gain_and_no_balance():
    voice, rest, spans = little_speech()
    spans = [(lo, lo + 50 * SR) for lo, _ in spans[:1]]  # one long cue: 50 of 60 s spoken
    voice[spans[0][0] : spans[0][1]] = sine(300.0, 50 * SR, 0.1)
    powers = block_powers(voice + rest)
    levels = TrackLevels(powers, voice_blocks(Spans(spans), powers.shape[0]), np.array([0.1]))
    # Exactly the gain that meets the target, as before the voice had bounds.
    assert master_gain([levels], -16.0) == MasterGain(master_gain_db([powers], -16.0), 0.0)


def test_the_plain_gain_is_refused_where_it_would_push_the_voice_too_far():
    voice, rest, spans = little_speech()
    powers = block_powers(voice + rest)
    spoken = voice_blocks(Spans(spans), powers.shape[0])
    # At the plain gain the cues would be heard 8 LU over the target (their peaks within
    # bounds); a peakier voice of the same loudness breaks the other bound.
    plain_db = master_gain_db([powers], -16.0)
    assert gated_loudness(powers[spoken]) + plain_db - MONO_TARGET_LUFS > 7.9
    assert master_gain([TrackLevels(powers, spoken, np.array([0.1, 0.1]))], -16.0) is None
    unheard = np.zeros_like(spoken)  # the loudness bound left out
    assert master_gain([TrackLevels(powers, unheard, np.array([0.5]))], -16.0) is None
    assert master_gain([TrackLevels(powers, unheard, np.array([0.1]))], -16.0) == MasterGain(
        plain_db
    )


# -- the balance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loudness_lufs", [-23.0, -16.0, -12.0])
@pytest.mark.parametrize("peak_scale", [1.0, 2.0])  # as measured, or a peakier voice
def test_the_balance_meets_the_target_with_the_voice_within_its_bounds(loudness_lufs, peak_scale):
    voice, rest, spans = little_speech()
    stems = stems_of(voice, rest, spans)
    stems = StemLevels(*astuple_of(stems)[:4], stems.voice_peaks * peak_scale)
    gain = balanced_gain([stems], loudness_lufs)
    assert gain.voice_gain_db < 0.0  # the rest is lifted against the voice
    out = mastered(voice, rest, gain)
    powers = block_powers(out)
    target = loudness_lufs - mix.MONO_OFFSET_DB
    assert gated_loudness(powers) == pytest.approx(target, abs=0.01)
    voice_gain_db = gain.gain_db + gain.voice_gain_db
    limit_db = voice_gain_limit_db(stems.voice_peaks, mix.TRUE_PEAK_CEILING_DBTP)
    over_lu = gated_loudness(powers[stems.spoken]) - target
    assert voice_gain_db <= limit_db + 1e-6
    assert over_lu <= MAX_VOICE_OVER_TARGET_LU + 1e-6
    # The least lift that does it: 0.05 dB less and the voice would break a bound.
    less = MasterGain(0.0, gain.voice_gain_db + 0.05)
    powers = block_powers(mastered(voice, rest, less))
    less_voice_db = target - gated_loudness(powers) + less.voice_gain_db
    less_over_lu = gated_loudness(powers[stems.spoken]) - gated_loudness(powers)
    assert less_voice_db > limit_db or less_over_lu > MAX_VOICE_OVER_TARGET_LU


def test_the_rest_is_lifted_no_further_than_the_voices_loudness():
    # A voice so peaky (5x the peaks for its loudness) that it may be mastered by 5.3 dB
    # only: the guide would have to be lifted 18.7 dB to meet the target around it, past the
    # voice's own loudness (10.8 dB). The lift stops there, and the target wins: the
    # session still meets it, its voice past the peak bound.
    voice, rest, spans = little_speech()
    stems = stems_of(voice, rest, spans)
    stems = StemLevels(*astuple_of(stems)[:4], stems.voice_peaks * 5.0)
    gain = balanced_gain([stems], -16.0)
    lift_db = -gain.voice_gain_db
    assert lift_db == pytest.approx(gated_loudness(stems.voice) - gated_loudness(stems.rest))
    assert lift_db == pytest.approx(10.83, abs=0.01)
    out = mastered(voice, rest, gain)
    assert gated_loudness(block_powers(out)) == pytest.approx(MONO_TARGET_LUFS, abs=0.01)


def test_no_speech_and_silence_need_no_balance():
    _, rest, _ = little_speech()
    silent = np.zeros_like(rest)
    no_voice = stems_of(silent, rest, [])
    gain = balanced_gain([no_voice], -16.0)
    assert gain.voice_gain_db == 0.0
    expected_db = MONO_TARGET_LUFS - gated_loudness(block_powers(rest))
    assert gain.gain_db == pytest.approx(expected_db, abs=1e-6)
    assert balanced_gain([stems_of(silent, silent, [])], -16.0) == MasterGain(0.0, 0.0)


def test_the_mixer_speaks_at_its_voice_gain_and_its_stems_add_up(fake_speech):
    routine = parse_routine(
        "title: T\nsections:\n  - title: A\n    steps:\n      - bell: 4\n"
        "      - say: Breathe in slowly.\n      - breathe: {cycles: 2}\n"
    )
    track = build_timeline(routine, fake_speech.length_s).tracks[0]
    settings = mix.MixSettings(breath_sound="noise", ambient="pink", seed=4)
    plain = mix.TrackMixer(track, fake_speech, settings)
    voice, rest = plain.mix_stems(0, plain.length)
    assert voice.dtype == rest.dtype == np.float32
    np.testing.assert_allclose(voice + rest, plain.mix(0, plain.length), atol=1e-6)
    (lo, hi), *_ = plain.voice_spans()
    assert np.abs(voice[:lo]).max(initial=0.0) == 0.0 and np.abs(voice[lo:hi]).max() > 0.1
    quiet = mix.TrackMixer(track, fake_speech, settings, voice_gain_db=-6.0)
    np.testing.assert_allclose(
        quiet.mix(0, quiet.length), db_to_gain(-6.0) * voice + rest, atol=1e-6
    )


def test_the_voiced_blocks_are_those_a_cue_or_the_k_weightings_memory_of_it_reaches():
    # Blocks of 17,640 samples every 4,410; the memory is 22,050 samples (0.5 s). A cue over
    # samples 44,100 to 88,200 reaches blocks 7 (26,460 to 44,100 would end at its start) to
    # 24 (105,840 is under 88,200 + 22,050 = 110,250; block 25 starts there).
    assert mix.voiced_blocks(Spans([(44_100, 88_200)]), 100) == [(7, 25)]
    assert mix.voiced_blocks(Spans([(44_100, 88_200)]), 20) == [(7, 20)]  # the track ends
    # A cue whose blocks' filters would start (0.5 s before) inside the first's is joined to
    # it; one further is not. Spans come in any order.
    near, far = (150_000, 160_000), (300_000, 310_000)
    assert mix.voiced_blocks(Spans([near, (44_100, 88_200)]), 100) == [(7, 42)]
    assert mix.voiced_blocks(Spans([far, (44_100, 88_200)]), 100) == [(7, 25), (65, 76)]
    assert mix.voiced_blocks(Spans([]), 100) == []


@pytest.fixture
def one_blas_thread():
    """BLAS on one thread, as a render runs it (on more, the filters' small products spin)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def stems_of_the_whole(mixer: mix.TrackMixer, levels: TrackLevels) -> StemLevels:
    """The two stems measured over the whole track, a span at a time, filters carried from
    its start: as the stem pass measured them before it measured only where the voice is."""
    meter = StemMeter()
    for lo, hi in mixer.spans():
        meter.feed(*mixer.mix_stems(lo, hi))
    return StemLevels(*meter.powers(), levels.spoken, levels.voice_peaks)


@pytest.mark.parametrize("ambient", [None, "brown"])  # one track over a pink bed, or all
def test_the_stems_measured_where_the_voice_is_are_those_of_the_whole_tracks(
    fake_speech, monkeypatch, one_blas_thread, ambient
):
    # The low-speech session of the end-to-end tests (two cues, shortened to 10 minutes),
    # with a fast voice: the stem pass mixes a few seconds around each cue, a span at most at
    # a time, and finds the stems (and so the gain) that measuring the whole tracks finds.
    routine = parse_routine(LOW_SPEECH.replace("cycles: 90", "cycles: 30"))
    tracks = build_timeline(routine, fake_speech.length_s).tracks
    assert sum(t.duration_s for t in tracks) > 9 * 60
    settings = mix.MixSettings(ambient=ambient)
    ranges: list[int] = []
    real = mix.TrackMixer.mix_stems

    def recording(self, lo, hi):
        ranges.append(min(hi, self.length) - max(lo, 0))
        return real(self, lo, hi)

    levels = [mix.track_levels(mix.TrackMixer(t, fake_speech, settings)) for t in tracks]
    assert mix.master_gain(levels, -16.0) is None  # a bound binds: the stem pass runs
    wholes = [
        stems_of_the_whole(mix.TrackMixer(t, fake_speech, settings), lv)
        for t, lv in zip(tracks, levels, strict=True)
    ]
    monkeypatch.setattr(mix.TrackMixer, "mix_stems", recording)
    parts = [
        mix.stem_levels(mix.TrackMixer(t, fake_speech, settings), lv)
        for t, lv in zip(tracks, levels, strict=True)
    ]
    assert max(ranges) <= mix.SPAN_SAMPLES
    assert sum(ranges) < 20 * SR  # of 30 minutes
    for part, whole in zip(parts, wholes, strict=True):
        for name in ("voice", "rest", "cross"):
            found, expected = getattr(part, name), getattr(whole, name)
            assert found.shape == expected.shape and found.dtype == np.float64
            # To the meters' float32 rounding, against the loudest block.
            np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-7 * part.voice.max())
        assert part.voice.max() > 1e-3 and np.count_nonzero(part.voice) < part.voice.size // 20
    gain, expected = balanced_gain(parts, -16.0), balanced_gain(wholes, -16.0)
    assert gain.voice_gain_db < -1.0
    assert gain.gain_db == pytest.approx(expected.gain_db, abs=1e-5)
    assert gain.voice_gain_db == pytest.approx(expected.voice_gain_db, abs=1e-5)


# -- real sessions, end to end ----------------------------------------------------------------

# 30 minutes of breathing with two short cues: the first part bare, the second over a bed.
LOW_SPEECH = """\
title: Long Quiet Breathing
breath:
  tempo: 6
  pattern: 4-6
sections:
  - title: Begin
    steps:
      - bell: 6
      - say: Sit comfortably and follow the tone with your breath.
        pause: 2
      - breathe:
          cycles: 90
          cue_cycles: 0
  - title: Continue
    ambient: pink
    steps:
      - say: Keep breathing with the tone.
        pause: 1
      - breathe:
          cycles: 90
          cue_cycles: 0
      - bell: 6
"""


def true_peak_dbtp(x: np.ndarray) -> float:
    """BS.1770's true peak, 4x oversampled, a piece at a time (a session whole is GBs).
    Each piece is oversampled with TRUE_PEAK_OVERLAP samples of its neighbours on either side
    and only its own samples' part is kept: at a cut the filter rings as at a click (the
    signal seems to drop to silence there), up to 0.8 dB over a loud piece's real peak.
    Pieces whose samples all stay 6 dB under the highest sample are passed over: an
    inter-sample peak stands at most about 3 dB over the samples around it."""
    peak, piece, overlap, up = 0.0, 1 << 16, TRUE_PEAK_OVERLAP, 4
    floor = float(np.max(np.abs(x))) / 2.0
    for lo in range(0, x.size, piece):
        start = max(lo - overlap, 0)
        chunk = x[start : lo + piece + overlap].astype(np.float64)
        if np.max(np.abs(chunk)) < floor:
            continue
        own = signal.resample_poly(chunk, up, 1)[(lo - start) * up : (lo - start + piece) * up]
        peak = max(peak, float(np.max(np.abs(own))))
    return 20 * np.log10(peak)


# resample_poly's filter reaches 10 input samples either side (for 4x); far more than that.
TRUE_PEAK_OVERLAP = 256


def test_the_true_peak_of_a_long_signal_is_its_peak_wherever_the_pieces_are_cut():
    # A slow loud tone, high where the pieces are cut, faded in and out: no inter-sample
    # overshoot to find anywhere.
    n = 3 * (1 << 16) + 1000
    tone = 0.5 * np.cos(2 * np.pi * 50.0 * np.arange(n) / SR + 0.3)
    fade = np.sin(np.linspace(0.0, np.pi / 2, 2000)) ** 2
    tone[:2000] *= fade
    tone[-2000:] *= fade[::-1]
    whole = 20 * np.log10(np.max(np.abs(signal.resample_poly(tone, 4, 1))))
    assert true_peak_dbtp(tone.astype(np.float32)) == pytest.approx(whole, abs=0.01)
    assert whole == pytest.approx(20 * np.log10(0.5), abs=0.01)


def measured(folder: Path, plan: dict) -> dict[str, float]:
    """The decoded full session: its loudness (stereo-equivalent), its true peak, and the
    loudness of what is heard over the plan's cues, joined."""
    (full,) = folder.glob("*(full).mp3")
    x, rate = soundfile.read(full, dtype="float32")
    assert rate == SR and x.ndim == 1
    meter = pyloudnorm.Meter(SR)
    cues = [
        x[round(e["start_s"] * SR) : round((e["start_s"] + e["duration_s"]) * SR)]
        for t in plan["tracks"]
        for e in t["events"]
        if e["kind"] == "say"
    ]
    return {
        "session": meter.integrated_loudness(x.astype(np.float64)) + mix.MONO_OFFSET_DB,
        "true_peak": true_peak_dbtp(x),
        "voice": meter.integrated_loudness(np.concatenate(cues).astype(np.float64))
        + mix.MONO_OFFSET_DB,
    }


def render(tmp_path: Path, routine: str, *args: str) -> tuple[Path, dict]:
    planned = CliRunner().invoke(cli, ["plan", routine, *args, "--json"])
    assert planned.exit_code == 0, planned.output
    rendered = CliRunner().invoke(cli, ["render", routine, *args, "-o", str(tmp_path)])
    assert rendered.exit_code == 0, rendered.output
    plan = json.loads(planned.output)
    (folder,) = (p for p in tmp_path.iterdir() if p.is_dir())
    return folder, plan


def check_on_target(found: dict[str, float], target_lufs: float) -> None:
    assert found["session"] == pytest.approx(target_lufs, abs=1.0), found
    assert found["true_peak"] <= -1.0, found
    # Never shouting, and still heard over the guide it leads.
    assert found["voice"] <= target_lufs + MAX_VOICE_OVER_TARGET_LU, found
    assert found["voice"] > target_lufs + 1.0, found


def test_a_long_session_of_little_speech_meets_the_target(tmp_path):
    routine = tmp_path / "low.yaml"
    routine.write_text(LOW_SPEECH, encoding="utf-8")
    folder, plan = render(tmp_path / "out", str(routine))
    assert plan["total_s"] > 29 * 60
    check_on_target(measured(folder, plan), -16.0)


@pytest.mark.skipif(
    os.environ.get("AUDIOGUIDE_SLOW_TESTS") != "1",
    reason="renders 60 minutes (about 25 s of CPU); set AUDIOGUIDE_SLOW_TESTS=1 to run it",
)
def test_back_pain_at_60_minutes_meets_the_target(tmp_path):
    folder, plan = render(tmp_path, "back-pain", "--minutes", "60")
    check_on_target(measured(folder, plan), -16.0)
