"""Step kinds: one StepSpec per kind of step a routine section may hold.

A spec names the kind, its model (a frozen dataclass), its main field (the value of the short
form, ``- pause: 5``) and each field with its reader, its range and its docs line. The spec
alone drives the routine parser (routine.py), the JSON Schema for editors and the step table of
docs/routines.md (both written by scripts/gen_routine_docs.py); the timeline holds one handler
per kind. Adding a kind is a model, a spec here and a handler in timeline.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import yaml

from .breath import (
    CUE_PHASES,
    MAX_BREATHS_PER_MIN,
    MIN_BREATHS_PER_MIN,
    PRESETS,
    BreathPattern,
    Tempo,
    check_cycle_s,
    parse_pattern,
    parse_tempo,
)
from .phrases import ENGLISH
from .yaml_nodes import LEVELS, MAX_TEXT_CHARS, Node, NodeReader, show

DEFAULT_SAY_PAUSE_S = 1.5
DEFAULT_BELL_RING_S = 8.0
DEFAULT_CUE_CYCLES = 2
MIN_MOVES_PER_MIN = 4.0
MAX_MOVES_PER_MIN = 120.0
DEFAULT_MOVES_PER_MIN = 40.0  # slow walking steps, one every 1.5 s
MOVE_SOUNDS = ("tick", "count", "none")
DEFAULT_MOVE_SOUND = "tick"
DEFAULT_COUNT_TO = 8
MAX_COUNT_TO = ENGLISH.max_count  # as high as the spoken counts go
POSITIONS = ("standing", "seated", "lying")
DEFAULT_POSITION = "standing"  # what a routine that names no positions is written for
COMMON_FIELDS = ("level", *POSITIONS)

# ---------------------------------------------------------------------------------------------
# The model

Overrides: TypeAlias = tuple[tuple[str, Any], ...]
"""``(field, value)`` pairs a step takes at ``--level full``; its plain fields are the gentle
values. ``level`` on a step, when set, keeps the step at that level only."""

Variants: TypeAlias = tuple[tuple[str, "Step | None"], ...]
"""``(position, step)`` pairs: what a step becomes at ``--position`` seated, lying or standing
(None: it is left out there); a position not listed plays the step as written."""


@dataclass(frozen=True)
class Say:
    """A spoken cue, followed by ``pause_s`` of quiet."""

    text: str
    pause_s: float = DEFAULT_SAY_PAUSE_S
    line: int = 0
    level: str | None = None
    full: Overrides = ()
    variants: Variants = ()


@dataclass(frozen=True)
class Pause:
    """Quiet (or ambient only) for ``duration_s``.

    Interval bells: a soft chime every ``bell_every_min`` minutes and at each of
    ``bells_at_min`` (minutes from the start of the pause).
    """

    duration_s: float
    line: int = 0
    level: str | None = None
    full: Overrides = ()
    variants: Variants = ()
    bell_every_min: float | None = None
    bells_at_min: tuple[float, ...] = ()


@dataclass(frozen=True)
class Bell:
    """A singing-bowl strike left to ring for ``ring_s``."""

    ring_s: float = DEFAULT_BELL_RING_S
    line: int = 0
    level: str | None = None
    full: Overrides = ()
    variants: Variants = ()


@dataclass(frozen=True)
class Breathe:
    """Paced breathing: ``cycles`` breaths, or as many as fit in ``minutes``.

    ``cues`` maps a phase (inhale, top-up, hold, exhale, rest) to the words spoken as it
    starts; they are spoken on the first ``cue_cycles`` cycles and then every ``cue_every``
    cycles (0: not again). ``pattern`` and ``breaths_per_min`` override the routine's for this
    part; a TempoCurve there spans this part alone, each time it is played.
    """

    cycles: int | None = None
    minutes: float | None = None
    pattern: BreathPattern | None = None
    breaths_per_min: Tempo | None = None
    cues: tuple[tuple[str, str], ...] = ()
    cue_cycles: int = DEFAULT_CUE_CYCLES
    cue_every: int = 0
    time_left: bool = True
    line: int = 0
    level: str | None = None
    full: Overrides = ()
    variants: Variants = ()
    # Interval bells, as for Pause; each rings at the start of the nearest breath.
    bell_every_min: float | None = None
    bells_at_min: tuple[float, ...] = ()


@dataclass(frozen=True)
class Repeat:
    """The nested ``steps``, ``times`` times over."""

    times: int
    steps: tuple[Step, ...]
    line: int = 0
    level: str | None = None
    full: Overrides = ()
    variants: Variants = ()


@dataclass(frozen=True)
class Move:
    """A paced movement: ``count`` steps or circles at ``moves_per_min``.

    ``sound`` marks each movement: a soft ``tick``, spoken numbers (``count``, one to
    ``count_to`` and round again), or ``none``.
    """

    count: int
    moves_per_min: float | None = None
    sound: str | None = None
    count_to: int = DEFAULT_COUNT_TO
    time_left: bool = True
    line: int = 0
    level: str | None = None
    full: Overrides = ()
    variants: Variants = ()


Step: TypeAlias = Say | Pause | Bell | Breathe | Repeat | Move

# ---------------------------------------------------------------------------------------------
# Field values: how each is read, what the schema says of it, and its limits in words

ReadSteps = Callable[[Node, str, int], tuple[Step, ...]]


@dataclass(frozen=True)
class Context:
    """What a field reader needs beyond its node: the reader of the document, the depth of the
    step, and how to read nested steps (routine.py's parser)."""

    nodes: NodeReader
    depth: int
    read_steps: ReadSteps


class Value(ABC):
    """A kind of field value. ``read`` returns it or raises RoutineError naming ``where``;
    ``schema`` is its JSON Schema, ``limits`` its range in words for the docs."""

    @abstractmethod
    def read(self, ctx: Context, node: Node, where: str) -> Any: ...

    @abstractmethod
    def schema(self) -> dict[str, Any]: ...

    @abstractmethod
    def limits(self) -> str: ...

    def reader(self, ctx: Context) -> Callable[[Node, str], Any]:
        """``read`` with its context bound: a function of the node and its place."""
        return lambda node, where: self.read(ctx, node, where)


@dataclass(frozen=True)
class Number(Value):
    low: float
    high: float
    unit: str
    low_open: bool = False

    def read(self, ctx: Context, node: Node, where: str) -> float:
        return ctx.nodes.number(node, where, self.low, self.high, self.unit, low_open=self.low_open)

    def schema(self) -> dict[str, Any]:
        low = "exclusiveMinimum" if self.low_open else "minimum"
        return {"type": "number", low: _plain(self.low), "maximum": _plain(self.high)}

    def limits(self) -> str:
        if self.low_open:
            return f"more than {self.low:g}, up to {self.high:g} {self.unit}"
        return f"{self.low:g} to {self.high:g} {self.unit}"


@dataclass(frozen=True)
class Integer(Value):
    low: int
    high: int
    unit: str

    def read(self, ctx: Context, node: Node, where: str) -> int:
        return ctx.nodes.integer(node, where, self.low, self.high, self.unit)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}

    def limits(self) -> str:
        return f"a whole number{f' of {self.unit}' if self.unit else ''}, {self.low} to {self.high}"


