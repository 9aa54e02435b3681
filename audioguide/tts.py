"""Text-to-speech stage: cue text in, mono speech samples out.

The only module that imports pyttsx3. On Linux, espeak-ng's library and voice data come from
the espeakng-loader wheel when the system has none, so ``pip install`` is all a user needs.

pyttsx3 2.99's espeak driver is fragile (docs/design-notes.md has the measurements): the first
``runAndWait`` after ``init`` returns before any audio is written, queued ``save_to_file``
calls keep only the last, property changes can be dropped, and every file prints "Audio saved
to ..." on stdout. So the engine does one empty ``runAndWait`` after ``init``, sets each
property and reads it back until espeak uses it, then does exactly one ``save_to_file`` and one
``runAndWait`` per cue with stdout and stderr silenced at the file-descriptor level, and checks
every result for length before using it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import difflib
import io
import os
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import SpeechError

DEFAULT_RATE_WPM = 140
MIN_RATE_WPM = 80
MAX_RATE_WPM = 260
DEFAULT_PITCH = 42  # espeak's 0-100 scale; 50 is its default, a little lower sounds calmer
DEFAULT_VOICE = "gmw/en-us"


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    name: str
    languages: tuple[str, ...]
    gender: str | None = None


@dataclass(frozen=True)
class SpeechClip:
    """Synthesized speech as the engine made it: int16 samples at ``sample_rate``."""

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


def expected_length_s(text: str, rate_wpm: float) -> float:
    """A rough spoken length, used to check that the engine produced this text's audio."""
    words = max(1, len(text.split()))
    return words * 60.0 / rate_wpm


def resolve_voice(wanted: str, available: list[VoiceInfo]) -> str:
    """The id of the voice the user meant: an exact id, a language code (``en-gb``) or a name
    (``English (America)``), case-insensitively. Raises SpeechError with close matches."""
    key = wanted.strip().lower()
    for voice in available:
        if key in (voice.id.lower(), voice.id.lower().rsplit("/", 1)[-1], voice.name.lower()):
            return voice.id
    for voice in available:
        if key in (lang.lower() for lang in voice.languages):
            return voice.id
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


# ---------------------------------------------------------------------------------------------
# pyttsx3 + espeak-ng

_ENGINE_LOCK = threading.Lock()
_PYTTSX3: Any = None


def _prepare_espeak() -> str:
    """Make espeak-ng loadable for pyttsx3; return where it came from."""
    if sys.platform != "linux" or ctypes.util.find_library("espeak-ng"):
        return "system"
    try:
        import espeakng_loader
    except ImportError:
        raise SpeechError(
            "espeak-ng is not installed; reinstall audioguide (pip install .) to get the "
            "espeakng-loader wheel, or install espeak-ng with your package manager"
        ) from None
    # pyttsx3 asks the dynamic loader for libespeak-ng.so.1; a library already loaded
    # globally under that soname satisfies the request.
    ctypes.CDLL(espeakng_loader.get_library_path(), mode=ctypes.RTLD_GLOBAL)
    os.environ.setdefault("ESPEAK_DATA_PATH", espeakng_loader.get_data_path())
    return "espeakng-loader " + metadata.version("espeakng-loader")


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Send the process's stdout and stderr to /dev/null, at the descriptor level too."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _release_engine() -> None:
    # pyttsx3's driver cleans up in __del__, which fails noisily if it runs during interpreter
    # shutdown after contextlib is gone; drop the engine while every module is still there.
    global _PYTTSX3
    _PYTTSX3 = None


class _PollEveryMillisecond:
    """The ``time`` module as pyttsx3's espeak driver sees it: it only sleeps, at most 1 ms."""

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.001))


def _engine() -> Any:
    global _PYTTSX3
    if _PYTTSX3 is None:
        source = _prepare_espeak()
        try:
            with _silenced():
                import pyttsx3
                import pyttsx3.drivers.espeak as espeak_driver

                # The driver announces every saved file with print(); we keep the terminal.
                espeak_driver.print = lambda *args, **kwargs: None
                # Its run loop polls for the end of a cue every 10 ms, and a cue takes about
                # 3 ms to synthesize: polling every 1 ms makes 111 cues take 0.4 s, not 1.2 s.
                espeak_driver.time = _PollEveryMillisecond()
                engine = pyttsx3.init("espeak" if sys.platform == "linux" else None)
                engine.runAndWait()  # the first run returns early; spend it on nothing
        except SpeechError:
            raise
        except Exception as exc:
            raise SpeechError(
                f"the speech engine did not start ({exc}); espeak-ng from {source}. "
                "Reinstall audioguide, or install espeak-ng with your package manager"
            ) from None
        _PYTTSX3 = engine
        atexit.register(_release_engine)
    return _PYTTSX3


