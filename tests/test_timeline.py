"""Timeline stage: routine and options in, timed events out. Pure, so tested with a fake
speech length (0.3 s a word) unless a test needs the real engine."""

from __future__ import annotations

import itertools
import re
import textwrap
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audioguide import timeline
from audioguide.breath import BreathPattern
from audioguide.errors import OptionError
from audioguide.phrases import ENGLISH
from audioguide.routine import DEFAULT_MOVES_PER_MIN, Breathe, Routine, Section, parse_routine
from audioguide.steps import STEP_SPECS
from audioguide.timeline import (
    LEAD_IN_S,
    RenderOptions,
    Timeline,
    build_timeline,
    speech_texts,
)

SECONDS_PER_WORD = 0.3


def test_every_step_kind_has_a_timeline_handler():
    assert set(timeline._HANDLERS) == {spec.model for spec in STEP_SPECS}


def words(text: str) -> float:
    return SECONDS_PER_WORD * len(text.split())


def routine_of(body: str) -> Routine:
    return parse_routine(textwrap.dedent(body), source="t.yaml", name="t")


def one_step(step: str) -> str:
    return f"title: T\nsections:\n  - title: A\n    steps:\n      {step}\n"


def plan(body: str, **options) -> Timeline:
    return build_timeline(routine_of(body), words, RenderOptions(**options))


def breathing(cycles: int, pattern: BreathPattern | None = None, **fields) -> Routine:
    step = Breathe(cycles=cycles, pattern=pattern, line=3, **fields)
    return Routine(
        name="b", title="B", sections=(Section("Breathe", (step,), line=2),), source="b.yaml"
    )


# ---------------------------------------------------------------------------------------------
# The breath clock (property tests)

tempos = st.floats(min_value=2.0, max_value=20.0, allow_nan=False)
patterns = st.tuples(
    st.floats(0.5, 8),
    st.sampled_from([0.0, 0.5, 2.0]),
    st.floats(0.5, 8),
    st.sampled_from([0.0, 1.0]),
).map(lambda p: BreathPattern(*p))


@settings(max_examples=60, deadline=None)
@given(
    tempo=tempos,
    pattern=patterns,
    cycles=st.integers(1, 40),
    level=st.sampled_from(["gentle", "full"]),
)
def test_breath_events_are_ordered_non_overlapping_and_on_the_clock(tempo, pattern, cycles, level):
    options = RenderOptions(breaths_per_min=tempo, level=level)
    timeline = build_timeline(breathing(cycles, pattern), words, options)
    breaths = [e for e in timeline.events() if e.kind == "breath"]
    cycle_s = 60.0 / tempo
    for before, after in itertools.pairwise(breaths):
        assert before.end_s <= after.start_s + 1e-9
    starts = [e.start_s for e in breaths if e.phase == "inhale"]
    assert len(starts) == cycles
    first = starts[0]
    for k, start in enumerate(starts):
        assert start == pytest.approx(first + k * cycle_s, abs=1e-9)
    # The phases of one cycle fill it exactly.
    assert sum(e.duration_s for e in breaths) == pytest.approx(cycles * cycle_s)


@settings(max_examples=40, deadline=None)
@given(tempo=tempos, cycles=st.integers(1, 30))
def test_a_breathing_part_scales_with_one_over_tempo(tempo, cycles):
    slow = build_timeline(breathing(cycles), words, RenderOptions(breaths_per_min=tempo))
    breaths = [e for e in slow.events() if e.kind == "breath"]
    span = breaths[-1].end_s - breaths[0].start_s
    assert span == pytest.approx(cycles * 60.0 / tempo)
    if tempo / 2 >= 2.0:
        half = RenderOptions(breaths_per_min=tempo / 2)
        double = build_timeline(breathing(cycles), words, half)
        double_breaths = [e for e in double.events() if e.kind == "breath"]
        assert double_breaths[-1].end_s - double_breaths[0].start_s == pytest.approx(2 * span)