@dataclass(frozen=True)
class Text(Value):
    """Text; ``spoken`` text must have something to pronounce (a letter or a digit)."""

    spoken: bool = False

    def read(self, ctx: Context, node: Node, where: str) -> str:
        if self.spoken:
            return ctx.nodes.spoken_text(node, where)
        return ctx.nodes.text(node, where)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}

    def limits(self) -> str:
        if self.spoken:
            return f"words to speak, up to {MAX_TEXT_CHARS} characters"
        return f"text, up to {MAX_TEXT_CHARS} characters"


@dataclass(frozen=True)
class Flag(Value):
    def read(self, ctx: Context, node: Node, where: str) -> bool:
        return ctx.nodes.flag(node, where)

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def limits(self) -> str:
        return "`true` or `false`"


@dataclass(frozen=True)
class Choice(Value):
    choices: tuple[str, ...]

    def read(self, ctx: Context, node: Node, where: str) -> str:
        return ctx.nodes.choice(node, where, self.choices)

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}

    def limits(self) -> str:
        return _or([f"`{c}`" for c in self.choices])


@dataclass(frozen=True)
class Pattern(Value):
    """A breath pattern; ``absolute`` when no tempo scales it, so its numbers are seconds."""

    absolute: bool = False

    def read(self, ctx: Context, node: Node, where: str) -> BreathPattern:
        value = ctx.nodes.scalar(node, where)
        if isinstance(value, bool) or value is None:
            raise ctx.nodes.fail(
                node, where, f"must be a breath pattern like 4-6 (got {show(value)})"
            )
        try:
            pattern = parse_pattern(str(value))
            if self.absolute:
                check_cycle_s(pattern)
        except ValueError as exc:
            raise ctx.nodes.fail(node, where, str(exc)) from None
        return pattern

    def schema(self) -> dict[str, Any]:
        return {
            "type": "string",
            "anyOf": [
                {"pattern": r"^\s*\d+(\.\d+)?([-:]\d+(\.\d+)?){1,3}\s*$"},
                {"enum": list(PRESETS)},
            ],
        }

    def limits(self) -> str:
        presets = ", ".join(f"`{name}`" for name in PRESETS)
        return f"`4-6`, `4-7-8`, `4-4-4-4` or a preset ({presets})"


