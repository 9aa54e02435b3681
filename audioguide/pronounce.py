"""Pronunciation: a cue as the transcript shows it in, the text an engine hears out.

Part of the speech stage. A routine is written in real words ("qigong", "Yi Tan"); each engine
reads some of them wrong (espeak-ng, and Piper, which phonemizes through espeak-ng, say
"kigong" and "kai" for qigong and qi). So each engine has a small table of respellings, applied
to the text just before synthesis: the plan, the tags and the transcripts keep the real word.

The tables are plain data, one per engine: espeak-ng hears English respellings; Piper hears
IPA between ``[[`` and ``]]``, which it passes to its model as phonemes, unchanged. A routine
extends its engine's table with its ``pronounce:`` words (``routine_speech``), a caller with
``Lexicon.extended``. Matching is case-insensitive and by whole words, longest entry first, so
"Qi Xue Lui Juan" wins over "qi".

"meridian" needs no entry on either engine (espeak-ng and Piper both read it right); it is
checked by tests/test_pronounce.py with the others, so a new espeak-ng that reads it wrong
fails a test rather than a listener.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import RoutineError
from .routine import IPA_BLOCK, Routine
from .speech.cache import SpeechCache
from .speech.cues import Speech
from .speech.engine import SpeechClip, SpeechEngine, VoiceInfo

# The words of the reference article, respelled for espeak-ng (through pyttsx3). "chee gong"
# is what the built-in routines spelled before this table existed: espeak says it the same.
ESPEAK_WORDS: Mapping[str, str] = {
    "qigong": "chee gong",
    "qi": "chee",
    "Yi Tan": "yee tahn",
    "Xuan Sheng": "schwen shung",
    "Shen Gua Bei Jing": "shun gwah bay jing",
    "Qi Xue Lui Juan": "chee schweh leo joo en",
    "acupressure": "ackyoo pressure",
}

# The same words for Piper, as the phonemes its espeak-ng voices are trained on.
PIPER_WORDS: Mapping[str, str] = {
    "qigong": "[[tʃˈiː ɡˈʊŋ]]",
    "qi": "[[tʃˈiː]]",
    "Yi Tan": "[[jˈiː tˈɑːn]]",
    "Xuan Sheng": "[[ʃwˈɛn ʃˈʌŋ]]",
    "Shen Gua Bei Jing": "[[ʃˈʌn ɡwˈɑː bˈeɪ dʒˈɪŋ]]",
    "Qi Xue Lui Juan": "[[tʃˈiː ʃwˈeɪ ljˈoʊ dʒwˈɛn]]",
    "acupressure": "[[ˈækjʊpɹˌɛʃɚ]]",
}


@dataclass(frozen=True)
class Lexicon:
    """Whole words or phrases and what an engine should hear instead; ``respell`` applies
    them. ``name`` says which engine's table it is."""

    name: str
    words: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for word, spoken in self.words.items():
            if not word.strip() or not spoken.strip():
                raise ValueError(f"pronunciation {word!r} -> {spoken!r}: both must be text")

    def extended(self, words: Mapping[str, str]) -> Lexicon:
        """This table with ``words`` added; an entry there replaces the same word here."""
        merged = {w: s for w, s in self.words.items() if w.lower() not in _lowered(words)}
        merged.update(words)
        return Lexicon(self.name, merged)

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        if not self.words:
            return None
        # Longest first: a phrase that starts with a shorter entry's word is matched whole.
        phrases = sorted(self.words, key=len, reverse=True)
        alternatives = "|".join(r"\s+".join(map(re.escape, p.split())) for p in phrases)
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    @cached_property
    def _by_key(self) -> dict[str, str]:
        return {" ".join(w.lower().split()): s for w, s in self.words.items()}

    def respell(self, text: str) -> str:
        """``text`` with every listed word replaced by what the engine should hear."""
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(lambda m: self._by_key[" ".join(m.group(0).lower().split())], text)

    @cached_property
    def digest(self) -> str:
        """Changes whenever an entry does: part of the engine's identity for the cache."""
        items = sorted((w.lower(), s) for w, s in self.words.items())
        return hashlib.sha256(repr(items).encode()).hexdigest()[:12]


def _lowered(words: Mapping[str, str]) -> set[str]:
    return {w.lower() for w in words}


ESPEAK = Lexicon("espeak-ng", ESPEAK_WORDS)
PIPER = Lexicon("piper", PIPER_WORDS)
LEXICONS: Mapping[str, Lexicon] = {"espeak-ng": ESPEAK, "piper": PIPER}