def test_cues_start_with_their_phase_and_the_clock_never_moves_for_speech():
    long_cue = "one two three four five six seven eight nine ten eleven twelve"
    routine = breathing(4, cues=(("inhale", long_cue), ("exhale", "Out.")), cue_cycles=4)
    timeline = build_timeline(routine, words, RenderOptions(breaths_per_min=6))
    inhales = [e.start_s for e in timeline.events() if e.phase == "inhale"]
    assert inhales == pytest.approx([LEAD_IN_S + 10 * k for k in range(4)])
    says = [e for e in timeline.events() if e.kind == "say"]
    assert all(
        any(s.start_s == b.start_s for b in timeline.events() if b.kind == "breath") for s in says
    )
    # The 3.6 s cue fits the 4 s inhale at 6 breaths/min; at 8 the inhale is 3 s: a warning.
    assert timeline.warnings == ()
    fast = build_timeline(routine, words, RenderOptions(breaths_per_min=8))
    assert len(fast.warnings) == 1
    assert fast.warnings[0].startswith("b.yaml:3: the inhale cue 'one two")
    assert "takes 3.6 s but the inhale lasts 3.0 s" in fast.warnings[0]


# ---------------------------------------------------------------------------------------------
# Levels and holds

HOLD_ROUTINE = """\
    title: T
    sections:
      - title: A
        steps:
          - breathe: {cycles: 2, pattern: 4-2-6-0, tempo: 6}
          - breathe: {cycles: 2, pattern: 4-2-6-0, tempo: 6}
      - title: B
        steps:
          - breathe: {cycles: 2, pattern: 4-2-6-0, tempo: 6}
    """


def test_gentle_leaves_holds_out_and_keeps_the_cycle():
    timeline = plan(HOLD_ROUTINE)
    assert {e.phase for e in timeline.events() if e.kind == "breath"} == {"inhale", "exhale"}
    inhales = [e for e in timeline.events() if e.phase == "inhale"]
    assert inhales[1].start_s - inhales[0].start_s == pytest.approx(10.0)
    assert inhales[0].duration_s == pytest.approx(4.0)  # 4:6 of the 10 s cycle
    assert ENGLISH.hold_caution not in [e.text for e in timeline.events()]


def test_full_keeps_holds_and_cautions_once_per_section():
    timeline = plan(HOLD_ROUTINE, level="full")
    assert "hold" in {e.phase for e in timeline.events()}
    for track in timeline.tracks:
        cautions = [e for e in track.events if e.text == ENGLISH.hold_caution]
        assert len(cautions) == 1
        first_breath = next(e for e in track.events if e.kind == "breath")
        assert cautions[0].end_s <= first_breath.start_s


def test_a_hold_pattern_from_the_command_line_at_gentle_is_reported():
    timeline = plan(HOLD_ROUTINE, pattern=BreathPattern(4, 4, 4, 4), breaths_per_min=5)
    assert any("holds are left out at --level gentle" in w for w in timeline.warnings)


def test_gentle_without_a_tempo_drops_the_holds_from_an_absolute_pattern():
    body = one_step("- breathe: {cycles: 2, pattern: 4-7-8}")
    inhales = [e for e in plan(body).events() if e.phase == "inhale"]
    assert inhales[1].start_s - inhales[0].start_s == pytest.approx(12.0)  # 4 + 8


@pytest.mark.parametrize("level", ["gentle", "full"])
def test_a_sigh_keeps_its_double_inhale_at_every_level_with_no_hold_caution(level):
    body = one_step(
        "- breathe:\n"
        "          cycles: 3\n"
        "          pattern: sigh\n"
        "          tempo: 6\n"
        "          cues: {inhale: Sip in., top-up: And a little more., exhale: Sigh out.}"
    )
    timeline = plan(body, level=level)
    breaths = [e for e in timeline.events() if e.kind == "breath"]
    assert [e.phase for e in breaths[:3]] == ["inhale", "top-up", "exhale"]
    assert [e.duration_s for e in breaths[:3]] == pytest.approx([3.0, 1.0, 6.0])
    said = {e.text: e.start_s for e in timeline.events() if e.kind == "say"}
    top_ups = [e.start_s for e in breaths if e.phase == "top-up"]
    assert min(abs(said["And a little more."] - t) for t in top_ups) < 1e-6  # with its sip
    assert ENGLISH.hold_caution not in said
    assert not any("holds are left out" in w for w in timeline.warnings)


