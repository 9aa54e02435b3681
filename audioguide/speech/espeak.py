"""The espeak-ng engine: cue text in, mono speech samples out, through pyttsx3.

The only module that imports pyttsx3 and espeakng_loader, and it does so only inside a worker
process it starts (``python -c`` running ``serve``; the parent only finds their files, to
know whether what a worker said of its version and voices still holds): pyttsx3 2.99's
espeak driver needs workarounds that must not touch the user's process (docs/design-notes.md has the
measurements). The first ``runAndWait`` after ``init`` returns before any audio is written,
queued ``save_to_file`` calls keep only the last, property changes can be dropped, every file
prints "Audio saved to ..." from espeak's thread, and a failure inside the driver's callback
leaves its run loop spinning for ever. So the worker sends its stdout and stderr to /dev/null
for good, replaces the driver's ``print``, ``time`` and ``wave`` with its own (the last keeps
each cue's audio in memory where the driver would write a WAV file to be read back), does one
empty ``runAndWait`` after ``init``, sets each property and reads it back until espeak uses
it, then does exactly one ``save_to_file`` and one ``runAndWait`` per cue, within a time
bound. The parent checks every clip for length, waits for a reply at most a bounded time, and
ends a worker that overruns or when the user presses Ctrl-C.

On Linux, espeak-ng's library and voice data come from the espeakng-loader wheel when the
system has none, so ``pip install`` is all a user needs.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import SpeechError
from .engine import (
    DEFAULT_RATE_WPM,
    SpeechClip,
    VoiceInfo,
    check_pronounceable,
    check_rate,
    expected_length_s,
    register_engine,
    resolve_voice,
)
from .workers import WorkerGone, WorkerPool
from .workers import serve as serve_requests

NAME = "espeak"
DEFAULT_PITCH = 42  # espeak's 0-100 scale; 50 is its default, a little lower sounds calmer
DEFAULT_VOICE = "gmw/en-us"
MAX_ATTEMPTS = 3
PROPERTY_WAIT_S = 2.0
# A cue takes a few milliseconds (espeak-ng runs about 900x realtime); these bounds only
# matter when something is wrong, and then they end the wait.
CUE_TIMEOUT_S = 30.0  # the worker gives up on a cue after this long
START_TIMEOUT_S = 60.0  # a worker's start: Python, pyttsx3, espeak-ng and its voice data
REPLY_GRACE_S = 10.0  # beyond the worker's own bound, before the parent ends it
ESPEAK_DATA_ENV = "ESPEAK_DATA_PATH"
# espeak-ng reads faster than its rate setting says: words over the prepared cues' length
# (engine.words_per_minute, as Piper's pace is measured), on every cue of the built-in
# routines, are a straight line in the setting. Measured by scripts/calibrate_espeak.py with
# gmw/en-us; the setting for a pace is its inverse.
ESPEAK_RATE_AT_0 = 2.97
ESPEAK_RATE_PER_WPM = 0.8541
ESPEAK_MIN_RATE = 80

# One worker speaking a batch in order gives the same clips whatever the number of cores. Two,
# each speaking every other cue from a fresh start, would too, and halve the batch alone
# (0.9 s to 0.6 s), but a cold render took 0.05 to 0.24 s longer with them: beside the thread
# preparing cues the cores are already full (docs/performance.md).
_POOL = WorkerPool(__name__, START_TIMEOUT_S, size=1)
# Cues asked of the batch's worker at a time: the first alone, so the cues' preparation here
# starts at once, then twice as many each time up to the last size. A request costs a round
# trip through this process (a few milliseconds, more while other threads hold the GIL); a
# cue about 3 ms of the worker's CPU.
BATCH_CUES = (1, 2, 4, 8, 16)
_POOL_HAS_SPOKEN = False  # a worker of the pool has synthesized: it carries a history
_BATCH_LOCK = threading.Lock()
atexit.register(_POOL.close)


def close_workers() -> None:
    """End every worker process, busy ones too (on Ctrl-C, or an error elsewhere)."""
    _POOL.close()


def _request(request: tuple[Any, ...], timeout_s: float, what: str) -> Any:
    """A worker's reply to ``request``; SpeechError when the worker fails or overruns."""
    try:
        return _POOL.call(request, timeout_s)
    except WorkerGone as exc:
        raise SpeechError(_worker_failure(what, exc.__cause__)) from None


