"""The speech seam: what an engine is, and the registry that picks one by name.

Input: an engine name (or None), a voice and a rate. Output: a ``SpeechEngine`` that turns cue
text into a ``SpeechClip``. Each engine lives in a module of its own (``espeak``, ``piper``),
the only importer of its library, and registers itself here under its name; nothing else
names an engine class.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import SpeechError

if TYPE_CHECKING:  # the espeak worker imports this module and has no use for numpy
    import numpy as np

DEFAULT_RATE_WPM = 140
MIN_RATE_WPM = 80
MAX_RATE_WPM = 260
DEFAULT_ENGINE = "espeak"
# Modules that register a built-in engine when imported; one that cannot be imported (an
# optional dependency not installed) registers nothing.
BUILTIN_ENGINE_MODULES = ("espeak", "piper")


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    name: str
    languages: tuple[str, ...]
    gender: str | None = None


@dataclass(frozen=True)
class SpeechClip:
    """Synthesized speech as the engine made it: int16 samples (1-D, mono) at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int


class SpeechEngine(Protocol):
    """What the pipeline needs from a text-to-speech engine."""

    @property
    def identity(self) -> str:
        """Everything that changes the audio for a given text (engine, version, voice, rate)."""
        ...

    def synthesize(self, text: str) -> SpeechClip: ...

    def voices(self) -> list[VoiceInfo]: ...


EngineFactory = Callable[[str | None, int], SpeechEngine]
"""Makes an engine from (voice id, name or language, or None for the engine's default; rate
in words per minute)."""


@dataclass(frozen=True)
class EngineEntry:
    """One registered engine: its name, how to make it, and how to list its voices without
    choosing one."""

    name: str
    make: EngineFactory
    list_voices: Callable[[], list[VoiceInfo]]


_REGISTRY: dict[str, EngineEntry] = {}
_builtins_loaded = False


def register_engine(
    name: str, make: EngineFactory, list_voices: Callable[[], list[VoiceInfo]]
) -> None:
    """Make an engine available under ``name`` (to ``make_engine`` and ``all_voices``)."""
    _REGISTRY[name] = EngineEntry(name, make, list_voices)


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in BUILTIN_ENGINE_MODULES:
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:
            # The engine's module or its library not installed (an extra) is quiet; a module
            # of ours missing is a bug and is not.
            absent = exc.name == f"{__package__}.{module}"
            optional = exc.name is not None and not exc.name.startswith("audioguide")
            if not (absent or optional):
                raise


def engine_names() -> list[str]:
    """Every registered engine, the default first."""
    _load_builtins()
    return sorted(_REGISTRY, key=lambda name: (name != DEFAULT_ENGINE, name))


def _entry(name: str) -> EngineEntry:
    names = engine_names()
    if name not in _REGISTRY:
        raise SpeechError(f"no speech engine {name!r}; the engines here are {', '.join(names)}")
    return _REGISTRY[name]


def make_engine(
    name: str | None = None, voice: str | None = None, rate_wpm: int = DEFAULT_RATE_WPM
) -> SpeechEngine:
    """The engine ``name`` speaking with ``voice`` at ``rate_wpm``.

    Without a name: the default engine, unless ``voice`` names a voice only another engine
    has (the first engine in ``engine_names()`` order that knows it speaks).
    """
    check_rate(rate_wpm)
    if name is not None:
        return _entry(name).make(voice, rate_wpm)
    default = _entry(DEFAULT_ENGINE)
    if voice is None:
        return default.make(None, rate_wpm)
    offered: list[VoiceInfo] = []
    for engine in engine_names():
        entry = _entry(engine)
        voices = entry.list_voices()
        offered += voices
        if find_voice(voice, voices) is not None:
            return entry.make(voice, rate_wpm)
    resolve_voice(voice, offered)  # raises, naming close matches from every engine
    raise AssertionError("resolve_voice found a voice find_voice did not")  # pragma: no cover


def all_voices() -> list[tuple[str, VoiceInfo]]:
    """(engine name, voice) for every voice of every registered engine."""
    return [(name, voice) for name in engine_names() for voice in _entry(name).list_voices()]


def expected_length_s(text: str, rate_wpm: float) -> float:
    """A rough spoken length, used to check that the engine produced this text's audio."""
    words = max(1, len(text.split()))
    return words * 60.0 / rate_wpm


def words_per_minute(texts: list[str], seconds: list[float]) -> float:
    """The pace of spoken cues: their words over their length, pauses included (the prepared
    cue's length, its edges trimmed: what a session spends on it). How each engine's rate is
    measured and calibrated (scripts/calibrate_espeak.py, scripts/calibrate_piper.py)."""
    words = sum(len(text.split()) for text in texts)
    return words * 60.0 / sum(seconds)


def check_pronounceable(text: str) -> str:
    """``text``, or a SpeechError when it has nothing an engine could pronounce (no letter or
    digit: ``...``, ``-``, zero-width or direction marks only)."""
    if not any(ch.isalnum() for ch in text):
        raise SpeechError(
            f"the cue {text!r} has nothing to pronounce (no letters or digits); "
            "give it words, or remove it"
        )
    return text


def find_voice(wanted: str, available: list[VoiceInfo]) -> str | None:
    """The id of the voice the user meant: an exact id, a language code (``en-gb``) or a name
    (``English (America)``), case-insensitively; None when no voice matches."""
    key = wanted.strip().lower()
    for voice in available:
        if key in (voice.id.lower(), voice.id.lower().rsplit("/", 1)[-1], voice.name.lower()):
            return voice.id
    for voice in available:
        if key in (lang.lower() for lang in voice.languages):
            return voice.id
    return None


def resolve_voice(wanted: str, available: list[VoiceInfo]) -> str:
    """``find_voice``, or a SpeechError that names close matches."""
    found = find_voice(wanted, available)
    if found is not None:
        return found
    key = wanted.strip().lower()
    names = [v.id for v in available] + [v.id.rsplit("/", 1)[-1] for v in available]
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(dict.fromkeys(close))}." if close else ""
    raise SpeechError(f"--voice: no voice {wanted!r}.{hint} Run 'audioguide voices' to list them")


def check_rate(rate_wpm: int) -> int:
    if not (MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM):
        raise SpeechError(
            f"--rate must be between {MIN_RATE_WPM} and {MAX_RATE_WPM} words per minute "
            f"(got {rate_wpm}); {DEFAULT_RATE_WPM} is calm and clear"
        )
    return rate_wpm
