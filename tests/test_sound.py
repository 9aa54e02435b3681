"""Sound, by ear's proxies: a rendered session measured, and the sound files a user gives.

End to end: one short session (41 s: a bell, a welcome, a pause, two breaths with cues, a
pause), with real espeak speech and LAME, is rendered a few ways, once per module, and every
check reads the decoded files against the plan's event times.

Then the sound files (``sounds``): bells and ambient beds read through libsndfile, their
headers checked before anything is decoded, beds streamed through a temporary file, and a
property test that no WAV header, however made, gets anything but samples or our error.
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
import tracemalloc
import wave
from pathlib import Path

import lameenc
import numpy as np
import pyloudnorm
import pytest
import soundfile
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from scipy import signal

from audioguide import mix, sounds
from audioguide.cli import cli
from audioguide.errors import SoundFileError
from audioguide.loudness import block_powers, gated_loudness
from audioguide.mix import DUCK_DB
from audioguide.sounds import (
    DEFAULT_BELL_FILE,
    INTERVAL_BELL_FILE,
    RecordedLoop,
    default_sound_path,
    load_loop,
    load_sound,
)
from audioguide.synth import BOWL_FUNDAMENTAL_HZ, SAMPLE_RATE, loop_span
from audioguide.timeline import Event, Track

SR = SAMPLE_RATE
ROOT = Path(__file__).resolve().parent.parent
MONO_OFFSET_DB = 3.01  # a mono file heard on both ears measures 3.01 LU under its target
# The largest sample-to-sample step allowed within 1 ms of an edit point. Measured on this
# session, the faded edits step by at most 0.008 (the room's tail just after a cue). With the
# fades taken out of synth, speech and mix, the same edits step by 0.07 to 0.09 (the guide tone
# cut mid-wave), 0.020 (a bell cut at the end of its ring) and 0.012 (a cue cut at its end).
# 0.015 passes the first with room and catches all but the last.
CLICK_STEP = 0.015
EDIT_WINDOW_S = 0.001

ROUTINE = """\
title: Sound Check
sections:
  - title: Arrive
    steps:
      - bell: 4
      - say: Welcome. Let your shoulders soften.
        pause: 2
      - pause: 2.5
  - title: Breathe
    steps:
      - say: Follow the tone.
      - breathe:
          cycles: 2
          cues: {inhale: In., exhale: Out.}
          cue_cycles: 1
      - pause: 2.5
"""

RENDERS = {
    "default": [],
    "pink": ["--ambient", "pink", "--breath-sound", "none", "--no-bell"],
    "seed7": ["--ambient", "brown", "--breath-sound", "noise", "--seed", "7", "--loudness", "-18"],
    "seed7-again": [
        "--ambient", "brown", "--breath-sound", "noise", "--seed", "7", "--loudness", "-18",
    ],
    "seed8": ["--ambient", "brown", "--breath-sound", "noise", "--seed", "8", "--loudness", "-18"],
}  # fmt: skip


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The plan and the rendered folder of every configuration in RENDERS."""
    base = tmp_path_factory.mktemp("sound")
    routine = base / "check.yaml"
    routine.write_text(ROUTINE, encoding="utf-8")
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDIOGUIDE_CACHE_DIR", str(base / "cache"))
        result = runner.invoke(cli, ["plan", str(routine), "--json"])
        assert result.exit_code == 0, result.output
        plan = json.loads(result.output)
        folders = {}
        for name, args in RENDERS.items():
            out = base / name
            result = runner.invoke(cli, ["render", str(routine), "-o", str(out), "-q", *args])
            assert result.exit_code == 0, result.output
            folders[name] = out / "check"
    return {"plan": plan, "folders": folders}


def whole_mix(track: Track, speech: mix.Speech) -> np.ndarray:
    """The whole track mixed in one range, with the default settings."""
    mixer = mix.TrackMixer(track, speech, mix.MixSettings())
    return mixer.mix(0, mixer.length)


def decode(path: Path) -> np.ndarray:
    samples, rate = soundfile.read(path, dtype="float32")
    assert rate == SR and samples.dtype == np.float32 and samples.ndim == 1
    return samples


def tracks(session: dict, name: str) -> list[tuple[dict, np.ndarray]]:
    return [(t, decode(session["folders"][name] / t["file"])) for t in session["plan"]["tracks"]]


