"""Seated and lying variants: ``--position``, a routine's ``positions:`` and each step's
``seated:``/``lying:``/``standing:`` variant."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from audioguide.cli import cli
from audioguide.errors import OptionError, RoutineError
from audioguide.pipeline import SessionOptions
from audioguide.programme import parse_programme, plan_programme
from audioguide.routine import POSITIONS, at_position, builtin_names, load_routine, parse_routine
from audioguide.steps import Say
from audioguide.timeline import RenderOptions, build_timeline, check_routine


def words_s(text: str) -> float:
    return 0.3 * len(text.split())


ROUTINE = """\
title: Variants
positions: [standing, seated]
sections:
  - title: Walk
    steps:
      - say: Stand tall.
        seated: Sit tall.
        pause: 3
      - move: 8
        seated: {say: Rest a moment., pause: 4}
      - say: Walk on the spot.
        seated: null
      - bell
  - title: Lie Down
    positions: [lying, seated]
    steps:
      - say: Lie back, or sit.
"""


def texts(timeline) -> list[str]:
    return [e.text for e in timeline.events() if e.kind == "say"]


def test_each_position_plays_its_variant():
    routine = parse_routine(ROUTINE, source="v.yaml")
    seated = at_position(routine, "seated")
    steps = seated.sections[0].steps
    assert steps[0] == Say("Sit tall.", pause_s=3.0, line=7)
    assert isinstance(steps[1], Say) and steps[1].pause_s == 4.0
    assert len(steps) == 3  # the walk is left out, the bell kept
    assert [
        e.text
        for e in build_timeline(routine, words_s, RenderOptions(position="seated")).events()
        if e.kind == "say"
    ][:2] == ["Sit tall.", "Rest a moment."]


ONE_SECTION = """\
title: One
positions: [seated, lying]
sections:
  - title: Arrive
    steps:
      - say: Sit down.
        lying: Lie down.
