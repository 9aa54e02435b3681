"""End to end with the real parts: espeak-ng through pyttsx3, LAME through lameenc, and the
MP3 files decoded back with libsndfile and measured against ``plan --json``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from mutagen.mp3 import MP3
from scipy import signal

from audioguide.cli import cli
from audioguide.synth import SAMPLE_RATE, breath_guide

ONSET_TOLERANCE_S = 0.010


def plan_json(routine: Path, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["plan", str(routine), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def render(routine: Path, out: Path, *args: str) -> Path:
    result = CliRunner().invoke(cli, ["render", str(routine), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return out / routine.stem


def guide_onset_error_s(decoded: np.ndarray, event: dict, track_start_s: float) -> float:
    """How far the guide tone for ``event`` sits from its planned start, by matching the
    synthesized tone against the decoded audio over lags of +-50 ms (normalized
    cross-correlation, computed with FFTs)."""
    start = round(event["start_s"] * SAMPLE_RATE) - round(track_start_s * SAMPLE_RATE)
    n = round((event["start_s"] + event["duration_s"]) * SAMPLE_RATE) - round(
        event["start_s"] * SAMPLE_RATE
    )
    template = breath_guide(event["phase"], n, "tone", np.random.default_rng(0)).astype(np.float64)
    search = round(0.05 * SAMPLE_RATE)
    lo = max(0, start - search)
    window = decoded[lo : start + n + search]
    scores = signal.correlate(window, template, mode="valid", method="fft")
    energy = np.concatenate(([0.0], np.cumsum(window**2)))
    norms = np.sqrt(energy[n:] - energy[:-n]) * np.linalg.norm(template) + 1e-12
    scores = scores / norms[: scores.shape[0]]
    best = int(np.argmax(scores))
    assert scores[best] > 0.5, f"no guide tone found near {event['start_s']} s"
    return (lo + best - start) / SAMPLE_RATE


@pytest.mark.parametrize("tempo", ["5", "8"])
def test_breath_tones_land_where_the_plan_says(short_routine_file, tmp_path, tempo):
    plan = plan_json(short_routine_file, "--breath-tempo", tempo)
    folder = render(short_routine_file, tmp_path / "out", "--breath-tempo", tempo)
    cycle_s = 60 / float(tempo)
    checked = 0
    for track in plan["tracks"]:
        decoded, rate = soundfile.read(folder / track["file"], dtype="float64")
        assert rate == SAMPLE_RATE
        inhales = [e for e in track["events"] if e.get("phase") == "inhale"]
        for a, b in itertools.pairwise(inhales):
            assert b["start_s"] - a["start_s"] == pytest.approx(cycle_s, abs=1e-6)
        for event in track["events"]:
            if event["kind"] == "breath" and event["phase"] in ("inhale", "exhale"):
                error = guide_onset_error_s(decoded, event, track["start_s"])
                assert abs(error) <= ONSET_TOLERANCE_S, (event, error)
                checked += 1
    assert checked == 6  # three cycles, inhale and exhale each


def test_track_lengths_and_playlist_agree_with_the_plan(short_routine_file, tmp_path):
    plan = plan_json(short_routine_file)
    folder = render(short_routine_file, tmp_path / "out")
    playlist = folder / "Short Test Session.m3u8"
    raw = playlist.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8").splitlines()
    assert lines[0] == "#EXTM3U"
    entries = list(zip(lines[1::2], lines[2::2], strict=True))
    assert [name for _, name in entries] == [t["file"] for t in plan["tracks"]]
    for (extinf, name), track in zip(entries, plan["tracks"], strict=True):
        assert extinf == f"#EXTINF:{round(track['duration_s'])},audioguide - {track['title']}"
        path = folder / name
        assert abs(MP3(path).info.length - track["duration_s"]) <= 0.1
        assert abs(soundfile.info(str(path)).duration - track["duration_s"]) <= 0.1
    total = sum(t["duration_s"] for t in plan["tracks"])
    assert total == pytest.approx(plan["total_s"], abs=1e-3)
    # Tracks follow each other with no gap: each starts where the previous one ended.
    for a, b in zip(plan["tracks"], plan["tracks"][1:], strict=False):
        assert b["start_s"] == pytest.approx(a["start_s"] + a["duration_s"], abs=1e-3)


def test_speech_is_really_spoken(short_routine_file, tmp_path):
    plan = plan_json(short_routine_file)
    folder = render(short_routine_file, tmp_path / "out", "--breath-sound", "none", "--no-bell")
    track = plan["tracks"][0]
    decoded, _ = soundfile.read(folder / track["file"], dtype="float64")
    (say,) = [e for e in track["events"] if e["kind"] == "say"]
    lo = round((say["start_s"] - track["start_s"]) * SAMPLE_RATE)
    hi = lo + round(say["duration_s"] * SAMPLE_RATE)
    speech_rms = np.sqrt(np.mean(decoded[lo:hi] ** 2))
    before_rms = np.sqrt(np.mean(decoded[: lo - 2000] ** 2))
    assert speech_rms > 0.02
    assert before_rms < 1e-4  # nothing but silence before the voice when bells are off
    # The engine's words last as long as normal speech at 140 wpm, not a blip.
    assert say["duration_s"] > 0.8