def span(track: dict, start_s: float, end_s: float) -> slice:
    """Samples of a decoded track between two session times."""
    first = round(track["start_s"] * SR)
    return slice(round(start_s * SR) - first, round(end_s * SR) - first)


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize(("name", "target_lufs"), [("default", -16.0), ("seed7", -18.0)])
def test_session_loudness_is_on_target(session, name, target_lufs):
    audio = np.concatenate([x for _, x in tracks(session, name)]).astype(np.float64)
    measured = pyloudnorm.Meter(SR).integrated_loudness(audio)
    assert measured == pytest.approx(target_lufs - MONO_OFFSET_DB, abs=1.0)


def test_one_gain_for_every_track(session):
    # Album gain: the breathing track of soft tones stays quieter than the spoken welcome.
    meter = pyloudnorm.Meter(SR)
    arrive, breathe = (
        meter.integrated_loudness(x.astype(np.float64)) for _, x in tracks(session, "default")
    )
    assert arrive - breathe > 3.0


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_no_decoded_sample_above_minus_1_dbfs(session, name):
    for path in sorted(session["folders"][name].glob("*.mp3")):
        assert np.max(np.abs(decode(path))) <= 10 ** (-1 / 20), path.name


def test_no_click_at_any_edit_point(session):
    checked = 0
    for track, x in tracks(session, "default"):
        steps = np.abs(np.diff(x))
        edges = [track["start_s"], track["start_s"] + track["duration_s"]]
        for event in track["events"]:
            edges += [event["start_s"], event["start_s"] + event["duration_s"]]
        for edge_s in edges:
            around = span(track, edge_s - EDIT_WINDOW_S, edge_s + EDIT_WINDOW_S)
            window = steps[max(around.start, 0) : around.stop]
            assert window.max(initial=0.0) < CLICK_STEP, (track["title"], edge_s)
            checked += 1
    assert checked > 20


def test_pauses_are_silent_when_ambient_is_off(session):
    quiet = 0
    for track, x in tracks(session, "default"):
        # The lead-in before the first sound, and every pause after the sound before it has
        # rung out (the voice's room: 0.4 s), up to just before the next sound.
        first_event_s = track["events"][0]["start_s"]
        windows = [(track["start_s"], first_event_s - 0.05)]
        windows += [
            (e["start_s"] + 0.5, e["start_s"] + e["duration_s"] - 0.05)
            for e in track["events"]
            if e["kind"] == "pause"
        ]
        for lo_s, hi_s in windows:
            assert np.max(np.abs(x[span(track, lo_s, hi_s)])) < 1e-4, (track["title"], lo_s)
            quiet += 1
    assert quiet == 4


def test_ambient_is_ducked_under_speech(session):
    # Only the pink bed reaches above 12 kHz: espeak speaks at 22.05 kHz (nothing over
    # 11 kHz), so that band measures the bed alone, under the voice and in the pauses.
    band = signal.butter(4, (12_000, 15_000), btype="bandpass", fs=SR, output="sos")
    under, free = [], []
    for track, x in tracks(session, "pink"):
        bed = signal.sosfiltfilt(band, x.astype(np.float64))
        for event in track["events"]:
            end_s = event["start_s"] + event["duration_s"]
            if event["kind"] == "say" and event["duration_s"] > 0.6:
                under.append(rms_db(bed[span(track, event["start_s"] + 0.1, end_s - 0.1)]))
            if event["kind"] == "pause":
                free.append(rms_db(bed[span(track, event["start_s"] + 0.6, end_s - 0.1)]))
    assert len(under) == 2 and len(free) == 2
    assert min(free) > -60  # the bed plays in the pauses
    assert np.mean(under) - np.mean(free) == pytest.approx(DUCK_DB, abs=2.0)


def test_same_options_and_seed_give_identical_files(session):
    first, again = session["folders"]["seed7"], session["folders"]["seed7-again"]
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert any(n.endswith(".mp3") for n in names)
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    other = session["folders"]["seed8"]
    breathing = session["plan"]["tracks"][1]["file"]
    assert (first / breathing).read_bytes() != (other / breathing).read_bytes()


# ---------------------------------------------------------------------------------------------
# Sound files: bells and ambient beds


