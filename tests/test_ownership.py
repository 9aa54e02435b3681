"""A render replaces only a folder it can prove it wrote, and never a file it reads.

Through the CLI, with the real engine and encoder: each case sets up what a user might have
at the output path, runs ``audioguide render``, and checks the exact outcome, byte for byte.
"""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from audioguide.export import staging
from audioguide.export.ownership import MANIFEST_NAME

WITH_BELL = """\
title: Tiny
sounds: {bell: sounds/bell.wav}
sections:
  - title: First
    steps:
      - bell: 2
"""


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_bell(path: Path) -> None:
    import numpy as np
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(22_050) / 22_050
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t), 22_050)


def test_a_folder_of_the_users_is_refused_and_left_untouched(home):
    (home / "music.yaml").write_text(TINY, encoding="utf-8")
    album = home / "home" / "music"
    (album / "docs").mkdir(parents=True)
    (album / "song.mp3").write_bytes(b"a song I love")
    (album / "docs" / "notes.txt").write_text("my notes")
    before = snapshot(home)

    code, output = run_cli(["render", "music.yaml", "-o", "home"])

    assert code == 1
    assert output.strip().splitlines()[-1] == (
        "Error: home/music: this folder was not written by audioguide (it holds 1 file and "
        "1 folder: docs/, song.mp3); nothing was changed. Choose another folder with -o DIR, "
        "or add --force to replace it and everything in it"
    )
    assert "Traceback" not in output
    assert snapshot(home) == before  # not a byte changed, no staging folder left


def test_the_routines_own_sound_folder_survives_any_render(home):
    (home / "sounds.yaml").write_text(WITH_BELL, encoding="utf-8")
    write_bell(home / "sounds" / "bell.wav")
    before = snapshot(home)

    for extra in ([], ["--force"]):
        code, output = run_cli(["render", "sounds.yaml", "-o", ".", *extra])
        assert code == 1, output
        assert "sounds/bell.wav" in output and "this render reads" in output
        assert snapshot(home) == before


def test_the_routine_being_rendered_survives_any_render(home):
    folder = home / "out" / "routine"
    folder.mkdir(parents=True)
    (folder / "routine.yaml").write_text(TINY, encoding="utf-8")
    before = snapshot(home)

    for extra in ([], ["--force"]):
        code, output = run_cli(["render", "out/routine/routine.yaml", "-o", "out", *extra])
        assert code == 1, output
        assert output.strip().splitlines()[-1] == (
            "Error: out/routine: it holds out/routine/routine.yaml, which this render reads; "
            "nothing was changed. Choose another folder with -o DIR"
        )
        assert snapshot(home) == before


def test_its_own_folder_is_replaced_and_a_file_added_since_is_protected(home):
    (home / "routine.yaml").write_text(TINY, encoding="utf-8")
    folder = home / "out" / "routine"
    assert run_cli(["render", "routine.yaml", "-o", "out"])[0] == 0
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    on_disk = {p.name: p.stat().st_size for p in folder.iterdir() if p.name != MANIFEST_NAME}
    assert manifest["files"] == on_disk  # every file it wrote, with its size

    # Ours and unchanged: replaced.
    assert run_cli(["render", "routine.yaml", "-o", "out"])[0] == 0

    # A file the user added since: refused, untouched.
    (folder / "my notes.txt").write_text("how my back felt today")
    before = snapshot(home)
    code, output = run_cli(["render", "routine.yaml", "-o", "out"])
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        "Error: out/routine: files were added or changed since audioguide wrote this folder "
        "(my notes.txt); nothing was changed. Move them elsewhere, choose another folder with "
        "-o DIR, or add --force to replace the folder and them"
    )
    assert snapshot(home) == before

    # --force replaces it anyway.
    code, output = run_cli(["render", "routine.yaml", "-o", "out", "--force"])
    assert code == 0, output
    assert not (folder / "my notes.txt").exists()


def test_a_file_changed_since_is_protected(home):
    (home / "routine.yaml").write_text(TINY, encoding="utf-8")
    folder = home / "out" / "routine"
    assert run_cli(["render", "routine.yaml", "-o", "out"])[0] == 0
    playlist = next(folder.glob("*.m3u8"))
    playlist.write_text(playlist.read_text(encoding="utf-8") + "# my own line\n")
    before = snapshot(home)
    code, output = run_cli(["render", "routine.yaml", "-o", "out"])
    assert code == 1
    assert f"({playlist.name})" in output
    assert snapshot(home) == before


def test_a_damaged_manifest_proves_nothing(home):
    (home / "routine.yaml").write_text(TINY, encoding="utf-8")
    folder = home / "out" / "routine"
    assert run_cli(["render", "routine.yaml", "-o", "out"])[0] == 0
    (folder / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    before = snapshot(home)
    code, output = run_cli(["render", "routine.yaml", "-o", "out"])
    assert code == 1
    assert "not written by audioguide" in output
    assert snapshot(home) == before


def test_an_empty_folder_is_used(home):
    (home / "routine.yaml").write_text(TINY, encoding="utf-8")
    (home / "out" / "routine").mkdir(parents=True)
    code, output = run_cli(["render", "routine.yaml", "-o", "out"])
    assert code == 0, output
    assert any((home / "out" / "routine").glob("*.mp3"))


def test_a_link_is_not_followed_or_replaced(home):
    (home / "routine.yaml").write_text(TINY, encoding="utf-8")
    real = home / "elsewhere"
    real.mkdir()
    (real / "keep.txt").write_text("mine")
    (home / "out").mkdir()
    (home / "out" / "routine").symlink_to(real, target_is_directory=True)
    before = snapshot(home)
    code, output = run_cli(["render", "routine.yaml", "-o", "out"])
    assert code == 1
    assert "is a link" in output
    assert snapshot(home) == before


def test_zip_never_overwrites_an_archive_of_the_users(home):
    (home / "routine.yaml").write_text(TINY, encoding="utf-8")
    (home / "out").mkdir()
    (home / "out" / "routine.zip").write_bytes(b"PK my own archive")
    before = snapshot(home)
    code, output = run_cli(["render", "routine.yaml", "-o", "out", "--zip"])
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        "Error: out/routine.zip: this file was not written by audioguide; nothing was changed. "
        "Move it, choose another folder with -o DIR, or add --force to replace it"
    )
    assert snapshot(home) == before

    # Its own archive is replaced on the next render.
    (home / "out" / "routine.zip").unlink()
    assert run_cli(["render", "routine.yaml", "-o", "out", "--zip"])[0] == 0
    assert run_cli(["render", "routine.yaml", "-o", "out", "--zip"])[0] == 0


def test_a_signal_just_after_the_staging_folder_is_made_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, SIGHUP) the instant the staging folder exists, before the render
    has started cleaning up after itself: the folder is still removed. Under load the
    signal tests hit this window now and then."""
    made = tempfile.mkdtemp

    def mkdtemp_then_signal(*args, **kwargs):
        folder = made(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # Python's handler runs on the next bytecode
        return folder

    monkeypatch.setattr(staging.tempfile, "mkdtemp", mkdtemp_then_signal)
    target = tmp_path / "out" / "routine"
    with pytest.raises(KeyboardInterrupt), staging.staged_folder(target) as folder:
        (folder / "01.mp3").write_bytes(b"never")
    assert not (tmp_path / "out").exists()
