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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .breath import DEFAULT_BREATHS_PER_MIN, DEFAULT_PATTERN, BreathPattern, check_cycle_s
from .errors import OptionError
from .names import track_filename
from .routine import Bell, Breathe, Pause, Repeat, Routine, Say, Step

LEAD_IN_S = 1.0
TAIL_S = 1.5
MAX_SESSION_S = 6 * 3600.0
MAX_EVENTS = 100_000
SCHEMA_VERSION = 1

SpeechLength = Callable[[str], float]


@dataclass(frozen=True)
class RenderOptions:
    """What changes the timeline beyond the routine itself. ``None`` keeps the routine's."""

    breaths_per_min: float | None = None
    pattern: BreathPattern | None = None


@dataclass(frozen=True)
class Event:
    """One thing that happens: ``kind`` is say, breath, pause or bell.

    ``text`` is set for say; ``phase`` (inhale, hold, exhale, rest) for breath.
    """

    kind: str
    start_s: float
    duration_s: float
    text: str | None = None
    phase: str | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class Track:
    """One section of the session, written as one file starting at ``start_s``."""

    index: int
    title: str
    file: str
    start_s: float
    duration_s: float
    events: tuple[Event, ...]

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

    def events(self) -> list[Event]:
        return [event for track in self.tracks for event in track.events]

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape of ``audioguide plan --json`` (docs/cli.md)."""

        def event_dict(event: Event) -> dict[str, Any]:
            data = asdict(event)
            data["start_s"] = round(event.start_s, 4)
            data["duration_s"] = round(event.duration_s, 4)
            return {k: v for k, v in data.items() if v is not None}

        return {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "title": self.title,
            "artist": self.artist,
            "breath": self.breath,
            "total_s": round(self.total_s, 4),
            "warnings": list(self.warnings),
            "tracks": [
                {
                    "index": t.index,
                    "title": t.title,
                    "file": t.file,
                    "start_s": round(t.start_s, 4),
                    "duration_s": round(t.duration_s, 4),
                    "events": [event_dict(e) for e in t.events],
                }
                for t in self.tracks
            ],
        }


def speech_texts(routine: Routine) -> list[str]:
    """Every distinct text the routine may speak, in order of first appearance."""
    seen: dict[str, None] = {}

    def visit(steps: tuple[Step, ...]) -> None:
        for step in steps:
            if isinstance(step, Say):
                seen.setdefault(step.text)
            elif isinstance(step, Breathe):
                for _, text in step.cues:
                    seen.setdefault(text)
            elif isinstance(step, Repeat):
                visit(step.steps)

    for section in routine.sections:
        visit(section.steps)
    return list(seen)


def resolve_breath(
    routine: Routine, step: Breathe | None, options: RenderOptions
) -> tuple[BreathPattern, float | None]:
    """The seconds of each phase for a breathing part, and the tempo used (None: absolute).

    The command line wins over the step, the step over the routine. A pattern given on the
    command line without a tempo is taken as seconds, as the user wrote it.
    """
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
        return pattern.scaled_to(60.0 / tempo), tempo
    return pattern, None


def describe_breath(pattern: BreathPattern, tempo: float | None) -> str:
    per_min = tempo if tempo is not None else 60.0 / pattern.cycle
    return f"{per_min:.3g} breaths/min, {pattern.cycle:.3g} s cycle ({pattern} s)"


def build_timeline(
    routine: Routine, speech_length: SpeechLength, options: RenderOptions | None = None
) -> Timeline:
    """Expand ``routine`` into timed tracks and events.

    ``speech_length(text)`` gives the spoken length of a cue in seconds. Raises OptionError when
    the options give an impossible breath or the session would run longer than 6 hours.
    """
    options = options or RenderOptions()
    if options.pattern is not None and options.breaths_per_min is None:
        try:
            check_cycle_s(options.pattern)
        except ValueError as exc:
            raise OptionError(f"--breath-pattern: {exc}") from None
    builder = _Builder(routine, speech_length, options)
    tracks = []
    for index, section in enumerate(routine.sections, start=1):
        start = builder.t
        builder.events = []
        builder.t += LEAD_IN_S
        builder.expand(section.steps)
        builder.t += TAIL_S
        tracks.append(
            Track(
                index=index,
                title=section.title,
                file=track_filename(index, section.title),
                start_s=start,
                duration_s=builder.t - start,
                events=tuple(builder.events),
            )
        )
    pattern, tempo = resolve_breath(routine, None, options)
    return Timeline(
        name=routine.name,
        title=routine.title,
        artist=routine.artist,
        total_s=builder.t,
        tracks=tuple(tracks),
        breath=describe_breath(pattern, tempo),
        warnings=tuple(builder.warnings),
    )


class _Builder:
    def __init__(self, routine: Routine, speech_length: SpeechLength, options: RenderOptions):
        self.routine = routine
        self.speech_length = speech_length
        self.options = options
        self.t = 0.0
        self.events: list[Event] = []
        self.count = 0
        self.warnings: list[str] = []
        self._warned: set[tuple[int, str]] = set()

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

    def expand(self, steps: tuple[Step, ...]) -> None:
        for step in steps:
            if isinstance(step, Say):
                length = self.speech_length(step.text)
                self.add(Event("say", self.t, length, text=step.text))
                self.t += length + step.pause_s
            elif isinstance(step, Pause):
                self.add(Event("pause", self.t, step.duration_s))
                self.t += step.duration_s
            elif isinstance(step, Bell):
                self.add(Event("bell", self.t, step.ring_s))
                self.t += step.ring_s
            elif isinstance(step, Breathe):
                self.breathe(step)
            elif isinstance(step, Repeat):
                for _ in range(step.times):
                    self.expand(step.steps)
            else:  # pragma: no cover - the Step union is closed
                raise TypeError(step)

    def breathe(self, step: Breathe) -> None:
        pattern, tempo = resolve_breath(self.routine, step, self.options)
        cycle_s = pattern.cycle
        if step.cycles is not None:
            cycles = step.cycles
        else:
            assert step.minutes is not None
            cycles = max(1, round(step.minutes * 60.0 / cycle_s))
        cues = dict(step.cues)
        start = self.t
        speech_free_at = start
        for k in range(cycles):
            phase_start = start + k * cycle_s
            spoken = k < step.cue_cycles or (step.cue_every > 0 and k % step.cue_every == 0)
            for phase, duration in pattern.parts():
                self.add(Event("breath", phase_start, duration, phase=phase))
                text = cues.get(phase) if spoken else None
                if text is not None:
                    length = self.speech_length(text)
                    if phase_start + 1e-9 >= speech_free_at:
                        self.add(Event("say", phase_start, length, text=text))
                        speech_free_at = phase_start + length
                    if length > duration:
                        self.warn(
                            step.line,
                            phase,
                            f"the {phase} cue {text!r} takes {length:.1f} s but the {phase} "
                            f"lasts {duration:.1f} s at {describe_breath(pattern, tempo)}; "
                            "it runs into the next phase (shorten it, or slow the tempo)",
                        )
                phase_start += duration
        self.t = max(start + cycles * cycle_s, speech_free_at)
