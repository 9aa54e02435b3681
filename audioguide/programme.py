"""Programmes: a programme file (YAML) in, a plan of dated sessions or a folder of them out.

A programme says how a practice grows week by week: which routine each practice day plays, for
how many minutes, at which level and breath tempo, and which days of each week are rest days.
``load_programme`` reads and validates the file with the routine stage's YAML loader and node
readers (yaml_nodes.py), so every error names the file, the line and the field.
``plan_programme`` turns it into one ``ProgrammeSession`` per practice day, each with its
timeline and a digest of everything that decides its audio; ``render_programme`` renders,
through ``pipeline.render_session``, only the sessions whose digest differs from the one kept
in the programme folder's index.

The progression rule: each entry of ``progression`` applies from its week until the next
entry's week, and gives only what changes (every other field carries over from the entry
before it); the last entry holds for every week after it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .breath import Tempo, TempoCurve
from .errors import AudioguideError, ExportError, OptionError, RoutineError
from .export import session_files
from .export.feed import PROGRAMME_INDEX
from .export.names import safe_name, slugify
from .export.ownership import check_replaceable
from .export.sidecars import PlaylistEntry, playlist_text
from .pipeline import SessionOptions, make_speech, plan_session, render_session
from .pronounce import routine_speech
from .routine import Routine, find_routine, load_routine
from .speech import Speech
from .steps import POSITIONS, read_tempo
from .timeline import MAX_MINUTES, MIN_MINUTES, RenderOptions, Timeline
from .yaml_nodes import LEVELS, NodeReader, RoutineLoader, read_text, refuse_language_tags

INDEX_NAME = PROGRAMME_INDEX  # read by the feed, to date each session's episode
INDEX_FORMAT = 1
DAYS_IN_WEEK = 7
MAX_WEEKS = 104
DEFAULT_DAYS_PER_WEEK = 5
PROGRAMME_FIELDS = (
    "title",
    "description",
    "weeks",
    "days_per_week",
    "rest_days",
    "routine",
    "position",
    "progression",
)
WEEK_FIELDS = ("week", "routine", "minutes", "level", "breath_tempo")


@dataclass(frozen=True)
class WeekSettings:
    """What the sessions of ``week`` and the weeks after it play, until the next entry.

    ``routines`` are taken in turn, one per practice day of the week; ``minutes`` None keeps
    the routine's own length, ``breaths_per_min`` None its own tempo.
    """

    week: int
    routines: tuple[str, ...]
    minutes: float | None
    level: str
    breaths_per_min: Tempo | None
    line: int = 0
    index: int = 0  # its place in the file's progression list


@dataclass(frozen=True)
class Programme:
    """A programme as loaded from ``source`` (a path, or the name of a built-in file)."""

    name: str
    title: str
    weeks: int
    practice_days: tuple[int, ...]  # days of each week (1 to 7, from the start date) played
    progression: tuple[WeekSettings, ...]
    description: str = ""
    source: str = ""
    position: str | None = None  # --position for every session; None: each routine's default

    def settings_for(self, week: int) -> WeekSettings:
        """The entry in force in ``week``: the last one starting at or before it."""
        return [s for s in self.progression if s.week <= week][-1]


@dataclass(frozen=True)
class ProgrammeSession:
    """One practice day: its place, date and title, what it plays, and its plan."""

    week: int
    day: int  # the practice day within the week, from 1
    date: datetime.date
    routine_name: str  # as the programme names it: a built-in name or a path
    routine: Routine
    render: RenderOptions
    timeline: Timeline
    digest: str

    @property
    def title(self) -> str:
        return self.timeline.title

    @property
    def folder(self) -> str:
        return slugify(self.routine.name)


@dataclass(frozen=True)
class ProgrammePlan:
    programme: Programme
    start: datetime.date
    sessions: tuple[ProgrammeSession, ...]

    @property
    def weeks(self) -> int:
        return max(s.week for s in self.sessions)

    @property
    def days_per_week(self) -> int:
        return len({s.date.weekday() for s in self.sessions if s.week == 1})

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``plan --program --json`` and (with files) of the programme index."""
        return {
            "programme": self.programme.name,
            "title": self.programme.title,
            "start": self.start.isoformat(),
            "weeks": self.weeks,
            "days_per_week": self.days_per_week,
            "total_s": round(sum(s.timeline.total_s for s in self.sessions), 4),
            "sessions": [
                {
                    "week": s.week,
                    "day": s.day,
                    "date": s.date.isoformat(),
                    "title": s.title,
                    "folder": s.folder,
                    "routine": s.routine_name,
                    "minutes": s.render.minutes,
                    "level": s.render.level,
                    "breaths_per_min": _tempo_json(s.render.breaths_per_min),
                    "breath": s.timeline.breath,
                    "total_s": round(s.timeline.total_s, 4),
                    "digest": s.digest,
                }
                for s in self.sessions
            ],
        }


