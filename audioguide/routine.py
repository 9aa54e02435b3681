"""Routine stage: a YAML routine file in, a validated, frozen Routine out.

Validation happens while walking the YAML node tree, so every error names the file, the line
and the field, e.g. ``my.yaml:14: sections[0].steps[2].pause: must be a number of seconds
>= 0 (got -3)``. YAML is loaded with PyYAML's safe loader: no object construction.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import yaml

from .breath import (
    CUE_PHASES,
    MAX_BREATHS_PER_MIN,
    MIN_BREATHS_PER_MIN,
    BreathPattern,
    check_cycle_s,
    parse_pattern,
)
from .errors import RoutineError

T = TypeVar("T")

DEFAULT_SAY_PAUSE_S = 1.5
DEFAULT_BELL_RING_S = 8.0
DEFAULT_CUE_CYCLES = 2
LEVELS = ("gentle", "full")
DEFAULT_LEVEL = "gentle"  # the advice for a first session: start slowly
MIN_MOVES_PER_MIN = 4.0
MAX_MOVES_PER_MIN = 120.0
DEFAULT_MOVES_PER_MIN = 40.0  # slow walking steps, one every 1.5 s
MOVE_SOUNDS = ("tick", "count", "none")
DEFAULT_MOVE_SOUND = "tick"
AMBIENT_KINDS = ("none", "pink", "brown", "drone")  # or a sound file; synthesized in synth.py
DEFAULT_COUNT_TO = 8
DEFAULT_ARTIST = "audioguide"
MAX_TEXT_CHARS = 1000
MAX_FILE_BYTES = 1_000_000
MAX_NODES = 50_000
MAX_DEPTH = 40

# ---------------------------------------------------------------------------------------------
# The model


Overrides: TypeAlias = tuple[tuple[str, Any], ...]
"""``(field, value)`` pairs a step takes at ``--level full``; its plain fields are the gentle
values. ``level`` on a step, when set, keeps the step at that level only."""


@dataclass(frozen=True)
class Say:
    """A spoken cue, followed by ``pause_s`` of quiet."""

    text: str
    pause_s: float = DEFAULT_SAY_PAUSE_S
    line: int = 0
    level: str | None = None
    full: Overrides = ()


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
    bell_every_min: float | None = None
    bells_at_min: tuple[float, ...] = ()


@dataclass(frozen=True)
class Bell:
    """A singing-bowl strike left to ring for ``ring_s``."""

    ring_s: float = DEFAULT_BELL_RING_S
    line: int = 0
    level: str | None = None
    full: Overrides = ()


@dataclass(frozen=True)
class Breathe:
    """Paced breathing: ``cycles`` breaths, or as many as fit in ``minutes``.

    ``cues`` maps a phase (inhale, top-up, hold, exhale, rest) to the words spoken as it
    starts; they are spoken on the first ``cue_cycles`` cycles and then every ``cue_every``
    cycles (0: not again). ``pattern`` and ``breaths_per_min`` override the routine's for this
    part.
    """

    cycles: int | None = None
    minutes: float | None = None
    pattern: BreathPattern | None = None
    breaths_per_min: float | None = None
    cues: tuple[tuple[str, str], ...] = ()
    cue_cycles: int = DEFAULT_CUE_CYCLES
    cue_every: int = 0
    time_left: bool = True
    line: int = 0
    level: str | None = None
    full: Overrides = ()
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


Step: TypeAlias = Say | Pause | Bell | Breathe | Repeat | Move


@dataclass(frozen=True)
class Section:
    """A part of the session; it becomes one track, titled ``title``."""

    title: str
    steps: tuple[Step, ...]
    line: int = 0
    safety: bool = False
    spoken_title: str | None = None
    level: str | None = None
    ambient: str | None = None  # this section's bed (a kind or a sound file); None: the routine's

    @property
    def spoken_name(self) -> str:
        """How the section is named aloud, e.g. in a "next" announcement."""
        return self.spoken_title or self.title


@dataclass(frozen=True)
class Routine:
    """A whole routine as loaded from ``source`` (a path, or ``builtin:<name>``)."""

    name: str
    title: str
    sections: tuple[Section, ...]
    description: str = ""
    artist: str = DEFAULT_ARTIST
    breaths_per_min: float | None = None
    pattern: BreathPattern | None = None
    source: str = ""
    moves_per_min: float | None = None
    move_sound: str = DEFAULT_MOVE_SOUND
    announce_next: bool = False
    announce_time_left: bool = False
    # ``sounds:`` in the routine: the ambient bed of every section that sets none (a kind or a
    # sound file path, resolved from the routine's folder), and a sound file for the bells.
    ambient: str | None = None
    bell_sound: str | None = None


# ---------------------------------------------------------------------------------------------
# Built-in routines


def builtin_names() -> list[str]:
    """Names of the routines shipped inside the package, sorted."""
    folder = resources.files("audioguide") / "routines"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def find_routine(name_or_path: str) -> tuple[str, str]:
    """Resolve a built-in name or a file path to ``(source label, YAML text)``.

    Raises RoutineError listing the built-ins when neither exists.
    """
    path = Path(name_or_path)
    looks_like_path = path.suffix.lower() in (".yaml", ".yml") or "/" in name_or_path
    if looks_like_path or path.is_file():
        if not path.is_file():
            raise RoutineError(
                "no such file; check the path, or give a built-in routine name "
                f"({', '.join(builtin_names())})",
                path=name_or_path,
            )
        return str(path), _read_text(path)
    names = builtin_names()
    if name_or_path in names:
        res = resources.files("audioguide") / "routines" / f"{name_or_path}.yaml"
        return f"{name_or_path}.yaml", res.read_text(encoding="utf-8")
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RoutineError(
        f"unknown routine {name_or_path!r}.{hint} Built-in routines: {', '.join(names)}; "
        "or give the path of a .yaml file"
    )


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RoutineError(
                f"file is {size:,} bytes; a routine is at most {MAX_FILE_BYTES:,}", path=str(path)
            )
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RoutineError(
            f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", path=str(path)
        ) from None
    except OSError as exc:
        raise RoutineError(f"cannot read: {exc.strerror}", path=str(path)) from None


def load_routine(name_or_path: str) -> Routine:
    """Load a built-in routine by name, or a routine file by path, validated."""
    source, text = find_routine(name_or_path)
    name = Path(source).stem
    return parse_routine(text, source=source, name=name)


def parse_routine(text: str, *, source: str = "<routine>", name: str = "routine") -> Routine:
    """Parse and validate routine YAML; raise RoutineError naming source, line and field."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # checked before any parsing: no line to name yet
        raise RoutineError(
            f"character #x{exc.character:04x} at position {exc.position} is not allowed in "
            "YAML; remove it (control characters are often pasted by accident)",
            path=source,
        ) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            problem = exc.problem or exc.context or "invalid YAML"
            raise RoutineError(
                f"YAML syntax: {problem}; check indentation, colons and quotes",
                path=source,
                line=line,
            ) from None
        except yaml.YAMLError as exc:
            raise RoutineError(f"YAML syntax: {exc}", path=source) from None
        if root is None:
            raise RoutineError(
                "the file is empty; a routine needs a title and sections", path=source
            )
        _refuse_language_tags(root, source)
        routine = _Parser(loader, source, name).routine(root)
        _check_levels(routine)
        return routine
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------------------------
# Parsing YAML nodes with their positions

