"""The library API: routine name or file in, a plan or a rendered folder out.

Joins the stages of DESIGN.md: routine -> timeline -> speech and synthesis -> mix -> export.
The CLI is a thin layer over ``plan_session`` and ``render_session``; so can any Python code be.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from mutagen import MutagenError
from threadpoolctl import threadpool_limits

from .breath import BreathPattern
from .cache import SpeechCache
from .errors import ExportError
from .export import DEFAULT_BITRATE_KBPS, DEFAULT_OUTPUT_MODE, staged_folder, write_zip
from .formats import DEFAULT_FORMAT
from .mix import (
    DEFAULT_LOUDNESS_LUFS,
    MixSettings,
    TrackMixer,
    master_gain_db,
    mastered_spans,
    track_powers,
    true_peak_ceiling_dbtp,
)
from .names import slugify
from .ownership import check_replaceable, check_zip_replaceable
from .routine import DEFAULT_LEVEL, Routine, load_routine
from .session_writer import ExportOptions, SessionWriter
from .speech import DEFAULT_VOICE_FX, Speech, voice_effect
from .timeline import RenderOptions, Timeline, Track, build_timeline, speech_texts
from .tts import DEFAULT_RATE_WPM, Pyttsx3Engine, SpeechEngine

DEFAULT_OUT_DIR = "audioguide-out"
T = TypeVar("T")

Progress = Callable[[str, float, float], None]
"""Called as progress(stage, done, total) while rendering: cues for "speech", seconds of
audio for "measure" and "encode"."""


def default_jobs() -> int:
    """Tracks rendered at once by default: the cores this process may run on (a container or
    ``taskset`` can allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class SessionOptions:
    """Every choice a render takes; the defaults are the CLI's."""

    breaths_per_min: float | None = None
    pattern: BreathPattern | None = None
    moves_per_min: float | None = None
    level: str = DEFAULT_LEVEL
    minutes: float | None = None
    voice: str | None = None
    rate_wpm: int = DEFAULT_RATE_WPM
    breath_sound: str = "tone"
    bells: bool = True
    seed: int = 0
    loudness_lufs: float = DEFAULT_LOUDNESS_LUFS
    ambient: str | None = None  # a kind or a sound file for every section; None: the routine's
    bell_file: str | None = None  # a sound file for the bells; None: the routine's, else the bowl
    voice_fx: str = DEFAULT_VOICE_FX
    bitrate_kbps: int = DEFAULT_BITRATE_KBPS
    audio_format: str = DEFAULT_FORMAT
    output_mode: str = DEFAULT_OUTPUT_MODE  # both, tracks or single (export.OUTPUT_MODES)
    zip: bool = False  # also write <folder>.zip beside the folder
    # Replace an output folder (or zip) even if audioguide cannot prove it wrote it. Never one
    # that holds a file the render reads.
    force: bool = False
    use_cache: bool = True
    jobs: int = field(default_factory=default_jobs)

    def render_options(self) -> RenderOptions:
        return RenderOptions(
            breaths_per_min=self.breaths_per_min,
            pattern=self.pattern,
            moves_per_min=self.moves_per_min,
            level=self.level,
            minutes=self.minutes,
        )

    def export_options(self) -> ExportOptions:
        return ExportOptions(
            audio_format=self.audio_format, bitrate_kbps=self.bitrate_kbps, mode=self.output_mode
        )

    def mix_settings(self) -> MixSettings:
        return MixSettings(
            breath_sound=self.breath_sound,
            bells=self.bells,
            seed=self.seed,
            loudness_lufs=self.loudness_lufs,
            ambient=self.ambient,
            bell_file=self.bell_file,
        )


@dataclass(frozen=True)
class RenderResult:
    folder: Path
    files: tuple[Path, ...]
    playlist: Path
    timeline: Timeline


def _routine(routine: Routine | str) -> Routine:
    return routine if isinstance(routine, Routine) else load_routine(routine)


def make_speech(options: SessionOptions, engine: SpeechEngine | None = None) -> Speech:
    """The speech source for these options: the pyttsx3 engine unless one is given."""
    engine = engine or Pyttsx3Engine(voice=options.voice, rate_wpm=options.rate_wpm)
    cache = SpeechCache() if options.use_cache else None
    return Speech(engine, cache, effect=voice_effect(options.voice_fx))


def plan_session(
    routine: Routine | str,
    options: SessionOptions | None = None,
    *,
    speech: Speech | None = None,
) -> Timeline:
    """The timeline of a session: every track and event with its time. Mixes nothing."""
    options = options or SessionOptions()
    routine = _routine(routine)
    speech = speech or make_speech(options)
    speech.prepare(speech_texts(routine, options.render_options()))
    return build_timeline(routine, speech.length_s, options.render_options())


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
    export_options = options.export_options()
    export_options.check()  # before any rendering: a missing ffmpeg fails at once
    routine = _routine(routine)
    target = Path(out_dir) / slugify(routine.name)
    keep = _files_read(routine, options)
    # Before any work: a folder that is not ours is refused at once, and left untouched.
    check_replaceable(target, force=options.force, keep=keep)
    zip_path = target.with_name(f"{target.name}.zip")
    if options.zip:
        check_zip_replaceable(zip_path, force=options.force)
    speech = speech or make_speech(options)
    texts = speech_texts(routine, options.render_options())
    report = progress or (lambda stage, done, total: None)
    _prepare_speech(speech, texts, max(1, options.jobs), report)
    timeline = build_timeline(routine, speech.length_s, options.render_options())
    settings = options.mix_settings()
    tracks = timeline.tracks
    jobs = max(1, min(options.jobs, len(tracks)))

    total_s = timeline.total_s

    def measure(track: Track) -> np.ndarray:
        return track_powers(TrackMixer(track, speech, settings))

    # Pass 1 measures every track's loudness blocks for one session gain; pass 2 mixes each
    # track again (cheaper than keeping a session of samples in memory), masters and encodes
    # it. Both go a span of a track at a time (mix.SPAN_SAMPLES), so a worker holds a span's
    # samples and the track's MP3 frames, whatever the session's length.
    # Pass 1 touches no file: a sound file that cannot be read fails before anything is made.
    powers = _in_parallel(measure, tracks, jobs, lambda done: report("measure", done, total_s))
    gain_db = master_gain_db(powers, settings.loudness_lufs)
    ceiling = true_peak_ceiling_dbtp(options.bitrate_kbps)  # room for the encoder's overshoot

    with staged_folder(target, force=options.force, keep=keep) as staging:
        writer = SessionWriter(staging, timeline, export_options)

        def write(track: Track) -> None:
            mixer = TrackMixer(track, speech, settings)
            spans = mastered_spans(mixer, gain_db, ceiling_dbtp=ceiling)
            _guard_os(lambda: writer.write_track(track, spans), target)

        # Every worker has stopped before staged_folder cleans up, whatever happened.
        _in_parallel(write, tracks, jobs, lambda done: report("encode", done, total_s))
        written: tuple[Path, ...] = ()

        def finish() -> None:
            nonlocal written
            written = writer.finish()

        _guard_os(finish, target)

    if options.zip:
        _guard_os(lambda: write_zip(target, zip_path, force=options.force), target)
    files = tuple(target / p.name for p in written)
    return RenderResult(target, files, target / writer.names.playlist, timeline)


def _files_read(routine: Routine, options: SessionOptions) -> tuple[Path, ...]:
    """Every file this render reads: the routine and the sound files it or the options name.
    A render never replaces a folder that holds one of them."""
    named = [routine.source, routine.ambient, routine.bell_sound, options.ambient]
    named += [options.bell_file, *(section.ambient for section in routine.sections)]
    # Built-in routines and ambient kinds name no file; anything else that exists is one.
    return tuple(dict.fromkeys(Path(n) for n in named if n and Path(n).is_file()))


def _prepare_speech(speech: Speech, texts: list[str], jobs: int, report: Progress) -> None:
    """Every cue as it will be mixed, prepared on ``jobs`` threads: read from the cache as
    prepared before, or read (or synthesized, one at a time as the engine requires, behind
    its lock), trimmed, resampled and put through the voice effect.

    Done once per cue before mixing, so the tracks never wait on, or repeat, a cue's effect.
    """
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(speech.sample_count, text) for text in texts]
        for i, future in enumerate(as_completed(futures)):
            future.result()
            report("speech", i + 1, len(texts))
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
    except (OSError, MutagenError) as raised:
        # mutagen wraps the OSError of a failed tag write in its own error.
        exc = raised if isinstance(raised, OSError) else raised.__context__
        if not isinstance(exc, OSError):
            raise
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
