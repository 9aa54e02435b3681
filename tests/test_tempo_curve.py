"""A breath that slows across a session: ``--breath-tempo 6:4.5``, ``tempo: 6:4.5`` in a
routine or a programme. The curve: of N cycles, cycle k breathes at start + (end - start) *
k / (N - 1), each lasting 60 / its tempo, the pattern's ratio kept."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import soundfile
from click.testing import CliRunner
from test_e2e import ONSET_TOLERANCE_S, guide_onset_error_s

from audioguide.breath import TempoCurve, parse_tempo
from audioguide.cli import cli
from audioguide.errors import OptionError, RoutineError
from audioguide.export import session_files
from audioguide.pipeline import SessionOptions, render_session
from audioguide.programme import parse_programme
from audioguide.routine import load_routine, parse_routine
from audioguide.speech import Speech
from audioguide.synth import SAMPLE_RATE
from audioguide.timeline import RenderOptions, build_timeline

CURVE = TempoCurve(6.0, 4.5)


def words_s(text: str) -> float:
    return 0.3 * len(text.split())


def cycles_of(events) -> list:
    """The first event of each breath cycle: the one that carries its tempo."""
    return [e for e in events if e.kind == "breath" and e.breaths_per_min is not None]


def test_parse_tempo_reads_steady_and_curves():
    assert parse_tempo("6") == 6.0
    assert parse_tempo(" 6 : 4.5 ") == CURVE
    assert parse_tempo("5:5") == 5.0
    with pytest.raises(ValueError, match=r"between 2 and 20 .*got 30"):
        parse_tempo("6:30")
    with pytest.raises(ValueError, match="start:end"):
        parse_tempo("6:x")


def test_curve_steps_evenly_from_start_to_end():
    assert CURVE.at(0, 4) == 6.0
    assert CURVE.at(3, 4) == 4.5
    assert CURVE.at(1, 4) == pytest.approx(5.5)
    assert CURVE.at(9, 4) == 4.5  # past the last: the end tempo
    assert CURVE.at(0, 1) == 6.0


@pytest.mark.parametrize(
    "tempo", [TempoCurve(6, 40), TempoCurve(1, 5), TempoCurve(6, math.nan), TempoCurve(6, math.inf)]
)
def test_render_options_refuse_a_curve_end_out_of_range(tempo):
    with pytest.raises(OptionError) as caught:
        RenderOptions(breaths_per_min=tempo)
    assert caught.value.field == "breaths_per_min"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("6:40", "must be between 2 and 20 breaths per minute (got 40)"),
        ("6:x", "is not a tempo"),
        ("1", "must be between 2 and 20 breaths per minute (got 1)"),
    ],
)
def test_cli_refuses_a_bad_curve_naming_the_flag(value, message):
    result = CliRunner().invoke(cli, ["plan", "back-pain-quick", "--breath-tempo", value])
    assert result.exit_code == 2
    assert "Invalid value for '--breath-tempo'" in result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_session_curve_spans_every_breathing_part():
    routine = load_routine("back-pain")
    timeline = build_timeline(routine, words_s, RenderOptions(breaths_per_min=CURVE))
    starts = cycles_of(timeline.events())
    n = len(starts)
    assert n > 40
    for k, event in enumerate(starts):
        assert event.breaths_per_min == pytest.approx(6.0 + (4.5 - 6.0) * k / (n - 1))
    assert starts[0].breaths_per_min == 6.0
    assert starts[-1].breaths_per_min == pytest.approx(4.5)
    for track in timeline.tracks:
        breaths = [e for e in track.events if e.kind == "breath"]
        for a, b in itertools.pairwise(breaths):
            if a.end_s == pytest.approx(b.start_s, abs=1e-9):
                continue  # the same breathing part: the clock runs on
            assert b.breaths_per_min is not None  # a new part starts with a whole cycle
        for event in breaths:
            if event.breaths_per_min is not None:
                cycle_s = 60.0 / event.breaths_per_min
                # The default pattern is 4:6: the inhale is 40% of its cycle, ratio kept.
                assert event.phase == "inhale"
                assert event.duration_s == pytest.approx(0.4 * cycle_s)
            else:
                assert event.phase == "exhale"


def test_cues_stay_locked_to_their_phase_on_a_curve():
    routine = load_routine("back-pain")
    timeline = build_timeline(routine, words_s, RenderOptions(breaths_per_min=CURVE))
    for track in timeline.tracks:
        breaths = [e for e in track.events if e.kind == "breath"]
        phase_starts = {round(e.start_s, 9) for e in breaths}
        for say in (e for e in track.events if e.kind == "say"):
            inside = any(b.start_s <= say.start_s < b.end_s - 1e-6 for b in breaths)
            if inside:
                assert round(say.start_s, 9) in phase_starts, say


def test_a_steady_tempo_gives_every_cycle_its_tempo():
    timeline = build_timeline(load_routine("back-pain"), words_s, RenderOptions())
    starts = cycles_of(timeline.events())
    assert starts and {e.breaths_per_min for e in starts} == {6.0}
    inhales = [e for e in timeline.events() if e.phase == "inhale"]
    assert len(starts) == len(inhales)


def test_minutes_fitting_keeps_working_with_a_curve():
    routine = load_routine("back-pain")
    options = RenderOptions(breaths_per_min=CURVE, minutes=40)
    timeline = build_timeline(routine, words_s, options)
    assert timeline.total_s == pytest.approx(40 * 60, rel=0.01)
    starts = cycles_of(timeline.events())
    assert starts[0].breaths_per_min == 6.0
    assert starts[-1].breaths_per_min == pytest.approx(4.5)


STEP_CURVE = """\
title: Curves
breath:
  tempo: 6
