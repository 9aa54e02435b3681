"""Export stage, the MP3 sink: mastered tracks in, MP3 files a phone plays out.

MP3 through the LAME encoder in the lameenc wheel (no ffmpeg), at a constant bit rate. Each
track's frames sit on one grid of 1,152-sample frames counted from the session start, so the
full-session file is the tracks' frames joined (no second encode), and each file starts with a
Xing/Info frame (``mp3frames``) whose LAME tag gives the exact length and the gapless trim.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lameenc
import numpy as np

from ..audio import SAMPLE_RATE, seconds_to_samples
from ..errors import ExportError
from .mp3frames import (
    SAMPLES_PER_FRAME,
    FrameHeader,
    Mp3FormatError,
    crc16_combine,
    crc16_fast,
    info_frame,
    parse_header,
)
from .names import SessionFiles
from .tags import Gapless, SessionTags, tag_mp3

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


def check_bitrate(bitrate_kbps: int) -> int:
    if bitrate_kbps not in MP3_BITRATES_KBPS:
        raise ExportError(
            f"--bitrate must be one of {', '.join(map(str, MP3_BITRATES_KBPS))} kbps "
            f"(got {bitrate_kbps}); {DEFAULT_BITRATE_KBPS} suits a voice"
        )
    return bitrate_kbps


@dataclass(frozen=True, eq=False)
class EncodedTrack:
    """One track as MP3 frames on the session's frame grid, in the file ``path``.

    Decoded (after the decoder's own delay), frame ``i`` holds session samples
    ``grid_start + 1152 * i`` onward. The track's own file plays all its frames minus
    ``delay_samples`` at the start and ``padding_samples`` at the end: exactly its
    ``sample_count`` samples. The full-session file takes its frames up to the grid point
    where the next track's frames begin. ``offsets`` holds where each frame starts in the
    file, and the file's size last.
    """

    path: Path
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
_READ_BLOCK = 1 << 20  # bytes of frames read back at a time


class _FrameIndex:
    """Where each frame starts in a stream of MP3 frames given a piece at a time (LAME's
    output pieces end anywhere, not on frame boundaries); holds only the part of a frame
    not yet whole."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.header: FrameHeader | None = None
        self._next = 0  # where the next frame starts, in the whole stream
        self._size = 0  # bytes given so far
        self._tail = bytearray()  # the stream from the last frame start not yet read

    def add(self, data: bytes) -> None:
        tail_start = self._size - len(self._tail)
        self._tail += data
        self._size += len(data)
        while self._size - self._next >= 4:
            header = parse_header(self._tail, self._next - tail_start)
            self.header = self.header or header
            self.starts.append(self._next)
            self._next += header.size_bytes
        del self._tail[: min(self._next, self._size) - tail_start]

    def offsets(self) -> np.ndarray:
        if self._next != self._size:
            raise Mp3FormatError("the last frame is cut short")
        return np.asarray([*self.starts, self._size], dtype=np.int64)


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
        path: Path,
        bitrate_kbps: int = DEFAULT_BITRATE_KBPS,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        check_bitrate(bitrate_kbps)
        self.path = path
        self.bitrate_kbps = bitrate_kbps
        self.sample_rate = sample_rate
        self.grid_start = grid_start(first_sample)
        self.delay = first_sample - self.grid_start
        # Input samples the encoder's delay stands for; negative: silence to feed first.
        self._skip = LAME_ENCODER_DELAY_SAMPLES - self.delay
        self._scale = 1.0 / LAME_INPUT_SCALE_BY_KBPS[bitrate_kbps]
        self._encoder: lameenc.Encoder | None = None
        # The frames go to ``path`` as LAME makes them, so memory does not grow with length.
        self._out = open(path, "wb")  # noqa: SIM115 (closed by finish or close)
        self._index = _FrameIndex()
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
            self._write(self._encode(encoder, silence.tobytes()))
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
            self._write(self._encode(encoder, pcm.tobytes()))

    def _write(self, frames: bytes) -> None:
        self._out.write(frames)
        self._index.add(frames)

    def close(self) -> None:
        """Close the frames' file (``finish`` does; this is for a track given up)."""
        self._out.close()

    def finish(self) -> EncodedTrack:
        """Flush the encoder: the track's frames, in ``path``."""
        self._write(self._encode(self._encoder or self._start(1), None))
        self._out.close()
        offsets = self._index.offsets()
        if self._index.header is None:
            raise Mp3FormatError("the encoder gave no frames")
        frame_count = len(offsets) - 1
        return EncodedTrack(
            path=self.path,
            offsets=offsets,
            header=self._index.header,
            grid_start=self.grid_start,
            delay_samples=self.delay,
            padding_samples=frame_count * SAMPLES_PER_FRAME - self.delay - self.sample_count,
            sample_count=self.sample_count,
        )


def grid_start(first_sample: int) -> int:
    """The session's frame-grid point at or before ``first_sample``: where a track's frames
    begin."""
    return first_sample - first_sample % SAMPLES_PER_FRAME


def track_info_frame(track: EncodedTrack, music_crc: int) -> bytes:
    """The Info frame of the track's own file; ``music_crc``: the CRC of all its frames."""
    return info_frame(
        track.header,
        audio_frames=track.frame_count,
        audio_bytes=int(track.offsets[-1]),
        delay_samples=track.delay_samples,
        padding_samples=track.padding_samples,
        music_crc=music_crc,
        lame_quality=LAME_QUALITY,
    )


def _file_crc(path: Path, start: int, stop: int) -> int:
    """``crc16`` of bytes ``start`` to ``stop`` of the file, read a block at a time."""
    crc = 0
    with open(path, "rb") as file:
        file.seek(start)
        at = start
        while at < stop:
            block = file.read(min(_READ_BLOCK, stop - at))
            if not block:
                raise Mp3FormatError(f"{path.name}: shorter than its frames")
            crc = crc16_combine(crc, crc16_fast(block), len(block))
            at += len(block)
    return crc


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
    end = int(track.offsets[-1])
    crc = _file_crc(track.path, 0, size)
    return SessionPiece(
        frames=take,
        size=size,
        crc=crc,
        track_crc=crc16_combine(crc, _file_crc(track.path, size, end), end - size),
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
        encoder = TrackEncoder(seconds_to_samples(track.start_s), frames, self.bitrate_kbps)
        try:
            for span in spans:
                encoder.feed(span)
            encoded = encoder.finish()
        finally:
            encoder.close()
        piece = session_piece(encoded, self._next_grid_start(track))
        if self.tracks:
            path = self.folder / self.files.tracks[track.index - 1]
            with open(path, "wb") as out, open(frames, "rb") as audio:
                out.write(track_info_frame(encoded, piece.track_crc))
                shutil.copyfileobj(audio, out, _READ_BLOCK)
            tag_mp3(path, self.tags.track(track, gapless=encoded.gapless))
        if self.full:
            os.truncate(frames, piece.size)  # what the full-session file takes of the track
            with self._lock:
                self._pieces[track.index] = piece
        else:
            frames.unlink()

    def _next_grid_start(self, track: Track) -> int | None:
        tracks = self.timeline.tracks
        if track.index >= len(tracks):
            return None
        return grid_start(seconds_to_samples(tracks[track.index].start_s))

    @staticmethod
    def _piece_name(track: Track) -> str:
        return f".{track.index}{_PIECE_SUFFIX}"

    def finish(self) -> None:
        """Join the tracks' frames into the full-session file, if asked for."""
        if not self.full:
            return
        tracks = self.timeline.tracks
        path = self.folder / self.files.full
        info, gapless = session_info_frame([self._pieces[t.index] for t in tracks])
        with open(path, "wb") as out:
            out.write(info)
            for track in tracks:
                piece_path = self.folder / self._piece_name(track)
                with open(piece_path, "rb") as piece:
                    shutil.copyfileobj(piece, out, _READ_BLOCK)
                piece_path.unlink()
        tag_mp3(path, self.tags.full(gapless))