def _worker_failure(what: str, cause: BaseException | None) -> str:
    if isinstance(cause, TimeoutError):
        return (
            f"the speech engine did not finish {what} in time and was stopped; "
            "if the machine is very busy, try again"
        )
    problem = _espeak_data_problem()
    if problem:
        return problem
    return (
        f"the speech engine stopped while {what}; reinstall audioguide, or install espeak-ng "
        "with your package manager"
    )


def _espeak_data_problem() -> str | None:
    """What is wrong with $ESPEAK_DATA_PATH, if the user set it to something espeak-ng
    cannot use (espeak-ng then ends the process without a word)."""
    value = os.environ.get(ESPEAK_DATA_ENV)
    if value is None:
        return None
    folder = Path(value)
    if (folder / "phontab").is_file() or (folder / "espeak-ng-data" / "phontab").is_file():
        return None
    return (
        f"{ESPEAK_DATA_ENV}={value}: no espeak-ng voice data there (no phontab); unset "
        f"{ESPEAK_DATA_ENV} to use the data that comes with audioguide, or point it at an "
        "espeak-ng-data folder"
    )


_INFO: dict[str, Any] = {}
_INFO_LOCK = threading.Lock()


def _info() -> dict[str, Any]:
    """The engine's version and voices: asked of a worker once per process, or read from
    what a worker said before, kept beside the speech cache (INFO_FILE) under a fingerprint
    of the files that decide them, so a render with every cue in the cache starts no worker
    (its start and that question are 0.1 to 0.13 s of CPU)."""
    with _INFO_LOCK:
        if not _INFO:
            problem = _espeak_data_problem()
            if problem:
                raise SpeechError(problem)
            fingerprint = _fingerprint()
            kept = _kept_info(fingerprint)
            if kept is None:
                kept = _request(("info",), START_TIMEOUT_S, "starting")
                _keep_info(fingerprint, kept)
            _INFO.update(kept)
        return _INFO


INFO_FILE = "espeak-info.json"
INFO_FORMAT = 1  # what a worker's "info" reply holds; a change makes every kept one stale


# Where the dynamic loader finds a system's espeak-ng for pyttsx3, which asks it for these
# names (``_prepare_espeak``): its cache of the system's libraries (rewritten whenever one is
# installed or removed), and the folders it searches besides ($LD_LIBRARY_PATH's first).
LOADER_CACHE = Path("/etc/ld.so.cache")
SYSTEM_LIBRARIES = ("libespeak-ng.so.1", "/usr/local/lib/libespeak-ng.so.1")
_DEFAULT_LIBRARY_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib")


