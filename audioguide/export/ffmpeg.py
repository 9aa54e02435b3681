"""Export stage, other formats: M4A (AAC), Ogg Vorbis, FLAC and WAV through ffmpeg.

MP3 needs nothing but the lameenc wheel (``export``); these need ffmpeg, found on the PATH as
pydub finds it. Tracks are encoded through pydub; the full session is encoded by ffmpeg
straight from a raw PCM file, so it never sits in memory, with its chapters given in an
ffmetadata file. Tags and cover art are written afterwards through mutagen.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from ..synth import SAMPLE_RATE
from .tags import GENRE, Chapter, TrackTags, lyrics_text

AUDIO_FORMATS = ("mp3", "m4a", "ogg", "flac", "wav")
DEFAULT_FORMAT = "mp3"
# ffmpeg's muxer and codec for each, and whether it takes a bit rate (lossless ones do not).
_FFMPEG: dict[str, tuple[str, str, bool]] = {
    "m4a": ("ipod", "aac", True),
    "ogg": ("ogg", "libvorbis", True),
    "flac": ("flac", "flac", False),
    "wav": ("wav", "pcm_s16le", False),
}
INSTALL_FFMPEG = (
    "install ffmpeg (Debian/Ubuntu: sudo apt install ffmpeg; macOS: brew install ffmpeg; "
    "Windows: winget install ffmpeg), or use --format mp3, which needs nothing else"
)


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


def check_format(audio_format: str) -> None:
    """Raise ExportError, before any rendering, when ``audio_format`` cannot be written."""
    if audio_format not in AUDIO_FORMATS:
        raise ExportError(
            f"--format must be one of {', '.join(AUDIO_FORMATS)} (got {audio_format!r})"
        )
    if audio_format != "mp3" and ffmpeg_path() is None:
        raise ExportError(
            f"--format {audio_format} needs ffmpeg, which is not installed: {INSTALL_FFMPEG}"
        )


def _codec_args(audio_format: str, bitrate_kbps: int) -> list[str]:
    _, codec, lossy = _FFMPEG[audio_format]
    args = ["-c:a", codec]
    if lossy:
        args += ["-b:a", f"{bitrate_kbps}k"]
    return args


def encode_file(path: Path, pcm: np.ndarray, audio_format: str, bitrate_kbps: int) -> None:
    """Encode int16 ``pcm`` (1-D mono or frames x channels) to ``path`` through pydub."""
    from pydub import AudioSegment  # imported here: pydub warns at import when ffmpeg is absent

    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    segment = AudioSegment(
        data=np.ascontiguousarray(pcm).tobytes(),
        sample_width=2,
        frame_rate=SAMPLE_RATE,
        channels=channels,
    )
    muxer, _, _ = _FFMPEG[audio_format]
    try:
        segment.export(
            str(path), format=muxer, parameters=_codec_args(audio_format, bitrate_kbps)
        ).close()
    except Exception as exc:  # pydub raises its own CouldntEncodeError or OSError
        raise ExportError(f"{path.name}: ffmpeg could not encode it ({exc})") from None


def encode_raw_file(
    path: Path,
    raw_pcm: Path,
    channels: int,
    audio_format: str,
    bitrate_kbps: int,
    chapters: Sequence[Chapter] = (),
) -> None:
    """Encode a raw int16 PCM file to ``path`` with ffmpeg, with chapters where the format
    holds them (M4A, Ogg, FLAC)."""
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        raise ExportError(f"--format {audio_format} needs ffmpeg: {INSTALL_FFMPEG}")
    metadata = raw_pcm.with_suffix(".ffmeta")
    metadata.write_text(ffmetadata(chapters), encoding="utf-8")
    muxer, _, _ = _FFMPEG[audio_format]
    command = [
        ffmpeg, "-nostdin", "-v", "error", "-y",
        "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", str(channels), "-i", str(raw_pcm),
        "-i", str(metadata), "-map", "0:a", "-map_metadata", "1", "-map_chapters", "1",
        *_codec_args(audio_format, bitrate_kbps), "-f", muxer, str(path),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        metadata.unlink(missing_ok=True)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["no message"]
        raise ExportError(f"{path.name}: ffmpeg could not encode it ({detail[0]})")


def ffmetadata(chapters: Sequence[Chapter]) -> str:
    """ffmpeg's metadata file: one [CHAPTER] per chapter, times in milliseconds."""

    def escape(text: str) -> str:
        for char in "\\=;#\n":
            text = text.replace(char, "\\" + char)
        return text

    lines = [";FFMETADATA1"]
    for chapter in chapters:
        lines += [
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={round(chapter.start_s * 1000)}",
            f"END={round(chapter.end_s * 1000)}",
            f"title={escape(chapter.title)}",
        ]
    return "\n".join(lines) + "\n"


