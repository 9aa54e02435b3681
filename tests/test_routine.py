"""Routine stage: YAML in, validated model out; every mistake named by file, line and field."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import textwrap
from importlib import resources
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from audioguide.breath import BreathPattern
from audioguide.errors import AudioguideError, RoutineError
from audioguide.pipeline import SessionOptions, plan_session
from audioguide.routine import (
    COMMON_FIELDS,
    LEVELS,
    PRONOUNCE_ENGINES,
    ROUTINE_FIELDS,
    SECTION_FIELDS,
    STEP_FIELDS,
    STEP_KINDS,
    Breathe,
    Move,
    Pause,
    Repeat,
    Say,
    at_level,
    builtin_names,
    load_routine,
    parse_routine,
)
from audioguide.steps import STEP_SPECS, steps_table
from audioguide.timeline import RenderOptions, check_routine


def parse(body: str):
    return parse_routine(textwrap.dedent(body), source="my.yaml", name="my")


def error_of(body: str) -> str:
    with pytest.raises(RoutineError) as info:
        parse(body)
    return str(info.value)


def one_step(step_yaml: str) -> str:
    """A routine with one section holding the given step (indented YAML for one list item)."""
    return "title: T\nsections:\n  - title: S\n    steps:\n" + textwrap.indent(
        textwrap.dedent(step_yaml), "      "
    )


# ---------------------------------------------------------------------------------------------
# Steps


def test_every_step_kind_parses_in_short_and_long_form():
    routine = parse(
        one_step(
            """\
            - say: Hello.
            - say: Slowly.
              pause: 3
            - pause: 2
            - bell
            - bell: {ring: 5}
            - breathe: 4
            - breathe: {minutes: 1.5, pattern: 4-7-8, tempo: 5, cue_every: 3}
            - repeat: 2
              steps:
                - say: Again.
            - move: 12
            - move: {count: 8, tempo: 30, sound: count, count_to: 4, time_left: false}
            """
        )
    )
    steps = routine.sections[0].steps
    assert steps[0] == Say("Hello.", line=5)
    assert steps[1].pause_s == 3
    assert steps[2] == Pause(2.0, line=8)
    assert steps[3].ring_s == 8.0 and steps[4].ring_s == 5
    assert steps[5].cycles == 4
    breathe = steps[6]
    assert isinstance(breathe, Breathe)
    assert breathe.minutes == 1.5 and breathe.breaths_per_min == 5 and breathe.cue_every == 3
    assert breathe.pattern == BreathPattern(4, 7, 8, 0)
    assert isinstance(steps[7], Repeat) and steps[7].times == 2
    assert steps[8] == Move(count=12, line=16)
    move = steps[9]
    assert isinstance(move, Move)
    assert (move.count, move.moves_per_min, move.sound, move.count_to, move.time_left) == (
        8,
        30,
        "count",
        4,
        False,
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("- move: 0", "my.yaml:5: sections[0].steps[0].move: must be a whole number"),
        ("- move: {count: 4, tempo: 200}", "steps[0].tempo: must be a number of movements"),
        ("- move: {count: 4, tempo: 3}", ">= 4 and <= 120 (got 3)"),
        ("- move: {count: 4, sound: bong}", "steps[0].sound: must be one of tick, count, none"),
        ("- move: {count: 4, count_to: 13}", "steps[0].count_to: must be a whole number"),
        ("- move: {tempo: 30}", "steps[0].count: missing; a move step needs"),
        ("- move: {count: 4, tempi: 3}", "tempi: unknown field; did you mean 'tempo'?"),
        ("- breathe: {cycles: 3, time_left: yes please}", "time_left: must be true or false"),
        ("- say: Hi\n  level: expert", "steps[0].level: must be one of gentle, full"),
    ],
)
def test_step_mistakes_name_line_and_field(step, expected):
    assert expected in error_of(one_step(step))


# ---------------------------------------------------------------------------------------------
# Levels


def test_values_by_level_and_steps_for_one_level():
    routine = parse(
        one_step(
            """\
            - breathe: {gentle: 4, full: 6}
            - repeat:
                times: {gentle: 2, full: 3}
                steps:
                  - say: Again.
                    pause: {gentle: 6, full: 3}
            - say: Stop if anything hurts.
              level: gentle
            - move: {count: {gentle: 10, full: 20}}
            - pause: {gentle: 8, full: 4}
            """
        )
    )
    gentle = at_level(routine, "gentle").sections[0].steps
    full = at_level(routine, "full").sections[0].steps
    assert [type(s).__name__ for s in gentle] == ["Breathe", "Repeat", "Say", "Move", "Pause"]
    assert [type(s).__name__ for s in full] == ["Breathe", "Repeat", "Move", "Pause"]
    assert gentle[0].cycles == 4 and full[0].cycles == 6
    assert gentle[1].times == 2 and full[1].times == 3
    assert gentle[1].steps[0].pause_s == 6 and full[1].steps[0].pause_s == 3
    assert gentle[3].count == 10 and full[2].count == 20
    assert gentle[4].duration_s == 8 and full[3].duration_s == 4
    # Resolved routines carry no level marks any more.
    assert all(s.level is None and s.full == () for s in gentle + full)


def test_a_value_by_level_needs_both_levels():
    message = error_of(one_step("- breathe: {cycles: {gentle: 4}}"))
    assert "my.yaml:5: sections[0].steps[0].cycles.full: missing" in message
    assert "gentle: and full:" in message


def test_a_level_that_leaves_a_section_empty_is_named():
    body = """\
        title: T
        sections:
          - title: Only Full
            steps:
              - say: Hi.
                level: full
        """
    assert error_of(body) == (
        "my.yaml:3: section 'Only Full' has no steps at --level gentle; give it a step "
        "without a level: field"
    )


def test_a_section_for_one_level():
    routine = parse(
        """\
        title: T
        sections:
          - title: Always
            steps: [{say: Hi.}]
          - title: Extra
            level: full
            steps: [{say: More.}]
        """
    )
    assert [s.title for s in at_level(routine, "gentle").sections] == ["Always"]
    assert [s.title for s in at_level(routine, "full").sections] == ["Always", "Extra"]


# ---------------------------------------------------------------------------------------------
# Routine and section fields


def test_routine_and_section_settings():
    routine = parse(
        """\
        title: T
        move: {tempo: 30, sound: count}
        announce: {next: true, time_left: true}
        sections:
          - title: Safety First
            spoken_title: safety first
            safety: true
            steps: [{say: Listen to your body.}]
        """
    )
    assert (routine.moves_per_min, routine.move_sound) == (30, "count")
    assert routine.announce_next and routine.announce_time_left
    section = routine.sections[0]
    assert section.safety and section.spoken_name == "safety first"


def test_announcements_are_off_unless_asked_for():
    routine = parse(one_step("- say: Hi."))
    assert not routine.announce_next and not routine.announce_time_left
    assert not routine.sections[0].safety


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("title: T\nannounce: {next: 1}\nsections: []", "my.yaml:2: announce.next: must be true"),
        ("title: T\nannounce: {later: true}\nsections: []", "announce.later: unknown field"),
        ("title: T\nmove: {tempo: 500}\nsections: []", "my.yaml:2: move.tempo: must be a number"),
        (
            "title: T\nsections:\n  - title: S\n    safety: maybe\n    steps: [pause: 1]",
            "my.yaml:4: sections[0].safety: must be true or false (got 'maybe')",
        ),
    ],
)
def test_routine_mistakes_name_line_and_field(body, expected):
    assert expected in error_of(body)


# ---------------------------------------------------------------------------------------------
# Any input either loads or raises RoutineError

FIELD_NAMES = sorted(
    {name for fields in STEP_FIELDS.values() for name in fields}
    | set(STEP_FIELDS)
    | {"title", "sections", "steps", "breath", "move", "announce", "level", "gentle", "full"}
    | {"safety", "spoken_title", "next", "time_left", "inhale", "exhale", "hold", "rest"}
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["4-6", "box", "gentle", "full", "tick", "count", "1e400", ".nan"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), children, max_size=6
        ),
    ),
    max_leaves=40,
)


def _loads_or_routine_error(text: str) -> None:
    try:
        parse_routine(text, source="fuzz.yaml")
    except RoutineError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_yaml_document_loads_or_raises_routine_error(document):
    _loads_or_routine_error(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "title": scalars,
            "sections": st.lists(
                st.fixed_dictionaries(
                    {
                        "title": scalars,
                        "steps": st.lists(
                            st.dictionaries(
                                st.sampled_from(FIELD_NAMES),
                                st.one_of(
                                    scalars,
                                    st.dictionaries(st.sampled_from(FIELD_NAMES), scalars),
                                ),
                                min_size=1,
                                max_size=4,
                            ),
                            max_size=4,
                        ),
                    }
                ),
                max_size=3,
            ),
        }
    )
)
def test_routine_shaped_documents_load_or_raise_routine_error(document):
    # Shaped like a routine so the fuzzing reaches the step and level parsers.
    _loads_or_routine_error(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_loads_or_raises_routine_error(text):
    _loads_or_routine_error(text)


# ---------------------------------------------------------------------------------------------
# The JSON Schema for editors agrees with the parser


def load_schema() -> dict:
    text = (resources.files("audioguide") / "schema" / "routine.schema.json").read_text("utf-8")
    return json.loads(text)


ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "routines.md"


def gen_routine_docs():
    """scripts/gen_routine_docs.py, which writes the schema and the step table from the specs."""
    spec = importlib.util.spec_from_file_location(
        "gen_routine_docs", ROOT / "scripts" / "gen_routine_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_schema_is_the_one_the_specs_give():
    committed = (ROOT / "audioguide" / "schema" / "routine.schema.json").read_text("utf-8")
    assert committed == gen_routine_docs().schema_text(), (
        "routine.schema.json is out of date: run python scripts/gen_routine_docs.py"
    )


def test_the_docs_step_table_is_the_one_the_specs_give():
    docs = gen_routine_docs()
    committed = DOCS.read_text("utf-8")
    assert docs.TABLE_START + steps_table() + docs.TABLE_END in committed
    assert committed == docs.docs_text(committed)


def test_the_step_table_lists_every_field_with_its_limits():
    rows: dict[tuple[str, str], str] = {}
    kind = ""
    for line in steps_table().splitlines()[2:]:
        step, field, _, values = (cell.strip() for cell in line.strip("|").split("|"))
        kind = re.match(r"`([a-z]+)`", step)[1] if step.startswith("`") else kind
        rows[kind, re.match(r"`([a-z_]+)`", field)[1]] = values
    for spec in STEP_SPECS:
        for field in spec.fields:
            assert rows[spec.kind, field.name].startswith(field.value.limits())
    assert rows["pause", "bell_every"] == "0.5 to 120 minutes"
    assert rows["pause", "bells_at"] == "a list, each more than 0, up to 120 minutes"
    assert rows["breathe", "cycles"].endswith("this or `minutes`; or `{gentle: a, full: b}`")


def test_schema_names_exactly_the_fields_the_parser_accepts():
    schema = load_schema()
    definitions = schema["definitions"]
    assert set(schema["properties"]) == set(ROUTINE_FIELDS)
    assert set(definitions["section"]["properties"]) == set(SECTION_FIELDS)
    step_refs = {ref["$ref"] for ref in definitions["step"]["anyOf"] if "$ref" in ref}
    assert step_refs == {f"#/definitions/{kind}Step" for kind in STEP_FIELDS}
    for kind, fields in STEP_FIELDS.items():
        properties = set(definitions[f"{kind}Step"]["properties"])
        assert properties == {kind, *fields, *COMMON_FIELDS}, kind


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_validates_against_the_schema(name):
    jsonschema = pytest.importorskip("jsonschema")
    text = (resources.files("audioguide") / "routines" / f"{name}.yaml").read_text("utf-8")
    jsonschema.Draft7Validator(load_schema()).validate(yaml.safe_load(text))


@pytest.mark.parametrize(
    "step",
    [
        {"move": {"count": 3, "tempo": 500}},
        {"say": "Hello.", "paus": 3},
        "bel",
        {"breathe": {"cycles": 3, "minutes": 2}},
        {"repeat": {"gentle": 2}, "steps": [{"say": "x"}]},
        {"say": "Hello.", "level": "expert"},
    ],
)
def test_the_schema_rejects_what_the_parser_rejects(step):
    jsonschema = pytest.importorskip("jsonschema")
    document = {"title": "T", "sections": [{"title": "S", "steps": [step]}]}
    assert list(jsonschema.Draft7Validator(load_schema()).iter_errors(document))
    with pytest.raises(RoutineError):
        parse_routine(yaml.safe_dump(document), source="my.yaml")


@pytest.mark.parametrize(
    ("step", "valid"),
    [
        ({"breathe": 3, "seated": {"gentle": 2, "full": 4}}, True),
        ({"breathe": 3, "seated": 0}, False),  # as cycles: 0 is refused on the main step
        ({"breathe": 3, "seated": {"gentle": 2}}, False),
        ({"say": "Stand tall.", "seated": "Sit tall."}, True),
        ({"say": "Stand tall.", "seated": ""}, False),
        ({"say": "Stand tall.", "seated": {"move": 0}}, False),  # another step, checked as one
        ({"say": "Stand tall.", "lying": {"move": {"count": 4, "sound": "drum"}}}, False),
        ({"pause": 3, "lying": None}, True),
        ({"move": {"count": 8, "seated": 4}}, True),
        ({"move": {"count": 8, "seated": 20000}}, False),
    ],
)
def test_a_position_variant_is_checked_as_the_main_step_is(step, valid):
    jsonschema = pytest.importorskip("jsonschema")
    document = {
        "title": "T",
        "positions": ["standing", "seated", "lying"],
        "sections": [{"title": "S", "steps": [step, {"say": "And rest."}]}],
    }
    assert jsonschema.Draft7Validator(load_schema()).is_valid(document) is valid
    text = yaml.safe_dump(document, sort_keys=False)  # a step starts with its kind
    if valid:
        parse_routine(text, source="my.yaml")
    else:
        with pytest.raises(RoutineError):
            parse_routine(text, source="my.yaml")


def test_each_field_is_written_once_in_the_schema():
    # Each value once, under definitions, and referred to from the short and long forms and
    # the position variants: the schema stays a size a reader can follow.
    text = (ROOT / "audioguide" / "schema" / "routine.schema.json").read_text("utf-8")
    assert text.count('"The words to speak, plain text (no SSML)') == 1
    assert len(text.splitlines()) < 1500


# ---------------------------------------------------------------------------------------------
# docs/routines.md: its example loads, and it documents every field


def docs_example() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text("utf-8"), re.DOTALL)
    return next(block for block in blocks if "sections:" in block)


def test_the_documented_example_loads_at_both_levels():
    routine = parse_routine(docs_example(), source="example.yaml")
    gentle, full = at_level(routine, "gentle"), at_level(routine, "full")
    assert len(full.sections) == len(gentle.sections) + 1
    assert routine.sections[0].safety and routine.announce_next and routine.announce_time_left
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator(load_schema()).validate(yaml.safe_load(docs_example()))


def test_the_docs_name_every_field():
    text = DOCS.read_text("utf-8")
    fields = {*ROUTINE_FIELDS, *SECTION_FIELDS, *STEP_FIELDS, *COMMON_FIELDS}
    fields |= {name for names in STEP_FIELDS.values() for name in names}
    missing = sorted(name for name in fields if f"`{name}" not in text)
    assert not missing, f"docs/routines.md does not mention {missing}"


# ---------------------------------------------------------------------------------------------
# Hostile or odd content, through validate, plan and render as a user meets it

STEPS = "title: T\nsections:\n  - title: S\n    steps:\n"
SURROGATE_ERROR = (
    '"\\ud83e\\uddd8" is a UTF-16 surrogate pair, which YAML does not join into one character; '
    'write the character itself, or "\\U0001f9d8"'
)
# case: (routine.yaml as text or bytes, the last line validate, plan and render print)
CONTENT_CASES: dict[str, tuple[str | bytes, str]] = {
    "deeper-than-the-interpreter": (
        STEPS + "      - say: " + "[" * 3000 + "]" * 3000 + "\n",
        "Error: routine.yaml:5: the routine is nested more than 160 levels deep; a routine "
        "needs only a few (look for brackets that never close)",
    ),
    "surrogate-pair": (
        STEPS + '      - say: "\\ud83e\\uddd8 Breathe."\n',
        f"Error: routine.yaml:5: sections[0].steps[0].say: {SURROGATE_ERROR}",
    ),
    "lone-surrogate-in-a-title": (
        'title: "Calm \\udc00"\nsections:\n  - title: S\n    steps: [pause: 1]\n',
        'Error: routine.yaml:1: title: "\\udc00" is half of a UTF-16 surrogate pair, not a '
        'character; write the character itself, or its code as "\\U0001f600"',
    ),
    "surrogate-in-a-key": (
        STEPS + '      - say: Hi.\n        "\\ud83e": 1\n',
        'Error: routine.yaml:6: sections[0].steps[0]: "\\ud83e" is half of a UTF-16 surrogate '
        'pair, not a character; write the character itself, or its code as "\\U0001f600"',
    ),
    "integer-too-large-for-a-float": (
        STEPS + "      - pause: " + "9" * 400 + "\n",
        "Error: routine.yaml:5: sections[0].steps[0].pause: must be a number of seconds > 0 "
        "and <= 3600 (got a number of 400 digits)",
    ),
    "integer-too-large-in-minutes": (
        STEPS + "      - breathe: {minutes: " + "9" * 400 + "}\n",
        "Error: routine.yaml:5: sections[0].steps[0].minutes: must be a number of minutes > 0 "
        "and <= 120 (got a number of 400 digits)",
    ),
    "integer-too-large-as-tempo": (
        "title: T\nbreath: {tempo: " + "9" * 400 + "}\nsections:\n  - title: S\n"
        "    steps: [pause: 1]\n",
        "Error: routine.yaml:2: breath.tempo: must be a number of breaths per minute >= 2 and "
        "<= 20 (got a number of 400 digits)",
    ),
    "bool-maybe": (
        STEPS + "      - breathe: {cycles: 3, time_left: !!bool maybe}\n",
        "Error: routine.yaml:5: sections[0].steps[0].time_left: !!bool 'maybe' is not true or "
        "false; write true or false, or remove the tag",
    ),
    "timestamp-soon": (
        STEPS + "      - say: !!timestamp soon\n",
        "Error: routine.yaml:5: sections[0].steps[0].say: !!timestamp 'soon' is not a date "
        "such as 2024-05-01; remove the tag",
    ),
    "int-tag-on-words": (
        STEPS + "      - pause: !!int five\n",
        "Error: routine.yaml:5: sections[0].steps[0].pause: !!int 'five' is not a whole "
        "number; write digits, or remove the tag",
    ),
    "float-tag-on-words": (
        STEPS + "      - pause: !!float soon\n",
        "Error: routine.yaml:5: sections[0].steps[0].pause: !!float 'soon' is not a number; "
        "write digits, or remove the tag",
    ),
    "binary-tag": (
        STEPS + "      - say: !!binary aGVsbG8=\n",
        "Error: routine.yaml:5: sections[0].steps[0].say: the tag !!binary is not allowed here; "
        "remove it (a routine is plain text, numbers, lists and mappings)",
    ),
    "set-tag-on-a-mapping": (
        STEPS + "      - breathe: {cycles: 2, tempo: !!set {a, b}}\n",
        "Error: routine.yaml:5: sections[0].steps[0].tempo: must be a single value, not a mapping",
    ),
    "dots-only": (
        STEPS + '      - say: "..."\n',
        "Error: routine.yaml:5: sections[0].steps[0].say: has nothing to pronounce ('...'); "
        "write words to speak, or remove it",
    ),
    "dash-only-cue": (
        STEPS + "      - breathe: {cycles: 2, cues: {inhale: '-'}}\n",
        "Error: routine.yaml:5: sections[0].steps[0].cues.inhale: has nothing to pronounce "
        "('-'); write words to speak, or remove it",
    ),
    "invisible-marks-only": (
        STEPS + '      - say: "\\u200b\\u200f\\u2067"\n',
        "Error: routine.yaml:5: sections[0].steps[0].say: has nothing to pronounce "
        "('\\u200b\\u200f\\u2067'); write words to speak, or remove it",
    ),
    "spoken-title-of-punctuation": (
        "title: T\nsections:\n  - title: S\n    spoken_title: '?!'\n    steps: [pause: 1]\n",
        "Error: routine.yaml:4: sections[0].spoken_title: has nothing to pronounce ('?!'); "
        "write words to speak, or remove it",
    ),
    "terminal-title-escape": (
        STEPS + '      - say: "\\e]0;pwned\\a Breathe."\n',
        "Error: routine.yaml:5: sections[0].steps[0].say: contains the control character "
        "U+001B; remove it (terminal escape sequences and control codes are not text)",
    ),
    "c1-control": (
        'title: "Calm \\x9b31m"\nsections:\n  - title: S\n    steps: [pause: 1]\n',
        "Error: routine.yaml:1: title: contains the control character U+009B; remove it "
        "(terminal escape sequences and control codes are not text)",
    ),
    "escape-in-a-description": (
        'title: T\ndescription: "\\e[2J"\nsections:\n  - title: S\n    steps: [pause: 1]\n',
        "Error: routine.yaml:2: description: contains the control character U+001B; remove it "
        "(terminal escape sequences and control codes are not text)",
    ),
    "count-to-13": (
        STEPS + "      - move: {count: 4, count_to: 13}\n",
        "Error: routine.yaml:5: sections[0].steps[0].count_to: must be a whole number from 1 "
        "to 12 (got 13)",
    ),
    "1e308": (
        STEPS + "      - pause: 1e308\n",
        "Error: routine.yaml:5: sections[0].steps[0].pause: must be a number of seconds > 0 "
        "and <= 3600 (got '1e308'; YAML reads 1e308 as text: write 1.0e+308)",
    ),
    "utf-16-without-bom": (
        (STEPS + "      - say: Hi.\n").encode("utf-16-le"),
        "Error: routine.yaml: not UTF-8 text (it has NUL bytes, as UTF-16 text does); save "
        "the file as UTF-8",
    ),
    "six-hours": (
        STEPS + "      - repeat: {times: 7, steps: [pause: 3600]}\n",
        "Error: routine.yaml: this routine would run longer than 6 hours; lower the repeats, "
        "cycles or minutes",
    ),
}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", ["validate", "plan", "render"])
@pytest.mark.parametrize("case", sorted(CONTENT_CASES))
def test_odd_content_gets_one_line_naming_file_line_and_field(case, command, workdir):
    text, message = CONTENT_CASES[case]
    if isinstance(text, bytes):
        (workdir / "routine.yaml").write_bytes(text)
    else:
        (workdir / "routine.yaml").write_text(text, encoding="utf-8")
    code, output = run_cli([command, "routine.yaml"])
    assert (code, output.strip().splitlines()[-1]) == (1, message)
    assert "Traceback" not in output
    assert not (workdir / "audioguide-out").exists()


@pytest.mark.parametrize("command", ["validate", "plan", "render"])
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a folder, not a routine file; give the path of a .yaml file"),
        (
            lambda p: os.mkfifo(p),
            "is a named pipe, not a routine file; save the routine as a .yaml file and give "
            "its path",
        ),
    ],
    ids=["folder", "fifo"],
)
def test_a_routine_that_is_not_a_file_is_named_as_what_it_is(command, make, message, workdir):
    make(workdir / "routine.yaml")
    code, output = run_cli([command, "routine.yaml"])
    assert (code, output.strip().splitlines()[-1]) == (1, f"Error: routine.yaml: {message}")


def test_a_device_given_as_the_routine_is_named_as_one():
    code, output = run_cli(["validate", "/dev/zero"])
    assert (code, output.strip()) == (
        1,
        "Error: /dev/zero: is a device, not a routine file; give the path of a .yaml file",
    )


def test_a_folder_named_without_a_suffix_is_not_taken_for_a_builtin(workdir):
    (workdir / "my-routines").mkdir()
    code, output = run_cli(["validate", "my-routines"])
    assert code == 1
    assert output.strip() == (
        "Error: my-routines: is a folder, not a routine file; give the path of a .yaml file"
    )


def test_validate_reports_every_mistake_in_a_file(workdir):
    (workdir / "routine.yaml").write_text(
        "title: T\nbreath: {tempo: 50}\nsections:\n"
        "  - title: S\n    steps:\n      - pause: -1\n      - say: '...'\n      - bell: 100\n"
        "  - title: ''\n    steps:\n      - breathe: {cycles: 0, tempo: 99}\n"
        '      - repeat: 2\n        steps: [say: "\\e[2J"]\n',
        encoding="utf-8",
    )
    code, output = run_cli(["validate", "routine.yaml"])
    assert code == 1
    assert output.strip().splitlines() == [
        "Error: routine.yaml:2: breath.tempo: must be a number of breaths per minute >= 2 and "
        "<= 20 (got 50)",
        "Error: routine.yaml:6: sections[0].steps[0].pause: must be a number of seconds > 0 and "
        "<= 3600 (got -1)",
        "Error: routine.yaml:7: sections[0].steps[1].say: has nothing to pronounce ('...'); "
        "write words to speak, or remove it",
        "Error: routine.yaml:8: sections[0].steps[2].bell: must be a number of seconds >= 2 and "
        "<= 60 (got 100)",
        "Error: routine.yaml:9: sections[1].title: must not be empty",
        "Error: routine.yaml:11: sections[1].steps[0].cycles: must be a whole number of breath "
        "cycles from 1 to 1000 (got 0)",
        "Error: routine.yaml:11: sections[1].steps[0].tempo: must be a number of breaths per "
        "minute >= 2 and <= 20 (got 99)",
        "Error: routine.yaml:13: sections[1].steps[1].steps[0].say: contains the control "
        "character U+001B; remove it (terminal escape sequences and control codes are not text)",
    ]
    # plan and render stop at the first, and say there are more
    code, output = run_cli(["plan", "routine.yaml"])
    assert code == 1
    assert output.strip() == (
        "Error: routine.yaml:2: breath.tempo: must be a number of breaths per minute >= 2 and "
        "<= 20 (got 50) (and 7 more mistakes: audioguide validate lists them all)"
    )


def test_validate_goes_on_to_the_next_file_after_a_bad_one(workdir):
    (workdir / "bad.yaml").write_text(STEPS + "      - pause: -1\n", encoding="utf-8")
    code, output = run_cli(["validate", "bad.yaml", "back-pain-quick"])
    assert code == 1
    assert output.strip().splitlines()[-1].startswith("back-pain-quick: ok (")


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_bell_past_the_end_of_its_part_is_warned_about(command, workdir):
    (workdir / "routine.yaml").write_text(
        STEPS + "      - pause: {seconds: 60, bells_at: [0.5, 2]}\n"
        "      - breathe: {cycles: 6, bells_at: [0.5, 3], bell_every: 0.5}\n",
        encoding="utf-8",
    )
    code, output = run_cli([command, "routine.yaml"])
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        "Warning: routine.yaml:5: bells_at 2: past the end of this pause (1:00 long), so it "
        "never rings; give a time inside the part",
        "Warning: routine.yaml:6: bells_at 3: past the end of this breathing part (1:00 long), "
        "so it never rings; give a time inside the part",
    ]


def test_long_titles_in_any_script_render_with_names_the_file_system_takes(workdir):
    (workdir / "routine.yaml").write_text(
        f"title: {'😀' * 999}\nsections:\n"
        f"  - title: {'漢' * 999}\n    steps: [pause: 1]\n"
        f"  - title: {'é' * 999}\n    steps: [pause: 1]\n",
        encoding="utf-8",
    )
    code, output = run_cli(["render", "routine.yaml", "-o", "out"])
    assert code == 0, output
    names = [p.name for p in (workdir / "out" / "routine").iterdir()]
    assert len(names) >= 5  # two tracks, their transcripts, the full session, the playlist
    assert max(len(name.encode("utf-8")) for name in names) <= 255
    assert max(len(name.encode("utf-16-le")) // 2 for name in names) <= 255  # FAT32


# ---------------------------------------------------------------------------------------------
# Any hostile document: the loader, validate and plan succeed or raise our error, nothing else

# Scalars written as YAML text, so they can carry what a dumper never writes: tags, escapes.
ODD_SCALARS = [
    "9" * 400, "-" + "9" * 30, "1e308", "1.0e+308", "1.0e+999", ".nan", "-.inf", "0x1F", "0o17",
    "1_000", "190:20:30", "2024-05-01", "2024-13-45", "~", "yes", "No", "on",
    "!!bool maybe", "!!bool yes", "!!timestamp soon", "!!timestamp 2024-02-30", "!!int five",
    "!!int 0b102", "!!float soon", "!!float 1e5", "!!str 3", "!!null x", "!!binary aGVsbG8=",
    "!!binary '%%'", "!foo bar", "!<tag:example.com,2024:x> y", "!!merge x", "!!value x",
    "!!python/name:os.system", "!!set {a, b}", "!!omap [{a: 1}]", "!!pairs [[a, 1]]",
    '"\\ud83e\\uddd8"', '"\\udc00 x"', '"\\e]0;x\\a"', '"\\x9b31m"', '"\\x00"', '"\\u200b\\u200f"',
    '"\\u2067\\u2069"', '"..."', '"-"', "'\u0301'", '"\\uffff"', '"\\U0010ffff"', "&a x", "*a",
    "<<", "[" * 150 + "]" * 150, "{a: " * 60 + "1" + "}" * 60,
]  # fmt: skip


def _quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar, escapes and all (surrogates as \\uXXXX)."""
    return json.dumps(text)


