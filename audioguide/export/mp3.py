"""Export stage, the MP3 sink: mastered tracks in, MP3 files a phone plays out.

MP3 through the LAME encoder in the lameenc wheel (no ffmpeg), at a constant bit rate. Each
track's frames sit on one grid of 1,152-sample frames counted from the session start, so the
full-session file is the tracks' frames joined (no second encode), and each file starts with a
Xing/Info frame (``mp3frames``) whose LAME tag gives the exact length and the gapless trim.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import lameenc
import numpy as np

from ..audio import SAMPLE_RATE, seconds_to_samples
from ..checks import check_choice, check_whole
from ..errors import ExportError
from .mp3frames import (
    SAMPLES_PER_FRAME,
    FrameHeader,
    FrameStream,
    Mp3FormatError,
    crc16_combine,
    crc16_fast,
    info_frame,
)
from .names import SessionFiles
from .tags import Gapless, SessionTags, id3_bytes

if TYPE_CHECKING:  # the timeline imports names from this package
    from ..timeline import Timeline, Track

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
_PIECE_SUFFIX = ".frames"  # a track's frames for the full-session file, until it is joined


def to_pcm16(samples: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """float32 in [-1, 1], times ``gain``, to int16, rounded (exact zeros stay exact zeros).

    Works in one float32 scratch buffer: a long track is held twice at most, not four times.
    """
    scratch = np.multiply(samples, np.float32(32767.0 * gain), dtype=np.float32)
    np.rint(scratch, out=scratch)
    np.clip(scratch, -32768, 32767, out=scratch)
    return scratch.astype(np.int16)


def check_bitrate(bitrate_kbps: object) -> int:
    """``bitrate_kbps`` if LAME writes it (ExportOptions runs the same check): OptionError
    naming the field and the choices otherwise."""
    whole = check_whole(bitrate_kbps, "bitrate_kbps", 1, max(MP3_BITRATES_KBPS), "kbps")
    return check_choice(whole, "bitrate_kbps", MP3_BITRATES_KBPS)


@dataclass(frozen=True)
class SessionPiece:
    """What the full-session file takes of one track: its first ``frames`` frames (``size``
    bytes, CRC ``crc``), up to the grid point where the next track's frames begin, or all of
    them for the last track."""

    frames: int
    size: int
    crc: int
    header: FrameHeader
    delay_samples: int
    padding_samples: int


@dataclass(frozen=True)
class EncodedTrack:
    """One track as MP3 frames on the session's frame grid, in the file ``path``: ``frame_count``
    frames, ``size`` bytes, CRC ``crc``.

    Decoded (after the decoder's own delay), frame ``i`` holds session samples
    ``grid_start + 1152 * i`` onward. The track's own file plays all its frames minus
    ``delay_samples`` at the start and ``padding_samples`` at the end: exactly its
    ``sample_count`` samples. ``piece`` is what the full-session file takes of it.
    """

    path: Path
    header: FrameHeader
    grid_start: int
    delay_samples: int
    padding_samples: int
    sample_count: int
    frame_count: int
    size: int
    crc: int
    piece: SessionPiece

    @property
    def gapless(self) -> Gapless:
        return Gapless(
            self.delay_samples, self.padding_samples, self.sample_count, self.header.sample_rate
        )


_ENCODE_BLOCK = 1 << 20  # samples (frames) converted and encoded at a time
_READ_BLOCK = 1 << 20  # bytes of frames read back at a time


class TrackEncoder:
    """Encodes one track as constant-bit-rate MP3 frames on the session's frame grid, fed a
    piece at a time (LAME's output does not depend on how its input is cut), into the file
    ``path`` as they are made: what it holds does not grow with the track's length.

    The track's samples (float32, mono or frames x channels) start at session sample
    ``first_sample``. The encoder's first 576 output samples (its delay) carry no input; here
    they stand for the 576 session samples before the input, which lie in the silence between
    two tracks. So the frames can start on the grid point at or before the track's first
    sample, and the LAME tag's delay trims what lies between. Every track starts with a silent
    lead-in and ends in a silent tail (timeline.LEAD_IN_S, TAIL_S), and the mixer fades an
    ambient bed in and out at every track edge (measured: below -65 dBFS in the first and last
    50 ms), so the few milliseconds at each edge that the encoder's delay stands for hold
    nothing audible.

    ``next_first_sample`` is where the next track starts (None: this is the last): the
    full-session file takes this track's frames up to the next one's grid point, so their size
    and CRC are kept apart. The CRCs are run over the file a block at a time as it grows.
    """

    def __init__(
        self,
        first_sample: int,
        path: Path,
        bitrate_kbps: int = DEFAULT_BITRATE_KBPS,
        sample_rate: int = SAMPLE_RATE,
        *,
        next_first_sample: int | None = None,
    ) -> None:
        check_bitrate(bitrate_kbps)
        self.path = path
        self.bitrate_kbps = bitrate_kbps
        self.sample_rate = sample_rate
        self.grid_start = grid_start(first_sample)
        self.delay = first_sample - self.grid_start
        session_frames = None
        if next_first_sample is not None:
            session_frames = (grid_start(next_first_sample) - self.grid_start) // SAMPLES_PER_FRAME
            if session_frames < 0:
                raise ValueError("the next track starts before this one")
        # Input samples the encoder's delay stands for; negative: silence to feed first.
        self._skip = LAME_ENCODER_DELAY_SAMPLES - self.delay
        self._scale = 1.0 / LAME_INPUT_SCALE_BY_KBPS[bitrate_kbps]
        self._encoder: lameenc.Encoder | None = None
        self._out = open(path, "w+b")  # noqa: SIM115 (closed by finish or close)
        self._frames = FrameStream(mark=session_frames)
        self._crc = 0  # of the frames' first ``_crc_size`` bytes
        self._crc_size = 0
        self._session_crc: int | None = None  # of the bytes before the mark, once passed
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
            self._write(self._encode(encoder, silence))
            self._skip = 0
        self._encoder = encoder
        return encoder

    @staticmethod
    def _encode(encoder: lameenc.Encoder, pcm: np.ndarray | None) -> bytes:
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
            # LAME reads the int16 array itself (a C-contiguous buffer): no copy into bytes.
            pcm = to_pcm16(samples[start : start + _ENCODE_BLOCK], self._scale)
            self._write(self._encode(encoder, pcm))

    def _write(self, frames: bytes) -> None:
        self._out.write(frames)
        self._frames.add(frames)
        self._run_crc(final=False)

    def _run_crc(self, final: bool) -> None:
        """Run the CRCs over the frames written since they last ran: whole blocks, read back
        from the file, or everything when ``final``."""
        mark = self._frames.mark_offset
        if self._session_crc is None and mark is not None and mark <= self._frames.size:
            self._crc_to(mark)
            self._session_crc = self._crc
        end = self._frames.size
        if not final:
            end -= (end - self._crc_size) % _READ_BLOCK
        self._crc_to(end)

    def _crc_to(self, end: int) -> None:
        if end <= self._crc_size:
            return
        self._out.flush()
        while self._crc_size < end:
            block = os.pread(
                self._out.fileno(), min(_READ_BLOCK, end - self._crc_size), self._crc_size
            )
            if not block:
                raise Mp3FormatError(f"{self.path.name}: shorter than its frames")
            self._crc = crc16_combine(self._crc, crc16_fast(block), len(block))
            self._crc_size += len(block)

    def close(self) -> None:
        """Close the frames' file (``finish`` does; this is for a track given up)."""
        self._out.close()

    def finish(self) -> EncodedTrack:
        """Flush the encoder: the track's frames, in ``path``."""
        self._write(self._encode(self._encoder or self._start(1), None))
        self._run_crc(final=True)
        self._out.close()
        frames = self._frames
        frames.check_whole()
        assert frames.header is not None
        if frames.mark is not None and frames.mark > frames.frames:
            raise ValueError("tracks must be given in order, each where the last one ends")
        padding = frames.frames * SAMPLES_PER_FRAME - self.delay - self.sample_count
        if frames.mark is None:
            piece = SessionPiece(
                frames.frames, frames.size, self._crc, frames.header, self.delay, padding
            )
        else:
            assert frames.mark_offset is not None and self._session_crc is not None
            piece = SessionPiece(
                frames.mark,
                frames.mark_offset,
                self._session_crc,
                frames.header,
                self.delay,
                padding,
            )
        return EncodedTrack(
            path=self.path,
            header=frames.header,
            grid_start=self.grid_start,
            delay_samples=self.delay,
            padding_samples=padding,
            sample_count=self.sample_count,
            frame_count=frames.frames,
            size=frames.size,
            crc=self._crc,
            piece=piece,
        )


def copy_bytes(source: BinaryIO, target: BinaryIO, count: int) -> None:
    """The next ``count`` bytes of ``source`` written at the end of ``target``, copied by the
    kernel where it can (``copy_file_range``: no pass through this process, and no copy at
    all on a file system that shares blocks), else read and written a block at a time."""
    target.flush()
    source_fd, target_fd = source.fileno(), target.fileno()
    at = source.tell()  # where the file object is, whatever it has read ahead
    os.lseek(source_fd, at, os.SEEK_SET)
    os.lseek(target_fd, 0, os.SEEK_END)
    left = count
    if hasattr(os, "copy_file_range"):  # not on macOS or Windows
        try:
            while left > 0 and (copied := os.copy_file_range(source_fd, target_fd, left)):
                left -= copied
        except OSError as exc:  # not for these files: copied below, unless some already were
            if left < count or exc.errno not in _NOT_IN_KERNEL:
                raise
            os.lseek(source_fd, at, os.SEEK_SET)
    while left > 0 and (block := os.read(source_fd, min(_READ_BLOCK, left))):
        os.write(target_fd, block)
        left -= len(block)
    if left:
        raise Mp3FormatError(f"{Path(str(source.name)).name}: shorter than its frames")


# What copy_file_range answers for files it cannot copy between.
_NOT_IN_KERNEL = (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM)


def grid_start(first_sample: int) -> int:
    """The session's frame-grid point at or before ``first_sample``: where a track's frames
    begin."""
    return first_sample - first_sample % SAMPLES_PER_FRAME


def track_info_frame(track: EncodedTrack) -> bytes:
    """The Info frame of the track's own file."""
    return info_frame(
        track.header,
        audio_frames=track.frame_count,
        audio_bytes=track.size,
        delay_samples=track.delay_samples,
        padding_samples=track.padding_samples,
        music_crc=track.crc,
        lame_quality=LAME_QUALITY,
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


class Mp3Sink:
    """Writes a session's MP3 files into ``folder`` (the staging folder): each track's file if
    ``tracks``, the full-session file with chapters if ``full``, made of the tracks' frames.

    ``write_track`` may be called from several threads at once, one track each, in any order.
    """

    def __init__(
        self,
        folder: Path,
        timeline: Timeline,
        files: SessionFiles,
        tags: SessionTags,
        *,
        bitrate_kbps: int,
        tracks: bool,
        full: bool,
    ) -> None:
        check_bitrate(bitrate_kbps)
        self.folder = folder
        self.timeline = timeline
        self.files = files
        self.tags = tags
        self.bitrate_kbps = bitrate_kbps
        self.tracks = tracks
        self.full = full
        self._pieces: dict[int, SessionPiece] = {}
        self._lock = threading.Lock()

    def write_track(self, track: Track, spans: Iterable[np.ndarray]) -> None:
        """Encode one mastered track, given as consecutive spans of float32 samples (mono or
        frames x channels): only a span is held as samples."""
        # The frames wait in the staging folder, not in memory, until the files are joined.
        frames = self.folder / self._piece_name(track)
        encoder = TrackEncoder(
            seconds_to_samples(track.start_s),
            frames,
            self.bitrate_kbps,
            next_first_sample=self._next_first_sample(track) if self.full else None,
        )
        try:
            for span in spans:
                encoder.feed(span)
            encoded = encoder.finish()
        finally:
            encoder.close()
        if self.tracks:
            path = self.folder / self.files.tracks[track.index - 1]
            info = track_info_frame(encoded)
            tags = self.tags.track(track, gapless=encoded.gapless)
            tag = id3_bytes(tags, len(info) + encoded.size, path)
            with open(path, "wb") as out, open(frames, "rb") as audio:
                out.write(tag + info)
                copy_bytes(audio, out, encoded.size)
        if self.full:
            # What the full-session file takes of the track.
            os.truncate(frames, encoded.piece.size)
            with self._lock:
                self._pieces[track.index] = encoded.piece
        else:
            frames.unlink()

    def _next_first_sample(self, track: Track) -> int | None:
        tracks = self.timeline.tracks
        if track.index >= len(tracks):
            return None
        return seconds_to_samples(tracks[track.index].start_s)

    @staticmethod
    def _piece_name(track: Track) -> str:
        return f".{track.index}{_PIECE_SUFFIX}"

    def finish(self) -> None:
        """Join the tracks' frames into the full-session file, if asked for."""
        if not self.full:
            return
        tracks = self.timeline.tracks
        path = self.folder / self.files.full
        pieces = [self._pieces[t.index] for t in tracks]
        info, gapless = session_info_frame(pieces)
        tag = id3_bytes(self.tags.full(gapless), len(info) + sum(p.size for p in pieces), path)
        with open(path, "wb") as out:
            out.write(tag + info)
            for track, piece in zip(tracks, pieces, strict=True):
                piece_path = self.folder / self._piece_name(track)
                with open(piece_path, "rb") as frames:
                    copy_bytes(frames, out, piece.size)
                piece_path.unlink()