# ---------------------------------------------------------------------------------------------
# Movement pace

MOVE_ROUTINE = """\
    title: T
    move: {tempo: 30}
    sections:
      - title: Walk
        steps:
          - move: {count: 10}
          - move: {count: 5, sound: count, count_to: 4}
          - move: {count: 3, sound: none, tempo: 60}
    """


def test_movements_keep_their_own_clock_and_sound():
    timeline = plan(MOVE_ROUTINE)
    moves = [e for e in timeline.events() if e.kind == "move"]
    assert len(moves) == 18
    ticks, counted, silent = moves[:10], moves[10:15], moves[15:]
    assert [e.start_s for e in ticks] == pytest.approx([LEAD_IN_S + 2.0 * k for k in range(10)])
    assert all(e.tick and e.duration_s == 2.0 for e in ticks)
    assert [e.beat for e in counted] == [1, 2, 3, 4, 1]
    assert not any(e.tick for e in counted + silent)
    says = [e for e in timeline.events() if e.kind == "say"]
    assert [s.text for s in says] == ["One.", "Two.", "Three.", "Four.", "One."]
    assert [s.start_s for s in says] == [e.start_s for e in counted]
    assert silent[1].start_s - silent[0].start_s == pytest.approx(1.0)  # the step's own tempo


def test_move_tempo_option_wins_over_step_and_routine():
    timeline = plan(MOVE_ROUTINE, moves_per_min=60)
    moves = [e for e in timeline.events() if e.kind == "move"]
    assert {round(e.duration_s, 9) for e in moves} == {1.0}


def test_default_move_tempo():
    body = one_step("- move: 4")
    moves = [e for e in plan(body).events() if e.kind == "move"]
    assert moves[1].start_s - moves[0].start_s == pytest.approx(60 / DEFAULT_MOVES_PER_MIN)


def test_a_spoken_count_longer_than_a_movement_is_warned():
    body = one_step("- move: {count: 4, tempo: 120, sound: count}")
    timeline = build_timeline(routine_of(body), lambda text: 0.7, RenderOptions())
    assert len(timeline.warnings) == 1 and "spoken count 'One.' takes 0.7 s" in timeline.warnings[0]


# ---------------------------------------------------------------------------------------------
# Announcements

ANNOUNCED = """\
    title: T
    announce: {next: true, time_left: true}
    sections:
      - title: Arrive
        steps: [{say: Hello there.}]
      - title: Ocean Breath
        spoken_title: the ocean breath
        steps:
          - breathe: {minutes: 5, cues: {inhale: In., exhale: Out.}, cue_cycles: 1}
      - title: Walk
        steps:
          - move: {count: 200, tempo: 40}
          - move: {count: 200, tempo: 40, time_left: false}
    """


def test_next_announcements_close_each_section_but_the_last():
    timeline = plan(ANNOUNCED)
    last_says = [[e.text for e in t.events if e.kind == "say"][-1] for t in timeline.tracks]
    assert last_says[:2] == ["Next: the ocean breath.", "Next: Walk."]
    assert not last_says[2].startswith("Next")


