"""MP3 frames for the export stage: split a LAME stream into frames, and build the Xing/Info
frame with the LAME extension that tells players the exact length and the gapless trim.

lameenc writes bare frames. Without an Info frame players guess the length from the file size
(libsndfile counts ID3 tag bytes as audio) and cannot trim the encoder's delay. No installed
library writes the frame, so it is built here, after the layout LAME itself writes
(http://gabriel.mp3-tech.org/mp3infotag.html, LAME's VbrTag.c): MPEG-1 Layer III, CBR.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SAMPLES_PER_FRAME = 1152  # MPEG-1 Layer III
# MPEG-1 Layer III bit rates by header index (kbps); index 0 is free format, 15 is invalid.
_BITRATES_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_SAMPLE_RATES = (44100, 48000, 32000)
_SIDE_INFO_BYTES = {1: 17, 2: 32}  # MPEG-1, by channel count: where the Info tag starts
_TOC_ENTRIES = 100
_ENCODER = b"LAME3.100"  # players look for "LAME" before they read the delay and padding
_MAX_DELAY_OR_PADDING = 0xFFF  # 12 bits each in the LAME tag
_INFO_TAG_BYTES = 4 + 4 + 4 + 4 + 100 + 4 + 36  # "Info", flags, frames, bytes, TOC, quality, LAME


class Mp3FormatError(ValueError):
    """Bytes that are not a stream of MPEG-1 Layer III frames (a programming error here)."""


@dataclass(frozen=True)
class FrameHeader:
    bitrate_kbps: int
    sample_rate: int
    channel_mode: int  # 0 stereo, 1 joint stereo, 2 dual channel, 3 mono
    padded: bool

    @property
    def channels(self) -> int:
        return 1 if self.channel_mode == 3 else 2

    @property
    def size_bytes(self) -> int:
        return 144_000 * self.bitrate_kbps // self.sample_rate + int(self.padded)


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader:
    """The header of the MPEG-1 Layer III frame starting at ``offset``."""
    if len(data) - offset < 4:
        raise Mp3FormatError(f"truncated frame header at byte {offset}")
    word = int.from_bytes(data[offset : offset + 4], "big")
    version, layer = (word >> 19) & 3, (word >> 17) & 3
    bitrate_index, rate_index = (word >> 12) & 15, (word >> 10) & 3
    if word >> 21 != 0x7FF or version != 3 or layer != 1:
        raise Mp3FormatError(f"no MPEG-1 Layer III frame at byte {offset}")
    if bitrate_index in (0, 15) or rate_index == 3:
        raise Mp3FormatError(f"free-format or invalid frame header at byte {offset}")
    return FrameHeader(
        bitrate_kbps=_BITRATES_KBPS[bitrate_index],
        sample_rate=_SAMPLE_RATES[rate_index],
        channel_mode=(word >> 6) & 3,
        padded=bool((word >> 9) & 1),
    )


def frame_offsets(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Byte offset of every frame in ``data``, plus ``len(data)`` at the end (int64).

    A constant-bit-rate stream's frames differ only in their padding byte, which LAME gives
    a frame whenever the bytes owed to the bit rate have grown by a whole byte: so every
    offset can be predicted at once, and then checked at once against the headers found
    there (each frame's size, from its own header, is the distance to the next offset). A
    stream that fails the check (another encoder's padding, a change of bit rate) is walked
    frame by frame instead.
    """
    size = len(data)
    if size == 0:
        return np.zeros(1, dtype=np.int64)
    first = parse_header(data)
    predicted = _predicted_offsets(first, size)
    view = np.frombuffer(data, dtype=np.uint8)
    if predicted is not None and _frames_match(
        view, predicted[:-1], np.diff(predicted), bytes(data[:4])
    ):
        return predicted
    return _walked_offsets(data)