yaml_scalars = st.one_of(
    st.sampled_from(ODD_SCALARS),
    st.sampled_from(["4-6", "box", "gentle", "full", "tick", "count", "3", "0.5", "-1", "120"]),
    st.integers(-(10**40), 10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12).map(_quoted),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12).map(_quoted),
)
yaml_keys = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(ODD_SCALARS[:20]))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: f"[{', '.join(items)}]"),
        st.lists(st.tuples(yaml_keys, children), max_size=4).map(
            lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
        ),
    ),
    max_leaves=12,
)
GOOD_STEPS = [
    "{say: Breathe in.}", "{pause: 2}", "bell", "{bell: 3}", "{breathe: 2}",
    "{breathe: {minutes: 0.5, bells_at: [0.2, 3], pattern: 4-7-8}}",
    "{move: {count: 14, sound: count, count_to: 12}}", "{repeat: 2, steps: [{say: Again.}]}",
    "{say: Hold., level: full}", "{pause: {seconds: {gentle: 3, full: 1}, bell_every: 0.5}}",
]  # fmt: skip
yaml_steps = st.one_of(
    st.sampled_from(GOOD_STEPS),
    st.sampled_from(GOOD_STEPS),
    st.sampled_from(STEP_KINDS),
    st.tuples(
        st.sampled_from(STEP_KINDS),
        yaml_values,
        st.lists(st.tuples(yaml_keys, yaml_values), max_size=3),
    ).map(lambda step: "{" + ", ".join(f"{k}: {v}" for k, v in [step[:2], *step[2]]) + "}"),
    yaml_values,
)
yaml_routines = st.builds(
    lambda title, extra, sections: (
        f"title: {title}\n"
        + "".join(f"{k}: {v}\n" for k, v in extra)
        + "sections:\n"
        + "".join(
            f"  - title: {section_title}\n    steps: [{', '.join(steps)}]\n"
            for section_title, steps in sections
        )
    ),
    st.one_of(st.just("Calm"), yaml_scalars),
    st.lists(st.tuples(st.sampled_from(ROUTINE_FIELDS[1:-1]), yaml_values), max_size=2),
    st.lists(
        st.tuples(
            st.one_of(st.just("Part"), yaml_scalars), st.lists(yaml_steps, min_size=1, max_size=4)
        ),
        min_size=1,
        max_size=3,
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=st.one_of(yaml_routines, yaml_routines, yaml_values))
def test_any_hostile_document_loads_validates_and_plans_or_raises_our_error(
    text, fake_speech, tmp_path
):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        routine = load_routine(str(path))
    except RoutineError as exc:
        assert str(exc).startswith(str(path))
        routine = None
    event("loads" if routine else "refused")
    code, output = run_cli(["validate", str(path)])  # raises anything but our error
    assert code == (0 if routine is not None and "Error:" not in output else 1), output
    assert output.count("Traceback") == 0
    if routine is not None:
        try:
            check_routine(routine)
            for level in LEVELS:
                plan_session(
                    routine, SessionOptions(render=RenderOptions(level=level)), speech=fake_speech
                )
        except AudioguideError as exc:
            assert str(exc)


def test_steps_nested_to_the_step_limit_in_long_form_still_load():
    """The YAML nesting limit leaves room for the deepest steps a routine may have."""
    inner = "{say: Hi.}"
    for _ in range(38):  # sections and their steps take the first two of MAX_DEPTH
        inner = "{repeat: {times: 1, steps: [" + inner + "]}}"
    routine = parse(f"title: T\nsections:\n  - title: S\n    steps: [{inner}]\n")
    depth, step = 0, routine.sections[0].steps[0]
    while isinstance(step, Repeat):
        depth, step = depth + 1, step.steps[0]
    assert depth == 38 and step == Say("Hi.", line=4)


# ---------------------------------------------------------------------------------------------
# pronounce: the routine's own words for the engines

SAY_DANTIAN = "sections:\n  - title: S\n    steps:\n      - say: Breathe into the dantian.\n"


def pronouncing(entries: str) -> str:
    return f"title: T\npronounce:\n{entries}{SAY_DANTIAN}"


def test_pronounce_takes_one_respelling_or_one_per_engine():
    routine = parse_routine(
        pronouncing(
            "  Dantian: dahn tyen\n"
            "  Yi  Jin Jing:\n    espeak-ng: yee jin jing\n    piper: '[[jˈiː dʒˈɪn dʒˈɪŋ]]'\n"
            "  wuji: {piper: woo jee}\n"
        ),
        source="my.yaml",
    )
    assert [(p.word, p.line) for p in routine.pronounce] == [
        ("Dantian", 3),
        ("Yi Jin Jing", 4),  # a phrase matches over any spaces: they are read as one
        ("wuji", 7),
    ]
    assert routine.respellings("espeak-ng") == {
        "Dantian": "dahn tyen",
        "Yi Jin Jing": "yee jin jing",
    }
    assert routine.respellings("piper") == {
        "Dantian": "dahn tyen",
        "Yi Jin Jing": "[[jˈiː dʒˈɪn dʒˈɪŋ]]",
        "wuji": "woo jee",
    }
    assert (
        parse_routine(pronouncing("  {}\n").replace("pronounce:\n  {}", "pronounce: {}")).pronounce
        == ()
    )


# entries under pronounce: -> the message validate, plan and render print
PRONOUNCE_CASES = {
    "not-a-mapping": (
        "  - dantian\n",
        "Error: routine.yaml:3: pronounce: must be a mapping of words to how to say them "
        "(lines such as 'Dantian: dahn tyen')",
    ),
    "empty-word": (
        '  "": dahn\n',
        "Error: routine.yaml:3: pronounce: a word is empty; write the word as the routine's "
        "text has it",
    ),
    "list-as-word": (
        "  [a, b]: dahn\n",
        "Error: routine.yaml:3: pronounce: each key must be a word or phrase, as the routine "
        "writes it",
    ),
    "word-of-punctuation": (
        "  '...': dahn\n",
        "Error: routine.yaml:3: pronounce....: must start and end with a letter or a digit, as "
        "the words of the text do (got '...')",
    ),
    "twice-in-two-cases": (
        "  Dantian: dahn tyen\n  DANTIAN: dan tyen\n",
        "Error: routine.yaml:4: pronounce.DANTIAN: is given twice (line 3 has it; case does not "
        "matter); keep one",
    ),
    "not-text": (
        "  dantian: [dahn, tyen]\n",
        "Error: routine.yaml:3: pronounce.dantian: must be a single value, not a list",
    ),
    "a-number": (
        "  dantian: true\n",
        "Error: routine.yaml:3: pronounce.dantian: must be text (got bool True)",
    ),
    "empty-respelling": (
        "  dantian: ''\n",
        "Error: routine.yaml:3: pronounce.dantian: must not be empty",
    ),
    "nothing-to-pronounce": (
        "  dantian: '-?'\n",
        "Error: routine.yaml:3: pronounce.dantian: has nothing to pronounce ('-?'); write how "
        "the word sounds, or remove it",
    ),
    "terminal-escape": (
        '  dantian: "\\e]0;pwned\\a"\n',
        "Error: routine.yaml:3: pronounce.dantian: contains the control character U+001B; "
        "remove it (terminal escape sequences and control codes are not text)",
    ),
    "terminal-escape-in-the-word": (
        '  "dan\\e[2Jtian": dahn\n',
        "Error: routine.yaml:3: pronounce: contains the control character "
        "U+001B; remove it (terminal escape sequences and control codes are not text)",
    ),
    "unknown-engine": (
        "  dantian: {espeak: dahn tyen}\n",
        "Error: routine.yaml:3: pronounce.dantian.espeak: unknown engine 'espeak'; did you mean "
        "'espeak-ng'? respell for espeak-ng or piper",
    ),
    "no-engine": (
        "  dantian: {}\n",
        "Error: routine.yaml:3: pronounce.dantian: give what espeak-ng or piper should hear, or "
        "one respelling for both",
    ),
    "ipa-for-every-engine": (
        "  dantian: '[[dˈɑːn]]'\n",
        "Error: routine.yaml:3: pronounce.dantian: espeak-ng reads no IPA ('[[dˈɑːn]]'); give "
        "each engine its own: {espeak-ng: letters, piper: '[[IPA]]'}",
    ),
    "ipa-for-espeak": (
        "  dantian: {espeak-ng: '[[dˈɑːn]]'}\n",
        "Error: routine.yaml:3: pronounce.dantian.espeak-ng: espeak-ng reads no IPA "
        "('[[dˈɑːn]]'); write how it sounds in letters; IPA between [[ ]] is for piper:",
    ),
    "ipa-unclosed": (
        "  dantian: {piper: '[[dˈɑːn tjˈɛn'}\n",
        "Error: routine.yaml:3: pronounce.dantian.piper: has brackets that do not pair up "
        "('[[dˈɑːn tjˈɛn'); IPA for Piper goes between [[ and ]], and nothing else takes "
        "brackets",
    ),
    "ipa-nested": (
        "  dantian: {piper: '[[dˈɑːn [[tjˈɛn]]'}\n",
        "Error: routine.yaml:3: pronounce.dantian.piper: has brackets within [[ ]] "
        "('[[dˈɑːn [[tjˈɛn]]'); remove them",
    ),
    "ipa-empty": (
        "  dantian: {piper: 'dahn [[ ]]'}\n",
        "Error: routine.yaml:3: pronounce.dantian.piper: has an empty [[ ]] ('dahn [[ ]]'); put "
        "Piper's IPA between the brackets",
    ),
}


@pytest.mark.parametrize("command", ["validate", "plan", "render"])
@pytest.mark.parametrize("case", sorted(PRONOUNCE_CASES))
def test_a_bad_pronounce_entry_gets_one_line_naming_file_line_and_word(case, command, workdir):
    entries, message = PRONOUNCE_CASES[case]
    (workdir / "routine.yaml").write_text(pronouncing(entries), encoding="utf-8")
    code, output = run_cli([command, "routine.yaml"])
    assert (code, output.strip().splitlines()[-1]) == (1, message)
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output
    assert not (workdir / "audioguide-out").exists()


def test_a_bad_pronounce_entry_leaves_the_previous_render_as_it_was(workdir):
    (workdir / "routine.yaml").write_text(pronouncing("  dantian: dahn tyen\n"), encoding="utf-8")
    assert run_cli(["render", "routine.yaml", "--quiet"])[0] == 0
    folder = workdir / "audioguide-out" / "routine"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    (workdir / "routine.yaml").write_text(pronouncing("  dantian: {espeak: x}\n"), encoding="utf-8")
    code, output = run_cli(["render", "routine.yaml"])
    assert code == 1 and output.startswith("Error: routine.yaml:3: pronounce.dantian.espeak:")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["routine"]


def test_validate_lists_every_bad_pronounce_entry(workdir):
    (workdir / "routine.yaml").write_text(
        pronouncing("  a: {espeak: x, piper: '[[y'}\n  b: '...'\n"), encoding="utf-8"
    )
    code, output = run_cli(["validate", "routine.yaml"])
    assert code == 1
    assert [line.split(": ")[2] for line in output.strip().splitlines()] == [
        "pronounce.a.espeak",
        "pronounce.a.piper",
        "pronounce.b",
    ]


@pytest.mark.parametrize(
    "entries",
    [
        "  dantian: '[[dˈɑːn]]'\n",
        "  dantian: {espeak: x}\n",
        "  dantian: {piper: '[[x'}\n",
        "  dantian: {espeak-ng: '[[x]]'}\n",
        "  dantian: {}\n",
        "  dantian: ''\n",
    ],
)
def test_the_schema_refuses_a_bad_pronounce_entry_and_takes_good_ones(entries):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(load_schema())
    assert list(validator.iter_errors(yaml.safe_load(pronouncing(entries))))
    with pytest.raises(RoutineError):
        parse_routine(pronouncing(entries), source="my.yaml")
    good = "  Dantian: dahn tyen\n  wuji: {espeak-ng: woo jee, piper: 'woo [[dʒˈiː]]'}\n"
    validator.validate(yaml.safe_load(pronouncing(good)))
    per_engine = load_schema()["properties"]["pronounce"]["additionalProperties"]["anyOf"][1]
    assert tuple(per_engine["properties"]) == PRONOUNCE_ENGINES


def test_the_documented_pronounce_example_loads():
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text("utf-8"), re.DOTALL)
    example = next(block for block in blocks if block.startswith("pronounce:"))
    routine = parse_routine("title: T\n" + example, source="example.yaml")
    assert routine.respellings("piper")["Baduanjin"] == "[[bˈɑː dwˈɑːn dʒˈɪn]]"
    assert "Wuji" not in routine.respellings("piper")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator(load_schema()).validate(yaml.safe_load("title: T\n" + example))
