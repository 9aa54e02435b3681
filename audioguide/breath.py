"""Breath patterns: the shape of one breath cycle, and how a tempo stretches it.

A pattern is four durations, inhale : hold : exhale : hold. Written as ``4-6`` (in-out),
``4-7-8`` (in-hold-out) or ``4-4-4-4`` (in-hold-out-hold), or as a preset name. With a tempo
the numbers are a ratio scaled to a cycle of ``60 / breaths_per_min`` seconds; without one they
are seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

MIN_BREATHS_PER_MIN = 2.0
MAX_BREATHS_PER_MIN = 20.0
DEFAULT_BREATHS_PER_MIN = 6.0
MIN_CYCLE_S = 60.0 / MAX_BREATHS_PER_MIN
MAX_CYCLE_S = 60.0 / MIN_BREATHS_PER_MIN

PHASES = ("inhale", "hold", "exhale", "rest")
TOP_UP = "top-up"  # the second, short inhale of a double inhale, in the hold's place
CUE_PHASES = ("inhale", TOP_UP, "hold", "exhale", "rest")  # what a breathing part may cue


@dataclass(frozen=True)
class BreathPattern:
    """Durations (or ratio parts) of inhale, hold after inhale, exhale, hold after exhale.

    With ``top_up`` the second part is not a hold but a short second inhale on top of the
    first (the double inhale of a physiological sigh): its phase is ``top-up``, and it is kept
    at the gentle level, which leaves holds out.
    """

    inhale: float
    hold: float
    exhale: float
    rest: float
    top_up: bool = False

    @property
    def cycle(self) -> float:
        return self.inhale + self.hold + self.exhale + self.rest

    @property
    def has_holds(self) -> bool:
        return (self.hold > 0 and not self.top_up) or self.rest > 0

    def parts(self) -> tuple[tuple[str, float], ...]:
        """(phase, duration) for each phase of non-zero length, in breathing order."""
        names = (PHASES[0], TOP_UP, *PHASES[2:]) if self.top_up else PHASES
        values = (self.inhale, self.hold, self.exhale, self.rest)
        return tuple((p, v) for p, v in zip(names, values, strict=True) if v > 0)

    def scaled_to(self, cycle_s: float) -> BreathPattern:
        k = cycle_s / self.cycle
        return BreathPattern(
            self.inhale * k, self.hold * k, self.exhale * k, self.rest * k, self.top_up
        )

    def without_holds(self) -> BreathPattern:
        return BreathPattern(
            self.inhale, self.hold if self.top_up else 0.0, self.exhale, 0.0, self.top_up
        )

    def __str__(self) -> str:
        nums = (self.inhale, self.hold, self.exhale, self.rest)
        text = "-".join(f"{v:g}" for v in nums)
        # 3+1-6-0: the top-up belongs to the inhale.
        return text.replace("-", "+", 1) if self.top_up else text


@dataclass(frozen=True)
class Preset:
    name: str
    pattern: BreathPattern
    breaths_per_min: float | None
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "resonance",
            BreathPattern(4, 0, 6, 0),
            6.0,
            "about 6 breaths a minute, 4 s in and 6 s out; a calm default",
        ),
        Preset("coherent", BreathPattern(5, 0, 5, 0), 6.0, "5 s in, 5 s out, even and steady"),
        Preset("box", BreathPattern(4, 4, 4, 4), None, "4 s in, hold 4, out 4, hold 4"),
        Preset(
            "4-7-8",
            BreathPattern(4, 7, 8, 0),
            None,
            "4 s in, hold 7, out 8; no more than 4 cycles for a beginner",
        ),
        Preset(
            "sigh",
            BreathPattern(3, 1, 6, 0, top_up=True),
            None,
            "a double inhale (a long sip, then a short top-up sip) and a long slow exhale",
        ),
    )
}

DEFAULT_PATTERN = PRESETS["resonance"].pattern

_NUMBER = r"\d+(?:\.\d+)?"
_PATTERN_RE = re.compile(rf"^{_NUMBER}(?:[-:]{_NUMBER}){{1,3}}$")


def parse_pattern(text: str) -> BreathPattern:
    """Parse ``4-6``, ``4-7-8``, ``4-4-4-4`` (``:`` also accepted) or a preset name.

    Raises ValueError with a message that says what is accepted.
    """
    spec = str(text).strip().lower()
    if spec in PRESETS:
        return PRESETS[spec].pattern
    if not _PATTERN_RE.match(spec):
        raise ValueError(
            f"{text!r} is not a breath pattern: write inhale-exhale (4-6), "
            "inhale-hold-exhale (4-7-8), inhale-hold-exhale-hold (4-4-4-4), "
            f"or a preset ({', '.join(PRESETS)})"
        )
    nums = [float(n) for n in re.split(r"[-:]", spec)]
    if len(nums) == 2:
        inhale, exhale = nums
        hold = rest = 0.0
    elif len(nums) == 3:
        inhale, hold, exhale = nums
        rest = 0.0
    else:
        inhale, hold, exhale, rest = nums
    if inhale <= 0 or exhale <= 0:
        raise ValueError(f"{text!r}: inhale and exhale must both be longer than 0")
    return BreathPattern(inhale, hold, exhale, rest)


TEMPO_HINT = "; 6 is a calm default, 5 gives 12-second breaths"


def check_breaths_per_min(value: float) -> float:
    """Return value if it is a tempo audioguide accepts, else raise ValueError saying the range."""
    if not (MIN_BREATHS_PER_MIN <= value <= MAX_BREATHS_PER_MIN):
        raise ValueError(
            f"must be between {MIN_BREATHS_PER_MIN:g} and {MAX_BREATHS_PER_MIN:g} breaths "
            f"per minute (got {value:g}){TEMPO_HINT}"
        )
    return value


@dataclass(frozen=True)
class TempoCurve:
    """A tempo that moves from ``start_bpm`` to ``end_bpm`` breaths a minute across a span of
    breathing (the session's, or one part's), in even steps from one cycle to the next: of
    ``cycles`` cycles, cycle ``k`` (from 0) breathes at ``start + (end - start) * k / (cycles
    - 1)``, so the first cycle is at the start tempo and the last at the end tempo. Written
    ``6:4.5``. Each cycle lasts ``60 / its tempo`` seconds, its phases in the pattern's ratio.
    """

    start_bpm: float
    end_bpm: float

    def at(self, k: int, cycles: int) -> float:
        """The tempo of cycle ``k`` of ``cycles`` (past the last: the end tempo)."""
        if cycles <= 1:
            return self.start_bpm
        return self.start_bpm + (self.end_bpm - self.start_bpm) * min(k, cycles - 1) / (cycles - 1)

    def __str__(self) -> str:
        return f"{self.start_bpm:g}:{self.end_bpm:g}"


Tempo: TypeAlias = float | TempoCurve
"""A steady tempo in breaths a minute, or a curve."""

TEMPO_FORMS = "a number of breaths a minute (6), or start:end for a tempo that slows (6:4.5)"


def parse_tempo(text: str) -> Tempo:
    """Parse ``6`` (steady) or ``6:4.5`` (a curve from 6 to 4.5), each end checked to be in
    range (so never NaN or infinite). Raises ValueError saying what is accepted."""
    parts = str(text).split(":")
    try:
        if len(parts) > 2:
            raise ValueError
        ends = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"{text!r} is not a tempo: give {TEMPO_FORMS}") from None
    start, end = (check_breaths_per_min(value) for value in (ends[0], ends[-1]))
    return start if end == start else TempoCurve(start, end)


def start_tempo(tempo: Tempo) -> float:
    """The tempo a session starts at: a steady tempo, or a curve's start."""
    return tempo.start_bpm if isinstance(tempo, TempoCurve) else tempo


def describe_tempo(tempo: Tempo) -> str:
    """``6 breaths/min`` or ``6 to 4.5 breaths/min``."""
    if isinstance(tempo, TempoCurve):
        return f"{tempo.start_bpm:g} to {tempo.end_bpm:g} breaths/min"
    return f"{tempo:g} breaths/min"


def check_cycle_s(pattern: BreathPattern) -> None:
    """Raise ValueError if an absolute pattern's cycle is outside the tempo range."""
    if not (MIN_CYCLE_S <= pattern.cycle <= MAX_CYCLE_S):
        raise ValueError(
            f"a breath of {pattern.cycle:g} s is outside {MIN_CYCLE_S:g} to {MAX_CYCLE_S:g} s "
            "(2 to 20 breaths a minute); give a tempo to scale the pattern instead"
        )
