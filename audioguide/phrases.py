"""Every word audioguide itself adds to a session, by language.

A routine's own text is its author's; what the timeline adds around it (spoken counts, "Next:
...", time-left cues, the caution before breath holds) and the language code written to the
tags come from here, so a session in another language is one more ``Phrases`` entry, not a
change to the code. Numbers are written as words, which every voice reads the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phrases:
    """The phrases of one language.

    ``numbers`` are the number words from zero up; ``next_part`` and ``minutes_left`` are
    templates (``{name}``, ``{number}``), ``minutes_left`` as (one minute, several minutes).
    """

    language: str  # as espeak-ng names its voices: en, de, fr-fr, ...
    tag_language: str  # ISO 639-2, as ID3 asks for its comment and lyrics frames
    numbers: tuple[str, ...]
    next_part: str
    minutes_left: tuple[str, str]
    hold_caution: str

    @property
    def max_count(self) -> int:
        """The highest number a movement part can count aloud."""
        return len(self.numbers) - 1

    def number(self, n: int) -> str:
        """``n`` as a word where there is one, else in digits."""
        return self.numbers[n] if 0 <= n < len(self.numbers) else str(n)

    def count(self, n: int) -> str:
        """A spoken count of a movement: ``Three.``"""
        return f"{_capital(self.number(n))}."

    def next_text(self, name: str) -> str:
        """The announcement of the section that comes next: ``Next: Belly Breathing.``"""
        return self.next_part.format(name=name)

    def time_left_text(self, minutes: int) -> str:
        """``Two more minutes.``"""
        template = self.minutes_left[0 if minutes == 1 else 1]
        return _capital(template.format(number=self.number(minutes)))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


_ENGLISH_NUMBERS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
)  # fmt: skip

ENGLISH = Phrases(
    language="en",
    tag_language="eng",
    numbers=_ENGLISH_NUMBERS,
    next_part="Next: {name}.",
    minutes_left=("{number} more minute.", "{number} more minutes."),
    hold_caution=(
        "This breath has a short hold. Hold only while it feels easy. "
        "If you have a heart condition, or feel faint, breathe without holding."
    ),
)

PHRASES: dict[str, Phrases] = {ENGLISH.language: ENGLISH}
DEFAULT_LANGUAGE = ENGLISH.language
