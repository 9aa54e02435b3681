"""Routine stage: a YAML routine file in, a validated, frozen Routine out.

Validation happens while walking the YAML node tree, so every error names the file, the line
and the field, e.g. ``my.yaml:14: sections[0].steps[2].pause: must be a number of seconds
>= 0 (got -3)``. YAML is loaded with PyYAML's safe loader: no object construction. The generic
node readers are in yaml_nodes.py; each step kind's fields are read as its spec in steps.py
says.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .breath import BreathPattern, Tempo
from .errors import OptionError, RoutineError
from .steps import (
    COMMON_FIELDS,
    DEFAULT_BELL_RING_S,
    DEFAULT_COUNT_TO,
    DEFAULT_CUE_CYCLES,
    DEFAULT_MOVE_SOUND,
    DEFAULT_MOVES_PER_MIN,
    DEFAULT_POSITION,
    DEFAULT_SAY_PAUSE_S,
    MAIN_FIELD,
    MAX_MOVES_PER_MIN,
    MIN_MOVES_PER_MIN,
    MOVE_SOUNDS,
    MOVES_PER_MIN,
    POSITIONS,
    SPECS,
    STEP_FIELDS,
    STEP_KINDS,
    Bell,
    Breathe,
    BreathTempo,
    Context,
    Move,
    Overrides,
    Pattern,
    Pause,
    Repeat,
    Say,
    Step,
    StepSpec,
    kind_of,
    nested_steps,
)
from .yaml_nodes import (
    LEVELS,
    MAX_DEPTH,
    MAX_NODES,
    MAX_TEXT_CHARS,
    Node,
    NodeReader,
    RoutineLoader,
    compose_with_libyaml,
    is_by_level,
    is_null,
    read_text,
    refuse_language_tags,
)

__all__ = [
    "AMBIENT_KINDS",
    "COMMON_FIELDS",
    "DEFAULT_BELL_RING_S",
    "DEFAULT_COUNT_TO",
    "DEFAULT_CUE_CYCLES",
    "DEFAULT_LEVEL",
    "DEFAULT_MOVES_PER_MIN",
    "DEFAULT_SAY_PAUSE_S",
    "LEVELS",
    "MAIN_FIELD",
    "MAX_DEPTH",
    "MAX_MOVES_PER_MIN",
    "MAX_NODES",
    "MAX_TEXT_CHARS",
    "MIN_MOVES_PER_MIN",
    "MOVE_SOUNDS",
    "POSITIONS",
    "ROUTINE_FIELDS",
    "SECTION_FIELDS",
    "STEP_FIELDS",
    "STEP_KINDS",
    "Bell",
    "Breathe",
    "Move",
    "Overrides",
    "Pause",
    "Repeat",
    "Routine",
    "RoutineMistakes",
    "Say",
    "Section",
    "Step",
    "at_level",
    "at_position",
    "builtin_names",
    "find_routine",
    "load_routine",
    "parse_routine",
    "walk_steps",
]

T = TypeVar("T")

DEFAULT_LEVEL = "gentle"  # the advice for a first session: start slowly
AMBIENT_KINDS = ("none", "pink", "brown", "drone")  # or a sound file; synthesized in synth.py
DEFAULT_ARTIST = "audioguide"
ROUTINE_FIELDS = (
    "title",
    "description",
    "artist",
    "breath",
    "move",
    "announce",
    "sounds",
    "positions",
    "pronounce",
    "sections",
)
SECTION_FIELDS = (
    "title",
    "spoken_title",
    "safety",
    "level",
    "ambient",
    "positions",
    *POSITIONS,  # the section's title (and spoken title) in that position
    "steps",
)
SECTION_TITLE_FIELDS = ("title", "spoken_title")
# The engines a routine's ``pronounce:`` can respell for (pronounce.py has a table for each).
PRONOUNCE_ENGINES = ("espeak-ng", "piper")
MAX_WORD_CHARS = 100
# Piper's own rule for phonemes in its text (piper.voice): IPA between [[ and ]], not nested.
IPA_BLOCK = re.compile(r"(\[\[.*?\]\])")

# ---------------------------------------------------------------------------------------------
# The model (the steps are in steps.py)


@dataclass(frozen=True)
class Pronunciation:
    """A word or phrase of the routine's ``pronounce:`` as its text writes it, and what each
    engine hears instead: ``(engine, respelling)`` for every engine it names."""

    word: str
    spoken: tuple[tuple[str, str], ...]
    line: int = 0


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
    positions: tuple[str, ...] | None = None  # the positions it can be done in; None: the routine's
    # (position, title, spoken title or None): what the section is called in that position,
    # e.g. "Seated Marching" where duck walking is done on a chair.
    titles: tuple[tuple[str, str, str | None], ...] = ()

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
    breaths_per_min: Tempo | None = None  # a TempoCurve spans the session's breathing
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
    # The positions the routine can be practised in (--position), its default first.
    positions: tuple[str, ...] = (DEFAULT_POSITION,)
    # ``pronounce:``: words the engines should hear respelled, beside their built-in tables.
    pronounce: tuple[Pronunciation, ...] = ()

    def bed_of(self, section: Section) -> str | None:
        """The bed ``section`` lies on as written: its own, else the routine's; None for
        none named."""
        return section.ambient or self.ambient

    def respellings(self, engine: str) -> dict[str, str]:
        """The routine's own words for ``engine`` (``espeak-ng`` or ``piper``): word to what
        that engine hears."""
        return {p.word: s for p in self.pronounce for name, s in p.spoken if name == engine}


class RoutineMistakes(RoutineError):
    """Every mistake found in one routine file; it reads as the first, and says how many more
    there are, which ``mistakes`` lists."""

    def __init__(self, mistakes: list[RoutineError]):
        first = mistakes[0]
        more = len(mistakes) - 1
        detail = first.detail
        if more:
            detail += (
                f" (and {more} more mistake{'s' if more > 1 else ''}: audioguide validate "
                "lists them all)"
            )
        super().__init__(detail, path=first.path, line=first.line)
        self.mistakes = tuple(mistakes)


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
    if looks_like_path or path.exists():
        if not path.exists():
            raise RoutineError(
                "no such file; check the path, or give a built-in routine name "
                f"({', '.join(builtin_names())})",
                path=name_or_path,
            )
        return str(path), read_text(path)
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


def load_routine(name_or_path: str) -> Routine:
    """Load a built-in routine by name, or a routine file by path, validated."""
    source, text = find_routine(name_or_path)
    name = Path(source).stem
    return parse_routine(text, source=source, name=name)


def parse_routine(text: str, *, source: str = "<routine>", name: str = "routine") -> Routine:
    """Parse and validate routine YAML; raise RoutineError naming source, line and field."""
    loader = _loader(text, source)
    try:
        # libyaml composes the nodes of most routines as the Python composer would, many times
        # as fast. A routine with a mistake is read again from the Python composer's nodes:
        # they name every mistake, and its line, as they always have.
        root = compose_with_libyaml(text)
        if root is not None:
            try:
                return _read_routine(loader, root, source, name)
            except RoutineError:
                loader.dispose()
                loader = _loader(text, source)
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
        return _read_routine(loader, root, source, name)
    finally:
        loader.dispose()


def _loader(text: str, source: str) -> RoutineLoader:
    try:
        return RoutineLoader(text, source)
    except yaml.reader.ReaderError as exc:  # checked before any parsing: no line to name yet
        raise RoutineError(
            f"character #x{exc.character:04x} at position {exc.position} is not allowed in "
            "YAML; remove it (control characters are often pasted by accident)",
            path=source,
        ) from None


def _read_routine(loader: RoutineLoader, root: Node, source: str, name: str) -> Routine:
    """The routine the nodes under ``root`` describe; RoutineMistakes lists every mistake."""
    refuse_language_tags(root, source)
    parser = _Parser(loader, source, name)
    try:
        routine = parser.routine(root)
    except RoutineError as exc:  # one that stops the reading: no field to go on from
        if exc not in parser.mistakes:
            parser.mistakes.append(exc)
    if parser.mistakes:
        raise RoutineMistakes(parser.mistakes)
    _check_levels(routine)
    return routine


# ---------------------------------------------------------------------------------------------
# The routine's structure; the generic readers are NodeReader's

# What a field that could not be read leaves behind, so reading goes on to the next mistake.
_UNREAD: Any = object()
_NO_FIELDS: dict[str, tuple[Node, Node]] = {}
_NO_NODES: list[Node] = []
_NO_STEPS: tuple[Step, ...] = ()


class _Parser(NodeReader):
    def __init__(self, loader: yaml.SafeLoader, source: str, name: str):
        super().__init__(loader, source)
        self.name = name

    def context(self, depth: int) -> Context:
        return Context(self, depth, self.steps)

    def tempo(self, node: Node, where: str) -> Tempo:
        return BreathTempo().read(self.context(0), node, where)

    def move_tempo(self, node: Node, where: str) -> float:
        return MOVES_PER_MIN.read(self.context(0), node, where)

    def pattern(self, node: Node, where: str, absolute: bool) -> BreathPattern:
        return Pattern(absolute).read(self.context(0), node, where)

    # -- the routine ---------------------------------------------------------------------------

    def routine(self, root: Node) -> Routine:
        fields = self.mapping(root, "", ROUTINE_FIELDS, "a routine")
        if "title" not in fields:
            self.report(self.fail(root, "title", "missing; every routine needs a title"))
        if "sections" not in fields:
            self.report(self.fail(root, "sections", "missing; list the parts of the session"))

        def read(name: str, reader: Callable[[Node, str], T], default: T) -> T:
            if name not in fields:
                return default
            return self.collect(lambda: reader(fields[name][1], name), default)

        title = read("title", self.text, "")
        description = read("description", lambda n, w: self.text(n, w, allow_empty=True), "")
        artist = read("artist", self.text, DEFAULT_ARTIST)
        tempo: Tempo | None = None
        pattern: BreathPattern | None = None
        breath = read(
            "breath",
            lambda n, w: self.mapping(n, w, ("tempo", "pattern"), "the breath settings"),
            _NO_FIELDS,
        )
        if "tempo" in breath:
            tempo = self.collect(lambda: self.tempo(breath["tempo"][1], "breath.tempo"), None)
        if "pattern" in breath:
            absolute = "tempo" not in breath
            pattern = self.collect(
                lambda: self.pattern(breath["pattern"][1], "breath.pattern", absolute), None
            )
        moves_per_min: float | None = None
        move_sound = DEFAULT_MOVE_SOUND
        move = read(
            "move",
            lambda n, w: self.mapping(n, w, ("tempo", "sound"), "the movement settings"),
            _NO_FIELDS,
        )
        if "tempo" in move:
            moves_per_min = self.collect(
                lambda: self.move_tempo(move["tempo"][1], "move.tempo"), None
            )
        if "sound" in move:
            move_sound = self.collect(
                lambda: self.choice(move["sound"][1], "move.sound", MOVE_SOUNDS), move_sound
            )
        # Off unless asked for: a routine speaks only its author's words by default.
        announce = {"next": False, "time_left": False}
        switches = read(
            "announce",
            lambda n, w: self.mapping(n, w, tuple(announce), "the announcements"),
            _NO_FIELDS,
        )
        for key, (_, value_node) in switches.items():
            announce[key] = self.collect(partial(self.flag, value_node, f"announce.{key}"), False)
        ambient = bell_sound = None
        sounds = read(
            "sounds",
            lambda n, w: self.mapping(n, w, ("ambient", "bell"), "the sound settings"),
            _NO_FIELDS,
        )
        if "ambient" in sounds:
            ambient = self.collect(
                lambda: self.ambient(sounds["ambient"][1], "sounds.ambient"), None
            )
        if "bell" in sounds:
            bell_sound = self.collect(
                lambda: self.sound_file(sounds["bell"][1], "sounds.bell"), None
            )
        standing: tuple[str, ...] = (DEFAULT_POSITION,)
        positions = read("positions", self.positions, standing)
        no_words: tuple[Pronunciation, ...] = ()
        pronounce = read("pronounce", self.pronounce, no_words)
        items = read("sections", lambda n, w: self.sequence(n, w, "sections"), _NO_NODES)
        sections = tuple(
            section
            for i, node in enumerate(items)
            if (section := self.collect(partial(self.section, node, f"sections[{i}]"), None))
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
            positions=positions,
            pronounce=pronounce,
        )

    def section(self, node: Node, where: str) -> Section:
        self.count(node, where, 1)
        fields = self.mapping(node, where, SECTION_FIELDS, "a section")
        if "title" not in fields:
            self.report(self.fail(node, f"{where}.title", "missing; the title names the track"))
        if "steps" not in fields:
            self.report(
                self.fail(node, f"{where}.steps", "missing; list what happens in this part")
            )

        def read(name: str, reader: Callable[[Node, str], T], default: T) -> T:
            if name not in fields:
                return default
            return self.collect(lambda: reader(fields[name][1], f"{where}.{name}"), default)

        title = read("title", self.text, "")
        steps = read("steps", lambda n, w: self.steps(n, w, depth=2), _NO_STEPS)
        spoken_title = read("spoken_title", self.spoken_text, None)
        safety = read("safety", self.flag, False)
        level = read("level", lambda n, w: self.choice(n, w, LEVELS), None)
        ambient = read("ambient", self.ambient, None)
        positions = read("positions", self.positions, None)
        titles = tuple(
            (position, *named)
            for position in POSITIONS
            if position in fields
            and (named := read(position, self.position_title, None)) is not None
        )
        return Section(
            title=title,
            steps=steps,
            line=node.start_mark.line + 1,
            safety=safety,
            spoken_title=spoken_title,
            level=level,
            ambient=ambient,
            positions=positions,
            titles=titles,
        )

    def position_title(self, node: Node, where: str) -> tuple[str, str | None]:
        """A section's names in one position: ``seated: {title: Seated Marching}``."""
        fields = self.mapping(node, where, SECTION_TITLE_FIELDS, "the section's names there")
        if "title" not in fields:
            raise self.fail(node, where, "must give the section's title in this position")
        title = self.text(fields["title"][1], f"{where}.title")
        spoken = None
        if "spoken_title" in fields:
            spoken = self.spoken_text(fields["spoken_title"][1], f"{where}.spoken_title")
        return title, spoken

    def positions(self, node: Node, where: str) -> tuple[str, ...]:
        """A list of positions, each once: ``[standing, seated]``."""
        items = self.sequence(node, where, "positions")
        if not items:
            raise self.fail(node, where, f"list at least one of {', '.join(POSITIONS)}")
        found: list[str] = []
        for i, item in enumerate(items):
            position = self.choice(item, f"{where}[{i}]", POSITIONS)
            if position in found:
                raise self.fail(item, f"{where}[{i}]", f"{position} is listed twice; keep one")
            found.append(position)
        return tuple(found)

    # -- pronounce: the routine's own words for the engines -------------------------------------

    def pronounce(self, node: Node, where: str) -> tuple[Pronunciation, ...]:
        """``pronounce:``: each word or phrase to one respelling for every engine, or to a
        respelling per engine (``{espeak-ng: dahn tyen, piper: "[[dˈɑːn tjˈɛn]]"}``)."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(
                node,
                where,
                "must be a mapping of words to how to say them (lines such as "
                "'Dantian: dahn tyen')",
            )
        seen: dict[str, int] = {}
        read = (
            self.collect(partial(self.pronunciation, key, value, where, seen), None)
            for key, value in node.value
        )
        return tuple(entry for entry in read if entry is not None)

    def pronunciation(
        self, key: Node, value: Node, where: str, seen: dict[str, int]
    ) -> Pronunciation:
        self.count(key, where, 1)
        if not isinstance(key, yaml.ScalarNode):
            raise self.fail(
                key, where, "each key must be a word or phrase, as the routine writes it"
            )
        raw = str(key.value)
        self.check_characters(key, where, raw)  # before the word is shown in any message
        word = " ".join(raw.split())
        at = f"{where}.{word}" if word else where
        line = key.start_mark.line + 1
        if not word:
            raise self.fail(key, at, "a word is empty; write the word as the routine's text has it")
        if len(word) > MAX_WORD_CHARS:
            raise self.fail(
                key, at, f"is {len(word)} characters; a word or phrase is at most {MAX_WORD_CHARS}"
            )
        if not (_is_letter_or_digit(word[0]) and _is_letter_or_digit(word[-1])):
            raise self.fail(
                key,
                at,
                "must start and end with a letter or a digit, as the words of the text do "
                f"(got {word!r})",
            )
        # Words are matched whatever their case, and a phrase over any spaces.
        folded = word.casefold()
        if folded in seen:
            raise self.fail(
                key,
                at,
                f"is given twice (line {seen[folded]} has it; case does not matter); keep one",
            )
        seen[folded] = line
        if isinstance(value, yaml.MappingNode):
            spoken = self.respellings_by_engine(value, at)
        else:
            text = self.respelling(value, at, None)
            spoken = tuple((engine, text) for engine in PRONOUNCE_ENGINES)
        return Pronunciation(word, spoken, line)

    def respellings_by_engine(
        self, node: yaml.MappingNode, where: str
    ) -> tuple[tuple[str, str], ...]:
        engines = " or ".join(PRONOUNCE_ENGINES)
        if not node.value:
            raise self.fail(
                node, where, f"give what {engines} should hear, or one respelling for both"
            )
        found: dict[str, str] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else ""
            at = f"{where}.{name}" if name else where
            if not isinstance(key, yaml.ScalarNode) or name not in PRONOUNCE_ENGINES:
                if isinstance(key, yaml.ScalarNode):
                    self.check_characters(key, where, name)
                close = difflib.get_close_matches(name, PRONOUNCE_ENGINES, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.report(
                    self.fail(key, at, f"unknown engine {name!r}; {hint}respell for {engines}")
                )
                continue
            if name in found:
                self.report(self.fail(key, at, "appears twice; keep one"))
                continue
            text = self.collect(partial(self.respelling, value, at, name), None)
            if text is not None:
                found[name] = text
        return tuple(found.items())

    def respelling(self, node: Node, where: str, engine: str | None) -> str:
        """What an engine hears for a word (``engine`` None: every engine): letters as
        espeak-ng reads them, and for Piper IPA between ``[[`` and ``]]`` too."""
        text = self.text(node, where)
        parts = IPA_BLOCK.split(text)
        outside = "".join(parts[0::2])
        if "[" in outside or "]" in outside:
            raise self.fail(
                node,
                where,
                f"has brackets that do not pair up ({text!r}); IPA for Piper goes between [[ "
                "and ]], and nothing else takes brackets",
            )
        for block in parts[1::2]:
            inner = block[2:-2]
            if "[" in inner or "]" in inner:
                raise self.fail(node, where, f"has brackets within [[ ]] ({text!r}); remove them")
            if not inner.strip():
                raise self.fail(
                    node,
                    where,
                    f"has an empty [[ ]] ({text!r}); put Piper's IPA between the brackets",
                )
        if len(parts) > 1 and engine != "piper":
            fix = (
                "write how it sounds in letters; IPA between [[ ]] is for piper:"
                if engine
                else "give each engine its own: {espeak-ng: letters, piper: '[[IPA]]'}"
            )
            raise self.fail(node, where, f"espeak-ng reads no IPA ({text!r}); {fix}")
        if not any(_is_letter_or_digit(c) for c in text):
            raise self.fail(
                node,
                where,
                f"has nothing to pronounce ({text!r}); write how the word sounds, or remove it",
            )
        return text

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

    # -- steps, each read as its kind's spec says ---------------------------------------------

    def steps(self, node: Node, where: str, depth: int) -> tuple[Step, ...]:
        items = self.sequence(node, where, "steps")
        return tuple(
            step
            for i, item in enumerate(items)
            if (step := self.collect(partial(self.step, item, f"{where}[{i}]", depth), None))
        )

    def step(self, node: Node, where: str, depth: int) -> Step:
        self.count(node, where, depth)
        if isinstance(node, yaml.ScalarNode) and node.value in SPECS:
            return self.step_fields(SPECS[node.value], node, {}, where, depth)
        if not isinstance(node, yaml.MappingNode) or not node.value:
            raise self.fail(
                node, where, f"must be a step such as '- say: Hello' ({', '.join(STEP_KINDS)})"
            )
        first_key = node.value[0][0]
        kind = str(first_key.value) if isinstance(first_key, yaml.ScalarNode) else ""
        if kind not in SPECS:
            close = difflib.get_close_matches(kind, STEP_KINDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.fail(
                first_key,
                where,
                f"unknown step kind {kind!r}; {hint}a step starts with one of: "
                f"{', '.join(STEP_KINDS)}",
            )
        spec = SPECS[kind]
        allowed = (kind, *spec.field_names, *COMMON_FIELDS)
        fields = self.mapping(node, where, allowed, f"a {kind} step")
        _, main = fields.pop(kind)
        values: dict[str, Node] = {}
        if isinstance(main, yaml.MappingNode) and not is_by_level(main):
            nested = self.mapping(
                main, f"{where}.{kind}", (*spec.field_names, *COMMON_FIELDS), f"a {kind} step"
            )
            values.update({k: v for k, (_, v) in nested.items()})
        elif not is_null(main):
            values[spec.main] = main
            # Written as `- pause: 3`: a mistake in it is reported as `.pause`, as written.
            self.shorthand[where] = (spec.main, kind)
        for key, (key_node, value_node) in fields.items():
            if key in values:
                raise self.fail(key_node, f"{where}.{key}", "given twice; keep one")
            values[key] = value_node
        return self.step_fields(spec, node, values, where, depth)

    def step_fields(
        self, spec: StepSpec, node: Node, values: dict[str, Node], where: str, depth: int
    ) -> Step:
        """The step ``spec`` describes, from the nodes of its fields (``values``)."""
        ctx = self.context(depth)
        variants: list[tuple[str, Step | None]] = []
        plain = {k: v for k, v in values.items() if k not in POSITIONS}
        for position in POSITIONS:
            if position in values:
                at = self.field_path(where, position)
                read_variant = partial(self.variant, spec, plain, values[position], at, depth)
                variant = self.collect(read_variant, _UNREAD)
                if variant is not _UNREAD:
                    variants.append((position, variant))
        values = plain
        level = None
        if "level" in values:
            at_level = self.field_path(where, "level")
            level = self.collect(lambda: self.choice(values["level"], at_level, LEVELS), None)
        if spec.one_of and sum(name in values for name in spec.one_of) != 1:
            choices = " or ".join(
                f"{name}: {n}" for name, n in zip(spec.one_of, "NMK", strict=False)
            )
            self.report(
                self.fail(node, where, f"a {spec.kind} step needs exactly one of {choices}")
            )
        read: dict[str, Any] = {}
        full: list[tuple[str, Any]] = []
        for field in spec.fields:
            at = self.field_path(where, field.name)
            read[field.model_attr] = field.default
            if field.name not in values:
                if field.required:
                    missing = f"missing; a {spec.kind} step needs {field.required}"
                    self.report(self.fail(node, at, missing))
            elif field.leveled:
                both = self.collect(
                    partial(self.by_level, values[field.name], at, field.value.reader(ctx)),
                    None,
                )
                if both is not None:
                    gentle, at_full = both
                    if at_full != gentle:
                        full.append((field.model_attr, at_full))
                    read[field.model_attr] = gentle
            else:
                read[field.model_attr] = self.collect(
                    partial(field.value.read, ctx, values[field.name], at), field.default
                )
        step: Step = spec.model(
            **read,
            line=node.start_mark.line + 1,
            level=level,
            full=tuple(full),
            variants=tuple(variants),
        )
        return step

    def variant(
        self, spec: StepSpec, plain: dict[str, Node], node: Node, where: str, depth: int
    ) -> Step | None:
        """A step's variant for a position: null (left out there), another step (a mapping
        that starts with a step kind), or a new value of the step's main field, its other
        fields kept (``seated: Sit tall.`` on a say step)."""
        if is_null(node):
            return None
        if isinstance(node, yaml.MappingNode) and node.value:
            first = node.value[0][0]
            if isinstance(first, yaml.ScalarNode) and first.value in SPECS:
                step = self.step(node, where, depth)
                if step.variants:
                    raise self.fail(
                        node, where, "a variant is played as written; give it no variants"
                    )
                return step
        return self.step_fields(spec, node, {**plain, spec.main: node}, where, depth)


def _is_letter_or_digit(char: str) -> bool:
    return unicodedata.category(char)[0] in "LN"


def walk_steps(steps: tuple[Step, ...], visit: Callable[[Step], None]) -> None:
    """Call ``visit`` on every step, descending into repeats."""
    for step in steps:
        visit(step)
        for _, nested in nested_steps(step):
            walk_steps(nested, visit)


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
            for attr, nested in nested_steps(step):
                changes[attr] = steps_at(nested)
            kept.append(replace(step, level=None, full=(), **changes))
        return tuple(kept)

    sections = tuple(
        replace(section, steps=steps_at(section.steps), level=None)
        for section in routine.sections
        if section.level in (None, level)
    )
    return replace(routine, sections=sections)


def at_position(routine: Routine, position: str | None) -> Routine:
    """The routine as played in ``position`` (None: its default): each step's variant for
    it in place, steps left out there dropped. Raises OptionError (field ``position``) naming
    the first section that cannot be done in it, or that it would leave empty."""
    position = position or routine.positions[0]
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, not {position!r}")

    def steps_in(steps: tuple[Step, ...]) -> tuple[Step, ...]:
        kept: list[Step] = []
        for step in steps:
            chosen = dict(step.variants).get(position, step)
            if chosen is None:
                continue
            changes: dict[str, Any] = {}
            for attr, nested in nested_steps(chosen):
                changes[attr] = steps_in(nested)
            kept.append(replace(chosen, variants=(), **changes))
        return tuple(kept)

    sections = []
    for section in routine.sections:
        offered = section.positions or routine.positions
        if position not in offered:
            whose = "the section is" if section.positions else "the routine is"
            raise OptionError(
                f"{position}: {routine.source}:{section.line}: section {section.title!r} has no "
                f"{position} variant ({whose} written for {' or '.join(offered)}); choose "
                f"--position {offered[0]}, or give its steps {position} variants and add "
                f"{position} to positions",
                field="position",
            )
        steps = steps_in(section.steps)
        if not steps:
            raise OptionError(
                f"{position}: {routine.source}:{section.line}: section {section.title!r} has no "
                f"steps left {position}; give one of its steps a {position} variant",
                field="position",
            )
        named = {where: (title, spoken) for where, title, spoken in section.titles}
        title, spoken = named.get(position, (section.title, section.spoken_title))
        sections.append(
            replace(
                section, steps=steps, positions=None, titles=(), title=title, spoken_title=spoken
            )
        )
    return replace(routine, sections=tuple(sections))


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
                for _, nested in nested_steps(step):
                    check(nested, step.line, f"this {kind_of(step)}")

        for section in played.sections:
            check(section.steps, section.line, f"section {section.title!r}")