def test_time_left_cues_fall_on_breath_phases_at_the_marks():
    timeline = plan(ANNOUNCED)
    breath_track = timeline.tracks[1]
    breaths = [e for e in breath_track.events if e.kind == "breath"]
    end_s = breaths[-1].end_s
    cues = {e.text: e for e in breath_track.events if e.text and "more minute" in e.text}
    # A 5-minute part: two minutes and one minute before its end, not five (that is its start).
    assert set(cues) == {ENGLISH.time_left_text(2), ENGLISH.time_left_text(1)}
    for minutes in (2, 1):
        cue = cues[ENGLISH.time_left_text(minutes)]
        phase = next(b for b in breaths if b.start_s == cue.start_s)
        assert phase.phase in ("inhale", "exhale")
        assert end_s - minutes * 60 <= cue.start_s < end_s - minutes * 60 + 10.0
    walk = timeline.tracks[2]
    walk_cues = [e.text for e in walk.events if e.text and "more minute" in e.text]
    assert walk_cues == [
        ENGLISH.time_left_text(2),
        ENGLISH.time_left_text(1),
    ]  # 300 s of steps; second part off


def test_announcements_are_off_by_default():
    timeline = plan(ANNOUNCED.replace("    announce: {next: true, time_left: true}\n", ""))
    texts = [e.text for e in timeline.events() if e.text]
    assert not any(t.startswith("Next") or "more minute" in t for t in texts)


def test_speech_texts_lists_every_announcement_the_timeline_speaks():
    for level in ("gentle", "full"):
        options = RenderOptions(level=level)
        routine = routine_of(ANNOUNCED)
        texts = set(speech_texts(routine, options))
        spoken = {e.text for e in build_timeline(routine, words, options).events() if e.text}
        assert spoken <= texts


def test_time_left_words():
    assert ENGLISH.time_left_text(1) == "One more minute."
    assert ENGLISH.time_left_text(2) == "Two more minutes."
    assert ENGLISH.time_left_text(10) == "Ten more minutes."


# ---------------------------------------------------------------------------------------------
# Fitting to --minutes

FITTED = """\
    title: T
    sections:
      - title: Safety
        safety: true
        steps:
          - say: Stop if anything hurts.
          - breathe: 9
      - title: Practice
        steps:
          - repeat: 3
            steps:
              - say: Circle the hips.
                pause: 10
          - breathe: {minutes: 3}
          - move: 40
    """


@pytest.mark.parametrize("minutes", [4, 6, 9.5, 15, 30])
def test_fitting_lands_near_the_asked_length_without_touching_tempo_or_safety(minutes):
    base = plan(FITTED)
    fitted = plan(FITTED, minutes=minutes)
    assert fitted.total_s == pytest.approx(minutes * 60, rel=0.05)
    assert fitted.target_s == minutes * 60
    assert fitted.tracks[0].events == base.tracks[0].events  # the safety part, unchanged
    breaths = [e for e in fitted.events() if e.kind == "breath"]
    inhales = [e for e in breaths if e.phase == "inhale"]
    assert {
        round(b.start_s - a.start_s, 9)
        for a, b in itertools.pairwise(inhales)
        if b.start_s - a.start_s < 11
    } == {10.0}
    moves = [e for e in fitted.events() if e.kind == "move"]
    assert {round(e.duration_s, 9) for e in moves} == {1.5}


def test_fitting_below_the_minimum_is_refused_with_the_minimum():
    with pytest.raises(OptionError) as info:
        plan(FITTED, minutes=1)
    message = str(info.value)
    assert info.value.field == "minutes"
    assert message.startswith("minutes: 1 is too short for t.yaml: with the safety part kept")
    least = int(re.search(r"ask for (\d+) minutes or more", message).group(1))
    assert least > 1
    plan(FITTED, minutes=least)  # the length it names is accepted
    with pytest.raises(OptionError):
        plan(FITTED, minutes=least - 1)


def test_a_routine_with_nothing_to_stretch_is_refused():
    body = one_step("- say: Hello.")
    with pytest.raises(OptionError, match="no breathing, repeats or movements to lengthen"):
        plan(body, minutes=10)


# ---------------------------------------------------------------------------------------------
# The JSON contract


