"""Routine stage: a YAML routine file in, a validated, frozen Routine out.

Validation happens while walking the YAML node tree, so every error names the file, the line
and the field, e.g. ``my.yaml:14: sections[0].steps[2].pause: must be a number of seconds
>= 0 (got -3)``. YAML is loaded with PyYAML's safe loader: no object construction.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from .breath import (
    MAX_BREATHS_PER_MIN,
    MIN_BREATHS_PER_MIN,
    PHASES,
    BreathPattern,
    check_cycle_s,
    parse_pattern,
)
from .errors import RoutineError

DEFAULT_SAY_PAUSE_S = 1.5
DEFAULT_BELL_RING_S = 8.0
DEFAULT_CUE_CYCLES = 2
DEFAULT_ARTIST = "audioguide"
MAX_TEXT_CHARS = 1000
MAX_FILE_BYTES = 1_000_000
MAX_NODES = 50_000
MAX_DEPTH = 40

# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Say:
    """A spoken cue, followed by ``pause_s`` of quiet."""

    text: str
    pause_s: float = DEFAULT_SAY_PAUSE_S
    line: int = 0


@dataclass(frozen=True)
class Pause:
    """Quiet (or ambient only) for ``duration_s``."""

    duration_s: float
    line: int = 0


@dataclass(frozen=True)
class Bell:
    """A singing-bowl strike left to ring for ``ring_s``."""

    ring_s: float = DEFAULT_BELL_RING_S
    line: int = 0


@dataclass(frozen=True)
class Breathe:
    """Paced breathing: ``cycles`` breaths, or as many as fit in ``minutes``.

    ``cues`` maps a phase (inhale, hold, exhale, rest) to the words spoken as it starts; they
    are spoken on the first ``cue_cycles`` cycles and then every ``cue_every`` cycles (0: not
    again). ``pattern`` and ``breaths_per_min`` override the routine's for this part.
    """

    cycles: int | None = None
    minutes: float | None = None
    pattern: BreathPattern | None = None
    breaths_per_min: float | None = None
    cues: tuple[tuple[str, str], ...] = ()
    cue_cycles: int = DEFAULT_CUE_CYCLES
    cue_every: int = 0
    line: int = 0


@dataclass(frozen=True)
class Repeat:
    """The nested ``steps``, ``times`` times over."""

    times: int
    steps: tuple[Step, ...]
    line: int = 0


Step: TypeAlias = Say | Pause | Bell | Breathe | Repeat


@dataclass(frozen=True)
class Section:
    """A part of the session; it becomes one track, titled ``title``."""

    title: str
    steps: tuple[Step, ...]
    line: int = 0


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
    loader = yaml.SafeLoader(text)
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
        return _Parser(loader, source, name).routine(root)
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

    # -- helpers -----------------------------------------------------------------------------

    def fail(self, node: Node, where: str, message: str) -> RoutineError:
        prefix = f"{where}: " if where else ""
        return RoutineError(f"{prefix}{message}", path=self.source, line=node.start_mark.line + 1)

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
            ("title", "description", "artist", "breath", "sections"),
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
        )

    def section(self, node: Node, where: str) -> Section:
        self.count(node, where, 1)
        fields = self.mapping(node, where, ("title", "steps"), "a section")
        if "title" not in fields:
            raise self.fail(node, f"{where}.title", "missing; the title names the track")
        if "steps" not in fields:
            raise self.fail(node, f"{where}.steps", "missing; list what happens in this part")
        title = self.text(fields["title"][1], f"{where}.title")
        steps = self.steps(fields["steps"][1], f"{where}.steps", depth=2)
        return Section(title=title, steps=steps, line=node.start_mark.line + 1)

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
        allowed = (kind, *STEP_FIELDS[kind])
        fields = self.mapping(node, where, allowed, f"a {kind} step")
        _, main = fields.pop(kind)
        values: dict[str, Node] = {}
        if isinstance(main, yaml.MappingNode):
            nested = self.mapping(main, f"{where}.{kind}", STEP_FIELDS[kind], f"a {kind} step")
            values.update({k: v for k, (_, v) in nested.items()})
        elif not (isinstance(main, yaml.ScalarNode) and main.tag.endswith(":null")):
            values[MAIN_FIELD[kind]] = main
        for key, (key_node, value_node) in fields.items():
            if key in values:
                raise self.fail(key_node, f"{where}.{key}", "given twice; keep one")
            values[key] = value_node
        return self.step_fields(kind, node, values, where, depth)

    def step_fields(
        self, kind: str, node: Node, values: dict[str, Node], where: str, depth: int
    ) -> Step:
        line = node.start_mark.line + 1

        def at(name: str) -> str:
            return f"{where}.{name}"

        def need(name: str, what: str) -> Node:
            if name not in values:
                raise self.fail(node, at(name), f"missing; a {kind} step needs {what}")
            return values[name]

        if kind == "say":
            text = self.text(need("text", "the words to speak"), at("text"))
            pause = DEFAULT_SAY_PAUSE_S
            if "pause" in values:
                pause = self.number(values["pause"], at("pause"), 0, 600, "seconds")
            return Say(text=text, pause_s=pause, line=line)
        if kind == "pause":
            seconds = self.number(
                need("seconds", "a length in seconds"),
                at("seconds"),
                0,
                3600,
                "seconds",
                low_open=True,
            )
            return Pause(duration_s=seconds, line=line)
        if kind == "bell":
            ring = DEFAULT_BELL_RING_S
            if "ring" in values:
                ring = self.number(values["ring"], at("ring"), 2, 60, "seconds")
            return Bell(ring_s=ring, line=line)
        if kind == "breathe":
            return self.breathe(node, values, where, line)
        if kind == "repeat":
            times = self.integer(need("times", "a number of times"), at("times"), 1, 100, "times")
            steps = self.steps(need("steps", "steps to repeat"), at("steps"), depth + 1)
            return Repeat(times=times, steps=steps, line=line)
        raise AssertionError(kind)  # pragma: no cover - STEP_KINDS and this list agree

    def breathe(self, node: Node, values: dict[str, Node], where: str, line: int) -> Breathe:
        def at(name: str) -> str:
            return f"{where}.{name}"

        if ("cycles" in values) == ("minutes" in values):
            raise self.fail(
                node, where, "a breathe step needs exactly one of cycles: N or minutes: M"
            )
        cycles = minutes = None
        if "cycles" in values:
            cycles = self.integer(values["cycles"], at("cycles"), 1, 1000, "breath cycles")
        if "minutes" in values:
            minutes = self.number(
                values["minutes"], at("minutes"), 0, 120, "minutes", low_open=True
            )
        tempo = self.tempo(values["tempo"], at("tempo")) if "tempo" in values else None
        pattern = None
        if "pattern" in values:
            pattern = self.pattern(values["pattern"], at("pattern"), False)
        cues: list[tuple[str, str]] = []
        if "cues" in values:
            cue_fields = self.mapping(values["cues"], at("cues"), PHASES, "breath cues")
            for phase in PHASES:
                if phase in cue_fields:
                    cues.append((phase, self.text(cue_fields[phase][1], at(f"cues.{phase}"))))
        cue_cycles = DEFAULT_CUE_CYCLES
        if "cue_cycles" in values:
            cue_cycles = self.integer(values["cue_cycles"], at("cue_cycles"), 0, 1000, "cycles")
        cue_every = 0
        if "cue_every" in values:
            cue_every = self.integer(values["cue_every"], at("cue_every"), 0, 1000, "cycles")
        return Breathe(
            cycles=cycles,
            minutes=minutes,
            pattern=pattern,
            breaths_per_min=tempo,
            cues=tuple(cues),
            cue_cycles=cue_cycles,
            cue_every=cue_every,
            line=line,
        )


STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "say": ("text", "pause"),
    "pause": ("seconds",),
    "bell": ("ring",),
    "breathe": ("cycles", "minutes", "pattern", "tempo", "cues", "cue_cycles", "cue_every"),
    "repeat": ("times", "steps"),
}
MAIN_FIELD = {
    "say": "text",
    "pause": "seconds",
    "bell": "ring",
    "breathe": "cycles",
    "repeat": "times",
}
STEP_KINDS = tuple(STEP_FIELDS)


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
