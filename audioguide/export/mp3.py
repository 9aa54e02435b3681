"""Export stage: mastered track samples in, files a phone plays out.

MP3 through the LAME encoder in the lameenc wheel (no ffmpeg), at a constant bit rate. Each
track's frames sit on one grid of 1,152-sample frames counted from the session start, so the
full-session file is the tracks' frames joined (no second encode), and each file starts with a
Xing/Info frame whose LAME tag gives the exact length and the gapless trim. Other formats go
through pydub and ffmpeg (``formats``). Tags are in ``tags``, transcripts in ``transcript``.
The whole folder is written into a temporary folder beside the target and renamed into place
at the end, so a failure or Ctrl-C leaves the previous output as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lameenc
import numpy as np

from ..errors import ExportError
from ..ownership import (
    ZIP_COMMENT,
    check_replaceable,
    check_zip_replaceable,
    write_manifest,
)
from ..synth import SAMPLE_RATE
from .mp3frames import (
    SAMPLES_PER_FRAME,
    FrameHeader,
    crc16_combine,
    crc16_fast,
    frame_offsets,
    info_frame,
    parse_header,
)
from .tags import Gapless

DEFAULT_BITRATE_KBPS = 96
MP3_BITRATES_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
LAME_QUALITY = 7  # -q 7: as accurate as -q 5 on voice and guide tones (measured), 1.5x faster
# LAME scales its input by its preset's factor for the bit rate (measured with a 1 kHz tone,
# decoded by libsndfile: 0.95 up to 160 kbps, 0.97 at 192, 0.98 at 224, 1 at 256 and 320, as
# in LAME's abr_switch_map); the track is raised by the inverse so the file plays at the level
# the mixer mastered (loudness target, true-peak ceiling).
LAME_INPUT_SCALE_BY_KBPS = {
    **{kbps: 0.95 for kbps in MP3_BITRATES_KBPS if kbps <= 160},
    192: 0.97,
    224: 0.98,
    256: 1.0,
    320: 1.0,
}
# LAME starts its output this many samples late (its "encoder delay"); a decoder adds 529 more,
# which gapless decoders trim by themselves (the LAME tag's delay counts beyond them).
LAME_ENCODER_DELAY_SAMPLES = 576
# Which files a render writes: one per section, one for the whole session, or both.
OUTPUT_MODES = ("both", "tracks", "single")
DEFAULT_OUTPUT_MODE = "both"
FULL_SESSION_SUFFIX = " (full)"


def to_pcm16(samples: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """float32 in [-1, 1], times ``gain``, to int16, rounded (exact zeros stay exact zeros).

    Works in one float32 scratch buffer: a long track is held twice at most, not four times.
    """
    scratch = np.multiply(samples, np.float32(32767.0 * gain), dtype=np.float32)
    np.rint(scratch, out=scratch)
    np.clip(scratch, -32768, 32767, out=scratch)
    return scratch.astype(np.int16)


def check_bitrate(bitrate_kbps: int) -> int:
    if bitrate_kbps not in MP3_BITRATES_KBPS:
        raise ExportError(
            f"--bitrate must be one of {', '.join(map(str, MP3_BITRATES_KBPS))} kbps "
            f"(got {bitrate_kbps}); {DEFAULT_BITRATE_KBPS} suits a voice"
        )
    return bitrate_kbps


@dataclass(frozen=True, eq=False)
class EncodedTrack:
    """One track as MP3 frames on the session's frame grid.

    Decoded (after the decoder's own delay), frame ``i`` holds session samples
    ``grid_start + 1152 * i`` onward. The track's own file plays all ``audio`` minus
    ``delay_samples`` at the start and ``padding_samples`` at the end: exactly its
    ``sample_count`` samples. The full-session file takes its frames up to the grid point
    where the next track's frames begin. ``offsets`` holds where each frame starts in
    ``audio``, and ``len(audio)`` last.
    """

    audio: bytes | bytearray
    offsets: np.ndarray
    header: FrameHeader
    grid_start: int
    delay_samples: int
    padding_samples: int
    sample_count: int

    @property
    def frame_count(self) -> int:
        return len(self.offsets) - 1

    @property
    def gapless(self) -> Gapless:
        return Gapless(
            self.delay_samples, self.padding_samples, self.sample_count, self.header.sample_rate
        )


_ENCODE_BLOCK = 1 << 20  # samples (frames) converted and encoded at a time


class TrackEncoder:
    """Encodes one track as constant-bit-rate MP3 frames on the session's frame grid, fed a
    piece at a time (LAME's output does not depend on how its input is cut), so a long track
    is never held as samples.

    The track's samples (float32, mono or frames x channels) start at session sample
    ``first_sample``. The encoder's first 576 output samples (its delay) carry no input; here
    they stand for the 576 session samples before the input, which lie in the silence between
    two tracks. So the frames can start on the grid point at or before the track's first
    sample, and the LAME tag's delay trims what lies between. Every track starts with a silent
    lead-in and ends in a silent tail (timeline.LEAD_IN_S, TAIL_S), and the mixer fades an
    ambient bed in and out at every track edge (measured: below -65 dBFS in the first and last
    50 ms), so the few milliseconds at each edge that the encoder's delay stands for hold
    nothing audible.
    """

    def __init__(
        self,
        first_sample: int,
        bitrate_kbps: int = DEFAULT_BITRATE_KBPS,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        check_bitrate(bitrate_kbps)
        self.bitrate_kbps = bitrate_kbps
        self.sample_rate = sample_rate
        self.grid_start = grid_start(first_sample)
        self.delay = first_sample - self.grid_start
        # Input samples the encoder's delay stands for; negative: silence to feed first.
        self._skip = LAME_ENCODER_DELAY_SAMPLES - self.delay
        self._scale = 1.0 / LAME_INPUT_SCALE_BY_KBPS[bitrate_kbps]
        self._encoder: lameenc.Encoder | None = None
        # One growing buffer, not a list of pieces joined at the end: a track's frames are
        # never held twice.
        self._audio = bytearray()
        self.sample_count = 0

    def _start(self, channels: int) -> lameenc.Encoder:
        encoder = lameenc.Encoder()
        encoder.set_bit_rate(self.bitrate_kbps)
        encoder.set_in_sample_rate(self.sample_rate)
        # LAME would resample low bit rates (and 96 kbps stereo) to 32 or 22.05 kHz: another
        # frame grid, and MPEG-2 frames of 576 samples. The session's rate keeps one grid for
        # all tracks.
        encoder.set_out_sample_rate(self.sample_rate)
        encoder.set_channels(channels)
        encoder.set_quality(LAME_QUALITY)
        encoder.silence()
        if self._skip < 0:
            silence = np.zeros((-self._skip, channels), dtype=np.int16)
            self._audio += self._encode(encoder, silence.tobytes())
            self._skip = 0
        self._encoder = encoder
        return encoder

    @staticmethod
    def _encode(encoder: lameenc.Encoder, pcm: bytes | None) -> bytes:
        """LAME's frames for ``pcm``, or what it still holds when ``pcm`` is None (flush)."""
        try:
            return encoder.flush() if pcm is None else encoder.encode(pcm)
        except RuntimeError as exc:  # lameenc reports every failure so
            raise ExportError(f"the MP3 encoder failed ({exc}); try another --bitrate") from None

    def feed(self, samples: np.ndarray) -> None:
        """Encode the track's next samples."""
        encoder = self._encoder or self._start(1 if samples.ndim == 1 else samples.shape[1])
        self.sample_count += samples.shape[0]
        skip = min(self._skip, samples.shape[0])
        self._skip -= skip
        for start in range(skip, samples.shape[0], _ENCODE_BLOCK):
            pcm = to_pcm16(samples[start : start + _ENCODE_BLOCK], self._scale)
            self._audio += self._encode(encoder, pcm.tobytes())

    def finish(self) -> EncodedTrack:
        """Flush the encoder: the track's frames."""
        self._audio += self._encode(self._encoder or self._start(1), None)
        audio, self._audio = self._audio, bytearray()
        offsets = frame_offsets(audio)
        frame_count = len(offsets) - 1
        return EncodedTrack(
            audio=audio,
            offsets=offsets,
            header=parse_header(audio),
            grid_start=self.grid_start,
            delay_samples=self.delay,
            padding_samples=frame_count * SAMPLES_PER_FRAME - self.delay - self.sample_count,
            sample_count=self.sample_count,
        )


def encode_track(
    samples: np.ndarray,
    first_sample: int,
    bitrate_kbps: int = DEFAULT_BITRATE_KBPS,
    sample_rate: int = SAMPLE_RATE,
) -> EncodedTrack:
    """Encode one whole track (see TrackEncoder)."""
    encoder = TrackEncoder(first_sample, bitrate_kbps, sample_rate)
    encoder.feed(samples)
    return encoder.finish()


def grid_start(first_sample: int) -> int:
    """The session's frame-grid point at or before ``first_sample``: where a track's frames
    begin."""
    return first_sample - first_sample % SAMPLES_PER_FRAME


def track_mp3(track: EncodedTrack, music_crc: int | None = None) -> bytes:
    """The track's own file: Info frame, then every frame. ``music_crc``: the CRC of its
    frames, when already known (``SessionPiece.track_crc``)."""
    return track_info_frame(track, music_crc) + track.audio


def track_info_frame(track: EncodedTrack, music_crc: int | None = None) -> bytes:
    return info_frame(
        track.header,
        audio_frames=track.frame_count,
        audio_bytes=len(track.audio),
        delay_samples=track.delay_samples,
        padding_samples=track.padding_samples,
        music_crc=crc16_fast(track.audio) if music_crc is None else music_crc,
        lame_quality=LAME_QUALITY,
    )


@dataclass(frozen=True)
class SessionPiece:
    """What the full-session file takes of one track: its first ``frames`` frames (``size``
    bytes, CRC ``crc``), up to the grid point where the next track's frames begin, or all of
    them for the last track. ``track_crc`` is the CRC of all the track's frames."""

    frames: int
    size: int
    crc: int
    track_crc: int
    header: FrameHeader
    delay_samples: int
    padding_samples: int


def session_piece(track: EncodedTrack, next_grid_start: int | None) -> SessionPiece:
    """Cut ``track`` where the next track's frames begin (None: it is the last). The CRCs of
    the two parts make the track's own, so no frame is run through the CRC twice."""
    if next_grid_start is None:
        take = track.frame_count
    else:
        take = (next_grid_start - track.grid_start) // SAMPLES_PER_FRAME
        if not 0 <= take <= track.frame_count:
            raise ValueError("tracks must be given in order, each where the last one ends")
    size = int(track.offsets[take])
    audio = memoryview(track.audio)
    crc = crc16_fast(audio[:size])
    rest = audio[size:]
    return SessionPiece(
        frames=take,
        size=size,
        crc=crc,
        track_crc=crc16_combine(crc, crc16_fast(rest), len(rest)),
        header=track.header,
        delay_samples=track.delay_samples,
        padding_samples=track.padding_samples,
    )


def session_info_frame(pieces: Sequence[SessionPiece]) -> tuple[bytes, Gapless]:
    """The Info frame of the full-session file made of ``pieces`` (in order), and its
    gapless trim; the file is this frame, then each piece's frames."""
    if not pieces:
        raise ValueError("a session has at least one track")
    first, last = pieces[0], pieces[-1]
    frames = sum(piece.frames for piece in pieces)
    size = 0
    crc = 0
    for piece in pieces:
        crc = crc16_combine(crc, piece.crc, piece.size)
        size += piece.size
    samples = frames * SAMPLES_PER_FRAME - first.delay_samples - last.padding_samples
    gapless = Gapless(first.delay_samples, last.padding_samples, samples, first.header.sample_rate)
    info = info_frame(
        first.header,
        audio_frames=frames,
        audio_bytes=size,
        delay_samples=first.delay_samples,
        padding_samples=last.padding_samples,
        music_crc=crc,
        lame_quality=LAME_QUALITY,
    )
    return info, gapless


def full_session_mp3(tracks: Sequence[EncodedTrack]) -> tuple[bytes, Gapless]:
    """The whole session as one MP3 made of the tracks' frames (in order), no second encode.
    Returns the file and its gapless trim."""
    if not tracks:
        raise ValueError("a session has at least one track")
    following = [*(t.grid_start for t in tracks[1:]), None]
    pieces = [session_piece(t, g) for t, g in zip(tracks, following, strict=True)]
    info, gapless = session_info_frame(pieces)
    audio = b"".join(memoryview(t.audio)[: p.size] for t, p in zip(tracks, pieces, strict=True))
    return info + audio, gapless


@dataclass(frozen=True)
class PlaylistEntry:
    file: str
    title: str
    duration_s: float


def playlist_text(entries: Sequence[PlaylistEntry], artist: str) -> str:
    """An extended M3U playlist: ``#EXTM3U`` first, plain relative names, LF line ends."""
    lines = ["#EXTM3U"]
    for entry in entries:
        title = " ".join(f"{artist} - {entry.title}".split())  # one line, whatever the title
        lines.append(f"#EXTINF:{round(entry.duration_s)},{title}")
        lines.append(entry.file)
    return "\n".join(lines) + "\n"


def write_playlist(path: Path, entries: Sequence[PlaylistEntry], artist: str) -> None:
    """Write UTF-8 without a BOM, as phone players expect."""
    path.write_text(playlist_text(entries, artist), encoding="utf-8", newline="\n")


def write_zip(folder: Path, zip_path: Path, *, force: bool = False) -> None:
    """Pack ``folder``'s files into ``zip_path`` under a folder of the same name.

    Audio is already compressed, so it is stored as is; names are stored as UTF-8. Written
    beside and renamed into place, so an old archive stays whole until the new one is. An
    existing file is replaced only if a render wrote it (its comment says so), or ``force``.
    """
    check_zip_replaceable(zip_path, force=force)
    fd, temporary = tempfile.mkstemp(prefix=f".{zip_path.name}.", dir=zip_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.comment = ZIP_COMMENT
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    archive.write(path, f"{folder.name}/{path.name}")
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, zip_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------
# Atomic output folder


@contextlib.contextmanager
def staged_folder(
    target: Path, *, force: bool = False, keep: Sequence[Path] = ()
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``.

    ``target`` may be replaced only if a render wrote it and nothing was added or changed
    since (``ownership``), or with ``force``; never if it holds one of the files in ``keep``
    (what the render reads). That is checked before anything is made and again just before
    the swap. The finished folder gets a manifest of its files. On any error (or Ctrl-C) the
    temporary folder is removed and ``target`` is untouched.
    """
    check_replaceable(target, force=force, keep=keep)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's private 0700 would outlive the rename
    except OSError as exc:
        raise ExportError(
            f"{parent}: cannot write the output here ({exc.strerror}); choose another folder "
            "with -o DIR"
        ) from None
    try:
        yield staging
        write_manifest(staging)
        check_replaceable(target, force=force, keep=keep)  # it may have changed meanwhile
        _replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_folder(staging: Path, target: Path) -> None:
    old = None
    if os.path.lexists(target):
        if not target.is_dir():
            raise ExportError(f"{target}: exists and is not a folder; move it or choose -o DIR")
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        # Also on Ctrl-C between the two renames: put the previous output back in place.
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        if old.is_symlink():
            old.unlink()  # a link replaced with --force: what it pointed to is left alone
        else:
            shutil.rmtree(old, ignore_errors=True)