MAX_ATTEMPTS = 3
PROPERTY_WAIT_S = 2.0


def _apply_property(engine: Any, name: str, value: object) -> None:
    """Set a voice property and wait until espeak-ng really uses it.

    With pyttsx3's retrieval mode espeak-ng runs asynchronously: a rate or pitch change is
    queued in espeak's own command queue, and pyttsx3's ``runAndWait`` cancels that queue
    before synthesizing, so a change made just before a cue was sometimes dropped (a cue at
    200 wpm came out at the previous 100). Reading the property back asks espeak directly.
    """
    if sys.platform != "linux":
        engine.setProperty(name, value)
        return
    deadline = time.monotonic() + PROPERTY_WAIT_S
    while True:
        current = engine.getProperty(name)
        if current == value:
            return
        if time.monotonic() > deadline:
            raise SpeechError(
                f"the speech engine did not accept {name} {value!r} (it stays at "
                f"{current!r}); try another --voice or --rate"
            )
        engine.setProperty(name, value)
        time.sleep(0.002)


def _engine_version() -> str:
    """pyttsx3's version and, on Linux, espeak-ng's: both change the audio for a text."""
    try:
        version = f"pyttsx3 {metadata.version('pyttsx3')}/{sys.platform}"
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = f"pyttsx3 ?/{sys.platform}"
    if sys.platform == "linux":
        from pyttsx3.drivers import _espeak

        with contextlib.suppress(Exception):
            version += f"/espeak-ng {_espeak.Info(None).decode()}"
    return version


class Pyttsx3Engine:
    """Speech through pyttsx3 (espeak-ng on Linux, the system voices elsewhere)."""

    def __init__(
        self, voice: str | None = None, rate_wpm: int = DEFAULT_RATE_WPM, pitch: int = DEFAULT_PITCH
    ):
        self.rate_wpm = check_rate(rate_wpm)
        self.pitch = pitch
        with _ENGINE_LOCK:
            available = self._voices(_engine())
        if voice is None:
            voice = DEFAULT_VOICE if any(v.id == DEFAULT_VOICE for v in available) else None
        else:
            voice = resolve_voice(voice, available)
        self.voice = voice
        self._identity = f"{_engine_version()}/{voice}/{rate_wpm}wpm/p{pitch}"

    @property
    def identity(self) -> str:
        return self._identity

    @staticmethod
    def _voices(engine: Any) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                id=str(v.id),
                name=str(v.name),
                languages=tuple(str(lang) for lang in (v.languages or ())),
                gender=v.gender,
            )
            for v in engine.getProperty("voices")
        ]

    def voices(self) -> list[VoiceInfo]:
        with _ENGINE_LOCK:
            return self._voices(_engine())

    def synthesize(self, text: str) -> SpeechClip:
        with _ENGINE_LOCK:
            engine = _engine()
            if self.voice is not None:
                _apply_property(engine, "voice", self.voice)
            _apply_property(engine, "rate", self.rate_wpm)
            _apply_property(engine, "pitch", self.pitch)
            for _attempt in range(MAX_ATTEMPTS):
                clip = self._synthesize_once(engine, text)
                if clip is not None:
                    return clip
        raise SpeechError(
            f"the speech engine gave no usable audio for {text[:60]!r} after {MAX_ATTEMPTS} "
            "tries; try another --voice, or reinstall espeak-ng"
        )

    def _synthesize_once(self, engine: Any, text: str) -> SpeechClip | None:
        with tempfile.TemporaryDirectory(prefix="audioguide-tts-") as tmp:
            path = Path(tmp) / "cue.wav"
            with _silenced():
                engine.save_to_file(text, str(path))
                engine.runAndWait()
            if not path.is_file():
                return None
            try:
                with wave.open(str(path), "rb") as wav:
                    rate = wav.getframerate()
                    width = wav.getsampwidth()
                    channels = wav.getnchannels()
                    frames = wav.readframes(wav.getnframes())
            except (wave.Error, EOFError):
                return None
        if width != 2 or not frames:
            return None
        samples = np.frombuffer(frames, dtype="<i2").copy()
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
        length_s = samples.size / rate
        expected = expected_length_s(text, self.rate_wpm)
        # A clip far off the text's length is the previous cue's audio, or a truncated one.
        if not (0.2 * expected <= length_s <= 5.0 * expected + 2.0):
            return None
        if np.abs(samples).max() < 100:
            return None
        return SpeechClip(samples=samples, sample_rate=rate)


def list_voices() -> list[VoiceInfo]:
    """The voices the installed speech engine offers."""
    with _ENGINE_LOCK:
        return Pyttsx3Engine._voices(_engine())
