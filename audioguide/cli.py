"""The command line: click commands over the library API in ``pipeline``.

Each command parses its options, calls one library function and turns an AudioguideError
into ``Error: ...`` and exit status 1. Nothing here does audio work itself.
"""

from __future__ import annotations

import datetime
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .breath import PRESETS, BreathPattern, Tempo, describe_tempo, parse_pattern, parse_tempo
from .errors import AudioguideError, Interrupted, OptionError, ServeError
from .export import (
    AUDIO_FORMATS,
    DEFAULT_BITRATE_KBPS,
    DEFAULT_FORMAT,
    MP3_BITRATES_KBPS,
    ExportOptions,
    session_files,
)
from .mix import DEFAULT_LOUDNESS_LUFS, MAX_LOUDNESS_LUFS, MIN_LOUDNESS_LUFS, MixSettings
from .pipeline import (
    DEFAULT_OUT_DIR,
    MAX_JOBS,
    SessionOptions,
    VoiceOptions,
    plan_session,
    plan_sessions,
    render_session,
    voice_rows,
)
from .routine import (
    AMBIENT_KINDS,
    DEFAULT_LEVEL,
    LEVELS,
    MAX_MOVES_PER_MIN,
    MIN_MOVES_PER_MIN,
    POSITIONS,
    RoutineMistakes,
    builtin_names,
    load_routine,
)
from .speech import (
    DEFAULT_RATE_WPM,
    DEFAULT_VOICE_FX,
    MAX_RATE_WPM,
    MIN_RATE_WPM,
    VOICE_FX,
    SpeechCache,
    cache_dir,
)
from .synth import BREATH_SOUNDS
from .timeline import MAX_MINUTES, MIN_MINUTES, Event, RenderOptions, Timeline, check_routine

if TYPE_CHECKING:
    from .programme import ProgrammePlan, ProgrammeSession

# The feed's and the programmes' machinery (export/feed.py, programme.py) is imported by the
# commands that use it, not by every command: a render would pay its import for nothing
# (tests/test_warm_imports.py). For the same reason the limits of --weeks and --days-per-week
# are programme.py's written again here; that test holds them equal.
MAX_WEEKS = 104
DAYS_IN_WEEK = 7

T = TypeVar("T")
PROGRAMME_PLAN_SCHEMA = 1  # the shape of plan --program --json (docs/programmes.md)


def format_duration(seconds: float) -> str:
    """``1:05:09`` or ``20:13``."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):3d}:{secs:04.1f}"


def progress_weights(synthesis_share: float) -> dict[str, tuple[float, float]]:
    """Where each stage of a render sits on a bar of 100: (start, span). Synthesis takes its
    share (pipeline.synthesis_share: none on a warm render, most of a cold Piper one); the
    rest is shared as a warm render's time is: preparing speech 20%, the loudness pass 10%,
    mastering and encoding 70% (docs/performance.md)."""
    rest = 100.0 * (1.0 - synthesis_share)
    return {
        "synthesize": (0.0, 100.0 - rest),
        "speech": (100.0 - rest, 0.2 * rest),
        "measure": (100.0 - 0.8 * rest, 0.1 * rest),
        "encode": (100.0 - 0.7 * rest, 0.7 * rest),
    }


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except OptionError as exc:
        # An option that only fails with this routine (too short to fit, say): name the flag.
        message = f"{FLAGS[exc.field]} {exc.detail}" if exc.field in FLAGS else str(exc)
        raise click.ClickException(message) from None
    except AudioguideError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt as exc:
        with suppress(OSError):  # the terminal may be gone (SIGHUP)
            click.echo("Interrupted; nothing was changed.", err=True)
        sys.exit(128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT))


@contextmanager
def _synthesis_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A ``spoken`` callback for planning (``plan_session``) that shows a progress bar on a
    terminal once cues are missing: with Piper, a first plan of back-pain synthesizes for about
    15 s, and a first ``list`` every built-in routine's cues, for half a minute. Nothing is
    shown when the cache has every cue, or when stderr is not a terminal."""
    bars: list[Any] = []  # the bar of the batch being spoken, once one is shown

    def end() -> None:
        if bars:
            bars.pop().render_finish()

    def spoken(done: int, missing: int) -> None:
        if done == 0:  # a batch begins (``plan_sessions`` may speak more than one)
            end()
            if missing and sys.stderr.isatty():
                bars.append(
                    click.progressbar(length=missing, label=label, file=sys.stderr, show_eta=False)
                )
                bars[0].render_progress()
        elif bars:
            bars[0].update(done - bars[0].pos)

    try:
        yield spoken
    finally:
        end()


