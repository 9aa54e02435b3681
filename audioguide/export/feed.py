"""Export stage, the podcast feed: a folder of rendered sessions in, RSS and JSON chapters out.

A session folder is one a render wrote: a playlist and a full-session file (``<Title>
(full).mp3``). What the feed says of it is read back from that file, so it cannot disagree
with what a player reads there: the title and artist from its tags, its length from its
header, the chapters from its CTOC/CHAP frames. Each session is one episode with its
enclosure, cover, Podcasting 2.0 chapters (JSON) and transcripts (the ``.vtt`` and ``.srt``
written beside the file).

The same functions serve ``audioguide serve`` (the feed built per request, so a re-render
shows at once) and ``render --feed-url`` (a static ``feed.xml`` for a folder hosted elsewhere).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR
from urllib.parse import quote, urlsplit

import mutagen
from mutagen import MutagenError
from mutagen.id3 import ID3, ID3NoHeaderError

from ..errors import OptionError
from ..phrases import ENGLISH
from .ffmpeg import AUDIO_FORMATS
from .names import FULL_SESSION_SUFFIX
from .sidecars import CHAPTERS_SUFFIX, SRT_SUFFIX, VTT_SUFFIX, chapters_json_text
from .tags import Chapter

FEED_NAME = "feed.xml"
PROGRAMME_INDEX = "programme.json"  # a programme's index (programme.py), beside its sessions
FEED_TYPE = "application/rss+xml"
CHAPTERS_TYPE = "application/json+chapters"  # as Podcasting 2.0 names it
COVER_NAME = "cover.png"
PLAYLIST_SUFFIX = ".m3u8"
TRANSCRIPT_TYPES = {VTT_SUFFIX: "text/vtt", SRT_SUFFIX: "application/x-subrip"}
LYRICS_SUFFIX = ".lrc"
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
}
FEED_TITLE = "Guided practice"
FEED_LANGUAGE = ENGLISH.language  # the words audioguide adds are English (phrases.py)
# Apple Podcasts' category list: https://podcasters.apple.com/support/1691-apple-podcasts-categories
FEED_CATEGORY = ("Health & Fitness", "Alternative Health")

_NAMESPACES = {
    "itunes": "http://www.itunes.com/dtds/podcast-1.0.dtd",
    "podcast": "https://podcastindex.org/namespace/1.0",
    "atom": "http://www.w3.org/2005/Atom",
}


@dataclass(frozen=True)
class RenderedSession:
    """One rendered session folder, as a feed and a player page see it.

    File names are relative to ``folder``; ``files`` is every name that may be handed out.
    """

    folder: Path
    title: str
    artist: str
    audio: str  # the full-session file
    audio_type: str  # its MIME type
    size_bytes: int
    modified: datetime.datetime  # when it was rendered (UTC)
    duration_s: float
    chapters: tuple[Chapter, ...]
    cover: str | None
    transcripts: tuple[str, ...]  # .vtt and .srt beside the full-session file
    chapters_on_disk: bool  # the render wrote the .chapters.json (a static feed needs it)
    files: frozenset[str]

    @property
    def slug(self) -> str:
        return self.folder.name

    @property
    def chapters_name(self) -> str:
        return Path(self.audio).stem + CHAPTERS_SUFFIX


def find_sessions(root: Path) -> tuple[RenderedSession, ...]:
    """Every rendered session in the folders directly under ``root``, newest first.

    Hidden folders (a render's staging) and symbolic links are passed over, and so is a folder
    that holds no full-session file (rendered with ``--tracks``) or whose file cannot be read.
    """
    sessions = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return ()
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        stat = entry.stat(follow_symlinks=False)
        # A render replaces a session folder whole, so its inode and mtime say when to re-read.
        session = _read_session(entry.path, stat.st_ino, stat.st_mtime_ns)
        if session is not None:
            sessions.append(session)
    # A programme's sessions are published on their practice days (its index names them), so
    # a podcast player's "played" marks follow the programme.
    days = programme_days(root)
    sessions = [
        dataclasses.replace(s, modified=days[s.slug]) if s.slug in days else s for s in sessions
    ]
    sessions.sort(key=lambda s: (s.modified, s.slug), reverse=True)
    return tuple(sessions)


def programme_days(root: Path) -> dict[str, datetime.datetime]:
    """Session folder -> its practice day (midnight UTC), from the programme index in
    ``root`` (written by ``audioguide program``); empty when there is none."""
    try:
        data = json.loads((root / PROGRAMME_INDEX).read_text(encoding="utf-8"))
        return {
            str(s["folder"]): datetime.datetime.combine(
                datetime.date.fromisoformat(s["date"]), datetime.time(), datetime.UTC
            )
            for s in data["sessions"]
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def find_session(root: Path, slug: str) -> RenderedSession | None:
    """The session in ``root/slug``, or None: also for a name that is not one plain, visible
    folder directly in ``root`` (``..``, a path, a symbolic link)."""
    if not slug or slug.startswith(".") or "/" in slug or "\\" in slug or "\0" in slug:
        return None
    try:
        stat = os.lstat(root / slug)
    except (OSError, ValueError):
        return None
    if not S_ISDIR(stat.st_mode):
        return None
    return _read_session(str(root / slug), stat.st_ino, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _read_session(path: str, inode: int, mtime_ns: int) -> RenderedSession | None:
    return read_session(Path(path))


def read_session(folder: Path) -> RenderedSession | None:
    """The session rendered into ``folder``, or None when it holds none."""
    try:
        return _read(folder)
    except (OSError, MutagenError):
        # Gone or replaced while being read (a render swapping the folder in), or a file that
        # is not what its name says: not a session to list.
        return None


def _read(folder: Path) -> RenderedSession | None:
    names = {
        entry.name
        for entry in os.scandir(folder)
        if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False)
    }
    playlists = sorted(name for name in names if name.endswith(PLAYLIST_SUFFIX))
    full = sorted(
        name
        for name in names
        if any(name.endswith(f"{FULL_SESSION_SUFFIX}.{fmt}") for fmt in AUDIO_FORMATS)
    )
    if not playlists or not full:
        return None
    audio = full[0]
    path = folder / audio
    info = mutagen.File(path)
    if info is None or info.info is None:
        return None
    title, artist, chapters = _tags(path, info)
    audio_files = {
        audio,
        *(n for p in playlists for n in _playlist_names(folder / p) if n in names),
    }
    sidecars = {
        Path(n).stem + suffix
        for n in audio_files
        for suffix in (LYRICS_SUFFIX, *TRANSCRIPT_TYPES)
        if Path(n).stem + suffix in names
    }
    cover = COVER_NAME if COVER_NAME in names else None
    transcripts = tuple(
        Path(audio).stem + suffix
        for suffix in TRANSCRIPT_TYPES
        if Path(audio).stem + suffix in sidecars
    )
    served = audio_files | sidecars | set(playlists) | ({cover} if cover else set())
    stat = path.stat()
    return RenderedSession(
        folder=folder,
        title=title or Path(playlists[0]).stem,
        artist=artist,
        audio=audio,
        audio_type=AUDIO_TYPES[path.suffix[1:]],
        size_bytes=stat.st_size,
        modified=datetime.datetime.fromtimestamp(int(stat.st_mtime), datetime.UTC),
        duration_s=float(info.info.length),
        chapters=chapters,
        cover=cover,
        transcripts=transcripts,
        chapters_on_disk=Path(audio).stem + CHAPTERS_SUFFIX in names,
        files=frozenset(served | {Path(audio).stem + CHAPTERS_SUFFIX}),
    )


def _playlist_names(path: Path) -> list[str]:
    """The plain file names a playlist lists (anything with a folder in it is not ours)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line for line in lines if line and not line.startswith("#") and "/" not in line]