def read_tempo(nodes: NodeReader, node: Node, where: str) -> Tempo:
    """A breath tempo as a routine or a programme writes it; RoutineError naming ``where``."""
    if isinstance(node, yaml.ScalarNode) and ":" in node.value:
        # Read as written: YAML 1.1 would take 6:45 for a number in base 60 (405).
        nodes.check_tag(node, where)
        try:
            return parse_tempo(node.value)
        except ValueError as exc:
            raise nodes.fail(node, where, str(exc)) from None
    return nodes.number(node, where, MIN_BREATHS_PER_MIN, MAX_BREATHS_PER_MIN, BREATHS_PER_MIN.unit)


@dataclass(frozen=True)
class BreathTempo(Value):
    """Breaths a minute, steady (``6``) or slowing from start to end (``6:4.5``)."""

    def read(self, ctx: Context, node: Node, where: str) -> Tempo:
        return read_tempo(ctx.nodes, node, where)

    def schema(self) -> dict[str, Any]:
        return {
            "anyOf": [
                BREATHS_PER_MIN.schema(),
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*:\s*\d+(\.\d+)?\s*$"},
            ]
        }

    def limits(self) -> str:
        return f"{BREATHS_PER_MIN.limits()}, or `start:end` (`6:4.5`), each end in that range"


@dataclass(frozen=True)
class Cues(Value):
    """Words for each breath phase, in breathing order."""

    def read(self, ctx: Context, node: Node, where: str) -> tuple[tuple[str, str], ...]:
        fields = ctx.nodes.mapping(node, where, CUE_PHASES, "breath cues")
        return tuple(
            (phase, ctx.nodes.spoken_text(fields[phase][1], f"{where}.{phase}"))
            for phase in CUE_PHASES
            if phase in fields
        )

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {phase: Text(spoken=True).schema() for phase in CUE_PHASES},
        }

    def limits(self) -> str:
        return "words to speak for any of " + _or([f"`{p}`" for p in CUE_PHASES])


@dataclass(frozen=True)
class NumberList(Value):
    """A list of numbers, kept sorted."""

    item: Number

    def read(self, ctx: Context, node: Node, where: str) -> tuple[float, ...]:
        items = ctx.nodes.sequence(node, where, self.item.unit)
        return tuple(sorted(self.item.read(ctx, n, f"{where}[{i}]") for i, n in enumerate(items)))

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "items": self.item.schema()}

    def limits(self) -> str:
        return f"a list, each {self.item.limits()}"


@dataclass(frozen=True)
class Steps(Value):
    """Nested steps, one level deeper."""

    def read(self, ctx: Context, node: Node, where: str) -> tuple[Step, ...]:
        return ctx.read_steps(node, where, ctx.depth + 1)

    def schema(self) -> dict[str, Any]:
        return {"$ref": "#/definitions/steps"}

    def limits(self) -> str:
        return "a list of steps"


def _plain(number: float) -> float | int:
    """``2`` rather than ``2.0`` in the schema, as a person would write it."""
    return int(number) if float(number).is_integer() else number


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


