"""The library API: routine name or file in, a plan or a rendered folder out.

Joins the stages of DESIGN.md: routine -> timeline -> speech and synthesis -> mix -> export.
The CLI is a thin layer over ``plan_session`` and ``render_session``; so can any Python code be.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .breath import BreathPattern
from .cache import SpeechCache
from .errors import ExportError
from .export import DEFAULT_BITRATE_KBPS, DEFAULT_OUTPUT_MODE, staged_folder, write_zip
from .formats import DEFAULT_FORMAT
from .mix import DEFAULT_LOUDNESS_LUFS, MixSettings, block_powers, master, master_gain_db, mix_track
from .names import slugify
from .routine import DEFAULT_LEVEL, Routine, load_routine
from .session_writer import ExportOptions, SessionWriter
from .speech import Speech
from .timeline import RenderOptions, Timeline, Track, build_timeline, speech_texts
from .tts import DEFAULT_RATE_WPM, Pyttsx3Engine, SpeechEngine

DEFAULT_OUT_DIR = "audioguide-out"

Progress = Callable[[str, int, int], None]
"""Called as progress(stage, done, total) while rendering."""


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
    bitrate_kbps: int = DEFAULT_BITRATE_KBPS
    audio_format: str = DEFAULT_FORMAT
    output_mode: str = DEFAULT_OUTPUT_MODE  # both, tracks or single (export.OUTPUT_MODES)
    zip: bool = False  # also write <folder>.zip beside the folder
    use_cache: bool = True
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)

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
    return Speech(engine, cache)


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
    options = options or SessionOptions()
    export_options = options.export_options()
    export_options.check()  # before any rendering: a missing ffmpeg fails at once
    routine = _routine(routine)
    speech = speech or make_speech(options)
    texts = speech_texts(routine, options.render_options())
    report = progress or (lambda stage, done, total: None)
    for i, text in enumerate(texts):
        speech.dry(text)
        report("speech", i + 1, len(texts))
    timeline = build_timeline(routine, speech.length_s, options.render_options())
    settings = options.mix_settings()
    tracks = timeline.tracks
    jobs = max(1, min(options.jobs, len(tracks)))

    def measure(track: Track) -> np.ndarray:
        return block_powers(mix_track(track, speech, settings))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        powers = []
        for i, p in enumerate(pool.map(measure, tracks)):
            powers.append(p)
            report("measure", i + 1, len(tracks))
        gain_db = master_gain_db(powers, settings.loudness_lufs)

        target = Path(out_dir) / slugify(routine.name)
        with staged_folder(target) as staging:

            writer = SessionWriter(staging, timeline, export_options)

            def write(track: Track) -> None:
                samples = master(mix_track(track, speech, settings), gain_db)
                _guard_os(lambda: writer.write_track(track, samples))

            for i, _ in enumerate(pool.map(write, tracks)):
                report("encode", i + 1, len(tracks))
            written: tuple[Path, ...] = ()

            def finish() -> None:
                nonlocal written
                written = writer.finish()

            _guard_os(finish)

    if options.zip:
        _guard_os(lambda: write_zip(target, target.with_name(f"{target.name}.zip")))
    files = tuple(target / p.name for p in written)
    return RenderResult(target, files, target / writer.names.playlist, timeline)


def _write_bytes(path: Path, data: bytes) -> None:
    _guard_os(lambda: path.write_bytes(data))


def _guard_os(action: Callable[[], object]) -> None:
    try:
        action()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ExportError(
                f"{exc.filename or 'output'}: the disk is full; free some space or choose "
                "another folder with -o DIR (the previous output was left as it was)"
            ) from None
        raise ExportError(
            f"{exc.filename or 'output'}: cannot write ({exc.strerror}); choose another "
            "folder with -o DIR"
        ) from None
