"""Export end to end with the real parts: espeak-ng speech, LAME, and the files read back by
libsndfile, mutagen and (when installed) ffprobe, measured against ``plan --json``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from conftest import SHORT_ROUTINE
from mutagen.id3 import ID3
from mutagen.mp3 import MP3

from audioguide.cli import cli
from audioguide.export.ownership import MANIFEST_NAME

TOLERANCE_S = 0.010
LENGTH_TOLERANCE_S = 0.1


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One real render at 5 breaths a minute, shared by the tests here: (plan, folder)."""
    root = tmp_path_factory.mktemp("export-e2e")
    routine = root / "short.yaml"
    routine.write_text(SHORT_ROUTINE, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDIOGUIDE_CACHE_DIR", str(root / "cache"))
        runner = CliRunner()
        planned = runner.invoke(cli, ["plan", str(routine), "--json", "--breath-tempo", "5"])
        assert planned.exit_code == 0, planned.output
        args = ["render", str(routine), "-o", str(root / "out"), "--breath-tempo", "5", "--zip"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    return json.loads(planned.output), root / "out" / "short"


def full_file(folder: Path) -> Path:
    return folder / "Short Test Session (full).mp3"


def test_every_file_reads_at_its_planned_length(rendered):
    plan, folder = rendered
    files = [(folder / t["file"], t["duration_s"]) for t in plan["tracks"]]
    files.append((full_file(folder), plan["total_s"]))
    for path, duration_s in files:
        assert abs(MP3(path).info.length - duration_s) <= LENGTH_TOLERANCE_S, path
        assert abs(soundfile.info(str(path)).duration - duration_s) <= LENGTH_TOLERANCE_S, path
        decoded, _ = soundfile.read(path, dtype="float32")
        assert abs(decoded.shape[0] / 44_100 - duration_s) <= LENGTH_TOLERANCE_S, path


def test_the_full_session_sounds_as_the_tracks_played_back_to_back(rendered):
    # test_e2e checks the tracks' timing against the plan; the full file must be those very
    # samples, so its timing holds too, with no gap or overlap at any section boundary.
    plan, folder = rendered
    joined = np.concatenate(
        [soundfile.read(folder / t["file"], dtype="float32")[0] for t in plan["tracks"]]
    )
    full, _ = soundfile.read(full_file(folder), dtype="float32")
    assert full.shape == joined.shape
    assert np.max(np.abs(full - joined)) < 1e-3
    assert np.sqrt(np.mean(full**2)) > 0.01  # and it is not silence


def test_chapters_sit_at_the_section_starts(rendered):
    plan, folder = rendered
    id3 = ID3(full_file(folder))
    (toc,) = id3.getall("CTOC")
    chapters = [id3[f"CHAP:{element}"] for element in toc.child_element_ids]
    assert len(chapters) == len(plan["tracks"])
    for chapter, track in zip(chapters, plan["tracks"], strict=True):
        assert chapter.sub_frames["TIT2"].text == [track["title"]]
        assert abs(chapter.start_time / 1000 - track["start_s"]) <= TOLERANCE_S


def test_transcripts_carry_the_planned_cue_times(rendered):
    plan, folder = rendered
    for track in plan["tracks"]:
        lrc = (folder / track["file"]).with_suffix(".lrc").read_text(encoding="utf-8")
        timed = [line for line in lrc.splitlines() if line[1:2].isdigit()]
        cues = [e for e in track["events"] if e["kind"] == "say"]
        assert len(timed) == len(cues)
        for line, cue in zip(timed, cues, strict=True):
            minutes, seconds = line[1 : line.index("]")].split(":")
            at_s = int(minutes) * 60 + float(seconds)
            assert abs(at_s - (cue["start_s"] - track["start_s"])) <= TOLERANCE_S
            assert line[line.index("]") + 1 :] == cue["text"]


def test_zip_beside_the_folder(rendered):
    _, folder = rendered
    import zipfile

    with zipfile.ZipFile(folder.with_name("short.zip")) as archive:
        names = {Path(n).name for n in archive.namelist()}
    assert names == {p.name for p in folder.iterdir() if p.name != MANIFEST_NAME}


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
def test_ffprobe_lists_the_same_chapters(rendered):
    plan, folder = rendered
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_chapters", "-show_format",
         str(full_file(folder))],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    probed = json.loads(out)
    chapters = probed["chapters"]
    assert [c["tags"]["title"] for c in chapters] == [t["title"] for t in plan["tracks"]]
    for chapter, track in zip(chapters, plan["tracks"], strict=True):
        assert abs(float(chapter["start_time"]) - track["start_s"]) <= TOLERANCE_S
    assert abs(float(probed["format"]["duration"]) - plan["total_s"]) <= LENGTH_TOLERANCE_S


def test_single_writes_one_file_the_playlist_plays(short_routine_file, tmp_path):
    args = ["render", str(short_routine_file), "-o", str(tmp_path), "--single", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "short"
    assert sorted(p.name for p in folder.glob("*.mp3")) == ["Short Test Session (full).mp3"]
    lines = (folder / "Short Test Session.m3u8").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U"
    assert lines[2] == "Short Test Session (full).mp3"


def test_seeking_lands_on_the_same_samples_as_decoding_from_the_start(rendered):
    plan, folder = rendered
    path = full_file(folder)
    whole, _ = soundfile.read(path, dtype="float32")
    with soundfile.SoundFile(path) as mp3:
        for track in plan["tracks"][::-1]:  # backwards: every seek is a real jump
            at = round(track["start_s"] * 44_100) + 12_345
            mp3.seek(at)
            got = mp3.read(4096, dtype="float32")
            assert np.max(np.abs(got - whole[at : at + 4096])) < 1e-3
