"""Programmes: the file and its errors, the built-in progression rule, planning, and rendering
only what changed (the library with the fake engine; the command with the real one)."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import FakeEngine
from mutagen.id3 import ID3

from audioguide.cli import cli
from audioguide.errors import ExportError
from audioguide.export.feed import feed_xml, find_sessions
from audioguide.programme import (
    INDEX_NAME,
    PROGRAMME_FIELDS,
    WEEK_FIELDS,
    load_programme,
    plan_programme,
    programme_folder,
    render_programme,
    spread_days,
)
from audioguide.pronounce import ESPEAK, Pronouncing
from audioguide.speech import Speech, SpeechCache

START = datetime.date(2026, 12, 7)  # a Monday

TINY_ROUTINE = """\
title: Tiny
sections:
  - title: Arrive
    steps:
      - say: Welcome.
        pause: 1
  - title: Breathe
    steps:
      - breathe: {cycles: 2, cues: {inhale: In., exhale: Out.}}
"""

TINY_PROGRAMME = """\
title: Tiny Programme
routine: tiny.yaml
days_per_week: 2
progression:
  - week: 1
    breath_tempo: 6
  - week: 2
    breath_tempo: 5.5
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="audioguide")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_ROUTINE, encoding="utf-8")
    path = tmp_path / "tiny-programme.yaml"
    path.write_text(TINY_PROGRAMME, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The built-in programme follows the documented rule


@pytest.fixture(scope="module")
def builtin_plan():
    return plan_programme("back-pain", start=START, speech=Speech(FakeEngine(), cache=None))


def weekly(plan, attribute):
    return [getattr(plan.programme.settings_for(week), attribute) for week in range(1, 13)]


def test_default_programme_is_twelve_weeks_of_five_days(builtin_plan):
    assert builtin_plan.weeks == 12
    assert len(builtin_plan.sessions) == 60
    assert builtin_plan.days_per_week == 5
    # Rest on days 4 and 7 of each week: Thursday and Sunday from a Monday start.
    weekdays = {s.date.strftime("%a") for s in builtin_plan.sessions}
    assert weekdays == {"Mon", "Tue", "Wed", "Fri", "Sat"}
    first = builtin_plan.sessions[0]
    assert (first.title, first.date, first.folder) == ("Week 1, day 1", START, "week-01-day-1")
    week3 = [s for s in builtin_plan.sessions if s.week == 3]
    assert [s.title for s in week3][1] == "Week 3, day 2"
    assert week3[1].date == datetime.date(2026, 12, 22)


def test_default_lengths_start_near_ten_and_grow_a_few_minutes_a_week_to_twenty(builtin_plan):
    minutes = weekly(builtin_plan, "minutes")
    assert minutes[0] == 10
    steps = [b - a for a, b in itertools.pairwise(minutes)]
    assert all(0 <= step <= 3 for step in steps), steps
    assert max(minutes) == 20 and minutes[-1] == 20
    # Every session is as long as its week says, within a minute (the fit is by whole breaths).
    for session in builtin_plan.sessions:
        assert abs(session.timeline.total_s - 60 * session.render.minutes) <= 60


def test_default_level_is_full_only_after_several_gentle_weeks(builtin_plan):
    levels = weekly(builtin_plan, "level")
    first_full = levels.index("full")
    assert levels[:first_full] == ["gentle"] * first_full
    assert first_full >= 4, "the full level comes only after several gentle weeks"
    assert set(levels[first_full:]) == {"full"}, "once full, it stays full"
    minutes = weekly(builtin_plan, "minutes")
    # One change at a time: the length has settled before the level goes up.
    assert minutes[first_full] == minutes[first_full - 1] == 20
    assert {s.timeline.level for s in builtin_plan.sessions if s.week > first_full} == {"full"}


def test_default_breath_slows_from_six_towards_five_in_small_steps(builtin_plan):
    tempos = weekly(builtin_plan, "breaths_per_min")
    assert tempos[0] == 6
    assert tempos[-1] == 5
    steps = [a - b for a, b in itertools.pairwise(tempos)]
    assert all(0 <= step <= 0.2 + 1e-9 for step in steps), steps
    # The timeline plays what the week says: a 5.5 breaths/min week has 60/5.5 s cycles.
    week6 = next(s for s in builtin_plan.sessions if s.week == 6)
    inhales = [e for e in week6.timeline.events() if e.kind == "breath" and e.phase == "inhale"]
    assert inhales[1].start_s - inhales[0].start_s == pytest.approx(60 / 5.5, abs=1e-6)


def test_weeks_past_the_last_entry_hold_its_settings():
    programme = load_programme("back-pain")
    assert programme.settings_for(40) == programme.settings_for(12)


@pytest.mark.parametrize(
    ("days", "expected"),
    [(1, (1,)), (2, (1, 4)), (3, (1, 3, 5)), (5, (1, 2, 3, 5, 6)), (7, tuple(range(1, 8)))],
)
def test_rest_days_spread_between_practice_days(days, expected):
    assert spread_days(days) == expected


def test_the_builtin_programme_validates_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    text = (resources.files("audioguide") / "programmes" / "back-pain.yaml").read_text("utf-8")
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load(text))