sections:
  - title: Slowing
    steps:
      - breathe:
          cycles: 5
          tempo: 8:4
      - breathe:
          minutes: 2
          tempo: 6:4.5
      - breathe: 3
"""


def test_a_step_curve_spans_that_part_only_and_is_read_as_written():
    routine = parse_routine(STEP_CURVE, source="curves.yaml")
    steps = routine.sections[0].steps
    assert steps[0].breaths_per_min == TempoCurve(8, 4)
    # Not YAML 1.1's base 60, which reads 6:4.5 as 364.5.
    assert steps[1].breaths_per_min == CURVE
    timeline = build_timeline(routine, words_s, RenderOptions())
    tempos = [e.breaths_per_min for e in cycles_of(timeline.events())]
    assert tempos[:5] == pytest.approx([8, 7, 6, 5, 4])
    assert tempos[-3:] == [6.0, 6.0, 6.0]


def test_a_routine_curve_out_of_range_names_file_line_and_field():
    with pytest.raises(RoutineError) as caught:
        parse_routine(STEP_CURVE.replace("6:4.5", "6:45"), source="curves.yaml")
    message = str(caught.value)
    assert "curves.yaml:12: sections[0].steps[1].tempo: must be between 2 and 20" in message
    assert "got 45" in message


def test_a_step_curve_in_minutes_fills_them():
    routine = parse_routine(STEP_CURVE, source="curves.yaml")
    assert routine.sections[0].steps[1].breaths_per_min == CURVE
    timeline = build_timeline(routine, words_s, RenderOptions())
    tempos = [e for e in cycles_of(timeline.events()) if e.start_s > 0][5:-3]
    assert tempos[0].breaths_per_min == 6.0
    assert tempos[-1].breaths_per_min == pytest.approx(4.5)
    length_s = sum(60.0 / e.breaths_per_min for e in tempos)
    assert abs(length_s - 120.0) <= 60.0 / 4.5 / 2


def test_the_routine_breath_tempo_takes_a_curve():
    text = STEP_CURVE.replace("6:4.5", "5").replace("  tempo: 6\n", "  tempo: 6:4.5\n", 1)
    routine = parse_routine(text, source="curves.yaml")
    assert routine.breaths_per_min == CURVE
    timeline = build_timeline(routine, words_s, RenderOptions())
    tempos = [e.breaths_per_min for e in cycles_of(timeline.events())]
    # The steps with their own tempo keep it; the last part takes the session's curve alone.
    assert tempos[5] == 5.0
    assert tempos[-3:] == pytest.approx([6.0, 5.25, 4.5])
    assert "6 to 4.5 breaths/min" in timeline.breath


def test_plan_shows_the_tempo_of_each_part_and_json_every_cycle():
    runner = CliRunner()
    text = runner.invoke(cli, ["plan", "back-pain-quick", "--breath-tempo", "6:4.5"])
    assert text.exit_code == 0, text.output
    lines = [line for line in text.output.splitlines() if "  breathe  " in line]
    assert lines[0].endswith("6 to 5.75 breaths/min")
    assert lines[-1].endswith("to 4.5 breaths/min")
    steady = runner.invoke(cli, ["plan", "back-pain-quick"])
    assert all(
        line.endswith(", 6 breaths/min")
        for line in steady.output.splitlines()
        if "  breathe  " in line
    )
    data = json.loads(
        runner.invoke(cli, ["plan", "back-pain-quick", "--breath-tempo", "6:4.5", "--json"]).output
    )
    events = [e for t in data["tracks"] for e in t["events"]]
    starts = [e for e in events if "breaths_per_min" in e]
    assert all(e["kind"] == "breath" and e["phase"] == "inhale" for e in starts)
    assert starts[0]["breaths_per_min"] == 6.0 and starts[-1]["breaths_per_min"] == 4.5
    assert len(starts) == sum(1 for e in events if e.get("phase") == "inhale")


PROGRAMME = """\
title: Slowing
routine: back-pain-quick
progression:
  - week: 1
    minutes: 8
    breath_tempo: 6:5
