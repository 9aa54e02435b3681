"""End to end, by ear's proxies: real espeak speech and LAME, the MP3s decoded and measured.

One short session (41 s: a bell, a welcome, a pause, two breaths with cues, a pause) is
rendered a few ways, once per module, and every check reads the decoded files against the
plan's event times.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile
from click.testing import CliRunner
from scipy import signal

from audioguide.cli import cli
from audioguide.mix import DUCK_DB
from audioguide.synth import SAMPLE_RATE

SR = SAMPLE_RATE
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