class Pronouncing:
    """A SpeechEngine that speaks through ``engine`` with ``lexicon``'s respellings.

    The cache keys on the text as written and on this identity, which names the table's
    digest, so a changed table never reuses a cue spoken with the old one.
    """

    def __init__(self, engine: SpeechEngine, lexicon: Lexicon):
        self.engine = engine
        self.lexicon = lexicon

    @property
    def identity(self) -> str:
        return f"{self.engine.identity}/lexicon {self.lexicon.name} {self.lexicon.digest}"

    def speaking(self, words: Mapping[str, str]) -> Pronouncing:
        """This engine with ``words`` added to its table; itself when they change nothing."""
        lexicon = self.lexicon.extended(words)
        return self if lexicon.digest == self.lexicon.digest else Pronouncing(self.engine, lexicon)

    def synthesize(self, text: str) -> SpeechClip:
        return self.engine.synthesize(self.lexicon.respell(text))

    def synthesize_all(self, texts: list[str]) -> Iterable[SpeechClip]:
        """The engine's batch when it has one (Piper's runs on every core; espeak's and
        Piper's hand each clip over as it is spoken), else one by one as they are read."""
        spoken = [self.lexicon.respell(t) for t in texts]
        many = getattr(self.engine, "synthesize_all", None)
        clips: Iterable[SpeechClip] = (
            many(spoken) if many is not None else map(self.engine.synthesize, spoken)
        )
        return clips

    def voices(self) -> list[VoiceInfo]:
        return self.engine.voices()

    def close(self) -> None:
        """Let the engine go of what it holds between cues (Piper's worker processes)."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


class HeardCache(SpeechCache):
    """``cache``'s entries named by what the engine hears: the engine's own identity and the
    text respelled by ``pronouncing``'s table, whatever identity the caller gives. A routine's
    words then change only the cues that hold them, and a changed respelling is a new entry."""

    def __init__(self, cache: SpeechCache, pronouncing: Pronouncing):
        self.root = cache.root  # the same entries on disk; only their names are chosen here
        self.cache = cache
        self.pronouncing = pronouncing

    def key(self, identity: str, text: str, preparation: str | None = None) -> str:
        heard = self.pronouncing.lexicon.respell(text)
        return self.cache.key(f"{self.pronouncing.engine.identity}/heard", heard, preparation)


# Each Speech's versions with a routine's words, by the engine's identity: the sessions of a
# programme, and a plan and the render after it, share one (its cues and lengths) per routine.
_WITH_WORDS: weakref.WeakKeyDictionary[Speech, dict[str, Speech]] = weakref.WeakKeyDictionary()
_WITH_WORDS_LOCK = threading.Lock()


def routine_speech(speech: Speech, routine: Routine) -> Speech:
    """``speech`` with ``routine``'s ``pronounce:`` words added to its engine's table (the
    engine's entries for them replaced), or ``speech`` itself when the routine has none or the
    engine has no table (one a caller made without ``Pronouncing``).

    Its cache keys on what the engine hears (``HeardCache``), so a cue spoken with one
    respelling is never reused for another; the engine's identity names the whole table, so a
    programme's session digest changes with any respelling.
    """
    engine = speech.engine
    if not routine.pronounce or not isinstance(engine, Pronouncing):
        return speech
    spoken = engine.speaking(routine.respellings(engine.lexicon.name))
    if spoken is engine:
        return speech
    if spoken.lexicon.name == "piper":
        check_phonemes(routine, voice_phonemes(engine.engine))
    with _WITH_WORDS_LOCK:
        versions = _WITH_WORDS.setdefault(speech, {})
        if spoken.identity not in versions:
            cache = None if speech.cache is None else HeardCache(speech.cache, spoken)
            versions[spoken.identity] = Speech(spoken, cache, effect=speech.effect)
        return versions[spoken.identity]


# What users type for IPA symbols Piper's voices write otherwise.
_LOOKALIKES = {"g": "ɡ", ":": "ː", "'": "ˈ", ",": "ˌ", "r": "ɹ"}


def voice_phonemes(engine: Any) -> tuple[str, set[str]] | None:
    """A Piper engine's voice name and the phonemes its model knows (its config's
    ``phoneme_id_map``), or None for an engine that says nothing of its voice's files."""
    checked = getattr(engine, "checked", None)
    voice = getattr(checked, "file", None)
    config = getattr(voice, "config", None)
    if not isinstance(config, Path):
        return None
    try:
        known = json.loads(config.read_text(encoding="utf-8"))["phoneme_id_map"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the engine checked its config when it loaded it; nothing to add here
    return str(getattr(voice, "name", config.stem)), set(known)


def check_phonemes(routine: Routine, phonemes: tuple[str, set[str]] | None) -> None:
    """RoutineError naming the line and word of a routine's IPA for Piper that holds a symbol
    the voice does not know: Piper would leave it out without a word."""
    if phonemes is None:
        return
    name, known = phonemes
    for entry in routine.pronounce:
        for engine, spoken in entry.spoken:
            if engine != "piper":
                continue
            for block in IPA_BLOCK.findall(spoken):
                unknown = [c for c in block[2:-2].strip() if c not in known]
                if not unknown:
                    continue
                symbol = unknown[0]
                fix = "use the IPA symbols of docs/voices.md's table"
                if symbol in _LOOKALIKES and _LOOKALIKES[symbol] in known:
                    fix = f"write {_LOOKALIKES[symbol]!r} (U+{ord(_LOOKALIKES[symbol]):04X})"
                raise RoutineError(
                    f"pronounce.{entry.word}.piper: the voice {name} has no phoneme {symbol!r} "
                    f"(U+{ord(symbol):04X}), and Piper would leave it out; {fix}",
                    path=routine.source,
                    line=entry.line,
                )