Node = yaml.Node


class _Parser:
    def __init__(self, loader: yaml.SafeLoader, source: str, name: str):
        self.loader = loader
        self.source = source
        self.name = name
        self.nodes_seen = 0
        self.shorthand: dict[str, tuple[str, str]] = {}

    # -- helpers -----------------------------------------------------------------------------

    def fail(self, node: Node, where: str, message: str) -> RoutineError:
        prefix = f"{where}: " if where else ""
        return RoutineError(f"{prefix}{message}", path=self.source, line=node.start_mark.line + 1)

    def optional(
        self,
        values: dict[str, Node],
        name: str,
        where: str,
        read: Callable[[Node, str], T],
        default: T,
    ) -> T:
        """``read`` the field ``name`` if the step gives it, else ``default``."""
        return read(values[name], self.field_path(where, name)) if name in values else default

    def field_path(self, where: str, name: str) -> str:
        field, written = self.shorthand.get(where, ("", ""))
        return f"{where}.{written if name == field else name}"

    def count(self, node: Node, where: str, depth: int) -> None:
        self.nodes_seen += 1
        if self.nodes_seen > MAX_NODES or depth > MAX_DEPTH:
            raise self.fail(node, where, "the routine is too large or too deeply nested")

    def mapping(
        self, node: Node, where: str, allowed: tuple[str, ...], what: str
    ) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, f"must be a mapping of {what} (key: value lines)")
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, where, "keys must be plain names")
            key = str(key_node.value)
            if key == "<<":
                raise self.fail(key_node, where, "YAML merge keys (<<) are not supported")
            if key in out:
                raise self.fail(key_node, _join(where, key), "appears twice; keep one")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(
                    key_node,
                    _join(where, key),
                    f"unknown field; {hint}{what} may have: {', '.join(allowed)}",
                )
            out[key] = (key_node, value_node)
        return out

    def scalar(self, node: Node, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
            raise self.fail(node, where, f"must be a single value, not {kind}")
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise self.fail(node, where, f"cannot read this value ({exc})") from None

    def text(self, node: Node, where: str, *, allow_empty: bool = False) -> str:
        value = self.scalar(node, where)
        if value is None or isinstance(value, bool | list | dict):
            raise self.fail(node, where, f"must be text (got {_show(value)})")
        text = " ".join(str(value).split())
        if not text and not allow_empty:
            raise self.fail(node, where, "must not be empty")
        if len(text) > MAX_TEXT_CHARS:
            raise self.fail(
                node, where, f"is {len(text)} characters; keep it under {MAX_TEXT_CHARS}"
            )
        return text

    def number(
        self, node: Node, where: str, low: float, high: float, unit: str, *, low_open: bool = False
    ) -> float:
        value = self.scalar(node, where)
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        rule = f"must be a number of {unit} {bound} and <= {high:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(node, where, f"{rule} (got {_show(value)})")
        number = float(value)
        if number != number or (low_open and number <= low) or number < low or number > high:
            raise self.fail(node, where, f"{rule} (got {value})")
        return number

    def integer(self, node: Node, where: str, low: int, high: int, unit: str) -> int:
        value = self.scalar(node, where)
        rule = f"must be a whole number of {unit} from {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(node, where, f"{rule} (got {_show(value)})")
        if not (low <= value <= high):
            raise self.fail(node, where, f"{rule} (got {value})")
        return value

    def pattern(self, node: Node, where: str, absolute: bool) -> BreathPattern:
        value = self.scalar(node, where)
        if isinstance(value, bool) or value is None:
            raise self.fail(node, where, f"must be a breath pattern like 4-6 (got {_show(value)})")
        try:
            pattern = parse_pattern(str(value))
            if absolute:
                check_cycle_s(pattern)
        except ValueError as exc:
            raise self.fail(node, where, str(exc)) from None
        return pattern

    def tempo(self, node: Node, where: str) -> float:
        return self.number(
            node, where, MIN_BREATHS_PER_MIN, MAX_BREATHS_PER_MIN, "breaths per minute"
        )

    def move_tempo(self, node: Node, where: str) -> float:
        return self.number(
            node, where, MIN_MOVES_PER_MIN, MAX_MOVES_PER_MIN, "movements per minute"
        )

    def flag(self, node: Node, where: str) -> bool:
        value = self.scalar(node, where)
        if not isinstance(value, bool):
            raise self.fail(node, where, f"must be true or false (got {_show(value)})")
        return value

    def choice(self, node: Node, where: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, where)
        if not isinstance(value, str) or value not in choices:
            raise self.fail(
                node, where, f"must be one of {', '.join(choices)} (got {_show(value)})"
            )
        return value

    def by_level(self, node: Node, where: str, read: Callable[[Node, str], T]) -> tuple[T, T]:
        """A value, or ``{gentle: a, full: b}``: the (gentle, full) pair."""
        if not isinstance(node, yaml.MappingNode):
            value = read(node, where)
            return value, value
        fields = self.mapping(node, where, LEVELS, "values by level (gentle: and full:)")
        for level in LEVELS:
            if level not in fields:
                raise self.fail(
                    node, f"{where}.{level}", "missing; give a value for both gentle: and full:"
                )
        return (
            read(fields["gentle"][1], f"{where}.gentle"),
            read(fields["full"][1], f"{where}.full"),
        )

    def sequence(self, node: Node, where: str, what: str) -> list[Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, where, f"must be a list of {what} (lines starting with '- ')")
        if not node.value:
            raise self.fail(node, where, f"must list at least one of {what}")
        return list(node.value)

    # -- the routine ---------------------------------------------------------------------------

    def routine(self, root: Node) -> Routine:
        fields = self.mapping(
            root,
            "",
            ROUTINE_FIELDS,
            "a routine",
        )
        if "title" not in fields:
            raise self.fail(root, "title", "missing; every routine needs a title")
        if "sections" not in fields:
            raise self.fail(root, "sections", "missing; list the parts of the session")
        title = self.text(fields["title"][1], "title")
        description = ""
        if "description" in fields:
            description = self.text(fields["description"][1], "description", allow_empty=True)
        artist = DEFAULT_ARTIST
        if "artist" in fields:
            artist = self.text(fields["artist"][1], "artist")
        tempo: float | None = None
        pattern: BreathPattern | None = None
        if "breath" in fields:
            breath = self.mapping(
                fields["breath"][1], "breath", ("tempo", "pattern"), "the breath settings"
            )
            if "tempo" in breath:
                tempo = self.tempo(breath["tempo"][1], "breath.tempo")
            if "pattern" in breath:
                pattern = self.pattern(breath["pattern"][1], "breath.pattern", tempo is None)
        moves_per_min: float | None = None
        move_sound = DEFAULT_MOVE_SOUND
        if "move" in fields:
            move = self.mapping(
                fields["move"][1], "move", ("tempo", "sound"), "the movement settings"
            )
            if "tempo" in move:
                moves_per_min = self.move_tempo(move["tempo"][1], "move.tempo")
            if "sound" in move:
                move_sound = self.choice(move["sound"][1], "move.sound", MOVE_SOUNDS)
        # Off unless asked for: a routine speaks only its author's words by default.
        announce = {"next": False, "time_left": False}
        if "announce" in fields:
            switches = self.mapping(
                fields["announce"][1], "announce", tuple(announce), "the announcements"
            )
            for key, (_, value_node) in switches.items():
                announce[key] = self.flag(value_node, f"announce.{key}")
        ambient = bell_sound = None
        if "sounds" in fields:
            sounds = self.mapping(
                fields["sounds"][1], "sounds", ("ambient", "bell"), "the sound settings"
            )
            if "ambient" in sounds:
                ambient = self.ambient(sounds["ambient"][1], "sounds.ambient")
            if "bell" in sounds:
                bell_sound = self.sound_file(sounds["bell"][1], "sounds.bell")
        sections = tuple(
            self.section(node, f"sections[{i}]")
            for i, node in enumerate(self.sequence(fields["sections"][1], "sections", "sections"))
        )
        return Routine(
            name=self.name,
            title=title,
            sections=sections,
            description=description,
            artist=artist,
            breaths_per_min=tempo,
            pattern=pattern,
            source=self.source,
            moves_per_min=moves_per_min,
            move_sound=move_sound,
            announce_next=announce["next"],
            announce_time_left=announce["time_left"],
            ambient=ambient,
            bell_sound=bell_sound,
        )

    def section(self, node: Node, where: str) -> Section:
        self.count(node, where, 1)
        fields = self.mapping(
            node,
            where,
            SECTION_FIELDS,
            "a section",
        )
        if "title" not in fields:
            raise self.fail(node, f"{where}.title", "missing; the title names the track")
        if "steps" not in fields:
            raise self.fail(node, f"{where}.steps", "missing; list what happens in this part")
        title = self.text(fields["title"][1], f"{where}.title")
        steps = self.steps(fields["steps"][1], f"{where}.steps", depth=2)
        spoken_title = None
        if "spoken_title" in fields:
            spoken_title = self.text(fields["spoken_title"][1], f"{where}.spoken_title")
        safety = False
        if "safety" in fields:
            safety = self.flag(fields["safety"][1], f"{where}.safety")
        level = None
        if "level" in fields:
            level = self.choice(fields["level"][1], f"{where}.level", LEVELS)
        ambient = None
        if "ambient" in fields:
            ambient = self.ambient(fields["ambient"][1], f"{where}.ambient")
        return Section(
            title=title,
            steps=steps,
            line=node.start_mark.line + 1,
            safety=safety,
            spoken_title=spoken_title,
            level=level,
            ambient=ambient,
        )

    # -- sounds (ambient beds, bell files, interval bells) ---------------------------------------

    def sound_file(self, node: Node, where: str) -> str:
        """A sound file path, relative to the routine's folder; it must exist."""
        value = self.text(node, where)
        source = Path(self.source)
        base = source.parent if source.is_file() else Path(str(resources.files("audioguide")))
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise self.fail(
                node,
                where,
                f"no sound file {value!r} (looked for {path}); give a path relative to the "
                "routine file, or an absolute one",
            )
        return str(path)

    def ambient(self, node: Node, where: str) -> str:
        """An ambient bed: a kind, or a sound file to loop."""
        value = self.text(node, where)
        if value in AMBIENT_KINDS:
            return value
        if "." not in Path(value).name:
            close = difflib.get_close_matches(value, AMBIENT_KINDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.fail(
                node,
                where,
                f"unknown ambient {value!r}; {hint}use one of {', '.join(AMBIENT_KINDS)} "
                "or the path of a sound file",
            )
        return self.sound_file(node, where)

    def interval_bells(self, values: dict[str, Node], where: str) -> dict[str, Any]:
        """``bell_every`` (minutes) and ``bells_at`` (a list of minutes) of a long part."""
        found: dict[str, Any] = {}
        if "bell_every" in values:
            found["bell_every_min"] = self.number(
                values["bell_every"], f"{where}.bell_every", 0.5, 120, "minutes"
            )
        if "bells_at" in values:
            node = values["bells_at"]
            items = self.sequence(node, f"{where}.bells_at", "minutes")
            found["bells_at_min"] = tuple(
                sorted(
                    self.number(item, f"{where}.bells_at[{i}]", 0, 120, "minutes", low_open=True)
                    for i, item in enumerate(items)
                )
            )
        return found

    def steps(self, node: Node, where: str, depth: int) -> tuple[Step, ...]:
        items = self.sequence(node, where, "steps")
        return tuple(self.step(item, f"{where}[{i}]", depth) for i, item in enumerate(items))

    def step(self, node: Node, where: str, depth: int) -> Step:
        self.count(node, where, depth)
        if isinstance(node, yaml.ScalarNode) and node.value in STEP_KINDS:
            return self.step_fields(node.value, node, {}, where, depth)
        if not isinstance(node, yaml.MappingNode) or not node.value:
            raise self.fail(
                node, where, f"must be a step such as '- say: Hello' ({', '.join(STEP_KINDS)})"
            )
        first_key = node.value[0][0]
        kind = str(first_key.value) if isinstance(first_key, yaml.ScalarNode) else ""
        if kind not in STEP_KINDS:
            close = difflib.get_close_matches(kind, STEP_KINDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.fail(
                first_key,
                where,
                f"unknown step kind {kind!r}; {hint}a step starts with one of: "
                f"{', '.join(STEP_KINDS)}",
            )
        allowed = (kind, *STEP_FIELDS[kind], *COMMON_FIELDS)
        fields = self.mapping(node, where, allowed, f"a {kind} step")
        _, main = fields.pop(kind)
        values: dict[str, Node] = {}
        if isinstance(main, yaml.MappingNode) and not _is_by_level(main):
            nested = self.mapping(
                main, f"{where}.{kind}", (*STEP_FIELDS[kind], *COMMON_FIELDS), f"a {kind} step"
            )
            values.update({k: v for k, (_, v) in nested.items()})
        elif not (isinstance(main, yaml.ScalarNode) and main.tag.endswith(":null")):
            values[MAIN_FIELD[kind]] = main
            # Written as `- pause: 3`: a mistake in it is reported as `.pause`, as written.
            self.shorthand[where] = (MAIN_FIELD[kind], kind)
        for key, (key_node, value_node) in fields.items():
            if key in values:
                raise self.fail(key_node, f"{where}.{key}", "given twice; keep one")
            values[key] = value_node
        return self.step_fields(kind, node, values, where, depth)

    def step_fields(
        self, kind: str, node: Node, values: dict[str, Node], where: str, depth: int
    ) -> Step:
        line = node.start_mark.line + 1
        full: list[tuple[str, Any]] = []

        def at(name: str) -> str:
            return self.field_path(where, name)

        def need(name: str, what: str) -> Node:
            if name not in values:
                raise self.fail(node, at(name), f"missing; a {kind} step needs {what}")
            return values[name]

        def leveled(name: str, attr: str, read: Callable[[Node, str], T], default: T) -> T:
            """The gentle value of a field that may differ by level; the full one is noted."""
            if name not in values:
                return default
            gentle, at_full = self.by_level(values[name], at(name), read)
            if at_full != gentle:
                full.append((attr, at_full))
            return gentle

        def seconds(
            low: float, high: float, low_open: bool = False
        ) -> Callable[[Node, str], float]:
            return lambda n, w: self.number(n, w, low, high, "seconds", low_open=low_open)

        level = None
        if "level" in values:
            level = self.choice(values["level"], at("level"), LEVELS)

        step: Step
        if kind == "say":
            text = self.text(need("text", "the words to speak"), at("text"))
            pause = leveled("pause", "pause_s", seconds(0, 600), DEFAULT_SAY_PAUSE_S)
            step = Say(text=text, pause_s=pause, line=line)
        elif kind == "pause":
            need("seconds", "a length in seconds")
            duration = leveled("seconds", "duration_s", seconds(0, 3600, low_open=True), 0.0)
            step = Pause(duration_s=duration, line=line, **self.interval_bells(values, where))
        elif kind == "bell":
            ring = leveled("ring", "ring_s", seconds(2, 60), DEFAULT_BELL_RING_S)
            step = Bell(ring_s=ring, line=line)
        elif kind == "breathe":
            step = self.breathe(node, values, where, line, leveled)
        elif kind == "repeat":
            need("times", "a number of times")
            times = leveled("times", "times", lambda n, w: self.integer(n, w, 1, 100, "times"), 1)
            steps = self.steps(need("steps", "steps to repeat"), at("steps"), depth + 1)
            step = Repeat(times=times, steps=steps, line=line)
        elif kind == "move":
            step = self.move(node, values, where, line, leveled, need)
        else:  # pragma: no cover - STEP_KINDS and this list agree
            raise AssertionError(kind)
        return replace(step, level=level, full=tuple(full))

    def breathe(
        self,
        node: Node,
        values: dict[str, Node],
        where: str,
        line: int,
        leveled: Callable[[str, str, Callable[[Node, str], Any], Any], Any],
    ) -> Breathe:
        def at(name: str) -> str:
            return self.field_path(where, name)

        if ("cycles" in values) == ("minutes" in values):
            raise self.fail(
                node, where, "a breathe step needs exactly one of cycles: N or minutes: M"
            )
        cycles = leveled(
            "cycles", "cycles", lambda n, w: self.integer(n, w, 1, 1000, "breath cycles"), None
        )
        minutes = leveled(
            "minutes",
            "minutes",
            lambda n, w: self.number(n, w, 0, 120, "minutes", low_open=True),
            None,
        )
        tempo = self.optional(values, "tempo", where, self.tempo, None)
        pattern = self.optional(
            values, "pattern", where, lambda n, w: self.pattern(n, w, False), None
        )
        cues: list[tuple[str, str]] = []
        if "cues" in values:
            cue_fields = self.mapping(values["cues"], at("cues"), CUE_PHASES, "breath cues")
            for phase in CUE_PHASES:
                if phase in cue_fields:
                    cues.append((phase, self.text(cue_fields[phase][1], at(f"cues.{phase}"))))

        def cycle_count(node: Node, where: str) -> int:
            return self.integer(node, where, 0, 1000, "cycles")

        cue_cycles = self.optional(values, "cue_cycles", where, cycle_count, DEFAULT_CUE_CYCLES)
        cue_every = self.optional(values, "cue_every", where, cycle_count, 0)
        time_left = self.optional(values, "time_left", where, self.flag, True)
        return Breathe(
            cycles=cycles,
            minutes=minutes,
            pattern=pattern,
            breaths_per_min=tempo,
            cues=tuple(cues),
            cue_cycles=cue_cycles,
            cue_every=cue_every,
            time_left=time_left,
            line=line,
            **self.interval_bells(values, where),
        )

    def move(
        self,
        node: Node,
        values: dict[str, Node],
        where: str,
        line: int,
        leveled: Callable[[str, str, Callable[[Node, str], Any], Any], Any],
        need: Callable[[str, str], Node],
    ) -> Move:
        need("count", "a number of movements")
        count = leveled(
            "count", "count", lambda n, w: self.integer(n, w, 1, 10_000, "movements"), 1
        )
        tempo = self.optional(values, "tempo", where, self.move_tempo, None)
        sound = self.optional(
            values, "sound", where, lambda n, w: self.choice(n, w, MOVE_SOUNDS), None
        )
        count_to = self.optional(
            values,
            "count_to",
            where,
            lambda n, w: self.integer(n, w, 1, len(COUNT_WORDS), ""),
            DEFAULT_COUNT_TO,
        )
        time_left = self.optional(values, "time_left", where, self.flag, True)
        return Move(
            count=count,
            moves_per_min=tempo,
            sound=sound,
            count_to=count_to,
            time_left=time_left,
            line=line,
        )


STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "say": ("text", "pause"),
    "pause": ("seconds", "bell_every", "bells_at"),
    "bell": ("ring",),
    "breathe": (
        "cycles",
        "minutes",
        "pattern",
        "tempo",
        "cues",
        "cue_cycles",
        "cue_every",
        "time_left",
        "bell_every",
        "bells_at",
    ),
    "repeat": ("times", "steps"),
    "move": ("count", "tempo", "sound", "count_to", "time_left"),
}
COMMON_FIELDS = ("level",)
ROUTINE_FIELDS = (
    "title",
    "description",
    "artist",
    "breath",
    "move",
    "announce",
    "sounds",
    "sections",
)
SECTION_FIELDS = ("title", "spoken_title", "safety", "level", "ambient", "steps")
MAIN_FIELD = {
    "say": "text",
    "pause": "seconds",
    "bell": "ring",
    "breathe": "cycles",
    "repeat": "times",
    "move": "count",
}
STEP_KINDS = tuple(STEP_FIELDS)


COUNT_WORDS = (
    "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten",
    "Eleven", "Twelve",
)  # fmt: skip


def _is_by_level(node: Node) -> bool:
    """Whether a mapping is ``{gentle: .., full: ..}`` rather than a step's own fields."""
    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    return bool(keys) and all(k in LEVELS for k in keys)


_LANGUAGE_TAG = "tag:yaml.org,2002:python/"


def _refuse_language_tags(root: Node, source: str) -> None:
    """Refuse ``!!python/...`` tags by name. The safe loader would never construct them, but
    its own message quotes the YAML back over several lines."""
    stack = [root]
    seen: set[int] = set()  # aliases can share a node, or make it contain itself
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag.startswith(_LANGUAGE_TAG):
            tag = "!!" + node.tag[len("tag:yaml.org,2002:") :]
            raise RoutineError(
                f"{tag.split(':')[0]}: tags that build Python objects are not allowed; "
                "a routine is plain text, numbers, lists and mappings",
                path=source,
                line=node.start_mark.line + 1,
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(value)
    return f"{type(value).__name__} {value!r}"


def walk_steps(steps: tuple[Step, ...], visit: Callable[[Step], None]) -> None:
    """Call ``visit`` on every step, descending into repeats."""
    for step in steps:
        visit(step)
        if isinstance(step, Repeat):
            walk_steps(step.steps, visit)


def at_level(routine: Routine, level: str) -> Routine:
    """The routine as played at ``level``: steps and sections for other levels dropped, and
    each step's values for that level in place (the plain values are the gentle ones)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")

    def steps_at(steps: tuple[Step, ...]) -> tuple[Step, ...]:
        kept: list[Step] = []
        for step in steps:
            if step.level not in (None, level):
                continue
            changes: dict[str, Any] = dict(step.full) if level == "full" else {}
            if isinstance(step, Repeat):
                changes["steps"] = steps_at(step.steps)
            kept.append(replace(step, level=None, full=(), **changes))
        return tuple(kept)

    sections = tuple(
        replace(section, steps=steps_at(section.steps), level=None)
        for section in routine.sections
        if section.level in (None, level)
    )
    return replace(routine, sections=sections)


def _check_levels(routine: Routine) -> None:
    """Raise RoutineError where a level would leave a routine, section or repeat empty."""
    for level in LEVELS:
        played = at_level(routine, level)
        if not played.sections:
            raise RoutineError(
                f"sections: every section is for another level; at --level {level} nothing "
                "would play. Remove a section's level: field",
                path=routine.source,
            )

        def check(steps: tuple[Step, ...], line: int, what: str, level: str = level) -> None:
            if not steps:
                raise RoutineError(
                    f"{what} has no steps at --level {level}; give it a step without a "
                    "level: field",
                    path=routine.source,
                    line=line,
                )
            for step in steps:
                if isinstance(step, Repeat):
                    check(step.steps, step.line, "this repeat")

        for section in played.sections:
            check(section.steps, section.line, f"section {section.title!r}")