def write_wav(path: Path, samples: np.ndarray, rate: int = SR, width: int = 2) -> Path:
    """Integer PCM WAV through the standard library: ``samples`` frames x channels (or 1-D),
    floats in [-1, 1]."""
    frames = samples.reshape(samples.shape[0], -1)
    scale = float(1 << (8 * width - 1))
    ints = np.clip(np.round(frames * scale), -scale, scale - 1).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()  # 8-bit WAV is unsigned
    else:
        raw = b"".join(v.to_bytes(width, "little", signed=True) for v in ints.ravel().tolist())
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(raw)
    return path


def wav_bytes(
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = SR,
    bits: int = 16,
    block_align: int | None = None,
    data: bytes = b"\x00\x10" * 100,
    data_size: int | None = None,
    chunks: tuple[str, ...] = ("fmt", "data"),
) -> bytes:
    """A WAV file's bytes with every header field as given, right or wrong."""
    align = channels * bits // 8 if block_align is None else block_align
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    parts = {
        "fmt": b"fmt " + struct.pack("<I", len(fmt)) + fmt,
        "data": b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data,
        "list": b"LIST" + struct.pack("<I", 4) + b"INFO",
    }
    body = b"WAVE" + b"".join(parts[name] for name in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def sine(freq_hz: float, seconds: float, rate: int = SR, level: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return level * np.sin(2 * np.pi * freq_hz * t)


def zero_crossing_hz(x: np.ndarray) -> float:
    """Frequency of a near-sine from its rising zero crossings (interpolated)."""
    rising = np.flatnonzero((x[:-1] < 0) & (x[1:] >= 0))
    exact = rising + x[rising] / (x[rising] - x[rising + 1])
    return (len(exact) - 1) * SR / (exact[-1] - exact[0])


def level_db(x: np.ndarray, freq_hz: float) -> float:
    """The level of one frequency in ``x`` (dB re full scale), Blackman-windowed."""
    window = np.blackman(x.size)
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * window)) / (window.sum() / 2)
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    near = np.abs(freqs - freq_hz) < 30.0
    return float(20 * np.log10(spectrum[near].max()))