"""


def test_a_programme_week_takes_a_curve(tmp_path):
    path = tmp_path / "slowing.yaml"
    path.write_text(PROGRAMME, encoding="utf-8")
    programme = parse_programme(PROGRAMME, source=str(path))
    assert programme.progression[0].breaths_per_min == TempoCurve(6, 5)


def test_a_programme_curve_out_of_range_names_the_line(tmp_path):
    text = PROGRAMME.replace("6:5", "6:50")
    with pytest.raises(RoutineError, match=r"slowing.yaml:6: .*breath_tempo.*got 50"):
        parse_programme(text, source="slowing.yaml")


def test_breath_onsets_follow_the_curve_over_60_minutes(tmp_path, fake_engine):
    """A 60-minute session at 6:4.5 through the real mixer and LAME, decoded back: every
    cycle starts where the curve puts it, and its guide tone is heard there within 10 ms."""
    options = SessionOptions(
        render=RenderOptions(breaths_per_min=CURVE, minutes=60), use_cache=False, jobs=2
    )
    result = render_session(
        "back-pain", tmp_path / "out", options, speech=Speech(fake_engine, cache=None)
    )
    timeline = result.timeline
    assert timeline.total_s == pytest.approx(3600, rel=0.01)
    starts = cycles_of(timeline.events())
    n = len(starts)
    for k, event in enumerate(starts):
        assert event.breaths_per_min == pytest.approx(6.0 - 1.5 * k / (n - 1))
    checked = 0
    measured_s: list[float] = []
    names = session_files(timeline).tracks
    for track, name in zip(timeline.tracks, names, strict=True):
        decoded, rate = soundfile.read(result.folder / name, dtype="float64")
        assert rate == SAMPLE_RATE
        for a, b in itertools.pairwise(e for e in track.events if e.kind == "breath"):
            if a.breaths_per_min is not None and b.breaths_per_min is None:
                # Within a cycle: the exhale follows the inhale, 4:6 of 60 / tempo.
                assert b.start_s - a.start_s == pytest.approx(24.0 / a.breaths_per_min)
        others = [e for e in track.events if e.kind in ("say", "chime", "bell")]
        for event in track.events:
            # Matched where the guide sounds alone: a voice or a bell over it masks the tone.
            heard_alone = not any(
                o.start_s < event.end_s + 0.1 and event.start_s - 0.1 < o.end_s for o in others
            )
            if event.kind == "breath" and heard_alone:
                data = {"start_s": event.start_s, "duration_s": event.duration_s}
                data["phase"] = event.phase
                error = guide_onset_error_s(decoded, data, track.start_s)
                assert abs(error) <= ONSET_TOLERANCE_S, (event, error)
                checked += 1
                measured_s.append(event.start_s)
    # Half the phases have no cue or bell over them, from the first minutes to the last.
    assert checked >= n
    assert measured_s[0] < 300 and measured_s[-1] > 0.75 * timeline.total_s