@dataclass(frozen=True)
class ProgrammeResult:
    folder: Path
    plan: ProgrammePlan
    rendered: tuple[ProgrammeSession, ...]
    unchanged: tuple[ProgrammeSession, ...]
    removed: tuple[str, ...]  # session folders of an earlier, longer plan
    index: Path
    playlist: Path


# ---------------------------------------------------------------------------------------------
# Loading


def builtin_programme_names() -> list[str]:
    """Names of the programmes shipped inside the package, sorted."""
    folder = resources.files("audioguide") / "programmes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_programme(name_or_path: str) -> Programme:
    """Load a built-in programme by name, or a programme file by path, validated."""
    path = Path(name_or_path)
    names = builtin_programme_names()
    if path.suffix.lower() in (".yaml", ".yml") or "/" in name_or_path or path.is_file():
        if not path.is_file():
            raise RoutineError(
                "no such file; check the path, or give a built-in programme name "
                f"({', '.join(names)})",
                path=name_or_path,
            )
        return parse_programme(read_text(path), source=str(path), name=path.stem)
    if name_or_path not in names:
        raise RoutineError(
            f"unknown programme {name_or_path!r}. Built-in programmes: {', '.join(names)}; "
            "or give the path of a .yaml file"
        )
    text = (resources.files("audioguide") / "programmes" / f"{name_or_path}.yaml").read_text(
        encoding="utf-8"
    )
    return parse_programme(text, source=f"{name_or_path}.yaml", name=name_or_path)


def parse_programme(
    text: str, *, source: str = "<programme>", name: str = "programme"
) -> Programme:
    """Parse and validate programme YAML; raise RoutineError naming source, line and field.

    Read as a routine is (the same loader and node readers); the first mistake is reported.
    """
    try:
        loader = RoutineLoader(text, source)
    except yaml.reader.ReaderError as exc:
        raise RoutineError(
            f"character #x{exc.character:04x} at position {exc.position} is not allowed in "
            "YAML; remove it",
            path=source,
        ) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise RoutineError(
                f"YAML syntax: {exc.problem or exc.context or 'invalid YAML'}; check "
                "indentation, colons and quotes",
                path=source,
                line=mark.line + 1 if mark else None,
            ) from None
        except yaml.YAMLError as exc:
            raise RoutineError(f"YAML syntax: {exc}", path=source) from None
        if root is None:
            raise RoutineError(
                "the file is empty; a programme needs a title, a routine and a progression",
                path=source,
            )
        refuse_language_tags(root, source)
        nodes = NodeReader(loader, source)
        try:
            programme = _ProgrammeParser(nodes, Path(source).parent).read(root, name)
        except RoutineError as exc:
            # A mistake the reader noted and read on from comes first, in reading order.
            raise (nodes.mistakes or [exc])[0] from None
        if nodes.mistakes:
            raise nodes.mistakes[0]
        return programme
    finally:
        loader.dispose()