def tag_file(path: Path, audio_format: str, tags: TrackTags) -> None:
    """Write ``tags`` the way each container holds them (MP4 atoms, Vorbis comments, ID3)."""
    if audio_format == "m4a":
        _tag_mp4(path, tags)
    elif audio_format in ("ogg", "flac"):
        _tag_vorbis(path, audio_format, tags)
    elif audio_format == "wav":
        from mutagen.wave import WAVE

        from .tags import id3_tags

        wave = WAVE(str(path))
        wave.add_tags()
        frames: Any = wave.tags  # mutagen's stubs call it None until tags are added
        for frame in id3_tags(tags).values():
            frames.add(frame)
        wave.save(v2_version=3)
    else:
        raise ValueError(audio_format)


def _tag_mp4(path: Path, tags: TrackTags) -> None:
    from mutagen.mp4 import MP4, MP4Cover

    mp4 = MP4(str(path))
    mp4["\xa9nam"] = [tags.title]
    mp4["\xa9ART"] = [tags.artist]
    mp4["\xa9alb"] = [tags.album]
    mp4["trkn"] = [(tags.track, tags.total)]
    mp4["\xa9gen"] = [GENRE]
    if tags.year is not None:
        mp4["\xa9day"] = [str(tags.year)]
    if tags.comment:
        mp4["\xa9cmt"] = [tags.comment]
    if tags.cues:
        mp4["\xa9lyr"] = [lyrics_text(tags.cues)]
    if tags.cover_png is not None:
        mp4["covr"] = [MP4Cover(tags.cover_png, imageformat=MP4Cover.FORMAT_PNG)]
    mp4.save()


def _tag_vorbis(path: Path, audio_format: str, tags: TrackTags) -> None:
    from mutagen.flac import FLAC, Picture
    from mutagen.oggvorbis import OggVorbis

    audio = FLAC(str(path)) if audio_format == "flac" else OggVorbis(str(path))
    comments = {
        "TITLE": tags.title,
        "ARTIST": tags.artist,
        "ALBUM": tags.album,
        "TRACKNUMBER": str(tags.track),
        "TRACKTOTAL": str(tags.total),
        "GENRE": GENRE,
    }
    if tags.year is not None:
        comments["DATE"] = str(tags.year)
    if tags.comment:
        comments["COMMENT"] = tags.comment
    if tags.cues:
        comments["LYRICS"] = lyrics_text(tags.cues)
    # Chapters as the Vorbis comment convention players and ffmpeg read (ffmpeg reads it but
    # does not write it): CHAPTER001=00:00:00.000, CHAPTER001NAME=title.
    for number, chapter in enumerate(tags.chapters, start=1):
        comments[f"CHAPTER{number:03d}"] = _clock(chapter.start_s)
        comments[f"CHAPTER{number:03d}NAME"] = chapter.title
    for key, value in comments.items():
        audio[key] = value
    if tags.cover_png is not None:
        picture = Picture()
        picture.type = 3
        picture.mime = "image/png"
        picture.desc = "Cover"
        picture.data = tags.cover_png
        if isinstance(audio, FLAC):
            audio.clear_pictures()
            audio.add_picture(picture)
        else:
            audio["METADATA_BLOCK_PICTURE"] = base64.b64encode(picture.write()).decode("ascii")
    audio.save()


def _clock(seconds: float) -> str:
    """``HH:MM:SS.mmm``."""
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"