def lame_frame_starts(first: FrameHeader, indices: np.ndarray) -> np.ndarray:
    """Where LAME starts frames ``indices`` (int64) of a constant-bit-rate stream whose first
    frame has the header ``first``: it pads frame k (k >= 1) when ceil(k * fraction / rate)
    grows, so the first frame is unpadded."""
    owed = 144_000 * first.bitrate_kbps  # bytes per frame, times the sample rate
    whole, fraction = divmod(owed, first.sample_rate)
    # ceil((k - 1) * fraction / rate) padding bytes in frames 0 .. k-1
    padding_before = np.where(indices > 0, -((-(indices - 1) * fraction) // first.sample_rate), 0)
    return indices * whole + padding_before


def _predicted_offsets(first: FrameHeader, size: int) -> np.ndarray | None:
    """LAME's frame offsets for a CBR stream of ``size`` bytes like ``first``, or None when no
    whole number of its frames makes ``size``."""
    whole = 144_000 * first.bitrate_kbps // first.sample_rate
    offsets = lame_frame_starts(first, np.arange(size // whole + 2, dtype=np.int64))
    frames = int(np.searchsorted(offsets, size))
    if frames >= offsets.size or offsets[frames] != size:
        return None
    return offsets[: frames + 1]


def _frames_match(view: np.ndarray, starts: np.ndarray, sizes: np.ndarray, head: bytes) -> bool:
    """Whether a frame like the one with the header bytes ``head`` (the same bit rate, sample
    rate, version, layer and protection) starts at each of ``starts`` in ``view`` (uint8),
    padded exactly when its size in ``sizes`` says so."""
    if starts.size and int(starts[-1]) + 4 > view.size:
        return False
    b0, b1, b2 = view[starts], view[starts + 1], view[starts + 2]
    same = (b0 == head[0]) & (b1 == head[1]) & ((b2 & 0xFD) == (head[2] & 0xFD))
    padded = ((b2 >> 1) & 1).astype(np.int64)
    first = parse_header(head)
    unpadded_size = first.size_bytes - int(first.padded)
    return bool(np.all(same & (sizes == unpadded_size + padded)))


def _walked_offsets(data: bytes | bytearray | memoryview) -> np.ndarray:
    offsets = [0]
    while offsets[-1] < len(data):
        offsets.append(offsets[-1] + parse_header(data, offsets[-1]).size_bytes)
    if offsets[-1] != len(data):
        raise Mp3FormatError("the last frame is cut short")
    return np.asarray(offsets, dtype=np.int64)


class FrameStream:
    """Counts the frames of a stream of MPEG-1 Layer III frames given a piece at a time (the
    encoder's pieces end anywhere, not on frame boundaries), and notes where frame ``mark``
    starts; holds only the few header bytes of a frame not yet seen, whatever the length.

    LAME's constant-bit-rate frames are where ``lame_frame_starts`` puts them: those in a
    piece are predicted at once and checked at once against their headers (as in
    ``frame_offsets``); once a check fails, the rest of the stream is walked frame by frame.
    """

    def __init__(self, mark: int | None = None) -> None:
        self.header: FrameHeader | None = None  # the first frame's
        self.frames = 0  # frames whose header has been read
        self.size = 0  # bytes given
        self.mark = mark
        self.mark_offset: int | None = 0 if mark == 0 else None
        self._head = b""  # the first frame's header bytes
        self._next = 0  # where the next frame starts, in the whole stream
        self._tail = b""  # the bytes from ``_next`` on, when fewer than a header's 4
        self._predicted = True  # every frame so far is where LAME puts it

    def add(self, data: bytes) -> None:
        buffer = self._tail + data if self._tail else data
        base = self.size - len(self._tail)  # where ``buffer`` starts in the stream
        self.size += len(data)
        at = self._next - base
        while at + 4 <= len(buffer):
            limit = None  # frames to read before the mark, while it is ahead
            if self.mark is not None and self.mark_offset is None:
                limit = self.mark - self.frames
            if self.header is not None and self._predicted:
                count, at = self._predict(buffer, base, at, limit)
            else:
                count, at = self._walk(buffer, at, 1 if self.header is None else limit)
            self.frames += count
            if self.frames == self.mark and self.mark_offset is None:
                self.mark_offset = base + at
        self._next = base + at
        self._tail = bytes(buffer[at:]) if at < len(buffer) else b""

    def _predict(self, buffer: bytes, base: int, at: int, limit: int | None) -> tuple[int, int]:
        """(frames, where the next starts in ``buffer``) for the frames whose header lies in
        ``buffer`` from ``at`` on (at most ``limit``), if LAME put them where predicted;
        (0, at) if not, and the stream is walked from then on."""
        assert self.header is not None
        first = self.header
        unpadded = first.size_bytes - int(first.padded)
        count = (len(buffer) - at) // unpadded + 2
        if limit is not None:
            count = min(count, limit)
        indices = np.arange(self.frames, self.frames + count + 1, dtype=np.int64)
        starts = lame_frame_starts(first, indices) - base
        count = int(np.count_nonzero(starts[:-1] + 4 <= len(buffer)))
        view = np.frombuffer(buffer, dtype=np.uint8)
        if starts[0] == at and _frames_match(
            view, starts[:count], np.diff(starts[: count + 1]), self._head
        ):
            return count, int(starts[count])
        self._predicted = False
        return 0, at

    def _walk(self, buffer: bytes, at: int, limit: int | None) -> tuple[int, int]:
        count = 0
        while at + 4 <= len(buffer) and (limit is None or count < limit):
            header = parse_header(buffer, at)
            if self.header is None:
                self.header, self._head = header, bytes(buffer[at : at + 4])
            at += header.size_bytes
            count += 1
        return count, at

    def check_whole(self) -> None:
        """Raise Mp3FormatError unless the stream so far ends where a frame ends."""
        if self.header is None:
            raise Mp3FormatError("the encoder gave no frames")
        if self._next != self.size:
            raise Mp3FormatError("the last frame is cut short")


def _crc16_table() -> tuple[int, ...]:
    # CRC-16/ARC (polynomial 0x8005, bit-reversed 0xA001), as LAME's crc16_lookup.
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16 = _crc16_table()


def crc16(data: bytes, crc: int = 0) -> int:
    """LAME's CRC-16 of ``data`` (for the Info tag's own 190-odd bytes; slow on megabytes)."""
    for byte in data:
        crc = (crc >> 8) ^ _CRC16[(crc ^ byte) & 0xFF]
    return crc


_CRC_ROW_BYTES = 64  # bytes each row of the vectorized CRC takes, two at a time
_CRC_CHUNK_BYTES = 1 << 20  # bytes of a track taken at a time


@lru_cache(maxsize=1)
def _crc16_pairs() -> np.ndarray:
    """The CRC-16 after two bytes, from the CRC xor the two bytes (little end first): a
    16-bit CRC is wholly replaced by two bytes, so one lookup runs two steps."""
    table = np.asarray(_CRC16, dtype=np.uint16)
    value = np.arange(1 << 16, dtype=np.uint32)
    once = (value >> 8) ^ table[value & 0xFF]
    return ((once >> 8) ^ table[once & 0xFF]).astype(np.uint16)


def _map_tables(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables of a linear map on 16 bits given by each bit's image (``columns``):
    map(v) = low[v & 0xFF] ^ high[v >> 8]."""
    byte = np.arange(256, dtype=np.uint16)
    low = np.zeros(256, dtype=np.uint16)
    high = np.zeros(256, dtype=np.uint16)
    for bit in range(8):
        has = (byte >> bit) & 1 == 1
        low[has] ^= columns[bit]
        high[has] ^= columns[8 + bit]
    return low, high


def crc16_fast(data: bytes | bytearray | memoryview) -> int:
    """``crc16(data)`` for megabytes of audio, with numpy: a few ns a byte, at most a megabyte
    at a time (so a long track's frames are never copied whole).

    The CRC is linear with a zero start: the data is cut into parts of a power of two rows
    (``_crc16_rows``, no row computed for padding but in the last part), and each part's CRC
    is folded into the CRC so far, crc(A + B) = advance(crc(A), len(B)) ^ crc(B).
    """
    size = len(data)
    if size < _CRC_SMALL_BYTES:
        return crc16(bytes(data))
    view = np.frombuffer(data, dtype=np.uint8)
    crc = 0
    start = 0
    while start < size:
        left = size - start
        take = min(_CRC_CHUNK_BYTES, 1 << (left.bit_length() - 1))
        if take < _CRC_SMALL_BYTES:
            take = left  # the rest, under 4 kB: padded to a power of two rows
        crc = crc16_combine(crc, _crc16_rows(view[start : start + take]), take)
        start += take
    return crc


_CRC_SMALL_BYTES = 4096  # under this, the byte-by-byte CRC is as quick


def _crc16_rows(data: np.ndarray) -> int:
    """``crc16`` of bytes (uint8): zero bytes in front of the data leave a zero-start CRC
    zero, so the data, zero-padded in front, is viewed as rows of 64 bytes, a power of two
    of them; every row's CRC is computed side by side (two bytes a lookup), then pairs of
    neighbours are folded, level by level, where advancing over a row's zero bytes is a
    linear map, the same for every pair of a level, applied through two lookup tables."""
    width = _CRC_ROW_BYTES
    rows = 1 << max(0, int(np.ceil(np.log2(-(-data.size // width)))))
    if rows * width == data.size:
        padded = data
    else:
        padded = np.zeros(rows * width, dtype=np.uint8)
        padded[rows * width - data.size :] = data
    # Column j: bytes 2j and 2j + 1 of every row, little end first, contiguous.
    words = np.ascontiguousarray(padded.view("<u2").reshape(rows, width // 2).T)
    table = _crc16_pairs()
    crcs = np.zeros(rows, dtype=np.intp)
    for column in words:
        crcs = table.take(crcs ^ column)
    level_bytes = width
    while crcs.size > 1:
        low, high = _advance_tables(level_bytes.bit_length() - 1)
        left, right = crcs[0::2], crcs[1::2]
        crcs = low[left & 0xFF] ^ high[left >> 8] ^ right
        level_bytes *= 2
    return int(crcs[0])


def _advance(crc: int, zero_bytes: int) -> int:
    for _ in range(zero_bytes):
        crc = (crc >> 8) ^ _CRC16[crc & 0xFF]
    return crc


def _apply(columns: list[int], crc: int) -> int:
    """The linear map given by its image of each of the 16 bits, applied to ``crc``."""
    out = 0
    for bit in range(16):
        if crc >> bit & 1:
            out ^= columns[bit]
    return out


@lru_cache(maxsize=64)
def _zero_advance_power(exponent: int) -> tuple[int, ...]:
    """The linear map of running a CRC through 2 ** ``exponent`` zero bytes, as each of the
    16 bits' image: the map for half as many, squared."""
    if exponent == 0:
        return tuple(_advance(1 << bit, 1) for bit in range(16))
    half = list(_zero_advance_power(exponent - 1))
    return tuple(_apply(half, column) for column in half)


@lru_cache(maxsize=64)
def _advance_tables(exponent: int) -> tuple[np.ndarray, np.ndarray]:
    """``_map_tables`` of advancing over 2 ** ``exponent`` zero bytes."""
    return _map_tables(np.array(_zero_advance_power(exponent), dtype=np.uint16))


def crc16_combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """``crc16(a + b)`` from ``crc16(a)``, ``crc16(b)`` and ``len(b)``, without the data.

    With a zero start the CRC is linear: crc(a + b) is crc(a) run through ``len(b)`` zero
    bytes, xor crc(b); the zero bytes are run through a power of two at a time, two table
    lookups each, so any length costs a few dozen steps.
    """
    crc = crc_a
    exponent = 0
    while length_b and crc:
        if length_b & 1:
            low, high = _advance_tables(exponent)
            crc = int(low[crc & 0xFF]) ^ int(high[crc >> 8])
        length_b >>= 1
        exponent += 1
    return crc ^ crc_b


def info_frame(
    template: FrameHeader,
    *,
    audio_frames: int,
    audio_bytes: int,
    delay_samples: int,
    padding_samples: int,
    music_crc: int = 0,
    lame_quality: int = 5,
) -> bytes:
    """A Xing "Info" frame (CBR) with the LAME extension, to put before ``audio_frames`` frames.

    ``music_crc`` is ``crc16_fast`` of the audio frames; LAME writes it, integrity checkers
    (foobar2000, mp3guessenc) compare it, players ignore it.

    ``delay_samples`` and ``padding_samples`` are what a gapless decoder drops at the start
    (after the decoder's own 529 samples) and at the end, so it plays exactly
    ``audio_frames * 1152 - delay_samples - padding_samples`` samples; mutagen and libsndfile
    report that length. The frame decodes as silence in players that do not know it. Its
    header matches the audio's (``template``), unpadded, as LAME writes it.
    """
    for name, value in (("delay", delay_samples), ("padding", padding_samples)):
        if not 0 <= value <= _MAX_DELAY_OR_PADDING:
            raise ValueError(f"{name} of {value} samples does not fit the LAME tag's 12 bits")
    at = 4 + _SIDE_INFO_BYTES[template.channels]  # side info stays zero: decodes as silence
    needed = at + _INFO_TAG_BYTES
    # At low bit rates a frame is too small for the tag: LAME then writes this one frame at
    # the lowest bit rate that holds it.
    bitrate_kbps = next(
        kbps
        for kbps in _BITRATES_KBPS
        if kbps >= template.bitrate_kbps
        and FrameHeader(kbps, template.sample_rate, template.channel_mode, False).size_bytes
        >= needed
    )
    header = FrameHeader(bitrate_kbps, template.sample_rate, template.channel_mode, padded=False)
    size = header.size_bytes
    stream_bytes = size + audio_bytes  # LAME counts the Info frame in both byte fields
    word = (
        (0x7FF << 21)
        | (3 << 19)  # MPEG-1
        | (1 << 17)  # Layer III
        | (1 << 16)  # no CRC protection
        | (_BITRATES_KBPS.index(header.bitrate_kbps) << 12)
        | (_SAMPLE_RATES.index(header.sample_rate) << 10)
        | (header.channel_mode << 6)
    )
    frame = bytearray(size)
    frame[0:4] = word.to_bytes(4, "big")
    # Constant bit rate: byte position grows linearly with time.
    toc = bytes(min(255, i * 256 // _TOC_ENTRIES) for i in range(_TOC_ENTRIES))
    flags = 0x1 | 0x2 | 0x4 | 0x8  # frames, bytes, TOC, quality
    xing = b"Info" + struct.pack(">III", flags, audio_frames, stream_bytes) + toc
    xing += struct.pack(">I", 100 - 10 * 4 - lame_quality)  # LAME: 100 - 10 * VBR_q - q
    lame = _ENCODER
    lame += bytes([0x01])  # tag revision 0, method 1: constant bit rate
    lame += bytes([0])  # lowpass: not stated
    lame += bytes(8)  # replay gain: not given
    lame += bytes([0x00])  # flags and ATH type
    lame += bytes([min(255, header.bitrate_kbps)])
    lame += bytes(
        [delay_samples >> 4, ((delay_samples & 0xF) << 4) | (padding_samples >> 8)]
    ) + bytes([padding_samples & 0xFF])
    source_rate_code = {32000: 0, 44100: 1, 48000: 2}[header.sample_rate]
    stereo_code = {3: 0, 0: 1, 2: 2, 1: 3}[header.channel_mode]  # LAME's numbering
    lame += bytes([(stereo_code << 2) | (source_rate_code << 6)])  # misc
    lame += bytes(3)  # MP3 gain, preset and surround
    lame += struct.pack(">I", stream_bytes)
    lame += struct.pack(">H", music_crc)
    frame[at : at + len(xing) + len(lame)] = xing + lame
    end = at + len(xing) + len(lame)
    assert end + 2 == needed <= size
    frame[end : end + 2] = struct.pack(">H", crc16(bytes(frame[:end])))
    return bytes(frame)