class _ProgrammeParser:
    """Reads a programme's fields with the routine stage's node reader (``nodes``)."""

    def __init__(self, nodes: NodeReader, folder: Path):
        self.nodes = nodes
        self.folder = folder  # a routine path in the file is relative to the file's folder
        self.loaded: set[str] = set()

    def read(self, root: yaml.Node, name: str) -> Programme:
        n = self.nodes
        fields = n.mapping(root, "", PROGRAMME_FIELDS, "a programme")
        for required, why in (
            ("title", "every programme needs a title"),
            ("routine", "name the routine its sessions play (a built-in name or a file)"),
            ("progression", "list the weeks' settings, starting at week: 1"),
        ):
            if required not in fields:
                raise n.fail(root, required, f"missing; {why}")
        title = n.text(fields["title"][1], "title")
        description = ""
        if "description" in fields:
            description = n.text(fields["description"][1], "description", allow_empty=True)
        weeks: int | None = None
        if "weeks" in fields:
            weeks = n.integer(fields["weeks"][1], "weeks", 1, MAX_WEEKS, "weeks")
        practice_days = self.practice_days(fields)
        routines = self.routines(fields["routine"][1], "routine")
        position = None
        if "position" in fields:
            position = n.choice(fields["position"][1], "position", POSITIONS)
        progression = self.progression(fields["progression"][1], routines)
        if weeks is None:
            weeks = progression[-1].week
        return Programme(
            name=name,
            title=title,
            weeks=weeks,
            practice_days=practice_days,
            progression=progression,
            description=description,
            source=n.source,
            position=position,
        )

    def practice_days(self, fields: dict[str, tuple[yaml.Node, yaml.Node]]) -> tuple[int, ...]:
        n = self.nodes
        per_week: int | None = None
        if "days_per_week" in fields:
            per_week = n.integer(
                fields["days_per_week"][1], "days_per_week", 1, DAYS_IN_WEEK, "days"
            )
        if "rest_days" not in fields:
            return spread_days(per_week or DEFAULT_DAYS_PER_WEEK)
        node = fields["rest_days"][1]
        rest: list[int] = []
        if not (isinstance(node, yaml.SequenceNode) and not node.value):
            for i, item in enumerate(n.sequence(node, "rest_days", "days of the week")):
                day = n.integer(item, f"rest_days[{i}]", 1, DAYS_IN_WEEK, "the week's days")
                if day in rest:
                    raise n.fail(item, f"rest_days[{i}]", f"day {day} is listed twice; keep one")
                rest.append(day)
        if len(rest) == DAYS_IN_WEEK:
            raise n.fail(node, "rest_days", "every day is a rest day; leave at least one out")
        days = tuple(d for d in range(1, DAYS_IN_WEEK + 1) if d not in rest)
        if per_week is not None and per_week != len(days):
            raise n.fail(
                node,
                "rest_days",
                f"leaves {len(days)} practice days a week but days_per_week is {per_week}; "
                "make them agree, or give only one of them",
            )
        return days

    def routines(self, node: yaml.Node, where: str) -> tuple[str, ...]:
        n = self.nodes
        if isinstance(node, yaml.SequenceNode):
            items = n.sequence(node, where, "routines, one per practice day")
            return tuple(self.routine(item, f"{where}[{i}]") for i, item in enumerate(items))
        return (self.routine(node, where),)

    def routine(self, node: yaml.Node, where: str) -> str:
        name = self.nodes.text(node, where)
        looks_like_path = name.lower().endswith((".yaml", ".yml")) or "/" in name
        if looks_like_path and not Path(name).is_absolute():
            name = str(self.folder / name)
        if name not in self.loaded:
            try:
                source, _ = find_routine(name)
            except RoutineError as exc:
                raise self.nodes.fail(node, where, exc.detail) from None
            # A mistake inside the routine file is reported there, by its own line.
            load_routine(source if looks_like_path else name)
            self.loaded.add(name)
        return name

    def progression(self, node: yaml.Node, routines: tuple[str, ...]) -> tuple[WeekSettings, ...]:
        n = self.nodes
        entries: list[WeekSettings] = []
        last = WeekSettings(0, routines, None, LEVELS[0], None)
        for i, item in enumerate(n.sequence(node, "progression", "weeks' settings")):
            where = f"progression[{i}]"
            fields = n.mapping(item, where, WEEK_FIELDS, "a week's settings")
            if "week" not in fields:
                raise n.fail(item, f"{where}.week", "missing; say from which week it applies")
            week_node = fields["week"][1]
            week = n.integer(week_node, f"{where}.week", 1, MAX_WEEKS, "weeks")
            if not entries and week != 1:
                raise n.fail(
                    week_node, f"{where}.week", f"the first entry must be week 1 (got {week})"
                )
            if entries and week <= last.week:
                raise n.fail(
                    week_node,
                    f"{where}.week",
                    f"must come after week {last.week}, the entry before it (got {week}); "
                    "list the weeks in order",
                )
            changes: dict[str, Any] = {"week": week, "line": item.start_mark.line + 1, "index": i}
            if "routine" in fields:
                changes["routines"] = self.routines(fields["routine"][1], f"{where}.routine")
            if "minutes" in fields:
                changes["minutes"] = n.number(
                    fields["minutes"][1], f"{where}.minutes", MIN_MINUTES, MAX_MINUTES, "minutes"
                )
            if "level" in fields:
                changes["level"] = n.choice(fields["level"][1], f"{where}.level", LEVELS)
            if "breath_tempo" in fields:
                changes["breaths_per_min"] = read_tempo(
                    n, fields["breath_tempo"][1], f"{where}.breath_tempo"
                )
            last = replace(last, **changes)
            entries.append(last)
        return tuple(entries)