SECONDS_TO_SPEAK = Number(0, 600, "seconds")
BREATHS_PER_MIN = Number(MIN_BREATHS_PER_MIN, MAX_BREATHS_PER_MIN, "breaths per minute")
MOVES_PER_MIN = Number(MIN_MOVES_PER_MIN, MAX_MOVES_PER_MIN, "movements per minute")
CYCLE_COUNT = Integer(0, 1000, "cycles")

# ---------------------------------------------------------------------------------------------
# The specs


@dataclass(frozen=True)
class FieldSpec:
    """One field of a step: its name in YAML, the model attribute it fills and how it reads.

    ``required`` says what the step needs when the field is missing ("" when it is optional);
    ``leveled`` fields take ``{gentle: a, full: b}`` as well as a plain value.
    """

    name: str
    value: Value
    doc: str
    attr: str = ""
    required: str = ""
    leveled: bool = False
    default: Any = None

    @property
    def model_attr(self) -> str:
        return self.attr or self.name


@dataclass(frozen=True)
class StepSpec:
    """One kind of step: ``- <kind>: <main field's value>`` or ``- <kind>: {fields}``.

    ``one_of`` names fields of which exactly one must be given.
    """

    kind: str
    model: type[Any]
    main: str
    fields: tuple[FieldSpec, ...]
    doc: str
    one_of: tuple[str, ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def bare(self) -> bool:
        """Whether the kind alone (``- bell``) is a whole step."""
        return not any(f.required for f in self.fields) and not self.one_of

    @property
    def nested(self) -> tuple[str, ...]:
        """The model attributes of this kind that hold nested steps."""
        return tuple(f.model_attr for f in self.fields if isinstance(f.value, Steps))


def _interval_bells() -> tuple[FieldSpec, ...]:
    return (
        FieldSpec(
            "bell_every",
            Number(0.5, 120, "minutes"),
            "a soft chime every N minutes of the part; none at its very end",
            attr="bell_every_min",
        ),
        FieldSpec(
            "bells_at",
            NumberList(Number(0, 120, "minutes", low_open=True)),
            "soft chimes at these minutes from the start of the part; one at or past its end "
            "(or in a breathing part's first breath) never rings, and validate and plan warn",
            attr="bells_at_min",
            default=(),
        ),
    )


STEP_SPECS: tuple[StepSpec, ...] = (
    StepSpec(
        "say",
        Say,
        main="text",
        doc="words spoken aloud, then quiet",
        fields=(
            FieldSpec(
                "text",
                Text(spoken=True),
                "the words to speak, plain text (no SSML)",
                required="the words to speak",
            ),
            FieldSpec(
                "pause",
                SECONDS_TO_SPEAK,
                "quiet after the words",
                attr="pause_s",
                leveled=True,
                default=DEFAULT_SAY_PAUSE_S,
            ),
        ),
    ),
    StepSpec(
        "pause",
        Pause,
        main="seconds",
        doc="quiet, or the ambient bed alone",
        fields=(
            FieldSpec(
                "seconds",
                Number(0, 3600, "seconds", low_open=True),
                "length of the quiet",
                attr="duration_s",
                required="a length in seconds",
                leveled=True,
                default=0.0,
            ),
            *_interval_bells(),
        ),
    ),
    StepSpec(
        "bell",
        Bell,
        main="ring",
        doc="a singing-bowl strike; `- bell` alone is fine",
        fields=(
            FieldSpec(
                "ring",
                Number(2, 60, "seconds"),
                "how long the bell rings",
                attr="ring_s",
                leveled=True,
                default=DEFAULT_BELL_RING_S,
            ),
        ),
    ),
    StepSpec(
        "breathe",
        Breathe,
        main="cycles",
        doc="paced breathing on its own clock",
        one_of=("cycles", "minutes"),
        fields=(
            FieldSpec(
                "cycles", Integer(1, 1000, "breath cycles"), "number of breaths", leveled=True
            ),
            FieldSpec(
                "minutes",
                Number(0, 120, "minutes", low_open=True),
                "breathe for about this long instead of a number of cycles",
                leveled=True,
            ),
            FieldSpec("pattern", Pattern(), "the shape of a breath, for this part only"),
            FieldSpec(
                "tempo",
                BreathTempo(),
                "breaths per minute, for this part only; `start:end` slows (or quickens) the "
                "breath evenly from its first cycle to its last",
                attr="breaths_per_min",
            ),
            FieldSpec(
                "cues",
                Cues(),
                "words spoken as each phase starts (`top-up` is the short second sip of the "
                "`sigh` pattern's double inhale)",
                default=(),
            ),
            FieldSpec(
                "cue_cycles",
                CYCLE_COUNT,
                "the cues are spoken on this many first cycles",
                default=DEFAULT_CUE_CYCLES,
            ),
            FieldSpec(
                "cue_every", CYCLE_COUNT, "then on every Nth cycle (0: not again)", default=0
            ),
            FieldSpec("time_left", Flag(), "`false` turns time-left cues off here", default=True),
            *_interval_bells(),
        ),
    ),
    StepSpec(
        "repeat",
        Repeat,
        main="times",
        doc="the nested steps, several times over",
        fields=(
            FieldSpec(
                "times",
                Integer(1, 100, "times"),
                "how many times",
                required="a number of times",
                leveled=True,
                default=1,
            ),
            FieldSpec("steps", Steps(), "the steps to repeat", required="steps to repeat"),
        ),
    ),
    StepSpec(
        "move",
        Move,
        main="count",
        doc="paced movements (steps, circles) on their own clock",
        fields=(
            FieldSpec(
                "count",
                Integer(1, 10_000, "movements"),
                "number of movements",
                required="a number of movements",
                leveled=True,
                default=1,
            ),
            FieldSpec(
                "tempo",
                MOVES_PER_MIN,
                "movements per minute, for this part only",
                attr="moves_per_min",
            ),
            FieldSpec(
                "sound",
                Choice(MOVE_SOUNDS),
                "what marks each movement: a tick, spoken numbers or nothing",
            ),
            FieldSpec(
                "count_to",
                Integer(1, MAX_COUNT_TO, ""),
                "spoken counts go from one up to this, then round again",
                default=DEFAULT_COUNT_TO,
            ),
            FieldSpec("time_left", Flag(), "`false` turns time-left cues off here", default=True),
        ),
    ),
)

SPECS: dict[str, StepSpec] = {spec.kind: spec for spec in STEP_SPECS}
SPEC_OF_MODEL: dict[type[Any], StepSpec] = {spec.model: spec for spec in STEP_SPECS}
STEP_KINDS = tuple(SPECS)
STEP_FIELDS: dict[str, tuple[str, ...]] = {spec.kind: spec.field_names for spec in STEP_SPECS}
MAIN_FIELD: dict[str, str] = {spec.kind: spec.main for spec in STEP_SPECS}


def nested_steps(step: Step) -> tuple[tuple[str, tuple[Step, ...]], ...]:
    """``(attribute, steps)`` for each field of ``step`` that holds steps (a repeat's)."""
    return tuple((attr, getattr(step, attr)) for attr in SPEC_OF_MODEL[type(step)].nested)


def kind_of(step: Step) -> str:
    """The kind of ``step`` as written in a routine (``say``, ``repeat``, ...)."""
    return SPEC_OF_MODEL[type(step)].kind


# ---------------------------------------------------------------------------------------------
# The JSON Schema and the docs table, both derived from the specs


def _leveled_schema(base: dict[str, Any]) -> dict[str, Any]:
    return {
        "anyOf": [
            base,
            {
                "type": "object",
                "required": list(LEVELS),
                "additionalProperties": False,
                "description": "A value for each --level.",
                "properties": {level: base for level in LEVELS},
            },
        ]
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def value_schema(step: StepSpec, spec: FieldSpec) -> dict[str, Any]:
    """One value of a field (without the ``{gentle: a, full: b}`` form), described."""
    base = {**spec.value.schema()}
    if "$ref" not in base:
        values = "; ".join(field_values(step, spec, leveled=False))
        base["description"] = _sentence(f"{spec.doc}: {values}")
    return base


def field_schema(step: StepSpec, spec: FieldSpec) -> dict[str, Any]:
    """A field as a step takes it: its value (a reference to its definition), or one per
    level where the field is leveled."""
    value = value_schema(step, spec)
    # A reference to another definition (the steps of a repeat) is used as it is.
    base = value if "$ref" in value else _ref(f"{step.kind}.{spec.name}")
    return _leveled_schema(base) if spec.leveled else base


LEVEL_SCHEMA = {"enum": list(LEVELS), "description": "Play this step only at this --level."}


def fields_schema(spec: StepSpec) -> dict[str, Any]:
    """The long form of one step kind, ``{cycles: 4, tempo: 5}``: every field by name, with
    ``level`` and the position variants."""
    fields = {f.name: field_schema(spec, f) for f in spec.fields}
    fields["level"] = LEVEL_SCHEMA
    main = _ref(f"{spec.kind}.fields/properties/{spec.main}")
    for position in POSITIONS:
        fields[position] = {
            "anyOf": [main, _ref("step"), {"type": "null"}],
            "description": f"What this step becomes at --position {position}: a new "
            f"'{spec.main}' for it, another step, or null to leave it out.",
        }
    long_form: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if spec.one_of:
        long_form["oneOf"] = [{"required": [name]} for name in spec.one_of]
    long_form["properties"] = fields
    return long_form


def step_schema(spec: StepSpec) -> dict[str, Any]:
    """The schema of one step kind: the short form and the long form, nested or beside, each
    field a reference to the long form's (``#/definitions/<kind>.fields``)."""
    names = [*spec.field_names, *COMMON_FIELDS]
    beside = {name: _ref(f"{spec.kind}.fields/properties/{name}") for name in names}
    forms = [beside[spec.main], _ref(f"{spec.kind}.fields")]
    forms += [{"type": "null"}] if spec.bare else []
    return {
        "type": "object",
        "required": [spec.kind],
        "additionalProperties": False,
        "description": _sentence(spec.doc),
        "properties": {spec.kind: {"anyOf": forms}, **beside},
    }


def steps_schema() -> dict[str, Any]:
    """The ``definitions`` for ``steps``, ``step`` and each kind: ``sayStep`` (the step as
    written), ``say.fields`` (its long form) and ``say.text``, ... (one value of each field)."""
    bare = [spec.kind for spec in STEP_SPECS if spec.bare]
    definitions: dict[str, Any] = {
        "steps": {"type": "array", "minItems": 1, "items": _ref("step")},
        "step": {"anyOf": [{"enum": bare}, *(_ref(f"{spec.kind}Step") for spec in STEP_SPECS)]},
    }
    for spec in STEP_SPECS:
        definitions[f"{spec.kind}Step"] = step_schema(spec)
        definitions[f"{spec.kind}.fields"] = fields_schema(spec)
        for f in spec.fields:
            value = value_schema(spec, f)
            if "$ref" not in value:
                definitions[f"{spec.kind}.{f.name}"] = value
    return definitions


def steps_table() -> str:
    """docs/routines.md's step table: every field of every kind, its long form and limits."""
    rows = ["| step | field | meaning | values |", "|---|---|---|---|"]
    for spec in STEP_SPECS:
        for index, f in enumerate(spec.fields):
            step = f"`{spec.kind}`: {spec.doc}" if index == 0 else ""
            name = f"`{f.name}`"
            if f.name == spec.main:
                name += f" (short form: `- {spec.kind}: ...`)"
            values = "; ".join(field_values(spec, f, leveled=True))
            rows.append(f"| {step} | {name} | {f.doc} | {values} |")
    rows.append("| every step | `level` | play the step only at this level | `gentle` or `full` |")
    rows.append(
        "| every step | `standing`, `seated`, `lying` | what the step becomes in that "
        "`--position` | the main field's value (the words, for `say`: its other fields are "
        "kept), another step (`{move: ...}`), or `null` to leave it out |"
    )
    return "\n".join(rows) + "\n"


def field_values(step: StepSpec, spec: FieldSpec, *, leveled: bool) -> list[str]:
    """The values a field takes, in words: its limits, whether it is required or its default,
    and (with ``leveled``) whether it takes a value per level."""
    values = [spec.value.limits()]
    if spec.required:
        values.append("required")
    elif step.one_of and spec.name in step.one_of:
        others = " or ".join(f"`{n}`" for n in step.one_of if n != spec.name)
        values.append(f"this or {others}")
    elif spec.default not in (None, ()):
        values.append(f"default {_default(spec.default)}")
    if leveled and spec.leveled:
        values.append("or `{gentle: a, full: b}`")
    return values


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sentence(text: str) -> str:
    text = text.replace("`", "'")
    return text[:1].upper() + text[1:] + "."