"""


def test_the_first_listed_position_is_the_default():
    routine = parse_routine(ONE_SECTION, source="one.yaml")
    assert texts(build_timeline(routine, words_s, RenderOptions())) == ["Sit down."]
    lying = build_timeline(routine, words_s, RenderOptions(position="lying"))
    assert texts(lying) == ["Lie down."]


def test_a_missing_variant_is_refused_naming_the_section():
    routine = parse_routine(ROUTINE, source="v.yaml")
    with pytest.raises(OptionError) as caught:
        build_timeline(routine, words_s, RenderOptions(position="standing"))
    assert caught.value.field == "position"
    assert "v.yaml:14: section 'Lie Down' has no standing variant" in str(caught.value)


def test_the_cli_refuses_a_missing_variant_naming_section_and_flag():
    result = CliRunner().invoke(cli, ["plan", "back-pain", "--position", "lying"])
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: --position lying: back-pain.yaml:24: section 'Welcome and Safety' has no lying "
        "variant"
    )
    assert "Traceback" not in result.output


def test_render_options_check_the_position():
    with pytest.raises(OptionError) as caught:
        RenderOptions(position="kneeling")
    assert caught.value.field == "position"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("positions: [standing, seated]", "positions: [standing, kneeling]"),
        ("positions: [standing, seated]", "positions: [seated, seated]"),
        ("seated: Sit tall.", "seated: {say: Sit., seated: Sit.}"),
        ("seated: Sit tall.", "seated: {pause: -1}"),
    ],
)
def test_bad_variants_and_positions_are_refused_with_file_and_line(change, message):
    with pytest.raises(RoutineError) as caught:
        parse_routine(ROUTINE.replace(change, message), source="v.yaml")
    assert str(caught.value).startswith("v.yaml:")


def builtin_positions() -> list[tuple[str, str]]:
    return [(name, p) for name in builtin_names() for p in load_routine(name).positions]


@pytest.mark.parametrize(("name", "position"), builtin_positions())
def test_every_builtin_plans_in_every_position_it_claims(name, position):
    result = CliRunner().invoke(cli, ["plan", name, "--position", position, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total_s"] > 60


def test_the_builtins_claim_what_the_article_supports():
    claims = {name: load_routine(name).positions for name in builtin_names()}
    assert claims["ocean-breath"] == ("seated", "lying")
    assert claims["spine-qi"] == ("standing", "seated")
    assert claims["waist-rotations"] == ("standing", "seated")
    assert claims["back-pain"] == ("standing", "seated")


def test_seated_back_pain_marches_instead_of_duck_walking():
    routine = load_routine("back-pain")
    seated = texts(build_timeline(routine, words_s, RenderOptions(position="seated")))
    standing = texts(build_timeline(routine, words_s, RenderOptions()))
    assert "Instead of duck walking, we march slowly while sitting." in seated
    assert not any("Stand with your feet" in text for text in seated)
    assert "Now duck walking. Walk slowly, with your knees a little bent." in standing


def test_a_section_is_named_for_the_position_it_is_played_in():
    """Seated, the track, its chapter and the "Next:" before it say what the user does."""
    routine = load_routine("back-pain")
    seated = build_timeline(routine, words_s, RenderOptions(position="seated"))
    standing = build_timeline(routine, words_s, RenderOptions())
    assert "Seated Marching" in [t.title for t in seated.tracks]
    assert "Duck Walking" not in [t.title for t in seated.tracks]
    assert "Next: Seated Marching." in texts(seated)
    assert "Duck Walking" in [t.title for t in standing.tracks]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("{spoken_title: Marching}", "must give the section's title in this position"),
        ("{title: Marching, tilte: x}", "unknown field"),
        ("Marching", "must be a mapping"),
    ],
)
def test_a_bad_section_title_for_a_position_is_refused_with_file_and_line(names, message):
    text = ROUTINE.replace("  - title: Walk\n", f"  - title: Walk\n    seated: {names}\n")
    with pytest.raises(RoutineError) as caught:
        parse_routine(text, source="v.yaml")
    assert str(caught.value).startswith("v.yaml:")
    assert message in str(caught.value)


def test_validate_plans_every_variant():
    routine = parse_routine(ONE_SECTION, source="one.yaml")
    assert check_routine(routine) == ()
    too_long = "lying: {repeat: {times: 100, steps: [{move: 10000}]}}"
    broken = parse_routine(ONE_SECTION.replace("lying: Lie down.", too_long), source="one.yaml")
    assert texts(build_timeline(broken, words_s, RenderOptions())) == ["Sit down."]
    with pytest.raises(OptionError, match="longer than 6 hours"):
        check_routine(broken)


def test_positions_are_the_three_documented():
    assert POSITIONS == ("standing", "seated", "lying")


PROGRAMME = """\
title: Seated weeks
routine: back-pain
position: seated
progression:
  - week: 1
    minutes: 25
"""


def test_a_programme_sets_the_position_of_every_session(tmp_path, fake_speech):
    path = tmp_path / "seated.yaml"
    path.write_text(PROGRAMME, encoding="utf-8")
    programme = parse_programme(PROGRAMME, source=str(path))
    assert programme.position == "seated"
    plan = plan_programme(programme, SessionOptions(), weeks=1, speech=fake_speech)
    for session in plan.sessions:
        assert session.render.position == "seated"
        assert "Instead of duck walking, we march slowly while sitting." in texts(session.timeline)


def test_a_programme_position_a_routine_lacks_is_refused_naming_both(tmp_path, fake_speech):
    text = PROGRAMME.replace("position: seated", "position: lying")
    programme = parse_programme(text, source="lying.yaml")
    with pytest.raises(RoutineError) as caught:
        plan_programme(programme, SessionOptions(), weeks=1, speech=fake_speech)
    message = str(caught.value)
    assert message.startswith("lying.yaml:")
    assert "section 'Welcome and Safety' has no lying variant" in message