def load_schema() -> dict:
    text = (resources.files("audioguide") / "schema" / "programme.schema.json").read_text("utf-8")
    return json.loads(text)


def test_the_schema_names_exactly_the_fields_the_parser_accepts():
    schema = load_schema()
    assert set(schema["properties"]) == set(PROGRAMME_FIELDS)
    assert set(schema["definitions"]["week"]["properties"]) == set(WEEK_FIELDS)


@pytest.mark.parametrize(
    "change",
    [
        {"progression": [{"week": 1, "minuts": 10}]},
        {"progression": [{"week": 1, "level": "hard"}]},
        {"progression": [{"week": 1, "breath_tempo": 30}]},
        {"rest_days": [8]},
        {"colour": "blue"},
    ],
)
def test_the_schema_rejects_what_the_parser_rejects(change, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    data = {"title": "T", "routine": "back-pain", "progression": [{"week": 1}], **change}
    assert not jsonschema.Draft7Validator(load_schema()).is_valid(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = invoke("plan", str(path), "--program")
    assert result.exit_code == 1 and result.output.startswith(f"Error: {path}:")


# ---------------------------------------------------------------------------------------------
# Programme file errors: file:line: field: message


HEAD = "title: T\nroutine: back-pain-quick\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEAD + "progression:\n  - week: 1\n    minuts: 10\n",
            "p.yaml:5: progression[0].minuts: unknown field; did you mean 'minutes'? a week's "
            "settings may have: week, routine, minutes, level, breath_tempo",
        ),
        (
            HEAD + "progression:\n  - week: 1\n    minutes: 0\n",
            "p.yaml:5: progression[0].minutes: must be a number of minutes >= 1 and <= 360 (got 0)",
        ),
        (
            HEAD + "progression:\n  - week: 2\n",
            "p.yaml:4: progression[0].week: the first entry must be week 1 (got 2)",
        ),
        (
            HEAD + "progression:\n  - week: 1\n  - week: 3\n  - week: 3\n",
            "p.yaml:6: progression[2].week: must come after week 3, the entry before it (got 3); "
            "list the weeks in order",
        ),
        (
            HEAD + "progression:\n  - week: 1\n    level: hard\n",
            "p.yaml:5: progression[0].level: must be one of gentle, full (got 'hard')",
        ),
        (
            HEAD + "progression:\n  - week: 1\n    breath_tempo: 0\n",
            "p.yaml:5: progression[0].breath_tempo: must be a number of breaths per minute >= 2 "
            "and <= 20 (got 0)",
        ),
        (
            "title: T\nroutine: back-pian\nprogression:\n  - week: 1\n",
            "p.yaml:2: routine: unknown routine 'back-pian'. Did you mean 'back-pain'? Built-in "
            "routines: back-pain, back-pain-quick, duck-walking, joint-mobilization, "
            "meridian-massage, ocean-breath, spine-qi, waist-rotations; or give the path of a "
            ".yaml file",
        ),
        (
            HEAD + "days_per_week: 3\nrest_days: [7]\nprogression:\n  - week: 1\n",
            "p.yaml:4: rest_days: leaves 6 practice days a week but days_per_week is 3; make "
            "them agree, or give only one of them",
        ),
        (
            HEAD + "rest_days: [1, 2, 3, 4, 5, 6, 7]\nprogression:\n  - week: 1\n",
            "p.yaml:3: rest_days: every day is a rest day; leave at least one out",
        ),
        (
            "title: T\nroutine: back-pain\n",
            "p.yaml:1: progression: missing; list the weeks' settings, starting at week: 1",
        ),
        (
            HEAD + "progression:\n  - week: 1\n    minutes: 3\n",
            "p.yaml:4: progression[0].minutes: 3 is too short for back-pain-quick.yaml: with "
            "the safety part kept and each practice done once it lasts 4:07; ask for 5 "
            "minutes or more (week 1, day 1)",
        ),
        (
            "title: T\nroutine: [\n",
            "p.yaml:3: YAML syntax: expected the node content, but "
            "found '<stream end>'; check indentation, colons and quotes",
        ),
    ],
)
def test_programme_file_errors_name_file_line_and_field(text, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(text, encoding="utf-8")
    result = invoke("plan", "p.yaml", "--program")
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"
    assert "Traceback" not in result.output


def test_a_mistake_in_a_routine_it_names_is_reported_in_that_routine(tiny):
    (tiny.parent / "tiny.yaml").write_text("title: Tiny\nsections: nope\n", encoding="utf-8")
    result = invoke("plan", str(tiny), "--program")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {tiny.parent / 'tiny.yaml'}:2: sections:")


def test_unknown_programme_lists_the_builtins():
    result = invoke("program", "back-pian")
    assert result.exit_code == 1
    assert result.output == (
        "Error: unknown programme 'back-pian'. Built-in programmes: back-pain; or give the path "
        "of a .yaml file\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "back-pain", "--weeks", "3"], "Error: --weeks plans a programme; add --program"),
        (
            ["plan", "back-pain", "--program", "--breath-tempo", "5"],
            "Error: --breath-tempo: a programme sets each week's tempo; change it in a copy of "
            "the programme file (see docs/programmes.md)",
        ),
        (
            ["program", "back-pain", "--weeks", "0"],
            "Error: Invalid value for '--weeks': 0 is not in the range 1<=x<=104.",
        ),
        (
            ["program", "back-pain", "--start", "7/12/2026"],
            "Error: Invalid value for '--start': '7/12/2026' does not match the format '%Y-%m-%d'.",
        ),
    ],
)
def test_programme_flags_are_checked(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == message


# ---------------------------------------------------------------------------------------------
# plan --program


def test_plan_program_json_gives_every_sessions_date_title_length_and_settings():
    result = invoke(
        "plan",
        "back-pain",
        "--program",
        "--json",
        "--weeks",
        "3",
        "--days-per-week",
        "3",
        "--start",
        "2026-12-07",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["schema"], data["programme"], data["weeks"], data["days_per_week"]) == (
        1,
        "back-pain",
        3,
        3,
    )
    sessions = data["sessions"]
    assert len(sessions) == 9
    assert [s["date"] for s in sessions[:4]] == [
        "2026-12-07",
        "2026-12-09",
        "2026-12-11",
        "2026-12-14",
    ]
    third = sessions[6]
    assert third["title"] == "Week 3, day 1"
    assert (third["routine"], third["minutes"], third["level"], third["breaths_per_min"]) == (
        "back-pain",
        14.0,
        "gentle",
        5.8,
    )
    assert abs(third["total_s"] - 14 * 60) < 60
    assert data["total_s"] == pytest.approx(sum(s["total_s"] for s in sessions), abs=0.01)


def test_plan_program_text_lists_each_week():
    result = invoke("plan", "back-pain", "--program", "--weeks", "2", "--start", "2026-12-07")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Twelve Weeks of Qigong for Back Pain  (2 weeks, 10 sessions from ")
    assert lines[2] == "Week 1" and lines[9] == "Week 2"
    assert re.fullmatch(
        r"  Mon 2026-12-14  Week 2, day 1 +1[12]:[0-5]\d  back-pain-quick, gentle, 5.9 breaths/min",
        lines[10],
    )


# ---------------------------------------------------------------------------------------------
# Rendering: only what changed


def fake_speech(cache_dir: Path):
    engine = FakeEngine()
    return engine, Speech(engine, SpeechCache(cache_dir))


def stamps(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and p.name != INDEX_NAME and p.suffix != ".m3u8"
    }


def test_a_rerun_renders_only_the_sessions_whose_plan_changed(tiny, tmp_path):
    out = tmp_path / "out"
    engine, speech = fake_speech(tmp_path / "cache")
    first = render_programme(str(tiny), out, start=START, speech=speech)
    assert [s.folder for s in first.rendered] == [
        "week-01-day-1",
        "week-01-day-2",
        "week-02-day-1",
        "week-02-day-2",
    ]
    folder = programme_folder(first.plan.programme, out)
    before = stamps(folder)

    # Nothing changed; the files' dates are no part of it.
    for path in folder.rglob("*.mp3"):
        os.utime(path, (0, 0))
    before = stamps(folder)
    engine, speech = fake_speech(tmp_path / "cache")
    again = render_programme(str(tiny), out, start=START, speech=speech)
    assert again.rendered == ()
    assert len(again.unchanged) == 4
    assert stamps(folder) == before

    # Week 2 slower: only week 2 is rendered, every cue from the speech cache.
    tiny.write_text(TINY_PROGRAMME.replace("5.5", "5"), encoding="utf-8")
    engine, speech = fake_speech(tmp_path / "cache")
    changed = render_programme(str(tiny), out, start=START, speech=speech)
    assert [s.folder for s in changed.rendered] == ["week-02-day-1", "week-02-day-2"]
    assert engine.calls == []
    after = stamps(folder)
    assert {k for k in after if after[k] != before.get(k)} == {
        k for k in after if k.startswith("week-02-")
    }
    index = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    assert [s["breaths_per_min"] for s in index["sessions"]] == [6.0, 6.0, 5.0, 5.0]


def test_a_programme_session_speaks_its_routine_pronounce_words(tiny, tmp_path):
    routine = tmp_path / "tiny.yaml"
    routine.write_text("pronounce:\n  Welcome: well come\n" + TINY_ROUTINE, encoding="utf-8")
    out = tmp_path / "out"
    engine = FakeEngine()
    speech = Speech(Pronouncing(engine, ESPEAK), SpeechCache(tmp_path / "cache"))
    first = render_programme(str(tiny), out, start=START, speech=speech)
    assert len(first.rendered) == 4
    # Synthesized once for all four sessions (the plan's and the renders' speech is shared).
    assert engine.calls == ["well come.", "In.", "Out."]
    said = {e.text for s in first.plan.sessions for e in s.timeline.events() if e.kind == "say"}
    assert "Welcome." in said

    # A changed respelling is a changed session: every one is rendered with it.
    routine.write_text("pronounce:\n  Welcome: wel cum\n" + TINY_ROUTINE, encoding="utf-8")
    speech = Speech(Pronouncing(engine, ESPEAK), SpeechCache(tmp_path / "cache"))
    again = render_programme(str(tiny), out, start=START, speech=speech)
    assert len(again.rendered) == 4
    assert engine.calls[3:] == ["wel cum."]  # the cache keys on what the engine hears


def test_fewer_weeks_removes_the_dropped_sessions_and_their_playlists(tiny, tmp_path):
    out = tmp_path / "out"
    _, speech = fake_speech(tmp_path / "cache")
    render_programme(str(tiny), out, start=START, speech=speech)
    result = render_programme(str(tiny), out, start=START, speech=speech, weeks=1)
    assert result.removed == ("week-02-day-1", "week-02-day-2")
    assert sorted(p.name for p in result.folder.iterdir()) == [
        "Tiny Programme.m3u8",
        "Week 01.m3u8",
        INDEX_NAME,
        "week-01-day-1",
        "week-01-day-2",
    ]


def test_a_session_folder_changed_by_the_user_is_refused_not_replaced(tiny, tmp_path):
    out = tmp_path / "out"
    _, speech = fake_speech(tmp_path / "cache")
    first = render_programme(str(tiny), out, start=START, speech=speech)
    mine = first.folder / "week-02-day-1" / "my notes.txt"
    mine.write_text("mine", encoding="utf-8")
    tiny.write_text(TINY_PROGRAMME.replace("5.5", "5"), encoding="utf-8")
    result = invoke("program", str(tiny), "-o", str(out), "--start", "2026-12-07", "-q")
    assert result.exit_code == 1
    assert "week-02-day-1" in result.output and "nothing was changed" in result.output
    assert mine.read_text(encoding="utf-8") == "mine"


def test_a_folder_that_is_not_a_programme_of_ours_is_refused(tiny, tmp_path):
    folder = tmp_path / "out" / "tiny-programme-programme"
    folder.mkdir(parents=True)
    (folder / "holiday.mp3").write_bytes(b"mine")
    result = invoke("program", str(tiny), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {folder}: holds files but no programme index ({INDEX_NAME}) audioguide wrote; "
        "nothing was changed. Choose another folder with -o DIR, or add --force\n"
    )
    assert [p.name for p in folder.iterdir()] == ["holiday.mp3"]


def test_program_renders_dated_full_sessions_with_playlists_and_an_index(tiny, tmp_path):
    """The command as a user runs it, with the real speech engine and encoder."""
    out = tmp_path / "out"
    args = ["program", str(tiny), "-o", str(out), "--start", "2026-12-07"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    folder = out / "tiny-programme-programme"
    assert result.output.splitlines()[-4:] == [
        "Tiny Programme: 4 sessions over 2 weeks from Mon 2026-12-07; 4 rendered, 0 unchanged",
        f"Written to {folder}/",
        f"Playlist: {folder / 'Tiny Programme.m3u8'}",
        f"On a phone, one episode a day: audioguide serve {folder}",
    ]
    session = folder / "week-02-day-2"
    names = sorted(p.name for p in session.iterdir())
    assert "Week 2, day 2 (full).mp3" in names and "Week 2, day 2 (full).lrc" in names
    assert "01 - Arrive.mp3" in names and "02 - Breathe.lrc" in names
    tags = ID3(session / "Week 2, day 2 (full).mp3")
    assert str(tags["TALB"]) == "Week 2, day 2 (full)"
    assert str(ID3(session / "01 - Arrive.mp3")["TALB"]) == "Week 2, day 2"
    assert str(tags["TDRC"]) == "2026"
    assert len(tags.getall("CHAP")) == 2
    week2 = (folder / "Week 02.m3u8").read_text(encoding="utf-8").splitlines()
    assert week2[0] == "#EXTM3U"
    assert week2[1].startswith("#EXTINF:") and week2[1].endswith(
        ",audioguide - Week 2, day 1 (Mon 14 Dec 2026)"
    )
    assert week2[2] == "week-02-day-1/Week 2, day 1 (full).mp3"
    assert week2[4] == "week-02-day-2/Week 2, day 2 (full).mp3"
    everything = (folder / "Tiny Programme.m3u8").read_text(encoding="utf-8").splitlines()
    assert len(everything) == 1 + 2 * 4
    index = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    assert [(s["date"], s["file"]) for s in index["sessions"]][3] == (
        "2026-12-17",
        "week-02-day-2/Week 2, day 2 (full).mp3",
    )
    for entry in index["sessions"]:
        assert (folder / entry["file"]).is_file()

    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "4 sessions over 2 weeks from Mon 2026-12-07; 0 rendered, 4 unchanged" in again.output


def test_after_a_failure_part_way_the_next_run_renders_only_the_rest(tiny, tmp_path):
    out = tmp_path / "out"
    _, speech = fake_speech(tmp_path / "cache")
    render_programme(str(tiny), out, start=START, speech=speech)
    # Both weeks change; the user's file in week 2, day 1 stops the run there.
    tiny.write_text(TINY_PROGRAMME.replace("6\n", "5.8\n").replace("5.5", "5"), "utf-8")
    blocked = out / "tiny-programme-programme" / "week-02-day-1" / "mine.txt"
    blocked.write_text("mine", encoding="utf-8")
    with pytest.raises(ExportError, match="week-02-day-1"):
        render_programme(str(tiny), out, start=START, speech=speech)
    blocked.unlink()
    result = render_programme(str(tiny), out, start=START, speech=speech)
    assert [s.folder for s in result.unchanged] == ["week-01-day-1", "week-01-day-2"]
    assert [s.folder for s in result.rendered] == ["week-02-day-1", "week-02-day-2"]


def test_serve_publishes_each_session_on_its_practice_day(tiny, tmp_path):
    feedparser = pytest.importorskip("feedparser")
    _, speech = fake_speech(tmp_path / "cache")
    result = render_programme(str(tiny), tmp_path / "out", start=START, speech=speech)
    feed = feedparser.parse(feed_xml(find_sessions(result.folder), "http://192.0.2.1:8080/t/"))
    episodes = [(e.title, e.published) for e in feed.entries]
    # Newest first, as every podcast feed lists them; each dated by its day, not its render.
    assert episodes == [
        ("Week 2, day 2", "Thu, 17 Dec 2026 00:00:00 +0000"),
        ("Week 2, day 1", "Mon, 14 Dec 2026 00:00:00 +0000"),
        ("Week 1, day 2", "Thu, 10 Dec 2026 00:00:00 +0000"),
        ("Week 1, day 1", "Mon, 07 Dec 2026 00:00:00 +0000"),
    ]