def _tags(path: Path, info: mutagen.FileType) -> tuple[str, str, tuple[Chapter, ...]]:
    """Title, artist and chapters (in CTOC order) of a full-session file."""
    if path.suffix == ".mp3":
        try:
            id3 = ID3(path)
        except ID3NoHeaderError:  # tags stripped by some tool: the playlist names it
            return "", "", ()
        title = str(id3["TIT2"].text[0]) if "TIT2" in id3 else ""
        artist = str(id3["TPE1"].text[0]) if "TPE1" in id3 else ""
        chapters = []
        for toc in id3.getall("CTOC")[:1]:
            for element_id in toc.child_element_ids:
                chap = id3.get(f"CHAP:{element_id}")
                if chap is None:
                    continue
                name = chap.sub_frames.get("TIT2")
                chapters.append(
                    Chapter(
                        str(name.text[0]) if name else "",
                        chap.start_time / 1000,
                        chap.end_time / 1000,
                    )
                )
        return title, artist, tuple(chapters)
    tags = mutagen.File(path, easy=True)
    easy = tags.tags if tags is not None and tags.tags is not None else {}
    return (easy.get("title") or [""])[0], (easy.get("artist") or [""])[0], ()


def chapters_json(session: RenderedSession) -> str:
    """The JSON chapters of a rendered session: its full-session file's ID3 chapters."""
    return chapters_json_text(session.title, session.artist, session.chapters)