def reference_loop(samples: np.ndarray) -> np.ndarray:
    """What an ambient file has always become, worked the plain way: its last second
    crossfaded into its head with equal power (less for a short file)."""
    n = samples.shape[0]
    fade = min(SR, n // 4)
    x = np.linspace(0.0, 1.0, fade, endpoint=False) + 0.5 / fade
    fade_in = np.sin(0.5 * np.pi * x)
    loop = samples[: n - fade].astype(np.float64)
    loop[:fade] = loop[:fade] * fade_in + samples[n - fade :] * fade_in[::-1]
    return loop.astype(np.float32)


@pytest.fixture
def no_ffmpeg(monkeypatch):
    monkeypatch.setattr(sounds, "has_ffmpeg", lambda: False)


def test_a_stereo_wav_is_downmixed_and_resampled(tmp_path, no_ffmpeg):
    left = sine(440.0, 1.0, 22_050)
    path = write_wav(tmp_path / "bell.wav", np.column_stack([left, left]), 22_050)
    x = load_sound(path)
    assert x.dtype == np.float32 and x.shape == (SR,)  # one second at 44.1 kHz
    assert np.max(np.abs(x)) == pytest.approx(1.0)  # peak-normalised
    assert zero_crossing_hz(x[1000:-1000]) == pytest.approx(440.0, rel=0.002)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_integer_wavs_of_every_width_read_the_values_written(tmp_path, width):
    # 0, +1/2, -1/2, +1/4 of full scale, worked by hand: an 8-bit file's samples are
    # unsigned around 128, and once read they are centred on 0 like the others.
    values = np.tile([0.0, 0.5, -0.5, 0.25], SR // 4)
    x = load_sound(write_wav(tmp_path / f"w{width}.wav", values, width=width))
    assert x[:4].tolist() == [0.0, 1.0, -1.0, 0.5]  # peak 0.5 normalised to 1


@pytest.mark.parametrize("subtype", ["DOUBLE", "FLOAT"])
def test_a_floating_point_wav_is_read(tmp_path, subtype, no_ffmpeg):
    path = tmp_path / f"{subtype}.wav"
    soundfile.write(path, sine(392.0, 1.0, 48_000, 0.25), 48_000, subtype=subtype)
    x = load_sound(path)
    assert x.dtype == np.float32 and x.shape == (SR,)
    assert zero_crossing_hz(x[1000:-1000]) == pytest.approx(392.0, rel=0.002)


@pytest.mark.parametrize(("suffix", "fmt"), [(".flac", "FLAC"), (".ogg", "OGG")])
def test_flac_and_ogg_need_no_ffmpeg(tmp_path, suffix, fmt, no_ffmpeg):
    path = tmp_path / f"bell{suffix}"
    soundfile.write(path, sine(440.0, 1.0), SR, format=fmt)
    x = load_sound(path)
    assert x.dtype == np.float32 and abs(x.shape[0] - SR) < 2048
    assert zero_crossing_hz(x[5000:30000]) == pytest.approx(440.0, rel=0.002)


def test_mp3_needs_no_ffmpeg(tmp_path, no_ffmpeg, fake_speech):
    pcm = (sine(440.0, 1.0) * 32767).astype("<i2")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(128)
    encoder.set_in_sample_rate(SR)
    encoder.set_channels(1)
    path = tmp_path / "bell.mp3"
    path.write_bytes(bytes(encoder.encode(pcm.tobytes()) + encoder.flush()))
    x = load_sound(path)
    assert x.dtype == np.float32 and np.max(np.abs(x)) == pytest.approx(1.0)
    assert zero_crossing_hz(x[5000:30000]) == pytest.approx(440.0, rel=0.002)
    bell = Track(1, "T", 0.0, 3.0, (Event("bell", 0.0, 3.0),), bell_sound=str(path))
    mixed = whole_mix(bell, fake_speech)
    assert zero_crossing_hz(mixed[5000:30000]) == pytest.approx(440.0, rel=0.002)


def test_ffmpeg_without_ffprobe_cannot_read_other_formats(monkeypatch):
    # pydub asks ffprobe what a file holds before ffmpeg decodes it.
    found = {"ffmpeg": "bin/ffmpeg"}
    monkeypatch.setattr(sounds.shutil, "which", found.get)
    assert not sounds.has_ffmpeg()
    found["ffprobe"] = "bin/ffprobe"
    assert sounds.has_ffmpeg()


def test_formats_libsndfile_cannot_read_say_what_to_install(tmp_path, no_ffmpeg):
    path = tmp_path / "rain.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A not really")
    with pytest.raises(SoundFileError, match=r"rain\.m4a: reading \.m4a files needs ffmpeg") as e:
        load_sound(path)
    assert "apt install ffmpeg" in str(e.value)
    assert "convert the file to WAV" in str(e.value)


def test_a_broken_file_of_a_format_libsndfile_reads_is_not_sent_to_ffmpeg(tmp_path, no_ffmpeg):
    path = tmp_path / "rain.ogg"
    path.write_bytes(b"OggS not really")
    with pytest.raises(SoundFileError, match=r"rain\.ogg: cannot decode this sound file \("):
        load_sound(path)


def test_missing_silent_and_broken_files_are_named(tmp_path):
    with pytest.raises(SoundFileError, match=r"nosuch\.wav: cannot read"):
        load_sound(tmp_path / "nosuch.wav")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(1000))
    with pytest.raises(SoundFileError, match=r"silent\.wav: the sound is silent"):
        load_sound(silent)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF" + b"\x00garbage" * 50)
    no_header = r"broken\.wav: cannot decode this sound file \(no RIFF WAVE header\)"
    with pytest.raises(SoundFileError, match=no_header):
        load_sound(broken)


