"""The library API: routine name or file in, a plan or a rendered folder out.

Joins the stages of DESIGN.md: routine -> timeline -> speech and synthesis -> mix -> export.
The CLI is a thin layer over ``plan_session`` and ``render_session``; so can any Python code be.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from threadpoolctl import threadpool_limits

from .checks import check_choice, check_flag, check_optional_text, check_whole
from .errors import ExportError, OptionError, SpeechError
from .export import (
    ExportOptions,
    SessionWriter,
    cover_in_background,
    slugify,
    staged_folder,
    write_zip,
)
from .export.ownership import check_replaceable, check_zip_replaceable
from .kept_levels import LEVELS_MEMO, KeptLevels
from .mix import (
    MixSettings,
    TrackLevels,
    TrackMixer,
    balanced_gain,
    bed_in_background,
    bell_in_background,
    make_breath_tones,
    master_gain,
    mastered_spans,
    stem_levels,
    track_levels,
    true_peak_ceiling_dbtp,
)
from .pronounce import LEXICONS, Pronouncing, routine_speech
from .routine import Routine, load_routine
from .speech import (
    DEFAULT_RATE_WPM,
    DEFAULT_VOICE_FX,
    MAX_RATE_WPM,
    MIN_RATE_WPM,
    VOICE_FX,
    Speech,
    SpeechCache,
    SpeechEngine,
    VoiceInfo,
    cache_dir,
    make_engine,
    voice_effect,
)
from .speech import piper as piper_engine
from .speech.espeak import DEFAULT_VOICE as DEFAULT_ESPEAK_VOICE
from .speech.espeak import list_voices
from .speech.workers import usable_cores
from .timeline import (
    RenderOptions,
    Timeline,
    Track,
    build_timeline,
    played_routine,
    speech_texts,
)

DEFAULT_OUT_DIR = "audioguide-out"
MAX_JOBS = 64
VOICE_ENV = "AUDIOGUIDE_VOICE"
COVER_MEMO = "covers"  # in the cache folder, beside the speech cache: the covers drawn before
T = TypeVar("T")

Progress = Callable[[str, float, float], None]
"""Called as progress(stage, done, total) while rendering, stages in this order:
"synthesize" only when cues are missing from the cache, as shares of the whole render's
expected time (total: what synthesizing them takes, from ``synthesis_share``); then cues for
"speech" (preparing them), seconds of audio for "measure" and "encode"."""


def default_jobs() -> int:
    """Tracks rendered at once by default: the cores this process may run on."""
    return usable_cores()


@dataclass(frozen=True)
class VoiceOptions:
    """Who speaks and how: a voice id (None: the engine's default), the rate in words per
    minute, and the voice chain (``warm`` or ``none``)."""

    voice: str | None = None
    rate_wpm: int = DEFAULT_RATE_WPM
    voice_fx: str = DEFAULT_VOICE_FX

    def __post_init__(self) -> None:
        check_optional_text(self.voice, "voice")
        check_whole(self.rate_wpm, "rate_wpm", MIN_RATE_WPM, MAX_RATE_WPM, "words per minute")
        check_choice(self.voice_fx, "voice_fx", VOICE_FX)


@dataclass(frozen=True)
class SessionOptions:
    """Every choice a render takes, one part per stage; the defaults are the CLI's.

    Each part checks its own fields when it is made (OptionError names the field), so a
    SessionOptions that exists is one a render accepts.
    """

    render: RenderOptions = field(default_factory=RenderOptions)
    voice: VoiceOptions = field(default_factory=VoiceOptions)
    mix: MixSettings = field(default_factory=MixSettings)
    export: ExportOptions = field(default_factory=ExportOptions)
    use_cache: bool = True
    jobs: int = field(default_factory=default_jobs)

    def __post_init__(self) -> None:
        for name, kind in (
            ("render", RenderOptions),
            ("voice", VoiceOptions),
            ("mix", MixSettings),
            ("export", ExportOptions),
        ):
            if not isinstance(getattr(self, name), kind):
                raise OptionError(
                    f"must be a {kind.__name__} (got {getattr(self, name)!r})", field=name
                )
        check_flag(self.use_cache, "use_cache")
        check_whole(self.jobs, "jobs", 1, MAX_JOBS, "tracks rendered at once")


@dataclass(frozen=True)
class RenderResult:
    folder: Path
    files: tuple[Path, ...]
    playlist: Path
    timeline: Timeline
    warnings: tuple[str, ...] = ()  # what the render could not clean up after itself


def _routine(routine: Routine | str) -> Routine:
    return routine if isinstance(routine, Routine) else load_routine(routine)


def choose_engine(voice: str | None, rate_wpm: int, workers: int) -> SpeechEngine:
    """The engine for ``--voice``: an installed Piper voice (by name or package), a Piper
    ``.onnx`` file, or else an espeak-ng voice; with no voice, the best installed (Piper's
    when the ``natural`` extra and a voice are there). Each speaks through its engine's
    pronunciation table, and must speak the routine's language. $AUDIOGUIDE_VOICE, when
    set, is the voice used without ``--voice``."""
    engine: SpeechEngine
    voice = voice or os.environ.get(VOICE_ENV) or None
    if voice is None and piper_engine.default_voice() is None:
        engine, lexicon = make_engine(None, None, rate_wpm), LEXICONS["espeak-ng"]
    elif voice is None or piper_engine.looks_like_path(voice) or _is_piper_voice(voice):
        piper = piper_engine.PiperEngine(voice, rate_wpm=rate_wpm, workers=workers)
        piper_engine.check_language(piper.checked)
        engine, lexicon = piper, LEXICONS["piper"]
    else:
        espeak = make_engine(None, voice, rate_wpm)
        _check_espeak_language(espeak)
        engine, lexicon = espeak, LEXICONS["espeak-ng"]
    return Pronouncing(engine, lexicon)


def _is_piper_voice(voice: str) -> bool:
    # No Piper voice's name (its model file's) or package's has a slash, and espeak-ng's ids do
    # (gmw/en-us): such a voice needs no search of the installed packages (importlib.metadata
    # and their entry points, about 0.05 s of every render).
    if "/" in voice:
        return False
    return piper_engine.piper_version() is not None and piper_engine.find_voice(voice) is not None


def _check_espeak_language(engine: SpeechEngine) -> None:
    chosen = getattr(engine, "voice", None)  # a stand-in engine (tests) may name none
    info: VoiceInfo | None = next((v for v in engine.voices() if v.id == chosen), None)
    if info is None or not info.languages:
        return
    language = piper_engine.ROUTINE_LANGUAGE
    if not any(lang.lower().startswith(language) for lang in info.languages):
        raise SpeechError(
            f"--voice {chosen}: the voice speaks {', '.join(info.languages)} and the "
            f"routine is in {piper_engine.language_name(language)}; choose a voice of that "
            "language (audioguide voices)"
        )


def voice_label(engine: SpeechEngine) -> str:
    """Which voice spoke, for the plan and the tags: ``piper:en_US-joe-medium``,
    ``espeak-ng:gmw/en-us``, or the engine's identity for any other engine."""
    inner = engine.engine if isinstance(engine, Pronouncing) else engine
    label = getattr(inner, "label", None)  # Piper's
    if isinstance(label, str):
        return label
    if inner.identity.startswith("pyttsx3"):
        name = "espeak-ng" if sys.platform == "linux" else "pyttsx3"
        return f"{name}:{getattr(inner, 'voice', None) or 'default'}"
    return inner.identity


ESPEAK_LICENCE = "GPL-3.0-or-later (espeak-ng)"


def voice_rows() -> list[tuple[bool, str, str, str, str, str, str]]:
    """Every voice for ``audioguide voices``: (default?, engine, id, language, sample rate,
    source, licence), the Piper voices first."""
    chosen = os.environ.get(VOICE_ENV)
    default = piper_engine.default_voice()
    piper_default = None if chosen else default.name if default is not None else None
    rows = [(row[1] in (chosen, piper_default), *row) for row in piper_engine.voice_rows()]
    source = "espeak-ng" if sys.platform == "linux" else "the system's voices"
    espeak_default = chosen or (DEFAULT_ESPEAK_VOICE if default is None else None)
    for voice in list_voices():
        rows.append(
            (
                voice.id == espeak_default,
                "espeak-ng" if sys.platform == "linux" else "pyttsx3",
                voice.id,
                voice.languages[0] if voice.languages else "?",
                "22.05 kHz" if sys.platform == "linux" else "?",
                source,
                ESPEAK_LICENCE if sys.platform == "linux" else "the system's",
            )
        )
    return rows


def make_speech(options: SessionOptions, engine: SpeechEngine | None = None) -> Speech:
    """The speech source for these options: the engine the voice names (the best installed
    when it names none) unless one is given."""
    voice = options.voice
    engine = engine or choose_engine(voice.voice, voice.rate_wpm, max(1, options.jobs))
    cache = SpeechCache() if options.use_cache else None
    return Speech(engine, cache, effect=voice_effect(voice.voice_fx))


Spoken = Callable[[int, int], None]
"""Told (cues spoken, cues missing) before a batch of synthesis and as each cue comes."""


def plan_session(
    routine: Routine | str,
    options: SessionOptions | None = None,
    *,
    speech: Speech | None = None,
    spoken: Spoken | None = None,
) -> Timeline:
    """The timeline of a session: every track and event with its time. Mixes nothing; the
    cues the cache lacks are synthesized for their lengths (``spoken`` follows them)."""
    options = options or SessionOptions()
    routine = _routine(routine)
    speech = routine_speech(speech or make_speech(options), routine)
    speech.prepare(speech_texts(routine, options.render), progress=spoken)
    timeline = build_timeline(routine, speech.length_s, options.render)
    return replace(timeline, voice=voice_label(speech.engine))


def plan_sessions(
    routines: list[Routine],
    options: SessionOptions | None = None,
    *,
    speech: Speech | None = None,
    spoken: Spoken | None = None,
) -> list[Timeline]:
    """``plan_session`` of each routine, with one engine for all, and every cue the cache
    lacks synthesized first in one batch per pronunciation table (the built-in routines
    share one): one start of the engine's workers, not one a routine."""
    options = options or SessionOptions()
    speech = speech or make_speech(options)
    batches: dict[int, tuple[Speech, list[str]]] = {}
    for routine in routines:
        heard = routine_speech(speech, routine)
        batches.setdefault(id(heard), (heard, []))[1].extend(speech_texts(routine, options.render))
    for heard, texts in batches.values():
        heard.synthesize_missing(texts, prepared=False, progress=spoken)
    return [plan_session(routine, options, speech=speech) for routine in routines]


def render_session(
    routine: Routine | str,
    out_dir: str | Path = DEFAULT_OUT_DIR,
    options: SessionOptions | None = None,
    *,
    speech: Speech | None = None,
    progress: Progress | None = None,
) -> RenderResult:
    """Render a session into ``out_dir/<routine name>/``: MP3 tracks and an M3U8 playlist.

    The folder is replaced only when everything is written; on any failure the previous
    output stays as it was.
    """
    # The workers below use every core the render is given; a BLAS thread pool on top (numpy's
    # matrix products in the limiter) only spins beside them.
    with threadpool_limits(limits=1, user_api="blas"):
        return _render_session(routine, out_dir, options, speech=speech, progress=progress)


def _render_session(
    routine: Routine | str,
    out_dir: str | Path,
    options: SessionOptions | None,
    *,
    speech: Speech | None,
    progress: Progress | None,
) -> RenderResult:
    options = options or SessionOptions()
    export_options = options.export
    export_options.check()  # before any rendering: a missing ffmpeg fails at once
    # The engine is made while the routine is read: espeak-ng's worker, when it must be
    # asked its version and voices, starts meanwhile (its errors are raised below, in order).
    engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
    made = engine.submit(lambda: speech or make_speech(options))
    engine.shutdown(wait=False)
    routine = _routine(routine)
    target = Path(out_dir) / slugify(routine.name)
    keep = _files_read(routine, options)
    # Before any work: a folder that is not ours is refused at once, and left untouched.
    force = export_options.force
    check_replaceable(target, force=force, keep=keep)
    zip_path = target.with_name(f"{target.name}.zip")
    if export_options.zip:
        check_zip_replaceable(zip_path, force=force)
    # Drawn (or read from its memo) beside the speech, not in the serial step before pass 2.
    cover_memo = cache_dir() / COVER_MEMO if options.use_cache else None
    cover = cover_in_background(routine.title, routine.artist, memo=cover_memo)
    bell_in_background(options.mix, routine.bell_sound)
    with suppress(OptionError):  # a section with no variant here: build_timeline says so, below
        bed_in_background(options.mix, played_routine(routine, options.render))
    speech = routine_speech(made.result(), routine)
    texts = speech_texts(routine, options.render)
    report = progress or (lambda stage, done, total: None)
    _prepare_speech(speech, texts, max(1, options.jobs), report)
    timeline = build_timeline(routine, speech.length_s, options.render)
    timeline = replace(timeline, voice=voice_label(speech.engine))
    settings = options.mix
    tracks = timeline.tracks
    jobs = max(1, min(options.jobs, len(tracks)))
    make_breath_tones(tracks, settings, max(1, options.jobs))

    total_s = timeline.total_s

    def measured(done: float) -> None:
        report("measure", done, total_s)

    # Pass 1 measures every track's loudness blocks for one session gain; pass 2 mixes each
    # track again (cheaper than keeping a session of samples in memory), masters and encodes
    # it. Both go a span of a track at a time (mix.SPAN_SAMPLES), so a worker holds a span's
    # samples and the track's MP3 frames, whatever the session's length.
    # Pass 1 touches no file: a sound file that cannot be read fails before anything is made.
    # A track measured before from the same inputs is not measured again (kept_levels).
    kept = KeptLevels(cache_dir() / LEVELS_MEMO) if options.use_cache else None

    def measure(track: Track) -> TrackLevels:
        key = kept.key(track, speech, settings) if kept is not None else None
        if kept is None or key is None:
            return track_levels(TrackMixer(track, speech, settings))
        levels = kept.get(key)
        if levels is None:
            levels = track_levels(TrackMixer(track, speech, settings))
            kept.put(key, levels)
        return levels

    levels = _in_parallel(measure, tracks, jobs, measured)
    # Room for the encoder's overshoot.
    ceiling = true_peak_ceiling_dbtp(export_options.bitrate_kbps)
    gain = master_gain(levels, settings.loudness_lufs, ceiling)
    if gain is None:
        # Little speech: the plain gain would shout the voice. Measured again as two stems
        # (voice, the rest) where the voice sounds, only such a session finds the balance
        # that meets the target. The bar stays where pass 1 left it (it only goes forward).
        stems = _in_parallel(
            lambda track: stem_levels(
                TrackMixer(track, speech, settings), levels[tracks.index(track)]
            ),
            tracks,
            jobs,
            lambda done: None,
        )
        gain = balanced_gain(stems, settings.loudness_lufs, ceiling)

    cleanup: list[str] = []
    with staged_folder(target, force=force, keep=keep, warnings=cleanup) as staging:
        writer = SessionWriter(staging, timeline, export_options, cover=cover)

        def write(track: Track) -> None:
            mixer = TrackMixer(track, speech, settings, voice_gain_db=gain.voice_gain_db)
            spans = mastered_spans(mixer, gain.gain_db, ceiling_dbtp=ceiling)
            _guard_os(lambda: writer.write_track(track, spans), target)

        # Every worker has stopped before staged_folder cleans up, whatever happened.
        _in_parallel(write, tracks, jobs, lambda done: report("encode", done, total_s))
        written: tuple[Path, ...] = ()

        def finish() -> None:
            nonlocal written
            written = writer.finish()

        _guard_os(finish, target)

    if export_options.zip:
        _guard_os(lambda: write_zip(target, zip_path, force=force), target)
    files = tuple(target / p.name for p in written)
    return RenderResult(
        target, files, target / writer.files.playlist, timeline, warnings=tuple(cleanup)
    )


def _files_read(routine: Routine, options: SessionOptions) -> tuple[Path, ...]:
    """Every file this render reads: the routine and the sound files it or the options name.
    A render never replaces a folder that holds one of them."""
    named = [routine.source, routine.ambient, routine.bell_sound, options.mix.ambient]
    named += [options.mix.bell_file, *(section.ambient for section in routine.sections)]
    # Built-in routines and ambient kinds name no file; anything else that exists is one.
    return tuple(dict.fromkeys(Path(n) for n in named if n and Path(n).is_file()))


# The share of a cold back-pain render's time its synthesis takes, on 2 cores (scripts/bench.py:
# "piper synth" against "cold piper"; espeak-ng's cold render less its warm one): what the
# progress bar gives the synthesis of every cue.
SYNTHESIS_SHARES = {"piper": 0.85}
DEFAULT_SYNTHESIS_SHARE = 0.15  # espeak-ng, and any other engine


def synthesis_share(label: str, cues: int) -> Callable[[int], float]:
    """For the voice ``label`` names (``piper:...``) and a session of ``cues`` cues: the
    share of the render's time that synthesizing ``missing`` of them takes."""
    whole = SYNTHESIS_SHARES.get(label.split(":", 1)[0], DEFAULT_SYNTHESIS_SHARE)

    def share(missing: int) -> float:
        part = whole * missing / max(cues, 1)  # synthesis time, in renders of every cue
        return part / (part + 1.0 - whole)

    return share


def _prepare_speech(speech: Speech, texts: list[str], jobs: int, report: Progress) -> None:
    """Every cue as it will be mixed, prepared on ``jobs`` threads: read from the cache as
    prepared before, or read (or synthesized, one at a time as the engine requires, behind
    its lock), trimmed, resampled and put through the voice effect.

    Done once per cue before mixing, so the tracks never wait on, or repeat, a cue's effect.
    """
    share = synthesis_share(voice_label(speech.engine), len(dict.fromkeys(texts)))

    def spoken(done: int, missing: int) -> None:
        report("synthesize", share(missing) * done / missing, share(missing))

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        # One batch in the routine's order: reproducible.
        speech.synthesize_missing(texts, progress=spoken)
        # Every cue is spoken: an engine's workers (Piper's, up to 300 MB each) end before
        # the cues are prepared, not after.
        close = getattr(speech.engine, "close", None)
        if close is not None:
            close()
        futures = [pool.submit(speech.sample_count, text) for text in texts]
        for i, future in enumerate(as_completed(futures)):
            future.result()
            report("speech", i + 1, len(texts))
    except BaseException:
        speech.close()  # a thread waiting on the engine stops waiting now, on Ctrl-C too
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_parallel(
    work: Callable[[Track], T],
    tracks: tuple[Track, ...],
    jobs: int,
    done_s: Callable[[float], None],
) -> list[T]:
    """``[work(t) for t in tracks]`` on ``jobs`` threads, reporting seconds of audio done.

    The longest tracks start first, so no thread is left with a long one at the end. On any
    error or Ctrl-C the tracks not yet started are dropped and the running ones finish before
    the exception goes on: nothing writes into a folder that is being cleaned up.
    """
    results: dict[int, T] = {}
    done = 0.0
    order = sorted(tracks, key=lambda t: -t.duration_s)
    # Set by a failing worker itself, so the next queued track is skipped even before this
    # thread wakes up to cancel it.
    stop = threading.Event()

    def guarded(track: Track) -> T | None:
        if stop.is_set():
            return None
        try:
            return work(track)
        except BaseException:
            stop.set()
            raise

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(guarded, track): track for track in order}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                track = futures[future]
                results[track.index] = future.result()  # type: ignore[assignment]
                done += track.duration_s
                done_s(done)
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[track.index] for track in tracks]


def _guard_os(action: Callable[[], object], target: Path | None = None) -> None:
    """Run ``action``; turn an OS error while writing into an ExportError that says where."""
    try:
        action()
    except OSError as exc:
        # A failed write() carries no file name; the output folder is what the user can change.
        where = exc.filename or target or "output"
        if exc.errno == errno.ENOSPC:
            raise ExportError(
                f"{where}: the disk is full; free some space or choose another folder with "
                "-o DIR (the previous output was left as it was)"
            ) from None
        raise ExportError(
            f"{where}: cannot write ({exc.strerror}); choose another folder with -o DIR"
        ) from None