def page_listing(sessions: Sequence[RenderedSession]) -> list[dict[str, object]]:
    """What the player page shows of each session, with URLs relative to the page."""
    return [
        {
            "title": s.title,
            "artist": s.artist,
            "duration_s": s.duration_s,
            "audio": f"{quote(s.slug)}/{quote(s.audio)}",
            "cover": f"{quote(s.slug)}/{quote(s.cover)}" if s.cover else None,
            "vtt": next(
                (f"{quote(s.slug)}/{quote(n)}" for n in s.transcripts if n.endswith(VTT_SUFFIX)),
                None,
            ),
            "chapters": [
                {"title": c.title, "start_s": c.start_s, "end_s": c.end_s} for c in s.chapters
            ],
        }
        for s in sessions
    ]


def check_feed_url(url: str) -> str:
    """The URL where the output folder is published, ending in ``/``; OptionError if it is
    not an http(s) address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise OptionError(
            "not a web address: give the http:// or https:// address where the output folder "
            f"is published, such as https://example.org/audio/ (got {url!r})"
        )
    return url if url.endswith("/") else url + "/"


def file_url(base_url: str, session: RenderedSession, name: str) -> str:
    return f"{base_url}{quote(session.slug)}/{quote(name)}"


def _element(name: str, text: str | None = None, **attributes: str) -> str:
    # Here, not at the top: xml.sax.saxutils imports urllib.request and http.client, which a
    # render (it writes only the chapters) has no use for.
    from xml.sax.saxutils import escape, quoteattr

    attrs = "".join(f" {key.replace('__', ':')}={quoteattr(v)}" for key, v in attributes.items())
    if text is None:
        return f"<{name}{attrs}/>"
    return f"<{name}{attrs}>{escape(text)}</{name}>"


def _rfc2822(moment: datetime.datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S +0000")


def feed_xml(
    sessions: Sequence[RenderedSession],
    base_url: str,
    *,
    page_url: str | None = None,
    title: str = FEED_TITLE,
    static: bool = False,
) -> str:
    """An RSS 2.0 podcast feed, one episode per session, with the iTunes and Podcasting 2.0
    tags AntennaPod and Apple Podcasts read. ``base_url`` is where the sessions' folders are
    (ending in ``/``). ``static``: for a plain file host, which serves only the chapters files
    on disk (the server makes them from the tags)."""
    from xml.sax.saxutils import quoteattr

    feed_url = base_url + FEED_NAME
    page_url = page_url or base_url
    artist = next((s.artist for s in sessions if s.artist), "audioguide")
    newest = max(
        (s.modified for s in sessions), default=datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    )
    namespaces = "".join(f" xmlns:{prefix}={quoteattr(uri)}" for prefix, uri in _NAMESPACES.items())
    channel = [
        _element("title", title),
        _element("link", page_url),
        _element("description", "Guided practice sessions rendered by audioguide."),
        _element("language", FEED_LANGUAGE),
        _element("lastBuildDate", _rfc2822(newest)),
        _element("generator", "audioguide"),
        _element("atom:link", href=feed_url, rel="self", type=FEED_TYPE),
        _element("itunes:author", artist),
        _element("itunes:explicit", "false"),
        _element("itunes:type", "episodic"),
        f"<itunes:category text={quoteattr(FEED_CATEGORY[0])}>"
        f"{_element('itunes:category', text=FEED_CATEGORY[1])}</itunes:category>",
    ]
    cover = next((s for s in sessions if s.cover), None)
    if cover is not None and cover.cover is not None:
        image = file_url(base_url, cover, cover.cover)
        channel.append(_element("itunes:image", href=image))
        channel.append(
            f"<image>{_element('url', image)}{_element('title', title)}"
            f"{_element('link', page_url)}</image>"
        )
    channel += [_item(session, base_url, page_url, static) for session in sessions]
    body = "\n    ".join(channel)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<rss version="2.0"{namespaces}>\n  <channel>\n    {body}\n  </channel>\n</rss>\n'
    )


def _item(session: RenderedSession, base_url: str, page_url: str, static: bool) -> str:
    sections = ", ".join(c.title for c in session.chapters)
    description = f"{session.title}: {sections}." if sections else session.title
    parts = [
        _element("title", session.title),
        _element("description", description),
        _element("link", page_url),
        _element("guid", f"audioguide:{session.slug}", isPermaLink="false"),
        _element("pubDate", _rfc2822(session.modified)),
        _element(
            "enclosure",
            url=file_url(base_url, session, session.audio),
            length=str(session.size_bytes),
            type=session.audio_type,
        ),
        _element("itunes:duration", str(round(session.duration_s))),
        _element("itunes:episodeType", "full"),
        _element("itunes:explicit", "false"),
    ]
    if session.cover is not None:
        parts.append(_element("itunes:image", href=file_url(base_url, session, session.cover)))
    if session.chapters and (session.chapters_on_disk or not static):
        parts.append(
            _element(
                "podcast:chapters",
                url=file_url(base_url, session, session.chapters_name),
                type=CHAPTERS_TYPE,
            )
        )
    for name in session.transcripts:
        parts.append(
            _element(
                "podcast:transcript",
                url=file_url(base_url, session, name),
                type=TRANSCRIPT_TYPES[Path(name).suffix],
                language=FEED_LANGUAGE,
            )
        )
    inner = "\n      ".join(parts)
    return f"<item>\n      {inner}\n    </item>"


def write_feed(root: Path, base_url: str) -> Path:
    """Write ``root/feed.xml`` for the sessions under ``root`` published at ``base_url``.

    Only ``root/feed.xml`` is written: a session folder is the render's own (its manifest lists
    every file in it), so the chapters a static feed links to are the ``.chapters.json`` each
    render writes; a session rendered before there were any is listed without chapters. The
    feed is written beside and renamed into place, so a reader never sees half of one."""
    base_url = check_feed_url(base_url)
    path = root / FEED_NAME
    _write_atomic(path, feed_xml(find_sessions(root), base_url, static=True))
    return path


def _write_atomic(path: Path, text: str) -> None:
    # Opened as any file is (not mkstemp's 0600), so it can be read where it is published.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temporary.write_text(text, encoding="utf-8", newline="\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