def _fingerprint() -> str | None:
    """What decides espeak-ng's version and voices here: the Python, pyttsx3's files, the
    espeak-ng library the worker would load (the system's, else espeakng-loader's) and its
    voice data (with $ESPEAK_DATA_PATH), each by size and time of change. None off Linux,
    where pyttsx3 speaks with the system's voices and nothing is kept.

    The system's library is told by the loader's cache and the files where the loader looks,
    not by ctypes.util.find_library, which runs ldconfig and then the C compiler to look
    (30 ms of each render, before anything else could start)."""
    if sys.platform != "linux":
        return None
    import importlib.util

    parts: list[object] = [INFO_FORMAT, sys.version, os.environ.get("LD_LIBRARY_PATH")]
    files: list[Path] = [LOADER_CACHE]
    folders = [*os.environ.get("LD_LIBRARY_PATH", "").split(":"), *_DEFAULT_LIBRARY_DIRS]
    files += [Path(folder) / "libespeak-ng.so.1" for folder in folders if folder]
    data = os.environ.get(ESPEAK_DATA_ENV)
    if data:
        files += [Path(data) / "phontab", Path(data) / "voices", Path(data) / "lang"]
        parts.append(data)
    for name, inside in (
        ("pyttsx3", ("__init__.py", "drivers/espeak.py")),
        (
            "espeakng_loader",
            (
                "libespeak-ng.so",
                "espeak-ng-data/phontab",
                "espeak-ng-data/voices",
                "espeak-ng-data/lang",
            ),
        ),
    ):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            parts.append(f"no {name}")
            continue
        files += [Path(spec.origin).parent / part for part in inside]
    for path in files:
        try:
            stat = path.stat()
            parts.append((str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
        except OSError:
            parts.append((str(path), None))
    return json.dumps(parts)


def _kept_info(fingerprint: str | None) -> dict[str, Any] | None:
    if fingerprint is None:
        return None
    from .cache import cache_dir

    try:
        kept = json.loads((cache_dir() / INFO_FILE).read_text(encoding="utf-8"))
        info = kept["info"]
        if kept["fingerprint"] != fingerprint or not isinstance(info["version"], str):
            return None
        [VoiceInfo(*fields) for fields in info["voices"]]  # each as list_voices reads it
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none kept, or damaged: ask a worker
    return dict(info)


def _keep_info(fingerprint: str | None, info: dict[str, Any]) -> None:
    if fingerprint is None:
        return
    from .cache import cache_dir, write_atomic

    kept = json.dumps({"fingerprint": fingerprint, "info": info}).encode()
    write_atomic(cache_dir() / INFO_FILE, lambda out: out.write(kept))


def list_voices() -> list[VoiceInfo]:
    """The voices espeak-ng offers."""
    return [VoiceInfo(*fields) for fields in _info()["voices"]]


def espeak_rate_for(rate_wpm: float) -> int:
    """espeak-ng's rate setting that makes it read ``rate_wpm`` words a minute as spoken,
    pauses included, by the measured pace above (espeak-ng takes no less than 80)."""
    return max(ESPEAK_MIN_RATE, round(ESPEAK_RATE_AT_0 + ESPEAK_RATE_PER_WPM * rate_wpm))


class Pyttsx3Engine:
    """Speech through pyttsx3 (espeak-ng on Linux, the system voices elsewhere)."""

    def __init__(
        self, voice: str | None = None, rate_wpm: int = DEFAULT_RATE_WPM, pitch: int = DEFAULT_PITCH
    ):
        self.rate_wpm = check_rate(rate_wpm)
        self.espeak_rate = espeak_rate_for(rate_wpm)
        self.pitch = pitch
        available = list_voices()
        if voice is None:
            voice = DEFAULT_VOICE if any(v.id == DEFAULT_VOICE for v in available) else None
        else:
            voice = resolve_voice(voice, available)
        self.voice = voice
        self._version = _info()["version"]

    @property
    def identity(self) -> str:
        return f"{self._version}/{self.voice}/{self.rate_wpm}wpm/r{self.espeak_rate}/p{self.pitch}"

    def voices(self) -> list[VoiceInfo]:
        return list_voices()

    def close(self) -> None:
        """End the worker processes now, waiting calls included (they raise SpeechError)."""
        close_workers()

    def synthesize_all(self, texts: list[str]) -> Iterator[SpeechClip]:
        """Each text's clip, synthesized in this order by a worker that has spoken nothing
        before: espeak-ng sounds a cue a few samples differently depending on what it spoke
        earlier in the process, so the same batch gives the same clips every time.

        The batch is spoken on a thread of its own, from this call to its end whether or not
        its clips are read, and each clip is handed over as soon as it is spoken: the caller
        can prepare it while the worker speaks the next (speech/cues.py does). A failure is
        raised where its clip would have come.
        """
        texts = list(texts)
        spoken: queue.SimpleQueue[tuple[SpeechClip | None, BaseException | None]]
        spoken = queue.SimpleQueue()

        def speak() -> None:
            global _POOL_HAS_SPOKEN
            with _BATCH_LOCK:
                if _POOL_HAS_SPOKEN:
                    _POOL.close()  # fresh workers, with no history
                _POOL_HAS_SPOKEN = True
                try:
                    for clip in self._batch_clips(texts):
                        spoken.put((clip, None))
                except BaseException as exc:  # handed to the reader, which raises it
                    spoken.put((None, exc))

        threading.Thread(target=speak, name="espeak batch", daemon=True).start()
        return _handed_over(spoken, len(texts))

    def synthesize(self, text: str) -> SpeechClip:
        """One clip, after any batch being spoken (it would change the batch's history)."""
        global _POOL_HAS_SPOKEN
        with _BATCH_LOCK:
            _POOL_HAS_SPOKEN = True
            return self._synthesize(text)

    def _synthesize(self, text: str) -> SpeechClip:
        check_pronounceable(text)
        for _attempt in range(MAX_ATTEMPTS):
            clip = self._spoken(text)
            if clip is not None:
                return clip
        raise SpeechError(_no_audio(text))

    def _batch_clips(self, texts: list[str]) -> Iterator[SpeechClip]:
        """Each text's clip, in order, from the batch's worker, asked for a few cues at a time
        (BATCH_CUES): it speaks them one after the other and answers once, so it does not
        wait on this process between cues (that wait, on a process whose other threads
        prepare cues, was most of a batch's time).

        A cue the worker gets wrong (now and then espeak hands one over empty) was spoken all
        the same: the worker's history is no longer the batch's, and every cue after it would
        come out a few samples different from a render where nothing went wrong. So the cues
        it spoke after that one are dropped, and a fresh worker speaks the batch's cues
        before it again, unheard, before it is asked for again (``_respoken``).
        """
        index = 0
        for size in _batch_sizes():
            if index == len(texts):
                return
            asked = texts[index : index + size]
            clips = self._spoken_many(_pronounceable_prefix(asked))
            yield from clips
            index += len(clips)
            if len(clips) < len(asked):  # the next cannot be spoken, or was spoken wrong
                check_pronounceable(texts[index])  # raised where its clip would have come
                yield self._respoken(texts, index)
                index += 1

    def _respoken(self, texts: list[str], index: int) -> SpeechClip:
        """``texts[index]``'s clip, which the batch's worker got wrong: from fresh workers
        that have spoken ``texts[:index]``, each of them right."""
        for _attempt in range(1, MAX_ATTEMPTS):
            self._replay(texts[:index])
            clip = self._spoken(texts[index])
            if clip is not None:
                return clip
        raise SpeechError(_no_audio(texts[index]))

    def _replay(self, texts: list[str]) -> None:
        """A fresh worker that has spoken ``texts``, each of them right."""
        wrong = ""
        for _attempt in range(MAX_ATTEMPTS):
            _POOL.close()
            failed = next((text for text in texts if self._spoken(text) is None), None)
            if failed is None:
                return
            wrong = failed
        raise SpeechError(_no_audio(wrong))

    def _spoken_many(self, texts: list[str]) -> list[SpeechClip]:
        """The worker's clips of ``texts``, spoken in this order, up to the first that is not
        its text's audio (the worker goes no further than one it could not speak)."""
        if not texts:
            return []
        settings = (self.voice, self.espeak_rate, self.pitch, CUE_TIMEOUT_S)
        timeout_s = len(texts) * CUE_TIMEOUT_S + REPLY_GRACE_S
        replies = _request(
            ("synthesize_many", texts, *settings), timeout_s, f"speaking {texts[0][:60]!r}"
        )
        clips = []
        for text, reply in zip(texts, replies, strict=False):
            clip = self._checked(text, reply)
            if clip is None:
                break
            clips.append(clip)
        return clips

    def _spoken(self, text: str) -> SpeechClip | None:
        """The worker's clip of ``text``, None when it is not this text's audio."""
        request = ("synthesize", text, self.voice, self.espeak_rate, self.pitch, CUE_TIMEOUT_S)
        reply = _request(request, CUE_TIMEOUT_S + REPLY_GRACE_S, f"speaking {text[:60]!r}")
        return self._checked(text, reply)

    def _checked(self, text: str, reply: Any) -> SpeechClip | None:
        """The worker's clip if it is this text's audio, else None (try again)."""
        import numpy as np  # here, not at the top: the worker imports this module too

        if reply is None:
            return None
        rate, width, channels, frames = reply
        if width != 2 or not frames or rate <= 0 or channels < 1:
            return None
        samples = np.frombuffer(frames, dtype="<i2").copy()
        if channels > 1:
            samples = samples[: samples.size - samples.size % channels]
            samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
        length_s = samples.size / rate
        expected = expected_length_s(text, self.rate_wpm)
        # A clip far off the text's length is the previous cue's audio, or a truncated one.
        if not (0.2 * expected <= length_s <= 5.0 * expected + 2.0):
            return None
        if samples.size == 0 or np.abs(samples).max() < 100:
            return None
        return SpeechClip(samples=samples, sample_rate=rate)


def _batch_sizes() -> Iterator[int]:
    """BATCH_CUES, then its last size for ever."""
    yield from BATCH_CUES
    while True:
        yield BATCH_CUES[-1]


def _pronounceable_prefix(texts: list[str]) -> list[str]:
    """``texts`` up to the first that ``check_pronounceable`` refuses."""
    for count, text in enumerate(texts):
        try:
            check_pronounceable(text)
        except SpeechError:
            return texts[:count]
    return texts


def _no_audio(text: str) -> str:
    return (
        f"the speech engine gave no usable audio for the cue {text[:60]!r} after "
        f"{MAX_ATTEMPTS} tries; try another --voice, or reinstall audioguide if every cue "
        "fails"
    )


def _handed_over(
    spoken: queue.SimpleQueue[tuple[SpeechClip | None, BaseException | None]], count: int
) -> Iterator[SpeechClip]:
    for _ in range(count):
        clip, failure = spoken.get()
        if failure is not None:
            raise failure
        assert clip is not None
        yield clip


register_engine(NAME, lambda voice, rate_wpm: Pyttsx3Engine(voice, rate_wpm), list_voices)


# ---------------------------------------------------------------------------------------------
# The worker's side: runs in its own process, owns every workaround


class _CueFailed(Exception):
    """Raised out of the driver's run loop: the cue overran its time, or the driver failed
    inside espeak's callback (where pyttsx3 would only leave its loop spinning)."""


class DriverClock:
    """The ``time`` module as pyttsx3's espeak driver sees it: every attribute is the real
    one, except ``sleep``, which waits at most 1 ms and ends a cue that has failed.

    The run loop polls for the end of a cue every 10 ms, and a cue takes about 3 ms to
    synthesize: polling every 1 ms makes 111 cues take 0.4 s, not 1.2 s.
    """

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.failure: BaseException | None = None
        self.sleeps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.failure is not None:
            raise _CueFailed from self.failure
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _CueFailed
        time.sleep(min(seconds, 0.001))


Wav = tuple[int, int, int, bytes]
"""A cue's audio as the driver writes it: (sample rate, sample width, channels, frames)."""


class CapturedWav:
    """The ``wave`` module as pyttsx3's espeak driver sees it: every attribute is the real
    one, except ``open``, whose writer keeps what the driver writes in ``written``, under the
    file name it was given, instead of writing a file.

    The driver writes each cue as a WAV file from espeak's callback, to be read back at once.
    A file of its own per cue, in a folder of its own, cost 2 to 4 ms a cue here, one cue after
    another (removing a file just written is slow on a journalling file system): about 0.3 s
    of a cold back-pain render, now spent on nothing. The samples are the same bytes.
    """

    def __init__(self) -> None:
        self.written: dict[str, Wav] = {}

    def __getattr__(self, name: str) -> Any:
        import wave

        return getattr(wave, name)

    def open(self, name: object, mode: str | None = None) -> _WavWriter:
        if mode != "wb":
            raise ValueError(f"the driver may only write its audio here (mode {mode!r})")
        return _WavWriter(self.written, str(name))


class _WavWriter:
    """What the driver calls on a ``wave.open(name, "wb")``, kept in memory."""

    def __init__(self, written: dict[str, Wav], name: str) -> None:
        self.written = written
        self.name = name
        self.rate = self.width = self.channels = 0
        self.frames: list[bytes] = []

    def __enter__(self) -> _WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def setnchannels(self, channels: int) -> None:
        self.channels = channels

    def setsampwidth(self, width: int) -> None:
        self.width = width

    def setframerate(self, rate: int) -> None:
        self.rate = rate

    def writeframes(self, frames: bytes) -> None:
        self.frames.append(bytes(frames))

    def close(self) -> None:
        self.written[self.name] = (self.rate, self.width, self.channels, b"".join(self.frames))


class _WorkerEngine:
    """pyttsx3 and its espeak driver, patched, inside the worker process."""

    def __init__(self) -> None:
        self.source = _prepare_espeak()
        self.clock = DriverClock()
        self.wav = CapturedWav()
        self.cues = 0
        self.printed = 0
        try:
            import pyttsx3

            self.driver_module = patch_driver(self.clock, self._swallow_print, self.wav)
            self.engine = pyttsx3.init("espeak" if sys.platform == "linux" else None)
            self.engine.runAndWait()  # the first run returns early; spend it on nothing
        except SpeechError:
            raise
        except Exception as exc:
            raise SpeechError(
                f"the speech engine did not start ({exc}); espeak-ng from {self.source}. "
                "Reinstall audioguide, or install espeak-ng with your package manager"
            ) from None
        # An exception in espeak's callback is only reported here; the clock acts on it.
        sys.unraisablehook = self._unraisable

    def _swallow_print(self, *args: object, **kwargs: object) -> None:
        self.printed += 1

    def _unraisable(self, unraisable: Any) -> None:
        self.clock.failure = unraisable.exc_value or RuntimeError("espeak callback failed")

    def info(self) -> dict[str, Any]:
        from importlib import metadata

        try:
            version = f"pyttsx3 {metadata.version('pyttsx3')}/{sys.platform}"
        except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
            version = f"pyttsx3 ?/{sys.platform}"
        if sys.platform == "linux":
            from pyttsx3.drivers import _espeak

            with contextlib.suppress(Exception):  # the version only refines the cache key
                version += f"/espeak-ng {_espeak.Info(None).decode()}"
        voices = [
            (
                str(v.id),
                str(v.name),
                tuple(str(lang) for lang in (v.languages or ())),
                v.gender,
            )
            for v in self.engine.getProperty("voices")
        ]
        return {"version": version, "voices": voices, "source": self.source}

    def stats(self) -> dict[str, int]:
        return {"sleeps": self.clock.sleeps, "printed": self.printed}

    def apply_property(self, name: str, value: object) -> None:
        """Set a voice property and wait until espeak-ng really uses it.

        With pyttsx3's retrieval mode espeak-ng runs asynchronously: a rate or pitch change is
        queued in espeak's own command queue, and pyttsx3's ``runAndWait`` cancels that queue
        before synthesizing, so a change made just before a cue was sometimes dropped (a cue
        at 200 wpm came out at the previous 100). Reading the property back asks espeak.
        """
        if sys.platform != "linux":
            self.engine.setProperty(name, value)
            return
        deadline = time.monotonic() + PROPERTY_WAIT_S
        while True:
            current = self.engine.getProperty(name)
            if current == value:
                return
            if time.monotonic() > deadline:
                raise SpeechError(
                    f"the speech engine did not accept {name} {value!r} (it stays at "
                    f"{current!r}); try another --voice or --rate"
                )
            self.engine.setProperty(name, value)
            time.sleep(0.002)

    def synthesize(
        self, text: str, voice: str | None, rate_wpm: int, pitch: int, timeout_s: float
    ) -> Wav | None:
        """One cue: (rate, sample width, channels, frames) as the driver wrote them, or None
        when it wrote nothing."""
        if voice is not None:
            self.apply_property("voice", voice)
        self.apply_property("rate", rate_wpm)
        self.apply_property("pitch", pitch)
        if sys.platform != "linux":  # the system's voices, whose drivers write files
            return self._spoken_to_file(text, timeout_s)
        # A name per cue, as its file had: audio the driver hands over late (the first run
        # after init does) lands under the cue being spoken, as it would have in that file,
        # and the parent's check of its length rejects it.
        self.cues += 1
        name = f"cue-{self.cues}.wav"
        self.wav.written.clear()
        deadline = time.monotonic() + timeout_s
        self._speak(text, name, timeout_s)
        self._wait_for_espeak(text, deadline, timeout_s)
        return self.wav.written.pop(name, None)

    def _wait_for_espeak(self, text: str, deadline: float, timeout_s: float) -> None:
        """Until espeak is done with the cue. The run ends from espeak's callback, which may
        still be running then: going on to the next cue at once (as soon as the audio was no
        longer written to a file and read back) left one cue in 20 to 40 empty and every cue
        after it a few samples different; waiting left one in 1,443 (writing and reading the
        file had left one in 444), which the batch speaks again
        (``Pyttsx3Engine._respoken``). Polled, not with ``espeak_Synchronize``, which sleeps
        20 ms at a time: 1 to 8 cues of back-pain's 111 are still being finished, for less
        than a millisecond."""
        from pyttsx3.drivers import _espeak

        while _espeak.IsPlaying():
            if time.monotonic() > deadline:
                raise SpeechError(_cue_failure(text, None, timeout_s))
            time.sleep(0.0002)

    def _speak(self, text: str, path: str, timeout_s: float) -> None:
        self.engine.save_to_file(text, path)
        self.clock.deadline = time.monotonic() + timeout_s
        self.clock.failure = None
        try:
            self.engine.runAndWait()
        except _CueFailed as exc:
            raise SpeechError(_cue_failure(text, exc.__cause__, timeout_s)) from None
        finally:
            self.clock.deadline = None

    def _spoken_to_file(self, text: str, timeout_s: float) -> Wav | None:
        import tempfile
        import wave

        with tempfile.TemporaryDirectory(prefix="audioguide-tts-") as tmp:
            path = Path(tmp) / "cue.wav"
            self._speak(text, str(path), timeout_s)
            if not path.is_file():
                return None
            try:
                with wave.open(str(path), "rb") as wav:
                    return (
                        wav.getframerate(),
                        wav.getsampwidth(),
                        wav.getnchannels(),
                        wav.readframes(wav.getnframes()),
                    )
            except (wave.Error, EOFError):
                return None


def _cue_failure(text: str, cause: BaseException | None, timeout_s: float) -> str:
    if cause is not None:
        return f"the speech engine failed on {text[:60]!r} ({cause}); try another --voice"
    return (
        f"the speech engine did not finish {text[:60]!r} within {timeout_s:.0f} s and was "
        "stopped; if the machine is very busy, try again"
    )


def _prepare_espeak() -> str:
    """Make espeak-ng loadable for pyttsx3; return where it came from."""
    import ctypes

    if sys.platform != "linux" or _system_library_loads():
        return "system"
    try:
        import espeakng_loader
    except ImportError:
        raise SpeechError(
            "espeak-ng is not installed; reinstall audioguide (pip install .) to get the "
            "espeakng-loader wheel, or install espeak-ng with your package manager"
        ) from None
    from importlib import metadata

    # pyttsx3 asks the dynamic loader for libespeak-ng.so.1; a library already loaded
    # globally under that soname satisfies the request.
    ctypes.CDLL(espeakng_loader.get_library_path(), mode=ctypes.RTLD_GLOBAL)
    os.environ.setdefault(ESPEAK_DATA_ENV, espeakng_loader.get_data_path())
    return "espeakng-loader " + metadata.version("espeakng-loader")


def _system_library_loads() -> bool:
    """Whether the system has an espeak-ng that pyttsx3 would load (one of the names it asks
    the dynamic loader for), loaded now if so."""
    import ctypes

    for name in SYSTEM_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


SUPPORTED_PYTTSX3 = (2,)  # the major versions whose driver patch_driver knows


def patch_driver(clock: DriverClock, quiet_print: Callable[..., None], wav: CapturedWav) -> Any:
    """Give pyttsx3's espeak driver module our ``time``, ``print`` and ``wave``; return the
    module.

    Raises SpeechError when the installed pyttsx3 is not laid out the way this expects (a
    release that no longer looks ``time``, ``print`` or ``wave`` up in its driver module): the
    patch would silently do nothing, or break mid-synthesis.
    """
    import wave
    from importlib import metadata

    import pyttsx3.drivers.espeak as driver

    version = metadata.version("pyttsx3")
    major = int(version.split(".")[0])
    run_loop = getattr(getattr(driver, "EspeakDriver", None), "startLoop", None)
    names = getattr(getattr(run_loop, "__code__", None), "co_names", ())
    callback = getattr(getattr(driver, "EspeakDriver", None), "_onSynth", None)
    callback_names = getattr(getattr(callback, "__code__", None), "co_names", ())
    if (
        major not in SUPPORTED_PYTTSX3
        or getattr(driver, "time", None) is not time
        or "time" not in names
        or "sleep" not in names
        or "print" not in callback_names
        or getattr(driver, "wave", None) is not wave
        or "wave" not in callback_names
    ):
        raise SpeechError(
            f"pyttsx3 {version} is not a version audioguide knows how to drive; install "
            "pyttsx3>=2.99,<3 (pip install 'pyttsx3>=2.99,<3')"
        )
    driver.time = clock
    driver.print = quiet_print
    driver.wave = wav
    return driver


def serve() -> None:
    """The worker process's main loop (workers.serve) around one patched pyttsx3."""
    engine: _WorkerEngine | None = None

    def handle(request: tuple[Any, ...]) -> Any:
        nonlocal engine
        if engine is None:
            engine = _WorkerEngine()
        kind, *args = request
        if kind == "start":
            return None
        if kind == "info":
            return engine.info()
        if kind == "stats":
            return engine.stats()
        if kind == "synthesize":
            return engine.synthesize(*args)
        if kind == "synthesize_many":
            texts, *settings = args
            spoken = []
            for text in texts:
                spoken.append(engine.synthesize(text, *settings))
                if spoken[-1] is None:  # the rest would follow a history the batch has not
                    break
            return spoken
        raise ValueError(f"unknown request {kind!r}")

    serve_requests(handle)