# Each header, and what the message says about it. Every one is refused from its header,
# before a sample is decoded: the rate of 4 GHz once asked the resampler for 43 GiB.
BAD_HEADERS = {
    "cut-mid-sample": (
        {"data": b"\x00\x10" * 99 + b"\x00", "data_size": 200},
        r"cut short \(it holds 199 of the 200 bytes of sound its header promises\)",
    ),
    "cut-mid-frame": ({"data": b"\x00\x10" * 99 + b"\x00"}, r"cut off mid-sample"),
    "zero-channels": ({"channels": 0, "block_align": 2}, r"its header says 0 channels"),
    "zero-bits": ({"bits": 0, "block_align": 2}, r"its header says 0-bit samples"),
    "seven-bits": ({"bits": 7, "block_align": 1}, r"its header says 7-bit samples"),
    "zero-rate": ({"rate": 0}, r"a sample rate of 0 Hz"),
    "rate-4-ghz": ({"rate": 4_000_000_000}, r"a sample rate of 4,000,000,000 Hz"),
    "wrong-frame-size": ({"block_align": 3}, r"3 bytes per frame, but 1 channels of 16-bit"),
    "no-fmt": ({"chunks": ("data",)}, r"no fmt chunk"),
    "no-data": ({"chunks": ("fmt", "list")}, r"no data chunk"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_a_bad_header_is_refused_before_anything_is_decoded(tmp_path, case):
    fields, message = BAD_HEADERS[case]
    path = tmp_path / f"{case}.wav"
    path.write_bytes(wav_bytes(**fields))
    tracemalloc.start()
    try:
        with pytest.raises(SoundFileError, match=rf"^{re.escape(str(path))}: .*{message}"):
            load_sound(path)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_bytes < 2_000_000


def test_chunks_in_any_order_and_a_streamed_data_size_are_read(tmp_path):
    ramp = np.linspace(-0.5, 0.5, 4410)
    data = (ramp * 32767).astype("<i2").tobytes()
    for chunks in (("list", "fmt", "data"), ("fmt", "list", "data"), ("fmt", "data", "list")):
        path = tmp_path / f"{'-'.join(chunks)}.wav"
        path.write_bytes(wav_bytes(data=data, chunks=chunks))
        x = load_sound(path)
        assert x.shape == (4410,) and x[0] == pytest.approx(-1.0, abs=1e-4)
    streamed = tmp_path / "streamed.wav"  # a writer that never went back to fill in the size
    streamed.write_bytes(wav_bytes(data=data, data_size=0xFFFFFFFF))
    assert load_sound(streamed).shape == (4410,)


def test_a_bell_longer_than_a_minute_is_refused_from_its_header(tmp_path):
    path = write_wav(tmp_path / "long.wav", np.full(61 * 8000, 0.1), 8000)
    with pytest.raises(SoundFileError, match=r"long\.wav: the sound lasts 61 s; a bell may last"):
        load_sound(path)
    assert load_sound(write_wav(tmp_path / "ok.wav", np.full(59 * 8000, 0.1), 8000)).size


def test_resampling_leaves_no_image(tmp_path):
    # 22.05 kHz up to 44.1 kHz: a 10 kHz tone has an image at 12.05 kHz, which scipy's default
    # filter passes at -20 dB. The steep one takes it under -70 dB.
    path = write_wav(tmp_path / "tone.wav", sine(10_000.0, 2.0, 22_050), 22_050)
    x = load_sound(path)[4096:-4096]
    assert level_db(x, 12_050.0) - level_db(x, 10_000.0) < -70.0
    default = signal.resample_poly(sine(10_000.0, 2.0, 22_050), 2, 1)[4096:-4096]
    assert level_db(default, 12_050.0) - level_db(default, 10_000.0) > -30.0  # it can fail


@pytest.mark.parametrize(
    ("rate", "tone_hz", "most_db"),
    [
        # 96 kHz: a 30 kHz tone would fold to 14.1 kHz, well inside what anyone hears.
        (96_000, 30_000.0, -70.0),
        # 48 kHz: whatever folds lands above 20 kHz; a 23 kHz tone, at 21.1 kHz, sits in the
        # filter's transition band (-56 dB measured).
        (48_000, 23_000.0, -50.0),
    ],
)
def test_downsampling_leaves_no_alias(tmp_path, rate, tone_hz, most_db):
    tones = sine(1_000.0, 2.0, rate) + sine(tone_hz, 2.0, rate)
    x = load_sound(write_wav(tmp_path / "tones.wav", tones / 2, rate))[4096:-4096]
    alias_hz = SR - tone_hz  # folded about the new Nyquist
    assert level_db(x, alias_hz) - level_db(x, 1_000.0) < most_db


def test_an_awkward_rate_is_resampled_to_the_right_pitch_and_length(tmp_path):
    x = load_sound(write_wav(tmp_path / "odd.wav", sine(440.0, 2.0, 44_101), 44_101))
    assert abs(x.shape[0] - 2 * SR) <= 2
    assert zero_crossing_hz(x[2000:-2000]) == pytest.approx(440.0, rel=1e-4)


@pytest.mark.parametrize("name", [DEFAULT_BELL_FILE, INTERVAL_BELL_FILE])
def test_the_shipped_sounds_are_found_and_are_what_the_script_makes(name, tmp_path):
    shipped = default_sound_path(name)
    assert shipped.is_file()
    assert (ROOT / "sounds" / name).read_bytes() == shipped.read_bytes()
    spec = importlib.util.spec_from_file_location("make_sounds", ROOT / "scripts/make_sounds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_sounds(tmp_path)
    assert (tmp_path / name).read_bytes() == shipped.read_bytes()
    x = load_sound(shipped)
    assert x.dtype == np.float32 and np.max(np.abs(x)) == pytest.approx(1.0)
    # A bowl: most of its energy is in its fundamental's band, and it ends in silence.
    fundamental = BOWL_FUNDAMENTAL_HZ if name == DEFAULT_BELL_FILE else 392.0
    sos = signal.butter(2, (fundamental * 0.9, fundamental * 1.1), "bandpass", fs=SR, output="sos")
    assert np.mean(signal.sosfilt(sos, x) ** 2) > 0.3 * np.mean(x.astype(np.float64) ** 2)
    assert abs(x[-1]) < 1e-3


def test_a_float_wav_bell_over_a_long_recorded_bed_renders(tmp_path):
    # Through the CLI as a user gives them: a 64-bit float WAV at 48 kHz for the bell (it once
    # failed to decode without ffmpeg) and 70 s of stereo noise for the bed, read from disk.
    soundfile.write(tmp_path / "bell.wav", sine(392.0, 2.0, 48_000, 0.8), 48_000, "DOUBLE")
    rng = np.random.default_rng(2)
    write_wav(tmp_path / "bed.wav", 0.1 * rng.standard_normal((70 * SR, 2)))
    routine = tmp_path / "sounds.yaml"
    routine.write_text(
        "title: Sounds\nsounds: {bell: bell.wav, ambient: bed.wav}\nsections:\n"
        "  - title: One\n    steps: [bell: 3, pause: 80]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["render", str(routine), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    x = decode(next((tmp_path / "out" / "sounds").glob("01 - *.mp3")))
    assert x.shape[0] >= 83 * SR  # the bell, the pause, and the lead-in and out
    ring = np.abs(np.fft.rfft(x[: 2 * SR].astype(np.float64)))
    assert np.argmax(ring) / 2 == pytest.approx(392.0, abs=1.0)  # 0.5 Hz bins
    assert rms_db(x[70 * SR : 80 * SR]) > -60  # the bed plays on past its first pass


# -- ambient beds -----------------------------------------------------------------------------


def test_a_recording_loops_with_its_tail_crossfaded_into_its_head(tmp_path):
    # 1.37 Hz: a whole number of cycles does not fit, so the raw ends do not meet.
    raw = sine(1.37, 5.0, level=0.9)
    assert abs(raw[0] - raw[-1]) > 0.1
    loop = load_loop(write_wav(tmp_path / "swell.wav", raw)).samples()
    assert loop.shape == (raw.size - SR,)  # one second crossfaded
    assert abs(float(loop[0]) - float(loop[-1])) < 1e-3
    with pytest.raises(SoundFileError, match=r"too short for an ambient bed"):
        load_loop(write_wav(tmp_path / "short.wav", raw[:SR]))


@pytest.mark.parametrize(("rate", "channels"), [(SR, 2), (48_000, 1), (22_050, 3)])
def test_a_streamed_bed_is_the_recording_read_whole(tmp_path, rate, channels):
    # Seven decoding blocks and more: the block by block path against the plain one.
    rng = np.random.default_rng(rate)
    frames = 0.3 * rng.standard_normal((10 * rate + 123, channels))
    path = write_wav(tmp_path / "bed.wav", frames, rate)
    whole = load_sound(path, max_s=60.0)
    loop = load_loop(path)
    assert loop.size == whole.size - SR
    assert np.array_equal(loop.samples(), reference_loop(whole))


def test_a_long_bed_is_read_from_disk_by_absolute_time(tmp_path, fake_speech):
    rng = np.random.default_rng(7)
    path = write_wav(tmp_path / "rain.wav", 0.2 * rng.standard_normal((90 * SR, 2)))
    loop = mix._bed_loop(str(path), 0)
    assert isinstance(loop, RecordedLoop)  # over BED_IN_MEMORY_S: not held in memory
    assert loop.size == 89 * SR
    held = loop.samples()
    assert gated_loudness(block_powers(held)) == pytest.approx(mix.AMBIENT_LOUDNESS_LUFS, abs=0.01)
    # A track from 100 s to 300 s: between its fades it plays the loop, going round.
    tr = Track(1, "T", 100.0, 200.0, (), ambient=str(path))
    x = whole_mix(tr, fake_speech)
    start = 100 * SR
    assert np.array_equal(x[2 * SR : -2 * SR], loop_span(held, start + 2 * SR, 196 * SR))


def test_a_long_bed_costs_a_block_of_memory_not_the_recording(tmp_path):
    # Five minutes of 48 kHz stereo: 230 MB as float64 frames, 53 MB as the float32 loop.
    frames = 5 * 60 * 48_000
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(48_000) * 3000).astype("<i2")
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2), out.setsampwidth(2), out.setframerate(48_000)
        for _ in range(frames // 48_000):
            out.writeframes(np.repeat(noise, 2).tobytes())
    tracemalloc.start()
    try:
        loop = load_loop(path)
        span = loop.span(7 * 60 * SR, 10 * SR)  # past the end of one pass
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loop.size == round(frames * SR / 48_000) - SR
    assert span.dtype == np.float32 and np.max(np.abs(span)) <= 1.0
    assert peak_bytes < 20_000_000


# -- any header at all ------------------------------------------------------------------------

# Each field is mostly one a recording could have, else anything at all.
RATES = st.one_of(
    *[st.sampled_from([8_000, 22_050, 44_100, 48_000, 96_000, 11_111])] * 2,
    st.sampled_from([0, 1, 7_999, 384_001, 4 * 10**9]),
    st.integers(0, 0xFFFFFFFF),
)


ORDERS = st.sampled_from([("fmt", "data"), ("fmt", "list", "data"), ("fmt", "data", "list")])


def either(usual: list[int], top: int) -> st.SearchStrategy[int]:
    """Three times in four one of ``usual``, else anything from 0 to ``top``."""
    return st.one_of(*[st.sampled_from(usual)] * 3, st.integers(0, top))


@st.composite
def wav_files(draw: st.DrawFn) -> bytes:
    """A WAV file's bytes: half the time a well-made file, half the time random fmt fields,
    data size and chunk order; either now and then cut short or overwritten somewhere."""
    if draw(st.booleans()):
        tag, bits = draw(st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]))
        channels = draw(st.integers(1, 3))
        block_align = channels * bits // 8
        frames = draw(st.integers(0, 2_000 // block_align))
        fields = {
            "rate": draw(st.sampled_from([8_000, 22_050, 44_100, 48_000, 96_000, 11_111])),
            "data": draw(st.binary(min_size=frames * block_align, max_size=frames * block_align)),
            "chunks": draw(ORDERS),
        }
    else:
        tag = draw(either([1, 3, 0xFFFE, 2, 6, 7, 0x11], 0xFFFF))
        channels = draw(either([1, 2, 3, 0, 33], 0xFFFF))
        bits = draw(either([16, 8, 24, 32, 64, 0, 7], 0xFFFF))
        block_align = draw(st.just(channels * bits // 8 & 0xFFFF) | st.integers(0, 0xFFFF))
        fields = {
            "rate": draw(RATES),
            "data": draw(st.binary(max_size=2_000)),
            "data_size": draw(st.none() | either([0, 0xFFFFFFFF], 0xFFFFFFFF)),
            "chunks": draw(ORDERS | st.permutations(["fmt", "data", "list"]).map(tuple)),
        }
    body = wav_bytes(tag=tag, channels=channels, bits=bits, block_align=block_align, **fields)
    if draw(st.integers(0, 3)) == 0:
        body = body[: len(body) - draw(st.integers(1, len(body)))]  # often by a byte or two
    if body and draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at + 4 :]
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wav_files())
def test_any_wav_header_gives_samples_or_our_error(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("wav") / "any.wav"
    path.write_bytes(body)
    tracemalloc.start()
    try:
        try:
            x = load_sound(path)
        except SoundFileError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            note_event(re.sub(r"[0-9,.]+", "N", str(exc)[len(str(path)) + 2 :])[:60])
        else:
            note_event("read")
            assert x.dtype == np.float32 and x.ndim == 1 and x.size > 0
            assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 2,000 bytes of data: a filter for an awkward rate (up to 0.2 M taps) and its work.
    assert peak_bytes < 30_000_000