def spread_days(days_per_week: int) -> tuple[int, ...]:
    """The practice days of a week of seven with the rest days spread between them: 5 gives
    days 1, 2, 3, 5 and 6 (rest on 4 and 7), 3 gives 1, 3 and 5."""
    if not 1 <= days_per_week <= DAYS_IN_WEEK:
        raise OptionError(
            f"must be a whole number of days from 1 to {DAYS_IN_WEEK} (got {days_per_week})",
            field="days_per_week",
        )
    return tuple(i * DAYS_IN_WEEK // days_per_week + 1 for i in range(days_per_week))


# ---------------------------------------------------------------------------------------------
# Planning


def plan_programme(
    programme: Programme | str,
    options: SessionOptions | None = None,
    *,
    weeks: int | None = None,
    days_per_week: int | None = None,
    start: datetime.date | None = None,
    speech: Speech | None = None,
) -> ProgrammePlan:
    """Every session of the programme with its date, settings, timeline and digest.

    ``weeks`` and ``days_per_week`` replace the file's (the rest days then spread between the
    practice days); ``start`` is the date of day 1 of week 1 (default: today). The render
    settings of ``options`` apply to every session; its tempo, level and minutes are the
    programme's to set, and are ignored.
    """
    if not isinstance(programme, Programme):
        programme = load_programme(programme)
    options = options or SessionOptions()
    if weeks is not None and not (isinstance(weeks, int) and 1 <= weeks <= MAX_WEEKS):
        raise OptionError(
            f"must be a whole number of weeks from 1 to {MAX_WEEKS} (got {weeks})", field="weeks"
        )
    days = programme.practice_days
    if days_per_week is not None and days_per_week != len(days):
        days = spread_days(days_per_week)
    start = start or datetime.date.today()
    speech = speech or make_speech(options)
    routines: dict[str, Routine] = {}
    sessions: list[ProgrammeSession] = []
    for week in range(1, (weeks or programme.weeks) + 1):
        settings = programme.settings_for(week)
        for day, weekday in enumerate(days, start=1):
            name = settings.routines[(day - 1) % len(settings.routines)]
            if name not in routines:
                routines[name] = load_routine(name)
            routine = replace(
                routines[name], name=f"week-{week:02d}-day-{day}", title=f"Week {week}, day {day}"
            )
            render = RenderOptions(
                breaths_per_min=settings.breaths_per_min,
                level=settings.level,
                minutes=settings.minutes,
                pattern=options.render.pattern,
                moves_per_min=options.render.moves_per_min,
                position=programme.position or options.render.position,
            )
            date = start + datetime.timedelta(days=(week - 1) * DAYS_IN_WEEK + weekday - 1)
            session_options = _session_options(options, render, date)
            # The routine's own words are in what its engine hears, and so in the digest.
            spoken = routine_speech(speech, routine)
            try:
                timeline = plan_session(routine, session_options, speech=spoken)
            except OptionError as exc:
                # Only the programme can make this session's settings fit: say where.
                field = _PROGRAMME_FIELD.get(exc.field or "", "")
                where = f"progression[{settings.index}]" + (f".{field}" if field else "")
                if exc.field == "position" and programme.position:
                    where = "position"
                raise RoutineError(
                    f"{where}: {exc.detail} (week {week}, day {day})",
                    path=programme.source,
                    line=settings.line,
                ) from None
            digest = session_digest(timeline, session_options, spoken)
            sessions.append(
                ProgrammeSession(
                    week=week,
                    day=day,
                    date=date,
                    routine_name=name,
                    routine=routine,
                    render=render,
                    timeline=timeline,
                    digest=digest,
                )
            )
    return ProgrammePlan(programme, start, tuple(sessions))


# The programme file's name for each render option it sets.
_PROGRAMME_FIELD = {"minutes": "minutes", "level": "level", "breaths_per_min": "breath_tempo"}


def _session_options(
    options: SessionOptions, render: RenderOptions, date: datetime.date
) -> SessionOptions:
    # Each session is dated: its tags carry the year it is played, not the year it was made.
    return replace(options, render=render, export=replace(options.export, year=date.year))


def _tempo_json(tempo: Tempo | None) -> float | str | None:
    """A steady tempo as a number, a curve as it is written (``6:5``)."""
    return str(tempo) if isinstance(tempo, TempoCurve) else tempo


def session_digest(timeline: Timeline, options: SessionOptions, speech: Speech) -> str:
    """A digest of everything that decides a session's files: its timeline (every event's
    time and words), the voice, the mix and export settings, and the speech engine. The same
    digest means the same audio; the files' dates play no part."""
    export = {k: v for k, v in dataclasses.asdict(options.export).items() if k != "force"}
    data = {
        "timeline": timeline.to_dict(session_files(timeline).tracks),
        "voice": dataclasses.asdict(options.voice),
        "mix": dataclasses.asdict(options.mix),
        "export": export,
        "engine": speech.engine.identity,
    }
    text = json.dumps(data, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Rendering

ProgrammeProgress = Callable[[ProgrammeSession, bool], None]
"""Called as progress(session, rendered) for each session once it is rendered or found
unchanged."""


def programme_folder(programme: Programme, out_dir: str | Path) -> Path:
    """``out_dir/<name>-programme``: beside, never inside, the sessions ``render`` writes."""
    return Path(out_dir) / f"{slugify(programme.name)}-programme"


def render_programme(
    programme: Programme | str,
    out_dir: str | Path,
    options: SessionOptions | None = None,
    *,
    weeks: int | None = None,
    days_per_week: int | None = None,
    start: datetime.date | None = None,
    speech: Speech | None = None,
    progress: ProgrammeProgress | None = None,
) -> ProgrammeResult:
    """Render every session of the programme into ``out_dir/<name>-programme/``, one folder
    per practice day, with a playlist per week, one of everything and an index.

    A session whose digest matches the index's and whose folder is as it was written is left
    alone; every other one is rendered through ``render_session``, which replaces only a
    folder it wrote (``options.export.force`` overrides, as for a session).
    """
    options = options or SessionOptions()
    if not isinstance(programme, Programme):
        programme = load_programme(programme)
    folder = programme_folder(programme, out_dir)
    previous = _read_index(folder, force=options.export.force)
    speech = speech or make_speech(options)
    plan = plan_programme(
        programme, options, weeks=weeks, days_per_week=days_per_week, start=start, speech=speech
    )
    rendered: list[ProgrammeSession] = []
    unchanged: list[ProgrammeSession] = []
    done: dict[str, dict[str, Any]] = {
        k: v for k, v in previous.items() if k in {s.folder for s in plan.sessions}
    }
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for session in plan.sessions:
            if _is_current(folder, session, previous.get(session.folder)):
                unchanged.append(session)
                if progress:
                    progress(session, False)
                continue
            session_options = _session_options(options, session.render, session.date)
            result = render_session(session.routine, folder, session_options, speech=speech)
            done[session.folder] = {
                "digest": session.digest,
                "file": f"{session.folder}/{session_files(result.timeline).full}",
            }
            rendered.append(session)
            if progress:
                progress(session, True)
    finally:
        # Even after a failure or Ctrl-C, the index records the sessions that are done, so
        # the next run does not render them again.
        _write_json(folder / INDEX_NAME, _index(plan, done))
    removed = _remove_dropped(folder, previous, plan)
    playlist = _write_playlists(folder, plan)
    _write_json(folder / INDEX_NAME, _index(plan, done))
    return ProgrammeResult(
        folder, plan, tuple(rendered), tuple(unchanged), removed, folder / INDEX_NAME, playlist
    )


def _read_index(folder: Path, *, force: bool) -> dict[str, dict[str, Any]]:
    """The sessions the last render of this folder recorded: folder -> its entry.

    A folder that exists, is not empty and has no index of ours is refused (``force``
    overrides), as a session folder is.
    """
    if not folder.exists():
        return {}
    if not folder.is_dir():
        raise ExportError(f"{folder}: exists and is not a folder; move it or choose -o DIR")
    try:
        data = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
        if data.get("audioguide_programme") != INDEX_FORMAT:
            raise ValueError("not an index of ours")
        entries = {s["folder"]: s for s in data["sessions"] if isinstance(s["folder"], str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        if force or not any(folder.iterdir()):
            return {}
        raise ExportError(
            f"{folder}: holds files but no programme index ({INDEX_NAME}) audioguide wrote; "
            "nothing was changed. Choose another folder with -o DIR, or add --force"
        ) from None
    return {name: entry for name, entry in entries.items() if safe_name(name) == name}


def _is_current(folder: Path, session: ProgrammeSession, entry: dict[str, Any] | None) -> bool:
    """Whether ``session``'s folder holds exactly what its digest says, untouched since."""
    if not entry or entry.get("digest") != session.digest:
        return False
    target = folder / session.folder
    if not target.is_dir():
        return False
    try:
        check_replaceable(target)  # a file added, removed or changed since: render again
    except AudioguideError:
        return False
    return True


def _remove_dropped(
    folder: Path, previous: dict[str, dict[str, Any]], plan: ProgrammePlan
) -> tuple[str, ...]:
    """Remove the session folders an earlier plan had and this one has not (fewer weeks or
    days), each only while it is as audioguide wrote it."""
    planned = {s.folder for s in plan.sessions}
    removed: list[str] = []
    for name in sorted(set(previous) - planned):
        target = folder / name
        if not target.is_dir() or target.is_symlink():
            continue
        try:
            check_replaceable(target)
        except AudioguideError:
            continue  # changed by someone since: theirs now, left alone
        shutil.rmtree(target)
        removed.append(name)
    return tuple(removed)


def _write_playlists(folder: Path, plan: ProgrammePlan) -> Path:
    """A playlist per week (``Week 01.m3u8``) and one of every session, of the full-session
    files in order, each entry titled with its date."""
    artist = plan.sessions[0].timeline.artist

    def entry(session: ProgrammeSession) -> PlaylistEntry:
        full = session_files(session.timeline).full
        when = f"{session.date:%a} {session.date.day} {session.date:%b %Y}"
        title = f"{session.title} ({when})"
        return PlaylistEntry(f"{session.folder}/{full}", title, session.timeline.total_s)

    wanted = set()
    for week in range(1, plan.weeks + 1):
        name = f"Week {week:02d}.m3u8"
        entries = [entry(s) for s in plan.sessions if s.week == week]
        _write_text(folder / name, playlist_text(entries, artist))
        wanted.add(name)
    everything = f"{safe_name(plan.programme.title, fallback='Programme')}.m3u8"
    _write_text(folder / everything, playlist_text([entry(s) for s in plan.sessions], artist))
    wanted.add(everything)
    # Week playlists of an earlier, longer plan.
    for old in folder.glob("Week *.m3u8"):
        if old.name not in wanted:
            old.unlink()
    return folder / everything


def _index(plan: ProgrammePlan, done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The index: the plan, with each session that is rendered, the digest of what its
    folder holds and its full-session file. A session not listed is rendered next time."""
    data = plan.to_dict()
    sessions = [
        {**s, "digest": done[s["folder"]]["digest"], "file": done[s["folder"]]["file"]}
        for s in data["sessions"]
        if s["folder"] in done
    ]
    return {"audioguide_programme": INDEX_FORMAT, **data, "sessions": sessions}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _write_text(path, json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Write beside and rename into place: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
