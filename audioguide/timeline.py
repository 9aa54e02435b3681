"""Timeline stage: a Routine and render options in, timed events per track out.

Pure: no audio, no numpy. Speech lengths come in as a function of the text, so the same code
plans with a real engine, a cache, or a fake in tests. The timeline is the single source of
truth for time: mixing, chapters, playlists and transcripts all read it.

Rules (see docs/routines.md):
- Times are absolute seconds from the start of the session.
- A breathing part runs on its own clock: cycle ``k`` starts at ``start + k * cycle_s``, and
  speech never moves it. A cue starts with its phase. A cue that would start while an earlier
  cue is still being spoken is skipped; a cue longer than its phase is reported as a warning.
  The step after a breathing part starts when both the last cycle and the last cue have ended.
- Speech outside breathing parts takes its natural length, then the step's pause.
- A movement part runs on its own clock too: movement ``k`` starts at ``start + k * 60 /
  moves_per_min``, each marked by a tick or a spoken count.
- ``--level`` picks each step's values for that level (routine.at_level); at gentle, breath
  holds are left out (the cycle keeps its length when a tempo is set). At full, a breathing
  part with holds is preceded, once per section, by a spoken caution.
- ``--minutes`` fits the session by scaling the breath cycles, repeats and movement counts of
  every section except the safety part, never a tempo (fit_scale).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from .breath import (
    DEFAULT_BREATHS_PER_MIN,
    DEFAULT_PATTERN,
    MAX_BREATHS_PER_MIN,
    MIN_BREATHS_PER_MIN,
    MIN_CYCLE_S,
    PRESETS,
    TEMPO_HINT,
    BreathPattern,
    Tempo,
    TempoCurve,
    check_cycle_s,
    start_tempo,
)
from .checks import check_choice, check_optional_number
from .errors import OptionError
from .phrases import DEFAULT_LANGUAGE, PHRASES
from .routine import DEFAULT_LEVEL, Routine, Section, at_level, at_position
from .steps import (
    DEFAULT_MOVES_PER_MIN,
    DEFAULT_SAY_PAUSE_S,
    MAX_MOVES_PER_MIN,
    MIN_MOVES_PER_MIN,
    POSITIONS,
    Bell,
    Breathe,
    Move,
    Pause,
    Repeat,
    Say,
    Step,
)
from .yaml_nodes import LEVELS

LEAD_IN_S = 1.0
TAIL_S = 1.5
MAX_SESSION_S = 6 * 3600.0
MAX_EVENTS = 100_000
SCHEMA_VERSION = 1
MIN_MINUTES = 1.0
MAX_MINUTES = 360.0
FIT_TOLERANCE = 0.01  # the fit aims within 1%; the promise is 5%
NEXT_PAUSE_S = 1.0
MAX_478_CYCLES = 4  # 4-7-8 breathing: no more than 4 cycles for a beginner
# Time-left cues: at these minutes before the end of a breathing or movement part, once at
# least half the part has gone, so a long part gets a few and a short one none.
TIME_LEFT_MARKS_MIN = (10, 5, 2, 1)
SpeechLength = Callable[[str], float]

CHIME_RING_S = 6.0  # an interval bell rings this long, or to the end of its part if sooner
MIN_CHIME_RING_S = 2.0


def interval_bell_offsets_s(step: Breathe | Pause, length_s: float) -> list[float]:
    """Seconds from the start of a part of ``length_s`` at which its interval bells ring:
    every ``bell_every`` minutes and at each of ``bells_at``, strictly inside the part."""
    marks_min = list(step.bells_at_min)
    if step.bell_every_min:
        count = int(length_s / 60.0 / step.bell_every_min)
        marks_min += [k * step.bell_every_min for k in range(1, count + 1)]
    return sorted({m * 60.0 for m in marks_min if 0 < m * 60.0 < length_s})


@dataclass(frozen=True)
class RenderOptions:
    """What changes the timeline beyond the routine itself. ``None`` keeps the routine's.

    Checked at construction: OptionError names the field of a value out of range.
    """

    breaths_per_min: Tempo | None = None
    pattern: BreathPattern | None = None
    moves_per_min: float | None = None
    level: str = DEFAULT_LEVEL
    minutes: float | None = None
    position: str | None = None  # None: the routine's default position

    def __post_init__(self) -> None:
        ends = (
            (self.breaths_per_min.start_bpm, self.breaths_per_min.end_bpm)
            if isinstance(self.breaths_per_min, TempoCurve)
            else (self.breaths_per_min,)
        )
        for end in ends:
            check_optional_number(
                end,
                "breaths_per_min",
                MIN_BREATHS_PER_MIN,
                MAX_BREATHS_PER_MIN,
                "breaths per minute",
                hint=TEMPO_HINT,
            )
        if self.pattern is not None and not isinstance(self.pattern, BreathPattern):
            raise OptionError(f"must be a BreathPattern (got {self.pattern!r})", field="pattern")
        check_optional_number(
            self.moves_per_min,
            "moves_per_min",
            MIN_MOVES_PER_MIN,
            MAX_MOVES_PER_MIN,
            "movements per minute",
        )
        check_choice(self.level, "level", LEVELS)
        if self.position is not None:
            check_choice(self.position, "position", POSITIONS)
        check_optional_number(self.minutes, "minutes", MIN_MINUTES, MAX_MINUTES, "minutes")


@dataclass(frozen=True)
class Event:
    """One thing that happens: ``kind`` is say, breath, pause, bell, chime or move.

    A chime is an interval bell inside a breathing part or a pause: it takes no time of its own.

    ``text`` is set for say; ``phase`` (inhale, top-up, hold, exhale, rest) for breath, and on
    the first phase of each breath cycle ``breaths_per_min``, that cycle's tempo (the cycle
    starts with that event); ``beat`` (the count, 1 up to the step's count_to) and ``tick``
    (whether a tick sounds) for move.
    """

    kind: str
    start_s: float
    duration_s: float
    text: str | None = None
    phase: str | None = None
    beat: int | None = None
    tick: bool | None = None
    breaths_per_min: float | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class Track:
    """One section of the session, written as one file starting at ``start_s``."""

    index: int
    title: str
    start_s: float
    duration_s: float
    events: tuple[Event, ...]
    safety: bool = False
    # The bed under this track (a kind or a sound file; None: none) and the routine's own bell
    # sound file (None: the bowl shipped with audioguide). Read by the mixer.
    ambient: str | None = None
    bell_sound: str | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class Timeline:
    """Every track and event of a session, and the warnings found while planning it."""

    name: str
    title: str
    artist: str
    total_s: float
    tracks: tuple[Track, ...]
    breath: str
    warnings: tuple[str, ...] = field(default=())
    level: str = DEFAULT_LEVEL
    target_s: float | None = None
    voice: str = ""  # which voice speaks it, e.g. "piper:en_US-joe-medium"; set by the pipeline

    def events(self) -> list[Event]:
        return [event for track in self.tracks for event in track.events]

    def to_dict(self, track_files: Sequence[str]) -> dict[str, Any]:
        """The documented JSON shape of ``audioguide plan --json`` (docs/cli.md), with each
        track's file named as the export stage names it (the timeline names no files)."""

        def event_dict(event: Event) -> dict[str, Any]:
            data = asdict(event)
            data["start_s"] = round(event.start_s, 4)
            data["duration_s"] = round(event.duration_s, 4)
            if event.breaths_per_min is not None:
                data["breaths_per_min"] = round(event.breaths_per_min, 4)
            return {k: v for k, v in data.items() if v is not None}

        return {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "title": self.title,
            "artist": self.artist,
            "breath": self.breath,
            "total_s": round(self.total_s, 4),
            "warnings": list(self.warnings),
            "level": self.level,
            "target_s": None if self.target_s is None else round(self.target_s, 4),
            "voice": self.voice,
            "tracks": [
                {
                    "index": t.index,
                    "title": t.title,
                    "file": file,
                    "start_s": round(t.start_s, 4),
                    "duration_s": round(t.duration_s, 4),
                    "safety": t.safety,
                    "events": [event_dict(e) for e in t.events],
                }
                for t, file in zip(self.tracks, track_files, strict=True)
            ],
        }


def speech_texts(routine: Routine, options: RenderOptions | None = None) -> list[str]:
    """Every distinct text the session may speak, in order of first appearance: the routine's
    cues and the announcements the timeline adds (next part, time left, hold caution, counts).
    """
    options = options or RenderOptions()
    texts = _Texts(played_routine(routine, options), options)
    played = texts.routine
    for index, section in enumerate(played.sections):
        texts.visit(section.steps)
        if played.announce_next and index + 1 < len(played.sections):
            texts.add(texts.phrases.next_text(played.sections[index + 1].spoken_name))
    if texts.holds and options.level == "full":
        texts.add(texts.phrases.hold_caution)
    if texts.counts:
        for number in range(1, texts.phrases.max_count + 1):
            texts.add(texts.phrases.count(number))
    if texts.long_parts and played.announce_time_left:
        for minutes in TIME_LEFT_MARKS_MIN:
            texts.add(texts.phrases.time_left_text(minutes))
    return list(texts.seen)


class _Texts:
    """What speech_texts gathers while it walks the steps: the texts, and whether the session
    has holds (a caution), spoken counts and long parts (time-left cues)."""

    def __init__(self, routine: Routine, options: RenderOptions):
        self.routine = routine
        self.options = options
        self.phrases = PHRASES[DEFAULT_LANGUAGE]  # routines name no language of their own yet
        self.seen: dict[str, None] = {}
        self.holds = self.counts = self.long_parts = False

    def add(self, text: str) -> None:
        self.seen.setdefault(text)

    def visit(self, steps: tuple[Step, ...]) -> None:
        for step in steps:
            _HANDLERS[type(step)].texts(self, step)

    def say(self, step: Say) -> None:
        self.add(step.text)

    def breathe(self, step: Breathe) -> None:
        for _, text in step.cues:
            self.add(text)
        pattern, _ = resolve_breath(self.routine, step, self.options)
        self.holds = self.holds or pattern.has_holds
        self.long_parts = self.long_parts or step.time_left

    def move(self, step: Move) -> None:
        self.counts = self.counts or _move_sound(self.routine, step) == "count"
        self.long_parts = self.long_parts or step.time_left

    def repeat(self, step: Repeat) -> None:
        self.visit(step.steps)

    def nothing(self, step: Step) -> None:
        pass


def _same_shape(a: BreathPattern, b: BreathPattern) -> bool:
    """Whether two patterns have the same proportions (a tempo scales a pattern's cycle)."""
    k = a.cycle / b.cycle
    parts_a = (a.inhale, a.hold, a.exhale, a.rest)
    parts_b = (b.inhale, b.hold, b.exhale, b.rest)
    return all(abs(x - y * k) < 1e-6 * a.cycle for x, y in zip(parts_a, parts_b, strict=True))


def _move_sound(routine: Routine, step: Move) -> str:
    return step.sound or routine.move_sound


def resolve_breath(
    routine: Routine, step: Breathe | None, options: RenderOptions
) -> tuple[BreathPattern, Tempo | None]:
    """The seconds of each phase for a breathing part, and the tempo used (None: absolute).
    With a tempo curve the seconds are those of its first cycle, at its start tempo.

    The command line wins over the step, the step over the routine. A pattern given on the
    command line without a tempo is taken as seconds, as the user wrote it. At the gentle
    level holds are left out: with a tempo the inhale and exhale share the whole cycle, without
    one the holds are dropped (the cycle never shorter than the shortest allowed).
    """
    pattern, tempo = _breath(routine, step, options)
    if options.level == "gentle" and pattern.has_holds:
        without = pattern.without_holds()
        cycle_s = pattern.cycle if tempo is not None else max(without.cycle, MIN_CYCLE_S)
        pattern = without.scaled_to(cycle_s)
    return pattern, tempo


def _breath(
    routine: Routine, step: Breathe | None, options: RenderOptions
) -> tuple[BreathPattern, Tempo | None]:
    if options.pattern is not None and options.breaths_per_min is None:
        pattern, tempo = options.pattern, None
    else:
        pattern = (
            options.pattern
            or (step.pattern if step else None)
            or routine.pattern
            or DEFAULT_PATTERN
        )
        tempo = options.breaths_per_min or (step.breaths_per_min if step else None)
        tempo = tempo or routine.breaths_per_min
        if tempo is None and pattern is DEFAULT_PATTERN:
            tempo = DEFAULT_BREATHS_PER_MIN
    if tempo is not None:
        return pattern.scaled_to(60.0 / start_tempo(tempo)), tempo
    return pattern, None


def _step_curve(step: Breathe, options: RenderOptions) -> bool:
    """Whether a breathing part's tempo curve is its own (the step's tempo: the curve spans
    each time the part is played) rather than the session's (the command line's or the
    routine's: one curve across every breathing part that takes it)."""
    return options.breaths_per_min is None and step.breaths_per_min is not None


def describe_breath(pattern: BreathPattern, tempo: Tempo | None) -> str:
    if isinstance(tempo, TempoCurve):
        return (
            f"{tempo.start_bpm:.3g} to {tempo.end_bpm:.3g} breaths/min, "
            f"{60.0 / tempo.start_bpm:.3g} to {60.0 / tempo.end_bpm:.3g} s cycle "
            f"({pattern} s at the start)"
        )
    per_min = tempo if tempo is not None else 60.0 / pattern.cycle
    return f"{per_min:.3g} breaths/min, {pattern.cycle:.3g} s cycle ({pattern} s)"


def played_routine(routine: Routine, options: RenderOptions) -> Routine:
    """``routine`` in the options' position, at their level (a variant may have levels of its
    own). Raises OptionError naming a section that has no variant for the position."""
    return at_level(at_position(routine, options.position), options.level)


def build_timeline(
    routine: Routine, speech_length: SpeechLength, options: RenderOptions | None = None
) -> Timeline:
    """Expand ``routine`` into timed tracks and events at the options' level and length.

    ``speech_length(text)`` gives the spoken length of a cue in seconds. Raises OptionError when
    the options give an impossible breath, a length the routine cannot be fitted to, or a
    session longer than 6 hours.
    """
    options = options or RenderOptions()
    if options.pattern is not None and options.breaths_per_min is None:
        try:
            check_cycle_s(options.pattern)
        except ValueError as exc:
            raise OptionError(f"{options.pattern}: {exc}", field="pattern") from None
    played = played_routine(routine, options)
    if options.minutes is None:
        return _build(played, speech_length, options, 1.0)
    target_s = options.minutes * 60.0
    scale = fit_scale(played, speech_length, options, target_s)
    timeline = _build(played, speech_length, options, scale)
    return replace(timeline, target_s=target_s)


# validate plans without a voice: a cue is taken to last as long as its words at this rate,
# audioguide's default speaking rate, plus the quiet an engine leaves around a cue.
ESTIMATED_WORDS_PER_MIN = 140.0
ESTIMATED_CUE_MARGIN_S = 0.3


def estimated_speech_s(text: str) -> float:
    """About how long a voice at the default rate takes to say ``text``, in seconds."""
    return len(text.split()) * 60.0 / ESTIMATED_WORDS_PER_MIN + ESTIMATED_CUE_MARGIN_S


def check_routine(routine: Routine) -> tuple[str, ...]:
    """What ``validate`` checks beyond parsing: that the routine plans at either level and in
    every position it claims (so every variant is played), its cues taking about their
    estimated length (raises OptionError as build_timeline does, e.g. past six hours). Returns
    the warnings about the routine itself, found without any speech (a cue's own length needs
    the voice: plan tells those)."""
    warnings: dict[str, None] = {}
    for level in LEVELS:
        for position in routine.positions:
            options = RenderOptions(level=level, position=position)
            build_timeline(routine, estimated_speech_s, options)
            for warning in build_timeline(routine, lambda text: 0.0, options).warnings:
                warnings.setdefault(warning)
    return tuple(warnings)


def fit_scale(
    routine: Routine, speech_length: SpeechLength, options: RenderOptions, target_s: float
) -> float:
    """The factor on breath cycles, repeats and movement counts (outside the safety part) that
    brings the session closest to ``target_s``. Raises OptionError when it cannot be done."""

    def total_s(scale: float) -> float:
        try:
            return _build(routine, speech_length, options, scale).total_s
        except OptionError:  # longer than a session may be
            return float("inf")

    shortest_s = total_s(0.0)
    if target_s < shortest_s * (1 - FIT_TOLERANCE):
        least = math.ceil(shortest_s / 60.0 * (1 - FIT_TOLERANCE))
        raise OptionError(
            f"{options.minutes:g} is too short for {routine.source}: with the safety part kept "
            f"and each practice done once it lasts {_minutes(shortest_s)}; ask for {least} "
            "minutes or more",
            field="minutes",
        )
    low, high = 0.0, 1.0
    while total_s(high) < target_s:
        if high >= 4096:
            raise OptionError(
                f"{options.minutes:g} cannot be reached: {routine.source} has no breathing, "
                f"repeats or movements to lengthen; it lasts {_minutes(shortest_s)}",
                field="minutes",
            )
        low, high = high, high * 2
    # The length grows in steps with the scale: find the smallest scale that reaches the target,
    # then take it or the one just below, whichever lands nearer.
    for _ in range(40):
        middle = (low + high) / 2
        if total_s(middle) < target_s:
            low = middle
        else:
            high = middle
    return min((low, high), key=lambda scale: abs(total_s(scale) - target_s))


MAX_CURVE_PASSES = 12


def _build(
    routine: Routine, speech_length: SpeechLength, options: RenderOptions, scale: float
) -> Timeline:
    """The timeline at ``scale``. A session-wide tempo curve needs the number of cycles it
    spans, which a part given in minutes makes depend on the curve itself: plan again with the
    count the last plan found until it stays the same (once more, for cycles counted in the
    routine)."""
    builder = _Builder(routine, speech_length, options, scale, curve_cycles=1)
    timeline = builder.build()
    for _ in range(MAX_CURVE_PASSES):
        if builder.curve_index in (0, builder.curve_cycles):
            break
        builder = _Builder(routine, speech_length, options, scale, builder.curve_index)
        timeline = builder.build()
    return timeline


def _curve_at(curve: TempoCurve, k: int, *, cycles: int) -> float:
    return curve.at(k, cycles)


def _fill(target_s: float, bpm_of: Callable[[int], float]) -> list[float]:
    """The tempos of the cycles that fill ``target_s`` most nearly (at least one), cycle
    ``k`` at ``bpm_of(k)``; never past a session's longest (the caller then refuses it)."""
    bpms = [bpm_of(0)]
    total_s = 60.0 / bpms[0]
    while total_s <= MAX_SESSION_S:
        bpm = bpm_of(len(bpms))
        if abs(total_s + 60.0 / bpm - target_s) >= abs(total_s - target_s):
            break
        bpms.append(bpm)
        total_s += 60.0 / bpm
    return bpms


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


class _Builder:
    def __init__(
        self,
        routine: Routine,
        speech_length: SpeechLength,
        options: RenderOptions,
        scale: float,
        curve_cycles: int = 1,
    ):
        self.routine = routine
        self.speech_length = speech_length
        self.options = options
        self.scale = scale
        # The session-wide tempo curve: how many cycles it spans, and how many have been played.
        self.curve_cycles = curve_cycles
        self.curve_index = 0
        self.t = 0.0
        self.events: list[Event] = []
        self.count = 0
        self.warnings: list[str] = []
        self._warned: set[tuple[int, str]] = set()
        self.section: Section | None = None
        self.cautioned = False
        self.phrases = PHRASES[DEFAULT_LANGUAGE]  # routines name no language of their own yet

    def build(self) -> Timeline:
        routine = self.routine
        tracks = []
        for index, section in enumerate(routine.sections, start=1):
            start = self.t
            self.events = []
            self.section = section
            self.cautioned = False
            self.t += LEAD_IN_S
            self.expand(section.steps)
            if routine.announce_next and index < len(routine.sections):
                self.say(self.phrases.next_text(routine.sections[index].spoken_name), NEXT_PAUSE_S)
            self.t += TAIL_S
            tracks.append(
                Track(
                    index=index,
                    title=section.title,
                    start_s=start,
                    duration_s=self.t - start,
                    events=tuple(self.events),
                    safety=section.safety,
                    ambient=routine.bed_of(section),
                    bell_sound=routine.bell_sound,
                )
            )
        pattern, tempo = resolve_breath(routine, None, self.options)
        cli_pattern = self.options.pattern
        if self.options.level == "gentle" and cli_pattern is not None and cli_pattern.has_holds:
            self.warnings.append(
                f"--breath-pattern {self.options.pattern}: the holds are left out at "
                "--level gentle; add --level full to keep them"
            )
        return Timeline(
            name=routine.name,
            title=routine.title,
            artist=routine.artist,
            total_s=self.t,
            tracks=tuple(tracks),
            breath=describe_breath(pattern, tempo),
            warnings=tuple(self.warnings),
            level=self.options.level,
        )

    def add(self, event: Event) -> None:
        self.count += 1
        if self.count > MAX_EVENTS or event.end_s > MAX_SESSION_S:
            raise OptionError(
                f"{self.routine.source}: this routine would run longer than "
                f"{MAX_SESSION_S / 3600:g} hours; lower the repeats, cycles or minutes"
            )
        self.events.append(event)

    def warn(self, line: int, key: str, message: str) -> None:
        if (line, key) not in self._warned:
            self._warned.add((line, key))
            self.warnings.append(f"{self.routine.source}:{line}: {message}")

    def fitted(self, amount: float) -> float:
        """``amount`` (cycles, repeats, movements, minutes) fitted to the asked length; the
        safety part is never changed."""
        if self.section is not None and self.section.safety:
            return amount
        return amount * self.scale

    def fitted_count(self, count: int) -> int:
        return count if self.scale == 1.0 else max(1, round(self.fitted(count)))

    def say(self, text: str, pause_s: float) -> None:
        length = self.speech_length(text)
        self.add(Event("say", self.t, length, text=text))
        self.t += length + pause_s

    def expand(self, steps: tuple[Step, ...]) -> None:
        for step in steps:
            _HANDLERS[type(step)].expand(self, step)

    def say_step(self, step: Say) -> None:
        self.say(step.text, step.pause_s)

    def pause(self, step: Pause) -> None:
        self.add(Event("pause", self.t, step.duration_s))
        for offset_s in interval_bell_offsets_s(step, step.duration_s):
            ring_s = min(CHIME_RING_S, step.duration_s - offset_s)
            if ring_s >= MIN_CHIME_RING_S:
                self.add(Event("chime", self.t + offset_s, ring_s))
        part_s = _minutes(step.duration_s)
        for minutes in step.bells_at_min:
            if minutes * 60.0 >= step.duration_s:
                self.warn_unrung(
                    step, minutes, f"past the end of this pause ({part_s} long), so it never rings"
                )
            elif minutes * 60.0 > step.duration_s - MIN_CHIME_RING_S:
                self.warn_unrung(
                    step, minutes, f"too near the end of this pause ({part_s} long) to ring"
                )
        self.t += step.duration_s

    def bell(self, step: Bell) -> None:
        self.add(Event("bell", self.t, step.ring_s))
        self.t += step.ring_s

    def repeat(self, step: Repeat) -> None:
        for _ in range(self.fitted_count(step.times)):
            self.expand(step.steps)

    def warn_unrung(self, step: Breathe | Pause, minutes: float, why: str) -> None:
        """Warn of a ``bells_at`` time at which no bell can ring, saying ``why``."""
        self.warn(
            step.line,
            f"bells_at {minutes:g}",
            f"bells_at {minutes:g}: {why}; give a time inside the part",
        )

    def time_left_marks(
        self, step: Breathe | Move, start_s: float, length_s: float
    ) -> list[tuple[float, str]]:
        """(instant, text) of the time-left cues due in a part of ``length_s`` seconds."""
        if not (self.routine.announce_time_left and step.time_left):
            return []
        return [
            (start_s + length_s - minutes * 60.0, self.phrases.time_left_text(minutes))
            for minutes in TIME_LEFT_MARKS_MIN
            if minutes * 60.0 <= length_s / 2
        ]

    def cue(self, text: str, start_s: float, free_at_s: float) -> float:
        """Speak ``text`` at ``start_s`` unless an earlier cue is still being spoken; returns
        when the voice is free again."""
        length = self.speech_length(text)
        if start_s + 1e-9 >= free_at_s:
            self.add(Event("say", start_s, length, text=text))
            return start_s + length
        return free_at_s

    def breathe(self, step: Breathe) -> None:
        pattern, tempo = resolve_breath(self.routine, step, self.options)
        if pattern.has_holds and not self.cautioned:
            self.say(self.phrases.hold_caution, DEFAULT_SAY_PAUSE_S)
            self.cautioned = True
        cycle_bpm = self.cycle_tempos(step, pattern, tempo)
        cycles = len(cycle_bpm)
        if cycles > MAX_478_CYCLES and _same_shape(pattern, PRESETS["4-7-8"].pattern):
            self.warn(
                step.line,
                "4-7-8",
                f"{cycles} cycles of 4-7-8 breathing in a row; more than {MAX_478_CYCLES} is not "
                "advised for a beginner (use fewer cycles, or another pattern)",
            )
        steady = not isinstance(tempo, TempoCurve)
        cycle_s = pattern.cycle
        # Each cycle's offset from the part's start: on a steady tempo k * cycle_s exactly.
        offsets_s = [k * cycle_s for k in range(cycles + 1)]
        if not steady:
            offsets_s = [0.0]
            for bpm in cycle_bpm:
                offsets_s.append(offsets_s[-1] + 60.0 / bpm)
        length_s = cycles * cycle_s if steady else offsets_s[-1]

        def nearest_cycle(offset_s: float) -> int:
            """The cycle whose start is nearest ``offset_s`` (``cycles``: the part's end)."""
            if steady:
                return round(offset_s / cycle_s)
            k = max(0, min(cycles - 1, bisect_right(offsets_s, offset_s) - 1))
            return round(k + (offset_s - offsets_s[k]) / (offsets_s[k + 1] - offsets_s[k]))

        cues = dict(step.cues)
        start = self.t
        speech_free_at = start
        pending = self.time_left_marks(step, start, length_s)
        # An interval bell rings with the breath nearest its time, never over a breath's middle.
        chimes = {nearest_cycle(offset_s) for offset_s in interval_bell_offsets_s(step, length_s)}
        part_s = _minutes(length_s)
        for minutes in step.bells_at_min:
            k = nearest_cycle(minutes * 60.0)  # the breath it would ring with
            if k >= cycles:
                past = "past" if minutes * 60.0 >= length_s else "in the last breath at"
                why = f"{past} the end of this breathing part ({part_s} long), so it never rings"
                self.warn_unrung(step, minutes, why)
            elif k == 0:
                self.warn_unrung(step, minutes, "in the first breath, where no bell rings")
        for k in range(cycles):
            phase_start = start + offsets_s[k]
            if k in chimes and 0 < k < cycles:
                ring_s = min(
                    CHIME_RING_S, (cycles - k) * cycle_s if steady else length_s - offsets_s[k]
                )
                self.add(Event("chime", phase_start, ring_s))
            spoken = k < step.cue_cycles or (step.cue_every > 0 and k % step.cue_every == 0)
            shape = pattern if steady else pattern.scaled_to(60.0 / cycle_bpm[k])
            for index, (phase, duration) in enumerate(shape.parts()):
                starts_cycle = cycle_bpm[k] if index == 0 else None
                self.add(
                    Event(
                        "breath", phase_start, duration, phase=phase, breaths_per_min=starts_cycle
                    )
                )
                text = cues.get(phase) if spoken else None
                if (
                    text is None
                    and pending
                    and phase_start + 1e-9 >= pending[0][0]
                    and phase in ("inhale", "exhale")
                    and self.speech_length(pending[0][1]) <= duration
                ):
                    # A time-left cue waits for a phase it fits in; never a hold.
                    text = pending.pop(0)[1]
                if text is not None:
                    speech_free_at = self.cue(text, phase_start, speech_free_at)
                    length = self.speech_length(text)
                    if length > duration:
                        at = describe_breath(shape, tempo if steady else cycle_bpm[k])
                        self.warn(
                            step.line,
                            phase,
                            f"the {phase} cue {text!r} takes {length:.1f} s but the {phase} "
                            f"lasts {duration:.1f} s at {at}; "
                            "it runs into the next phase (shorten it, or slow the tempo)",
                        )
                phase_start += duration
        self.t = max(start + length_s, speech_free_at)

    def cycle_tempos(
        self, step: Breathe, pattern: BreathPattern, tempo: Tempo | None
    ) -> list[float]:
        """The tempo of each cycle of a breathing part, in breaths a minute. How many cycles:
        the step's count, or as many as fill its minutes at the tempos the curve gives them."""
        if not isinstance(tempo, TempoCurve):
            bpm = tempo if tempo is not None else 60.0 / pattern.cycle
            if step.cycles is not None:
                return [bpm] * self.fitted_count(step.cycles)
            assert step.minutes is not None
            return [bpm] * max(1, round(self.fitted(step.minutes) * 60.0 / pattern.cycle))
        curve = tempo
        if _step_curve(step, self.options):
            if step.cycles is not None:
                count = self.fitted_count(step.cycles)
                return [curve.at(k, count) for k in range(count)]
            assert step.minutes is not None
            target_s = self.fitted(step.minutes) * 60.0
            count = max(1, round(target_s * (curve.start_bpm + curve.end_bpm) / 2 / 60.0))
            for _ in range(MAX_CURVE_PASSES):
                found = len(_fill(target_s, partial(_curve_at, curve, cycles=count)))
                if found == count:
                    break
                count = found
            return [curve.at(k, count) for k in range(count)]
        first = self.curve_index

        def session_bpm(k: int) -> float:
            return curve.at(first + k, self.curve_cycles)

        if step.cycles is not None:
            bpms = [session_bpm(k) for k in range(self.fitted_count(step.cycles))]
        else:
            assert step.minutes is not None
            bpms = _fill(self.fitted(step.minutes) * 60.0, session_bpm)
        self.curve_index += len(bpms)
        return bpms

    def move(self, step: Move) -> None:
        moves_per_min = (
            self.options.moves_per_min
            or step.moves_per_min
            or self.routine.moves_per_min
            or DEFAULT_MOVES_PER_MIN
        )
        beat_s = 60.0 / moves_per_min
        count = self.fitted_count(step.count)
        sound = _move_sound(self.routine, step)
        start = self.t
        speech_free_at = start
        # Spoken counts fill every beat, so a time-left cue has room only between ticks.
        pending = [] if sound == "count" else self.time_left_marks(step, start, count * beat_s)
        for k in range(count):
            beat_start = start + k * beat_s
            beat = k % step.count_to + 1
            self.add(Event("move", beat_start, beat_s, beat=beat, tick=sound == "tick"))
            text = None
            if sound == "count":
                text = self.phrases.count(beat)
            elif pending and beat_start + 1e-9 >= pending[0][0]:
                text = pending.pop(0)[1]
            if text is not None:
                speech_free_at = self.cue(text, beat_start, speech_free_at)
                length = self.speech_length(text)
                if sound == "count" and length > beat_s:
                    self.warn(
                        step.line,
                        "count",
                        f"the spoken count {text!r} takes {length:.1f} s but a movement lasts "
                        f"{beat_s:.2f} s at {moves_per_min:g} a minute; it runs into the next "
                        "(use sound: tick, or a slower move tempo)",
                    )
        self.t = max(start + count * beat_s, speech_free_at)


@dataclass(frozen=True)
class _Handler:
    """What the timeline does with one kind of step: ``expand`` it into events, and gather
    the ``texts`` it may speak before their lengths are known."""

    expand: Callable[[_Builder, Any], None]
    texts: Callable[[_Texts, Any], None]


# One handler per step kind of steps.py; a test checks that every kind has one.
_HANDLERS: dict[type[Any], _Handler] = {
    Say: _Handler(_Builder.say_step, _Texts.say),
    Pause: _Handler(_Builder.pause, _Texts.nothing),
    Bell: _Handler(_Builder.bell, _Texts.nothing),
    Breathe: _Handler(_Builder.breathe, _Texts.breathe),
    Repeat: _Handler(_Builder.repeat, _Texts.repeat),
    Move: _Handler(_Builder.move, _Texts.move),
}
