"""Safe, unique file names for Android, iOS and FAT32 cards."""

from __future__ import annotations

import json
import unicodedata

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from audioguide.cli import cli
from audioguide.export.names import MAX_NAME_BYTES, safe_name, slugify, track_filename, unique_name

FAT32_FORBIDDEN = set('/\\:*?"<>|')


def test_separators_and_forbidden_characters_are_replaced():
    assert safe_name('../../etc/passwd: "x"?') == "etc passwd x"
    assert safe_name("a\\b|c<d>e*f") == "a b c d e f"


def test_no_leading_or_trailing_dots_or_spaces():
    assert safe_name("  ..hidden.  ") == "hidden"
    assert safe_name("...") == "untitled"
    assert safe_name("", fallback="Session") == "Session"


def test_reserved_dos_names_are_not_used_alone():
    assert safe_name("CON") == "untitled CON"
    assert safe_name("nul.txt").upper().split(".")[0] != "NUL"


def test_long_titles_fit_every_file_system_in_bytes_not_only_characters():
    # 100 CJK characters are 300 UTF-8 bytes: over ext4's 255 although under 120 characters.
    name = safe_name("静" * 100)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name == "静" * (MAX_NAME_BYTES // 3)


def test_unique_name_ignores_case_and_keeps_the_extension():
    taken: set[str] = set()
    assert unique_name("Breath.mp3", taken) == "Breath.mp3"
    assert unique_name("breath.MP3", taken) == "breath (2).MP3"
    assert unique_name("Breath.mp3", taken) == "Breath (3).mp3"
    assert unique_name("Breath", taken) == "Breath"


def test_track_files_are_numbered_so_players_sort_them():
    assert track_filename(3, "Ocean: Breath?") == "03 - Ocean Breath.mp3"
    assert slugify("Qigong für den Rücken!") == "qigong-fur-den-rucken"


@given(st.text(max_size=400))
def test_any_title_gives_a_safe_name(title):
    name = safe_name(title)
    assert name
    assert not FAT32_FORBIDDEN & set(name)
    assert not any(unicodedata.category(c) == "Cc" for c in name)
    assert name == name.strip(" .")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name not in (".", "..")


def sections_routine(tmp_path, count: int) -> str:
    path = tmp_path / f"many-{count}.yaml"
    parts = "".join(f"  - title: Part {i}\n    steps: [pause: 1]\n" for i in range(1, count + 1))
    path.write_text(f"title: Many\nsections:\n{parts}", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("count", "first", "last"), [(99, "01", "99"), (100, "001", "100")])
def test_track_numbers_are_padded_so_every_track_sorts_in_order(tmp_path, count, first, last):
    result = CliRunner().invoke(cli, ["plan", sections_routine(tmp_path, count), "--json"])
    assert result.exit_code == 0, result.output
    files = [track["file"] for track in json.loads(result.output)["tracks"]]
    assert files[0] == f"{first} - Part 1.mp3"
    assert files[-1] == f"{last} - Part {count}.mp3"
    assert sorted(files) == files  # as a player or a file browser sorts them
