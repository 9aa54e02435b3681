"""Speech preparation and the voice chain, measured on synthetic clips and the FakeEngine."""

from __future__ import annotations

import numpy as np
import pytest

from audioguide.speech import Speech, SpeechClip, prepare_clip, voice_effect, warm_voice
from audioguide.speech.cues import SPEECH_RMS
from audioguide.speech.voice_fx import (
    EDGE_FADE_S,
    VOICE_PEAK_OVER_RMS_DB,
    room_impulse,
    voiced_rms,
)
from audioguide.synth import SAMPLE_RATE

SR = SAMPLE_RATE


def clip_of(samples: np.ndarray, rate: int = 22_050) -> SpeechClip:
    return SpeechClip((np.clip(samples, -1, 1) * 32767).astype(np.int16), rate)


def band_db(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return 10 * np.log10(power[(freqs >= low_hz) & (freqs < high_hz)].sum())


def test_prepare_clip_trims_resamples_and_levels():
    rate = 22_050
    t = np.arange(rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 200 * t)
    padded = np.concatenate([np.zeros(rate // 2), tone, np.zeros(rate // 2)])
    x = prepare_clip(clip_of(padded, rate))
    assert x.dtype == np.float32
    # One second of sound, kept with 20 ms of margin each side, at twice the rate.
    assert x.size == pytest.approx(SR + 2 * round(0.02 * SR), abs=4)
    assert voiced_rms(x) == pytest.approx(SPEECH_RMS, rel=0.02)
    assert abs(x[0]) < 1e-6 and abs(x[-1]) < 1e-6


def test_prepare_clip_holds_the_peaks_without_moving_the_level():
    rate = 22_050
    t = np.arange(rate) / rate
    plain = 0.2 * np.sin(2 * np.pi * 200 * t)
    spiked = plain.copy()
    spiked[rate // 2 : rate // 2 + 40] *= 4.5  # a 2 ms spike 13 dB over the rest
    y = prepare_clip(clip_of(spiked, rate))
    ceiling = SPEECH_RMS * 10 ** (VOICE_PEAK_OVER_RMS_DB / 20)  # 0.316
    assert np.max(np.abs(y)) <= ceiling * 1.0001
    # Away from the spike the limiter leaves the wave alone: the same sine, one gain.
    y0 = prepare_clip(clip_of(plain, rate))
    part = slice(SR // 10, SR // 3)
    ratio = y[part][np.abs(y0[part]) > 0.01] / y0[part][np.abs(y0[part]) > 0.01]
    assert np.ptp(ratio) < 1e-4


def test_resampling_leaves_no_alias_image():
    # A 10 kHz tone at 22.05 kHz, taken to 44.1 kHz: linear interpolation leaves its image at
    # 22.05 - 10 = 12.05 kHz 2.5 dB down, scipy's default filter 20 dB; ours 79 dB.
    rate = 22_050
    t = np.arange(2 * rate) / rate
    x = prepare_clip(clip_of(0.5 * np.sin(2 * np.pi * 10_000 * t), rate))
    middle = x[SR // 2 : SR // 2 + SR] * np.hanning(SR)  # away from the edge fades
    assert band_db(middle, 11_900, 12_200) - band_db(middle, 9_900, 10_100) < -70


def test_room_impulse_has_the_stated_energy_and_ends_silent():
    ir = room_impulse()
    assert 10 * np.log10(np.sum(ir**2)) == pytest.approx(-17.0, abs=1e-6)
    assert not ir[: round(0.007 * SR)].any()  # nothing before the first reflection
    assert abs(ir[-1]) < 1e-6 * np.max(np.abs(ir))


def test_warm_voice_softens_the_upper_mids_and_keeps_the_level():
    rng = np.random.default_rng(0)
    n = 2 * SR
    dry = (rng.standard_normal(n) * SPEECH_RMS).astype(np.float32)
    dry[: round(EDGE_FADE_S * SR)] = 0
    wet = warm_voice(dry)
    assert wet.dtype == np.float32
    assert wet.size == n + room_impulse().size - 1  # the room's tail rings on
    head = wet[:n]
    # 3 kHz peak cut of 3.5 dB, relative to the untouched 700-900 Hz band.
    cut = (band_db(head, 2_800, 3_200) - band_db(head, 700, 900)) - (
        band_db(dry, 2_800, 3_200) - band_db(dry, 700, 900)
    )
    assert cut == pytest.approx(-3.5, abs=1.0)
    assert voiced_rms(head) == pytest.approx(voiced_rms(dry), rel=0.1)
    assert abs(wet[-1]) < 1e-6 and abs(wet[0]) < 1e-6
    tail = wet[n + round(0.02 * SR) : n + round(0.1 * SR)]
    assert np.sqrt(np.mean(tail**2)) > 1e-4  # a room, not a dry cut


def test_warm_voice_holds_the_peaks():
    t = np.arange(SR) / SR
    x = (0.1 * np.sqrt(2) * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    x[SR // 2 : SR // 2 + 400] *= 8  # a spike 18 dB over the rest
    y = warm_voice(x)
    ceiling = voiced_rms(x) * 10 ** (VOICE_PEAK_OVER_RMS_DB / 20)
    # The limiter's ceiling, plus what the quiet room adds on top of it.
    assert np.max(np.abs(y)) < ceiling * 1.2
    assert np.max(np.abs(y)) < 0.6 * np.max(np.abs(x))


def test_voice_effects_by_name():
    assert voice_effect("none") is None
    assert voice_effect("warm") is warm_voice
    with pytest.raises(ValueError, match="voice effect"):
        voice_effect("robot")


def test_speech_length_is_the_dry_cue_and_samples_are_wet(fake_engine):
    effects = []

    def counted(x, rate):
        effects.append(rate)
        return warm_voice(x, rate)

    speech = Speech(fake_engine, cache=None, effect=counted)
    text = "Let the shoulders soften."
    dry = speech.dry(text)
    clip = fake_engine.synthesize(text)
    wet = prepare_clip(clip, effect=warm_voice)
    assert speech.length_s(text) == dry.size / SR
    # The chain runs at the engine's rate, then the cue is resampled: the room's tail at
    # 22.05 kHz, twice as many samples at 44.1.
    tail = room_impulse(clip.sample_rate).size - 1
    assert speech.samples(text).size == dry.size + 2 * tail == wet.size
    assert speech.sample_count(text) == wet.size
    assert speech.length_s(text) == dry.size / SR  # still known once the dry cue is dropped
    # Held in 16 bits scaled to the cue's peak: within half a step of it, everywhere.
    step = np.max(np.abs(wet)) / 32767
    assert np.max(np.abs(speech.samples(text) - wet)) <= 0.51 * step
    assert speech.samples(text).dtype == np.float32
    speech.samples(text)
    assert effects == [clip.sample_rate]  # the effect runs once per cue, at the engine's rate


@pytest.mark.parametrize(
    "text",
    ["In.", "Let your shoulders drop, and your jaw soften.", "Breathe in slowly, and out."],
)
def test_planned_length_is_the_prepared_length(text):
    # plan learns cue lengths without resampling; render mixes the resampled cue: they must
    # agree to the sample, or the plan and the files disagree.
    from audioguide.speech import prepare_clip, prepared_length
    from audioguide.speech.cues import _prepared
    from audioguide.speech.espeak import Pyttsx3Engine

    clip = Pyttsx3Engine().synthesize(text)
    assert prepared_length(clip) == prepare_clip(clip).shape[0]
    assert prepared_length(clip, 48_000) == prepare_clip(clip, 48_000).shape[0]
    # The length a render keeps as it prepares a cue through the chain, from the same trim.
    for rate in (SAMPLE_RATE, 48_000):
        wet, dry_samples = _prepared(clip, rate, effect=warm_voice)
        assert dry_samples == prepared_length(clip, rate) < wet.shape[0]


# -- the preparation's version: what keys the prepared-cue cache ------------------------------


class FixedClipEngine:
    """One fixed, speech-like clip for any text: a buzz with vowel-like formants, noise and
    the engine's silence around it, from fixed numbers only."""

    identity = "fixed-clip/1"

    def synthesize(self, text: str) -> SpeechClip:
        rate = 22_050
        t = np.arange(int(1.3 * rate)) / rate
        rng = np.random.default_rng(2024)
        pitch_hz = 110 + 20 * np.sin(2 * np.pi * 0.7 * t)
        buzz = np.sign(np.sin(2 * np.pi * np.cumsum(pitch_hz) / rate))
        voiced = buzz * (0.6 + 0.4 * np.sin(2 * np.pi * 3.1 * t)) * np.sin(np.pi * t / t[-1])
        noise = 0.05 * rng.standard_normal(t.size)
        pad = np.zeros(int(0.15 * rate))
        samples = np.concatenate([pad, 0.5 * voiced + noise, pad])
        return SpeechClip((samples * 20000).astype(np.int16), rate)

    def voices(self) -> list:
        return []


# How the prepared cue is compared with the one recorded: its length exactly, its samples to
# 1e-4 of their whole (-80 dB). Not bit for bit: the last bits of a prepared cue follow the CPU
# (numpy computes sin and tanh with the widest SIMD it finds, and OpenBLAS picks its kernels by
# CPU), so bits recorded on one machine differ on another by some 1e-5 of the cue, the 16-bit
# rounding of a few samples in a thousand. The smallest change below, the resampler's Kaiser
# beta from 8.6 to 7, moves the cue by 1e-3. A change that only rounds differently is not
# seen: bump the version for it all the same, so no cache mixes the two.
FINGERPRINT_TOLERANCE = 1e-4
FINGERPRINT_PROJECTIONS = 8


def preparation_fingerprints() -> dict[str, tuple[int, float, float, tuple[float, ...]]]:
    """Per voice effect: FixedClipEngine's prepared cue as (samples, spoken seconds, the
    samples' norm, their projections on fixed random signs). Two cues whose difference is
    ``d`` have projections that differ by about ``|d|`` each."""
    from threadpoolctl import threadpool_limits

    fingerprints = {}
    # BLAS on one thread, as a render runs it.
    with threadpool_limits(limits=1, user_api="blas"):
        for name in ("none", "warm"):
            speech = Speech(FixedClipEngine(), cache=None, effect=voice_effect(name))
            samples = speech.samples("any text").astype(np.float64)
            signs = np.random.default_rng(7).integers(0, 2, (FINGERPRINT_PROJECTIONS, samples.size))
            projections = (2.0 * signs - 1.0) @ samples
            fingerprints[name] = (
                samples.size,
                speech.length_s("any text"),
                round(float(np.linalg.norm(samples)), 6),
                tuple(round(float(p), 6) for p in projections),
            )
    return fingerprints


def fingerprint_changes(now: dict, recorded: dict) -> list[str]:
    """What differs between two ``preparation_fingerprints`` beyond the CPU's rounding."""
    changes = []
    for name, (samples, spoken_s, norm, projections) in recorded.items():
        got_samples, got_spoken_s, got_norm, got_projections = now[name]
        if (got_samples, got_spoken_s) != (samples, spoken_s):
            changes.append(f"{name}: {got_samples} samples, {got_spoken_s} s")
            continue
        apart = max(abs(a - b) for a, b in zip(got_projections, projections, strict=True))
        if max(abs(got_norm - norm), apart) > FINGERPRINT_TOLERANCE * norm:
            changes.append(f"{name}: {apart / norm:.1e} of the cue apart")
    return changes


# The prepared cue of FixedClipEngine's clip, by PREPARATION_VERSION. Changing what a cue
# goes through changes it: bump PREPARATION_VERSION in audioguide/speech/cues.py and add the
# new fingerprints under the new number, so caches keep no cue prepared the old way. (Versions
# 1 to 4 were recorded as SHA-256 digests of the samples, which held on one CPU only.)
PREPARED_FINGERPRINTS = {
    4: {
        "none": (
            59092,
            1.3399546485260772,
            22.586219,
            (
                -38.5725,
                -10.337054,
                -19.202027,
                -4.778477,
                -26.817969,
                1.301309,
                -10.314909,
                9.654709,
            ),
        ),
        "warm": (
            76730,
            1.3399546485260772,
            21.546611,
            (
                -30.420789,
                10.032954,
                1.607157,
                -33.115027,
                -2.283737,
                -10.604835,
                32.722104,
                -23.862209,
            ),
        ),
    },
    # The room by overlap-add, upsampling by correlation, the limiter's stretches together:
    # float32 rounding (2e-7 of full scale), not seen here, so recorded again as it is.
    5: {
        "none": (
            59092,
            1.3399546485260772,
            22.586219,
            (
                -38.572543,
                -10.33713,
                -19.201985,
                -4.778519,
                -26.818045,
                1.301249,
                -10.314883,
                9.654717,
            ),
        ),
        "warm": (
            76730,
            1.3399546485260772,
            21.54661,
            (
                -30.420789,
                10.032996,
                1.607221,
                -33.11507,
                -2.283673,
                -10.604899,
                32.722061,
                -23.862145,
            ),
        ),
    },
    # Upsampling as products over rows of 64 samples: float32 rounding again, recorded as is.
    6: {
        "none": (
            59092,
            1.3399546485260772,
            22.586219,
            (
                -38.572497,
                -10.337013,
                -19.202071,
                -4.778623,
                -26.818066,
                1.301299,
                -10.314917,
                9.654666,
            ),
        ),
        "warm": (
            76730,
            1.3399546485260772,
            21.546611,
            (
                -30.420821,
                10.032922,
                1.607189,
                -33.114888,
                -2.283662,
                -10.604931,
                32.722242,
                -23.862199,
            ),
        ),
    },
}


def test_a_change_to_the_preparation_comes_with_a_new_preparation_version():
    from audioguide.speech.cues import PREPARATION_VERSION

    now = preparation_fingerprints()
    assert PREPARATION_VERSION in PREPARED_FINGERPRINTS, (
        f"record the fingerprints of PREPARATION_VERSION {PREPARATION_VERSION}: {now}"
    )
    changes = fingerprint_changes(now, PREPARED_FINGERPRINTS[PREPARATION_VERSION])
    assert not changes, (
        f"the prepared cue changed ({'; '.join(changes)}): bump PREPARATION_VERSION in "
        f"audioguide/speech/cues.py and record the new fingerprints in PREPARED_FINGERPRINTS: {now}"
    )


def _forget_preparation_memos() -> None:
    """Clear every memo (``functools.lru_cache``) of the modules a cue is prepared through, so
    a constant patched there is used: each one listed by hand missed the next memo added (the
    upsampling's stepped matrix kept the old filter, and a changed filter went unseen)."""
    from audioguide import audio, dynamics, loudness
    from audioguide.speech import cues, voice_fx

    for module in (audio, dynamics, loudness, cues, voice_fx):
        for value in vars(module).values():
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == module.__name__:
                clear()


@pytest.mark.parametrize(
    ("module", "name", "value"),
    [
        ("cues", "SPEECH_RMS", 0.11),
        ("audio", "RESAMPLE_KAISER_BETA", 7.0),
        ("voice_fx", "SATURATION_DRIVE", 2.1),
        ("voice_fx", "ROOM_WET_DB", -16.0),
    ],
)
def test_the_fingerprints_see_a_change_to_the_preparation(monkeypatch, module, name, value):
    from audioguide import audio
    from audioguide.speech import cues, voice_fx

    before = preparation_fingerprints()
    monkeypatch.setattr({"cues": cues, "voice_fx": voice_fx, "audio": audio}[module], name, value)
    _forget_preparation_memos()
    try:
        after = preparation_fingerprints()
    finally:
        _forget_preparation_memos()
    changes = fingerprint_changes(after, before)
    assert changes
    assert changes[-1].startswith("warm:")


def test_the_fingerprints_hold_through_the_cpus_rounding_and_no_further():
    """A cue that differs from the recorded one as another CPU's rounding makes it (3e-5 of
    the cue, spread over every sample) matches it; one that differs as the smallest recorded
    change does (1e-3) does not."""
    recorded = preparation_fingerprints()

    def nudged(size: float) -> dict:
        rng = np.random.default_rng(3)
        out = {}
        for name, (samples, spoken_s, norm, projections) in recorded.items():
            # A difference d of that size moves each projection by about |d|.
            moves = rng.normal(0.0, size * norm, len(projections))
            moved = tuple(p + m for p, m in zip(projections, moves, strict=True))
            out[name] = (samples, spoken_s, norm, moved)
        return out

    assert not fingerprint_changes(nudged(3e-5), recorded)
    assert len(fingerprint_changes(nudged(1e-3), recorded)) == 2


def test_the_prepared_cue_key_names_the_version_and_no_source_files():
    from audioguide.speech import cues

    key = cues._preparation_key(warm_voice)
    assert key is not None
    assert key.startswith(f"warm_voice/v{cues.PREPARATION_VERSION}/")
    assert cues._preparation_key(None).startswith(f"none/v{cues.PREPARATION_VERSION}/")


def test_cues_the_cache_lacks_are_synthesized_in_one_batch_in_order(tmp_path, fake_engine):
    from audioguide.speech import SpeechCache

    cache = SpeechCache(tmp_path)
    texts = ["One two.", "Three.", "Four five six.", "Seven."]
    # Clips only: a prepared cue, made on a thread of its own, would stand in for a damaged
    # clip, or not, depending on whether that thread had written it yet.
    Speech(fake_engine, cache).synthesize_missing(texts[1:3], prepared=False)
    damaged = next(cache.root.rglob("*.clip"))
    raw = damaged.read_bytes()
    damaged.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x40]))  # one of the two, damaged
    fake_engine.calls.clear()
    speech = Speech(fake_engine, cache)
    speech.synthesize_missing([*texts, "Three."])
    kept = {"Three.", "Four five six."} - set(fake_engine.calls)
    assert len(kept) == 1  # the whole entry is used as it is...
    assert fake_engine.calls == [t for t in texts if t not in kept]  # ...the rest, in order
    fake_engine.calls.clear()
    for text in texts:
        speech.samples(text)
    assert fake_engine.calls == []  # everything the mix needs came from the batch


def test_the_voice_eq_never_computes_in_subnormal_floats():
    """A cue followed by a long silence: unguarded, the EQ's output decays through the subnormal
    floats (40x slower on some CPUs) and stays there."""
    from audioguide.speech.voice_fx import equalize

    t = np.arange(22_050) / SAMPLE_RATE
    cue = (0.3 * np.sin(2 * np.pi * 180 * t) * np.hanning(t.size)).astype(np.float32)
    out = equalize(np.concatenate([cue, np.zeros(20 * SAMPLE_RATE, np.float32)]))
    assert out.dtype == np.float32
    magnitude = np.abs(out)
    assert not np.any(magnitude < np.finfo(np.float32).smallest_normal)


class SpeakingEngine:
    """Hands each clip over as it is spoken (as espeak's worker does), and before speaking
    the last one waits until the first has been prepared: a preparation that only started
    after the whole batch would leave it waiting."""

    identity = "speaking/1"

    def __init__(self, speech_of, expect_preparation: bool = True) -> None:
        self.speech_of = speech_of
        self.expect_preparation = expect_preparation
        self.prepared_while_speaking = False
        self.inner = FixedClipEngine()

    def synthesize(self, text: str) -> SpeechClip:
        return self.inner.synthesize(text)

    def synthesize_all(self, texts):
        import time

        for i, text in enumerate(texts):
            if i == len(texts) - 1:
                deadline = time.monotonic() + (30 if self.expect_preparation else 0.5)
                while time.monotonic() < deadline and texts[0] not in self.speech_of()._held:
                    time.sleep(0.005)
                self.prepared_while_speaking = texts[0] in self.speech_of()._held
            yield self.synthesize(text)

    def voices(self) -> list:
        return []


def test_cues_are_prepared_while_the_engine_speaks_the_rest():
    speech: Speech
    engine = SpeakingEngine(lambda: speech)
    speech = Speech(engine, cache=None, effect=warm_voice)
    texts = ["One.", "Two.", "Three."]
    speech.synthesize_missing(texts)
    assert engine.prepared_while_speaking
    alone = Speech(FixedClipEngine(), cache=None, effect=warm_voice)
    for text in texts:  # the same samples as a cue prepared on demand
        assert np.array_equal(speech.samples(text), alone.samples(text))


def test_a_plan_prepares_nothing_while_the_engine_speaks():
    speech: Speech
    engine = SpeakingEngine(lambda: speech, expect_preparation=False)
    speech = Speech(engine, cache=None, effect=warm_voice)
    speech.synthesize_missing(["One.", "Two."], prepared=False)
    assert not engine.prepared_while_speaking and not speech._held
