"""Options objects check themselves: a bad value fails where it is given, naming the field.

The library speaks its own words (``breaths_per_min``); the CLI names the flag a user typed
(``--breath-tempo``), from the same check, so the two cannot disagree.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from audioguide import OptionError, RenderOptions, SessionOptions
from audioguide.cli import FLAGS, cli
from audioguide.export import ExportOptions
from audioguide.mix import MixSettings
from audioguide.pipeline import VoiceOptions

NAN, INF = math.nan, math.inf

# (options class, field, bad values): every field of every options object, each kind of
# mistake a caller can make: out of range, not finite, wrong type, unknown name.
BAD = [
    (RenderOptions, "breaths_per_min", [0, 1.99, 20.01, 50, -6, NAN, INF, -INF, "6", True]),
    (RenderOptions, "pattern", ["4-6", 4]),
    (RenderOptions, "moves_per_min", [0, 3.9, 121, NAN, INF, "40"]),
    (RenderOptions, "level", ["Gentle", "hard", None, 1]),
    (RenderOptions, "minutes", [0, 0.5, 361, NAN, -INF, "15"]),
    (VoiceOptions, "voice", ["", "   ", 3]),
    (VoiceOptions, "rate_wpm", [0, 79, 261, 140.0, NAN, "140", True]),
    (VoiceOptions, "voice_fx", ["warmm", None, ""]),
    (MixSettings, "breath_sound", ["tonee", "", None]),
    (MixSettings, "bells", [1, "yes", None]),
    (MixSettings, "seed", [-1, 2**64, 1.5, NAN, "0", False]),
    (MixSettings, "loudness_lufs", [NAN, INF, -INF, -31, -9, 0, "-16", None]),
    (MixSettings, "ambient", ["", 5]),
    (MixSettings, "bell_file", ["", 5]),
    (ExportOptions, "audio_format", ["mp4", "MP3", None]),
    (ExportOptions, "bitrate_kbps", [0, 100, 96.0, "96", NAN]),
    (ExportOptions, "mode", ["all", None]),
    (ExportOptions, "year", [0, 10_000, 2026.5, "2026"]),
    (ExportOptions, "zip", [1, "no"]),
    (ExportOptions, "force", [0, None]),
    (SessionOptions, "use_cache", [0, "yes"]),
    (SessionOptions, "jobs", [0, -1, 65, 2.0, NAN, None]),
    (SessionOptions, "render", [None, {"breaths_per_min": 5}]),
    (SessionOptions, "mix", [MixSettings, "tone"]),
]


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [(kind, field, value) for kind, field, values in BAD for value in values],
    ids=lambda x: repr(x) if not isinstance(x, type) else x.__name__,
)
def test_every_options_object_refuses_a_bad_value_naming_the_field(kind, field, value):
    with pytest.raises(OptionError) as raised:
        kind(**{field: value})
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: must be ")
    assert "--" not in str(raised.value)  # the library's words, not a flag's


def test_the_defaults_and_edges_are_accepted():
    SessionOptions()
    RenderOptions(breaths_per_min=2, moves_per_min=120, minutes=360, level="full")
    RenderOptions(breaths_per_min=20.0, moves_per_min=4.0, minutes=1)
    VoiceOptions(voice="en-gb", rate_wpm=80)
    MixSettings(seed=0, loudness_lufs=-30, bells=False, breath_sound="none")
    ExportOptions(audio_format="wav", bitrate_kbps=320, mode="single", year=2026)


def test_every_field_the_cli_sets_has_a_flag_and_every_flag_exists():
    fields = {field for _, field, _ in BAD} - {"render", "mix", "pattern", "year"}
    assert fields <= set(FLAGS)
    helps = CliRunner().invoke(cli, ["render", "--help"]).output
    for flag in FLAGS.values():
        for name in flag.split("/"):
            assert name in helps, name


TINY = (
    "title: Tiny\nsections:\n  - title: One\n    steps:\n      - say: One.\n"
    "      - breathe: {cycles: 2}\n"
)


NUMERIC_FLAGS = [
    (command, flag)
    for command in ("plan", "render")
    for flag in ("--breath-tempo", "--move-tempo", "--minutes", "--loudness")
    if not (command == "plan" and flag == "--loudness")  # plan makes no sound to measure
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
@pytest.mark.parametrize(("command", "flag"), NUMERIC_FLAGS)
def test_no_numeric_flag_takes_a_non_finite_value(command, value, flag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(TINY, encoding="utf-8")
    result = CliRunner().invoke(
        cli, [command, "r.yaml", flag, value, "-o", "out"][: 4 + 2 * (command == "render")]
    )
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}': must be between" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_plan_json_is_always_valid_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(TINY, encoding="utf-8")
    result = CliRunner().invoke(cli, ["plan", "r.yaml", "--json", "--minutes", "2"])
    assert result.exit_code == 0, result.output
    json.loads(result.output, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
