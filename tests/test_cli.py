"""The command line: help and docs that cannot rot, exit codes and exact error texts."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from audioguide.cli import cli
from audioguide.routine import builtin_names

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="audioguide")


def all_commands(group: click.Group = cli, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    command = dict(all_commands())[path]
    assert command.help, f"audioguide {' '.join(path)} has no docstring"
    if not isinstance(command, click.Group):
        assert "Example:" in result.output, f"audioguide {' '.join(path)} --help has no example"


def test_cli_reference_matches_help():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts/gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.cli_reference()
    actual = (ROOT / "docs/cli.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/cli.md is out of date: run python scripts/gen_cli_docs.py"


def test_readme_lists_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in cli.commands:
        assert f"`audioguide {name}" in readme, f"README does not mention audioguide {name}"


def test_readme_quick_start_is_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install '.[natural]' && audioguide render back-pain" in readme
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    test_command = "pip install '.[test,serve,natural]' && pytest"
    assert test_command in readme and test_command in ci


def test_unknown_routine_lists_the_builtins():
    result = invoke("plan", "back-pian")
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown routine 'back-pian'. Did you mean 'back-pain'?")
    for name in builtin_names():
        assert name in result.output
    assert "Traceback" not in result.output


def test_missing_file_is_named():
    result = invoke("plan", "nowhere/my-routine.yaml")
    assert result.exit_code == 1
    assert result.output.startswith("Error: nowhere/my-routine.yaml: no such file")


@pytest.mark.parametrize("tempo", ["1.9", "20.5", "0", "-5"])
def test_tempo_out_of_range_says_the_range(tempo):
    result = invoke("plan", "back-pain", "--breath-tempo", tempo)
    assert result.exit_code == 2
    assert "Invalid value for '--breath-tempo': must be between 2 and 20 breaths per minute" in (
        result.output
    )


def test_fractional_tempo_is_accepted():
    result = invoke("plan", "back-pain", "--breath-tempo", "5.5", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    breaths = [e for t in plan["tracks"] for e in t["events"] if e["kind"] == "breath"]
    inhales = [e for e in breaths if e["phase"] == "inhale"]
    assert inhales, "back-pain has breathing parts"
    cycle_s = sum(e["duration_s"] for e in breaths) / len(inhales)
    assert cycle_s == pytest.approx(60 / 5.5, abs=1e-3)


def test_bad_pattern_says_what_is_accepted():
    result = invoke("plan", "back-pain", "--breath-pattern", "4-x")
    assert result.exit_code == 2
    assert "Invalid value for '--breath-pattern': '4-x' is not a breath pattern" in result.output


def test_yaml_mistake_names_file_line_and_field(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "title: Mine\nsections:\n  - title: One\n    steps:\n      - say: Hello.\n"
        "        pause: -3\n",
        encoding="utf-8",
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path}:6: sections[0].steps[0].pause: must be a number of seconds >= 0 "
        "and <= 600 (got -3)\n"
    )


def test_validate_accepts_builtins_and_reports_each_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: [\n", encoding="utf-8")
    result = invoke("validate", "back-pain", str(bad))
    assert result.exit_code == 1
    assert "back-pain: ok" in result.output
    assert f"Error: {bad}:2: YAML syntax" in result.output


def documented_event_kinds() -> set[str]:
    """The kinds docs/plan-json.md promises tools, from its table's ``kind`` row."""
    doc = Path(__file__).resolve().parent.parent / "docs" / "plan-json.md"
    row = next(
        line for line in doc.read_text(encoding="utf-8").splitlines() if line.startswith("| `kind`")
    )
    return set(re.findall(r"`([a-z-]+)`", row.split("|")[2]))


EVERY_KIND = """\
title: Every kind
sections:
  - title: One
    steps:
      - bell: 3
      - say: Rest now.
      - pause: {seconds: 70, bell_every: 0.5}
      - move: {count: 2}
"""


def test_the_documented_event_kinds_are_the_ones_plan_emits(tmp_path):
    (tmp_path / "every.yaml").write_text(EVERY_KIND, encoding="utf-8")
    emitted = set()
    for name in ("back-pain", str(tmp_path / "every.yaml")):
        result = invoke("plan", name, "--json", "--level", "full")
        assert result.exit_code == 0, result.output
        emitted |= {e["kind"] for t in json.loads(result.output)["tracks"] for e in t["events"]}
    assert emitted == documented_event_kinds()


def test_plan_json_has_the_documented_shape(short_routine_file):
    result = invoke("plan", str(short_routine_file), "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert {"title", "total_s", "tracks"} <= plan.keys()
    assert [t["index"] for t in plan["tracks"]] == [1, 2]
    assert plan["tracks"][0]["file"] == "01 - Arrive.mp3"
    for track in plan["tracks"]:
        assert {"index", "title", "file", "start_s", "duration_s", "events"} <= track.keys()
        for event in track["events"]:
            assert {"kind", "start_s", "duration_s"} <= event.keys()
            assert event["kind"] in documented_event_kinds()
            if event["kind"] == "say":
                assert event["text"]
            if event["kind"] == "breath":
                assert event["phase"] in {"inhale", "top-up", "hold", "exhale", "rest"}
            assert track["start_s"] <= event["start_s"] <= track["start_s"] + track["duration_s"]


def test_plan_text_shows_tracks_and_total(short_routine_file):
    result = invoke("plan", str(short_routine_file))
    assert result.exit_code == 0, result.output
    assert "01  Arrive" in result.output
    assert "02  Breathe" in result.output
    assert "Welcome. Sit comfortably." in result.output
    assert "breathe  3 cycles" in result.output
    assert "Total " in result.output


def test_plan_at_slower_tempo_is_longer(short_routine_file):
    def total_s(tempo: str) -> float:
        result = invoke("plan", str(short_routine_file), "--breath-tempo", tempo, "--json")
        return json.loads(result.output)["total_s"]

    # three cycles: 3 * (15 - 7.5) seconds longer at 4 than at 8 breaths a minute
    assert total_s("4") - total_s("8") == pytest.approx(22.5, abs=1e-3)


def test_python_dash_m_works():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "audioguide", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage: audioguide" in out.stdout or "Usage: python -m audioguide" in out.stdout


def test_commands_that_make_no_audio_start_without_scipy(tmp_path):
    # scipy.signal takes half a second to import; --help, validate, presets, plan and list
    # never filter audio, so they should not wait for it.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from audioguide.cli import cli\n"
        "try:\n"
        "    cli(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('scipy.signal', 'scipy.stats', 'scipy.ndimage', 'pyloudnorm')\n"
        "print('loaded:', [m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    for args in (["--help"], ["presets"], ["validate", "back-pain"]):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert proc.stderr.strip().endswith("loaded: []"), (args, proc.stderr)