def _pattern(ctx: click.Context, param: click.Parameter, value: str | None) -> BreathPattern | None:
    if value is None:
        return None
    try:
        return parse_pattern(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _tempo(ctx: click.Context, param: click.Parameter, value: str | None) -> Tempo | None:
    if value is None:
        return None
    try:
        return parse_tempo(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# Options render and program share word for word (each decorator makes a new option each time
# it is applied, so one serves both commands).
_VOICE_OPTION = click.option(
    "--voice", metavar="ID", help="Voice to speak with (see 'audioguide voices')."
)
_RATE_OPTION = click.option(
    "--rate",
    type=int,
    default=DEFAULT_RATE_WPM,
    show_default=True,
    help=f"Speaking rate in words per minute, {MIN_RATE_WPM} to {MAX_RATE_WPM}.",
)
_NO_CACHE_OPTION = click.option("--no-cache", is_flag=True, help="Synthesize every cue afresh.")
_SEED_OPTION = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for noise and bells, 0 or more."
)
_JOBS_OPTION = click.option(
    "--jobs",
    type=int,
    default=None,
    help=f"Tracks rendered at once, 1 to {MAX_JOBS} [default: the number of cores].",
)
_QUIET_OPTION = click.option("-q", "--quiet", is_flag=True, help="Print only errors.")


def _timing_options(func: Callable[..., T]) -> Callable[..., T]:
    options = [
        click.option(
            "--breath-tempo",
            callback=_tempo,
            metavar="BPM[:END]",
            help="Breaths per minute for every breathing part, 2 to 20 (5 gives 12 s breaths); "
            "START:END (6:4.5) slows the breath evenly, cycle by cycle, across the session. "
            "The routine's inhale:exhale ratio is kept.",
        ),
        click.option(
            "--breath-pattern",
            callback=_pattern,
            metavar="PATTERN",
            help="Shape of each breath: in-out (4-6), in-hold-out (4-7-8), in-hold-out-hold "
            "(4-4-4-4) or a preset (see 'audioguide presets'). A ratio with --breath-tempo, "
            "seconds without.",
        ),
        click.option(
            "--move-tempo",
            type=float,
            metavar="PER_MIN",
            help=f"Steps or circles per minute for every paced movement, {MIN_MOVES_PER_MIN:g} "
            f"to {MAX_MOVES_PER_MIN:g} (duck walking: 40 is one step every 1.5 s).",
        ),
        click.option(
            "--level",
            type=click.Choice(LEVELS),
            default=DEFAULT_LEVEL,
            show_default=True,
            help="gentle: fewer repetitions, longer rests, no breath holds, more reminders to "
            "stop if it hurts; full: when gentle feels easy.",
        ),
        click.option(
            "--position",
            type=click.Choice(POSITIONS),
            help="standing, seated (on a firm chair) or lying: the routine's words and steps "
            "for that position; refused, naming the section, where a routine has none "
            "[default: the routine's first, else standing].",
        ),
        click.option(
            "--minutes",
            type=float,
            metavar="N",
            help=f"Fit the session to about N minutes, {MIN_MINUTES:g} to {MAX_MINUTES:g}, by "
            "changing breath cycles and repetitions (never the tempo, never the safety part).",
        ),
        _VOICE_OPTION,
        _RATE_OPTION,
        _NO_CACHE_OPTION,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _ambient(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value in AMBIENT_KINDS:
        return value
    if Path(value).is_file():
        return str(Path(value).resolve())
    raise click.BadParameter(
        f"{value!r} is neither an ambient kind ({', '.join(AMBIENT_KINDS)}) nor an existing "
        "sound file; check the spelling or the path"
    )


def _sound_options(func: Callable[..., T]) -> Callable[..., T]:
    """How a session sounds and is encoded: shared by render and program."""
    options = [
        click.option(
            "--breath-sound",
            type=click.Choice(BREATH_SOUNDS),
            default="tone",
            show_default=True,
            help="Breath guide: a gliding tone, breath-like noise, or nothing.",
        ),
        click.option("--bell/--no-bell", default=True, show_default=True, help="Ring the bells."),
        click.option(
            "--bell-file",
            type=click.Path(exists=True, dir_okay=False),
            metavar="FILE",
            help="Your own bell sound, up to a minute (WAV, FLAC, OGG, MP3; M4A needs ffmpeg) "
            "[default: the routine's, else a singing bowl].",
        ),
        click.option(
            "--ambient",
            callback=_ambient,
            metavar="KIND|FILE",
            help="Ambient bed under every section, ducked under the voice: none, pink, brown, "
            "drone, or a sound file to loop [default: the routine's, else none].",
        ),
        click.option(
            "--voice-fx",
            type=click.Choice(VOICE_FX),
            default=DEFAULT_VOICE_FX,
            show_default=True,
            help="Voice chain: warm (softer highs, a little warmth, a small room) or none (dry).",
        ),
        click.option(
            "--loudness",
            type=float,
            default=DEFAULT_LOUDNESS_LUFS,
            show_default=True,
            metavar="LUFS",
            help=f"Session loudness, stereo-equivalent LUFS, {MIN_LOUDNESS_LUFS:g} to "
            f"{MAX_LOUDNESS_LUFS:g}.",
        ),
        click.option(
            "--bitrate",
            type=click.Choice([str(b) for b in MP3_BITRATES_KBPS]),
            default=str(DEFAULT_BITRATE_KBPS),
            show_default=True,
            help="Bit rate in kbps: constant for MP3, the target for M4A and Ogg.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _programme_options(func: Callable[..., T]) -> Callable[..., T]:
    """Which weeks and days of a programme: shared by program and plan --program."""
    options = [
        click.option(
            "--weeks",
            type=click.IntRange(1, MAX_WEEKS),
            metavar="N",
            help="Weeks of practice [default: the programme's]; past the programme's last "
            "week, its last settings hold.",
        ),
        click.option(
            "--days-per-week",
            type=click.IntRange(1, DAYS_IN_WEEK),
            metavar="N",
            help="Practice days in each week of seven, the rest days spread between them "
            "[default: the programme's].",
        ),
        click.option(
            "--start",
            type=click.DateTime(formats=["%Y-%m-%d"]),
            metavar="YYYY-MM-DD",
            help="Date of the first session [default: today].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# The flag that sets each options field, so a library OptionError names what the user typed.
FLAGS = {
    "breaths_per_min": "--breath-tempo",
    "pattern": "--breath-pattern",
    "moves_per_min": "--move-tempo",
    "level": "--level",
    "minutes": "--minutes",
    "position": "--position",
    "voice": "--voice",
    "rate_wpm": "--rate",
    "voice_fx": "--voice-fx",
    "breath_sound": "--breath-sound",
    "bells": "--bell/--no-bell",
    "seed": "--seed",
    "loudness_lufs": "--loudness",
    "ambient": "--ambient",
    "bell_file": "--bell-file",
    "audio_format": "--format",
    "bitrate_kbps": "--bitrate",
    "mode": "--tracks/--single/--both",
    "zip": "--zip",
    "force": "--force",
    "use_cache": "--no-cache",
    "jobs": "--jobs",
}


def _given(kwargs: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The options fields (``fields``: field -> click parameter) the command line set."""
    return {field: kwargs[name] for field, name in fields.items() if kwargs.get(name) is not None}


def _feed_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from .export.feed import check_feed_url

    try:
        return check_feed_url(value)
    except AudioguideError as exc:
        raise click.BadParameter(str(exc)) from None


def _options(**kwargs: Any) -> SessionOptions:
    """The SessionOptions for a command's parameters; a bad value is reported as its flag."""
    try:
        return SessionOptions(
            render=RenderOptions(
                **_given(
                    kwargs,
                    {
                        "breaths_per_min": "breath_tempo",
                        "pattern": "breath_pattern",
                        "moves_per_min": "move_tempo",
                        "level": "level",
                        "minutes": "minutes",
                        "position": "position",
                    },
                )
            ),
            voice=VoiceOptions(
                **_given(kwargs, {"voice": "voice", "rate_wpm": "rate", "voice_fx": "voice_fx"})
            ),
            mix=MixSettings(
                **_given(
                    kwargs,
                    {
                        "breath_sound": "breath_sound",
                        "bells": "bell",
                        "seed": "seed",
                        "loudness_lufs": "loudness",
                        "ambient": "ambient",
                        "bell_file": "bell_file",
                    },
                )
            ),
            export=ExportOptions(
                **_given(
                    kwargs,
                    {
                        "audio_format": "audio_format",
                        "bitrate_kbps": "bitrate",
                        "mode": "output_mode",
                        "zip": "zip_",
                        "force": "force",
                    },
                )
            ),
            use_cache=not kwargs.get("no_cache", False),
            **_given(kwargs, {"jobs": "jobs"}),
        )
    except OptionError as exc:
        if exc.field not in FLAGS:
            raise
        raise click.BadParameter(exc.detail, param_hint=f"'{FLAGS[exc.field]}'") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="audioguide")
def cli() -> None:
    """Turn routine scripts into narrated guided-practice audio for your phone.

    \b
    Example:
        audioguide render back-pain
        audioguide render back-pain --breath-tempo 5
        audioguide plan my-routine.yaml
    """


# Shared by render and plan, so plan --json names the files render writes.
_format_option = click.option(
    "--format",
    "audio_format",
    type=click.Choice(AUDIO_FORMATS),
    default=DEFAULT_FORMAT,
    show_default=True,
    metavar="FORMAT",
    help=f"Audio format: {', '.join(AUDIO_FORMATS)}. MP3 needs nothing else; the others need "
    "ffmpeg.",
)


@cli.command()
@click.argument("routine")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT_DIR,
    show_default=True,
    help="Folder to write into; the session goes in a subfolder named after the routine.",
)
@_timing_options
@_sound_options
@_format_option
@click.option("--tracks", "output_mode", flag_value="tracks", help="Write one file per section.")
@click.option(
    "--single",
    "output_mode",
    flag_value="single",
    help="Write one full-session file, with a chapter per section.",
)
@click.option(
    "--both",
    "output_mode",
    flag_value="both",
    default=True,
    help="Write both, the tracks and the full-session file [default].",
)
@click.option("--zip", "zip_", is_flag=True, help="Also pack the folder into FOLDER.zip beside it.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace the session folder (and zip) even if audioguide did not write it, or files "
    "were added since. Never one that holds the routine or its sounds.",
)
@_SEED_OPTION
@_JOBS_OPTION
@click.option(
    "--feed-url",
    callback=_feed_url,
    metavar="URL",
    help="Also write FOLDER/feed.xml, a podcast feed of every session in the output folder, "
    "for when that folder is published at URL (see 'audioguide serve' to serve it yourself).",
)
@_QUIET_OPTION
def render(routine: str, out_dir: Path, quiet: bool, feed_url: str | None, **kwargs: Any) -> None:
    """Render ROUTINE (a built-in name or a .yaml file) to MP3 tracks and a playlist.

    \b
    Example:
        audioguide render back-pain
        audioguide render back-pain --breath-tempo 5 -o ~/Music
        audioguide render my-routine.yaml --breath-pattern 4-7-8
    """
    kwargs["bitrate"] = int(kwargs["bitrate"])
    options = _options(**kwargs)
    show_progress = not quiet and sys.stderr.isatty()
    with _user_errors():
        if show_progress:
            with click.progressbar(
                length=100, label="Rendering", file=sys.stderr, show_eta=False
            ) as bar:
                done = [0]
                weights = progress_weights(0.0)

                def progress(stage: str, count: float, total: float) -> None:
                    nonlocal weights
                    if stage == "synthesize" and count == 0:
                        weights = progress_weights(total)
                    base, span = weights[stage]
                    value = int(base + span * count / max(total, 1e-9))
                    if value > done[0]:
                        bar.update(value - done[0])
                        done[0] = value

                result = render_session(routine, out_dir, options, progress=progress)
        else:
            result = render_session(routine, out_dir, options)
        feed = None
        if feed_url:
            from .export.feed import write_feed

            feed = write_feed(out_dir, feed_url)
    for warning in result.warnings:  # even with --quiet: a folder was left behind
        click.echo(f"Warning: {warning}", err=True)
    if quiet:
        return
    timeline = result.timeline
    for warning in timeline.warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(
        f"{timeline.title}: {len(timeline.tracks)} tracks, {format_duration(timeline.total_s)} "
        f"({timeline.breath})"
    )
    click.echo(f"Written to {result.folder}/")
    click.echo(f"Playlist: {result.playlist}")
    if feed is not None:
        click.echo(f"Feed: {feed} (for {feed_url}{feed.name})")


@cli.command()
@click.argument("routine")
@_timing_options
@_format_option
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON for tools.")
@click.option(
    "--program",
    "is_programme",
    is_flag=True,
    help="ROUTINE is a programme (see 'audioguide program'): show every session's date, "
    "title, length and settings.",
)
@_programme_options
@click.pass_context
def plan(
    ctx: click.Context,
    /,
    routine: str,
    as_json: bool,
    audio_format: str,
    is_programme: bool,
    weeks: int | None,
    days_per_week: int | None,
    start: datetime.datetime | None,
    **kwargs: Any,
) -> None:
    """Show the timeline of ROUTINE and its length, without rendering audio.

    \b
    Example:
        audioguide plan back-pain --breath-tempo 5
        audioguide plan back-pain --json > plan.json
        audioguide plan back-pain --program --weeks 12 --start 2026-12-07
    """
    given = [
        name
        for name in ("weeks", "days_per_week", "start")
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    if given and not is_programme:
        flag = "--" + given[0].replace("_", "-")
        raise click.UsageError(f"{flag} plans a programme; add --program")
    if is_programme:
        _refuse_programme_settings(ctx)
        options = _options(audio_format=audio_format, **kwargs)
        from .programme import plan_programme

        with _user_errors():
            programme_plan = plan_programme(
                routine,
                options,
                weeks=weeks,
                days_per_week=days_per_week,
                start=start.date() if start else None,
            )
        if as_json:
            data = {"schema": PROGRAMME_PLAN_SCHEMA, **programme_plan.to_dict()}
            click.echo(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False))
        else:
            click.echo(_programme_text(programme_plan))
        return
    options = _options(audio_format=audio_format, **kwargs)
    with _user_errors(), _synthesis_bar("Synthesizing") as spoken:
        timeline = plan_session(routine, options, spoken=spoken)
    if as_json:
        # The files named as render names them in this format.
        data = timeline.to_dict(session_files(timeline, audio_format).tracks)
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False))
        return
    click.echo(_plan_text(timeline))
    for warning in timeline.warnings:
        click.echo(f"Warning: {warning}", err=True)


# A programme sets these for each week; a flag for all of them would undo its progression.
_PROGRAMME_SETS = {"breath_tempo": "tempo", "level": "level", "minutes": "length"}


def _refuse_programme_settings(ctx: click.Context) -> None:
    for name, what in _PROGRAMME_SETS.items():
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(
                f"{flag}: a programme sets each week's {what}; change it in a copy of the "
                "programme file (see docs/programmes.md)"
            )


def _programme_text(programme_plan: ProgrammePlan) -> str:
    programme = programme_plan.programme
    sessions = programme_plan.sessions
    total_s = sum(s.timeline.total_s for s in sessions)
    lines = [
        f"{programme.title}  ({_plural(programme_plan.weeks, 'week')}, {len(sessions)} "
        f"sessions from {programme_plan.start:%a %Y-%m-%d}, {format_duration(total_s)} in all)",
    ]
    for session in sessions:
        if session.day == 1:
            lines += ["", f"Week {session.week}"]
        lines.append(f"  {_session_line(session)}")
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _session_line(session: ProgrammeSession) -> str:
    """``Mon 2026-12-07  Week 1, day 1  10:00  back-pain-quick, gentle, 6 breaths/min``"""
    tempo = session.render.breaths_per_min
    breath = describe_tempo(tempo) if tempo is not None else session.timeline.breath
    return (
        f"{session.date:%a %Y-%m-%d}  {session.title:<15} "
        f"{format_duration(session.timeline.total_s):>6}  {session.routine_name}, "
        f"{session.render.level}, {breath}"
    )


def _plan_text(timeline: Timeline) -> str:
    fitted = ""
    if timeline.target_s is not None:
        fitted = f", fitted to {format_duration(timeline.target_s)}"
    voice = f", voice {timeline.voice}" if timeline.voice else ""
    lines = [
        f"{timeline.title}  ({format_duration(timeline.total_s)}{fitted}, {timeline.breath}, "
        f"level {timeline.level}{voice})",
        "",
    ]
    for track in timeline.tracks:
        lines.append(
            f"{track.index:02d}  {track.title}  [{_clock(track.start_s).strip()}, "
            f"{format_duration(track.duration_s)}]"
        )
        lines.extend(_event_lines(track.events))
        lines.append("")
    lines.append(f"Total {format_duration(timeline.total_s)} in {len(timeline.tracks)} tracks")
    return "\n".join(lines)


def _event_lines(events: tuple[Event, ...]) -> list[str]:
    """One line per event, a breathing part folded into one line followed by its cues."""
    lines: list[str] = []
    breath_run: list[Event] = []
    cue_lines: list[str] = []

    def flush() -> None:
        if breath_run and breath_run[0].kind == "move":
            span = breath_run[-1].end_s - breath_run[0].start_s
            per_min = 60.0 / breath_run[0].duration_s
            lines.append(
                f"   {_clock(breath_run[0].start_s)}  move     {len(breath_run)} movements at "
                f"{per_min:.3g}/min, {format_duration(span)}"
            )
            lines.extend(cue_lines)
            breath_run.clear()
            cue_lines.clear()
        if breath_run:
            cycles = sum(1 for e in breath_run if e.phase == breath_run[0].phase)
            span = breath_run[-1].end_s - breath_run[0].start_s
            tempos = [e.breaths_per_min for e in breath_run if e.breaths_per_min is not None]
            tempo = f"{tempos[0]:.3g}"
            if f"{tempos[-1]:.3g}" != tempo:
                tempo += f" to {tempos[-1]:.3g}"
            lines.append(
                f"   {_clock(breath_run[0].start_s)}  breathe  {cycles} cycles, "
                f"{format_duration(span)}, {tempo} breaths/min"
            )
            lines.extend(cue_lines)
            breath_run.clear()
            cue_lines.clear()

    for event in events:
        # A breathing or movement part folds into one line; the speech within it (starting
        # before its last event ends) is listed under it as cues.
        if event.kind in ("breath", "move"):
            if breath_run and breath_run[0].kind != event.kind:
                flush()
            breath_run.append(event)
        elif event.kind == "say" and breath_run and event.start_s < breath_run[-1].end_s:
            cue_lines.append(f"   {_clock(event.start_s)}    cue    {event.text}")
        else:
            flush()
            detail = event.text if event.kind == "say" else f"{event.duration_s:g} s"
            lines.append(f"   {_clock(event.start_s)}  {event.kind:<7}  {detail}")
    flush()
    return lines


@cli.command(name="program")
@click.argument("programme")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT_DIR,
    show_default=True,
    help="Folder to write into; the programme goes in a subfolder NAME-programme.",
)
@_programme_options
@_VOICE_OPTION
@_RATE_OPTION
@_sound_options
@_SEED_OPTION
@_JOBS_OPTION
@_NO_CACHE_OPTION
@click.option(
    "--force",
    is_flag=True,
    help="Replace the programme's folders even if audioguide did not write them, or files "
    "were added since.",
)
@_QUIET_OPTION
def program(
    programme: str,
    out_dir: Path,
    weeks: int | None,
    days_per_week: int | None,
    start: datetime.datetime | None,
    quiet: bool,
    **kwargs: Any,
) -> None:
    """Render PROGRAMME (a built-in name or a .yaml file): a practice that grows week by week.

    One dated session per practice day, each a full session (tracks, the full file with
    chapters, transcripts), a playlist per week, one of everything and an index
    (programme.json). Run it again after a change: only the sessions that changed are
    rendered.

    \b
    Example:
        audioguide program back-pain --weeks 12
        audioguide program back-pain --days-per-week 3 --start 2026-12-07
        audioguide plan back-pain --program
    """
    from .programme import render_programme

    kwargs["bitrate"] = int(kwargs["bitrate"])
    options = _options(**kwargs)

    def progress(session: ProgrammeSession, rendered: bool) -> None:
        if rendered and not quiet:
            click.echo(f"Rendered {_session_line(session)}")

    with _user_errors():
        try:
            result = render_programme(
                programme,
                out_dir,
                options,
                weeks=weeks,
                days_per_week=days_per_week,
                start=start.date() if start else None,
                progress=progress,
            )
        except KeyboardInterrupt:
            click.echo(
                "Interrupted; the sessions rendered so far are kept, and the next run renders "
                "only the rest.",
                err=True,
            )
            sys.exit(130)
    if quiet:
        return
    sessions = result.plan.sessions
    click.echo(
        f"{result.plan.programme.title}: {len(sessions)} sessions over "
        f"{_plural(result.plan.weeks, 'week')} from {result.plan.start:%a %Y-%m-%d}; "
        f"{len(result.rendered)} rendered, "
        f"{len(result.unchanged)} unchanged"
        + (f", {len(result.removed)} removed" if result.removed else "")
    )
    click.echo(f"Written to {result.folder}/")
    click.echo(f"Playlist: {result.playlist}")
    click.echo(f"On a phone, one episode a day: audioguide serve {result.folder}")


@cli.command(name="list")
def list_routines() -> None:
    """List the built-in routines with their titles and lengths.

    \b
    Example:
        audioguide list
    """
    with _user_errors():
        names = builtin_names()
        routines = [load_routine(name) for name in names]
        with _synthesis_bar("Synthesizing the routines' cues") as spoken:
            timelines = plan_sessions(routines, spoken=spoken)
    for name, routine, timeline in zip(names, routines, timelines, strict=True):
        click.echo(f"{name:<20} {format_duration(timeline.total_s):>6}  {routine.title}")


@cli.command()
@click.argument("files", nargs=-1, required=True)
def validate(files: tuple[str, ...]) -> None:
    """Check routine files (or built-in names) and report every problem found.

    \b
    Example:
        audioguide validate my-routine.yaml
    """
    failed = 0
    for name in files:
        try:
            routine = load_routine(name)
            warnings = check_routine(routine)
        except RoutineMistakes as exc:
            for mistake in exc.mistakes:
                click.echo(f"Error: {mistake}", err=True)
            failed += 1
            continue
        except AudioguideError as exc:
            click.echo(f"Error: {exc}", err=True)
            failed += 1
            continue
        for warning in warnings:
            click.echo(f"Warning: {warning}", err=True)
        click.echo(f"{name}: ok ({routine.title}, {len(routine.sections)} sections)")
    if failed:
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="List every language, not only English.")
def voices(show_all: bool) -> None:
    """List the voices for --voice: engine, id, language, sample rate, source and licence.

    The default voice (used without --voice) is marked with *.

    \b
    Example:
        audioguide voices
        audioguide render back-pain --voice gmw/en-gb-x-rp
        audioguide render back-pain --voice en_US-joe-medium
    """
    with _user_errors():
        rows = voice_rows()
    for default, engine, voice_id, language, rate, source, licence in rows:
        if show_all or language.lower().startswith(("en", "?")):
            mark = "*" if default else " "
            click.echo(
                f"{mark} {engine:<9} {voice_id:<24} {language:<14} {rate:<10} {source}; "
                f"licence: {licence}"
            )


@cli.command()
def presets() -> None:
    """List the named breath patterns for --breath-pattern.

    \b
    Example:
        audioguide presets
        audioguide render back-pain --breath-pattern coherent
    """
    for preset in PRESETS.values():
        cycle = 60.0 / preset.breaths_per_min if preset.breaths_per_min else preset.pattern.cycle
        click.echo(f"{preset.name:<10} {preset.pattern!s:<10} {cycle:4.1f} s  {preset.description}")


@cli.command()
@click.argument(
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT_DIR,
    required=False,
)
@click.option(
    "--host",
    default="0.0.0.0",
    show_default=True,
    help="Address to listen on: every network interface by default; 127.0.0.1 for this "
    "machine only.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--no-token",
    is_flag=True,
    help="Plain URLs without the private token (for a network you trust).",
)
def serve(folder: Path, host: str, port: int, no_token: bool) -> None:
    """Serve the sessions rendered in FOLDER to phones on this network: a player page and a
    podcast feed, with a QR code for each. Ctrl-C stops it.

    \b
    Example:
        audioguide serve
        audioguide serve ~/Music/audioguide --port 8000
        audioguide serve --host 127.0.0.1
    """
    with _user_errors():
        try:
            import segno

            from . import server
        except ModuleNotFoundError as exc:
            raise ServeError(
                f"serve needs the serve extra ({exc.name} is not installed); install it with "
                "pip install 'audioguide[serve]'"
            ) from None
        server.check_folder(folder)
        token = None if no_token else server.load_token(folder)
        app = server.create_app(folder, token)
        sock = server.bind(host, port)
    try:
        where = server.addresses(host, sock.getsockname()[1], token)
        if host in ("0.0.0.0", "::"):
            click.echo(
                "Warning: listening on every network interface; anyone on this network with the "
                "link can listen (--host 127.0.0.1 keeps it on this machine).",
                err=True,
            )
        from .export.feed import find_sessions

        count = len(find_sessions(folder))
        if not count:
            click.echo(
                f"Warning: no rendered sessions in {folder} yet; render one (audioguide render "
                f"back-pain -o {folder}) and reload the page.",
                err=True,
            )
        click.echo(f"Serving {count} session{'s' * (count != 1)} from {folder}/ (Ctrl-C stops)")
        for label, url in (("Page", where.page_url), ("Podcast feed", where.feed_url)):
            click.echo(f"\n{label}: {url}")
            segno.make(url, error="m").terminal(out=sys.stdout, compact=True)
        sys.stdout.flush()
        server.serve_forever(app, sock)
    except KeyboardInterrupt:
        sock.close()  # Ctrl-C before the server ran: it stops all the same
    click.echo("Stopped.")


@cli.group()
def cache() -> None:
    """Manage the speech cache."""


@cache.command(name="clear")
def cache_clear() -> None:
    """Remove every cached speech cue, and the covers, measured levels, voice facts and voice
    models kept beside them.

    Everything removed is made again when a render needs it.

    \b
    Example:
        audioguide cache clear
    """
    from .export.cover import MEMO_SUFFIX
    from .kept_levels import LEVELS_MEMO, LEVELS_SUFFIX
    from .pipeline import COVER_MEMO
    from .speech.cache import remove_kept
    from .speech.espeak import INFO_FILE
    from .speech.piper import DIGESTS_FILE, MODEL_SUFFIX, MODELS_FOLDER

    files, size = SpeechCache().clear()
    root = cache_dir()
    kept, kept_size = remove_kept(
        [root / INFO_FILE, root / DIGESTS_FILE],
        [
            (root / COVER_MEMO, MEMO_SUFFIX),
            (root / LEVELS_MEMO, LEVELS_SUFFIX),
            (root / MODELS_FOLDER, MODEL_SUFFIX),
        ],
    )
    click.echo(
        f"Removed {files} cached cues ({size / 1e6:.1f} MB) and {kept} other cached files "
        f"({kept_size / 1e6:.1f} MB: covers, levels, voice facts, voice models) from {root}"
    )


@cache.command(name="info")
def cache_info() -> None:
    """Show where the cache is and how large it is.

    \b
    Example:
        audioguide cache info
    """
    files, size = SpeechCache().stats()
    click.echo(f"{cache_dir()}: {files} cached cues, {size / 1e6:.1f} MB")


def main() -> None:
    """The ``audioguide`` command (``__main__.main``, which handles signals from the start)."""
    from .__main__ import main as run

    run()