def test_to_dict_keeps_the_documented_fields():
    timeline = plan(ANNOUNCED, level="full", minutes=12)
    data = timeline.to_dict([f"{t.index}.mp3" for t in timeline.tracks])
    assert {"schema", "name", "title", "artist", "breath", "total_s", "warnings", "tracks"} <= set(
        data
    )
    assert data["level"] == "full" and data["target_s"] == 720
    track = data["tracks"][1]
    assert {"index", "title", "file", "start_s", "duration_s", "events", "safety"} <= set(track)
    kinds = {e["kind"] for t in data["tracks"] for e in t["events"]}
    assert kinds == {"say", "breath", "move"}
    move = next(e for t in data["tracks"] for e in t["events"] if e["kind"] == "move")
    assert set(move) == {"kind", "start_s", "duration_s", "beat", "tick"}
    say = next(e for t in data["tracks"] for e in t["events"] if e["kind"] == "say")
    assert set(say) == {"kind", "start_s", "duration_s", "text"}


@settings(max_examples=40, deadline=None)
@given(
    moves_per_min=st.floats(min_value=4.0, max_value=120.0, allow_nan=False),
    count=st.integers(1, 60),
    sound=st.sampled_from(["tick", "count", "none"]),
)
def test_movements_are_ordered_on_their_clock_and_scale_with_one_over_tempo(
    moves_per_min, count, sound
):
    body = one_step(f"- move: {{count: {count}, sound: {sound}}}")
    timeline = plan(body, moves_per_min=moves_per_min)
    moves = [e for e in timeline.events() if e.kind == "move"]
    beat_s = 60.0 / moves_per_min
    assert len(moves) == count
    for k, event in enumerate(moves):
        assert event.start_s == pytest.approx(LEAD_IN_S + k * beat_s, abs=1e-9)
        assert event.duration_s == pytest.approx(beat_s)
    for before, after in itertools.pairwise(moves):
        assert before.end_s <= after.start_s + 1e-9
    starts = [e.start_s for e in timeline.events()]
    assert starts == sorted(starts)


def test_more_than_four_cycles_of_4_7_8_is_warned_at_full():
    body = one_step("- breathe: {cycles: 6, pattern: 4-7-8}")
    warnings = plan(body, level="full").warnings
    assert len(warnings) == 1 and "6 cycles of 4-7-8 breathing" in warnings[0]
    assert plan(one_step("- breathe: {cycles: 4, pattern: 4-7-8}"), level="full").warnings == ()
    # Scaled to a tempo it is still 4-7-8; at gentle, without its holds, it is not.
    assert plan(body, level="full", breaths_per_min=3).warnings
    assert plan(body).warnings == ()


def test_the_phrases_the_timeline_adds_all_come_from_the_language_table():
    """Every word the timeline adds (counts, next, time left, the hold caution) is in
    phrases.py: a timeline built with another table speaks only that table's words."""
    body = """\
        title: T
        announce: {next: true, time_left: true}
        sections:
          - title: A
            steps:
              - breathe: {minutes: 6, pattern: 4-4-4-4}
              - move: {count: 14, sound: count, count_to: 12}
          - title: B
            spoken_title: the end
            steps: [pause: 1]
        """
    routine = routine_of(body)
    test_language = replace(
        ENGLISH,
        numbers=tuple(f"n{i}" for i in range(13)),
        next_part="Then {name}!",
        minutes_left=("{number} min left", "{number} mins left"),
        hold_caution="Careful.",
    )
    options = RenderOptions(level="full")
    english = build_timeline(routine, words, options)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(timeline.PHRASES, ENGLISH.language, test_language)
        other = build_timeline(routine, words, options)
        other_texts = speech_texts(routine, options)
    said = [e.text for e in other.events() if e.text]
    assert "Then the end!" in said and "Careful." in said and "N12." in said
    assert "N1 min left" in said and "N2 mins left" in said
    assert set(said) <= set(other_texts)
    assert not set(said) & {e.text for e in english.events() if e.text}
