"""MP3 frames: offsets predicted for LAME's constant bit rate and checked, in a whole stream and
in one given a piece at a time; the vectorized CRC.

tests/test_export.py checks the Info frame and the files a render writes.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest

from audioguide.export.mp3 import TrackEncoder
from audioguide.export.mp3frames import (
    FrameStream,
    Mp3FormatError,
    _predicted_offsets,
    _walked_offsets,
    crc16,
    crc16_combine,
    crc16_fast,
    frame_offsets,
    parse_header,
)
from audioguide.synth import SAMPLE_RATE


def lame_stream(bitrate_kbps: int, channels: int = 1, seconds: float = 3.0) -> bytes:
    rng = np.random.default_rng(bitrate_kbps)
    shape = (round(seconds * SAMPLE_RATE),) if channels == 1 else (round(seconds * SAMPLE_RATE), 2)
    samples = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        encoder = TrackEncoder(1_000, Path(folder) / "track.frames", bitrate_kbps)
        encoder.feed(samples)
        return encoder.finish().path.read_bytes()


@pytest.mark.parametrize(("bitrate_kbps", "channels"), [(32, 1), (96, 1), (128, 2), (320, 2)])
def test_predicted_offsets_are_the_frames_walked_one_by_one(bitrate_kbps, channels):
    data = lame_stream(bitrate_kbps, channels)
    offsets = frame_offsets(data)
    assert offsets.dtype == np.int64
    assert np.array_equal(offsets, _walked_offsets(data))
    # Found by prediction, not by the walk: LAME's padding rule holds.
    assert np.array_equal(_predicted_offsets(parse_header(data), len(data)), offsets)
    assert offsets[-1] == len(data) and offsets.size > 100
    padded = [parse_header(data, int(o)).padded for o in offsets[:-1]]
    assert any(padded) or bitrate_kbps == 320  # the padding byte does come and go


def test_a_stream_padded_otherwise_is_walked():
    # Two streams joined: the second starts its padding afresh, so no prediction fits.
    first, second = lame_stream(96, seconds=1.03), lame_stream(96, seconds=2.0)
    data = first + second
    expected = np.concatenate((_walked_offsets(first)[:-1], len(first) + _walked_offsets(second)))
    assert np.array_equal(frame_offsets(data), expected)
    mixed = lame_stream(96, seconds=1.0) + lame_stream(128, seconds=1.0)  # two bit rates
    assert np.array_equal(frame_offsets(mixed), _walked_offsets(mixed))


def streamed(data: bytes, cuts: list[int], mark: int | None) -> FrameStream:
    stream = FrameStream(mark)
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    for lo, hi in itertools.pairwise(bounds):
        stream.add(data[lo:hi])
    return stream


@pytest.mark.parametrize(
    "cuts",
    [
        [],
        [1],
        [2, 3, 5],
        [313],
        [314, 626],
        [1000, 1001, 1002, 1003, 1004],
        list(range(0, 40000, 997)),
    ],
)
def test_a_stream_given_in_pieces_counts_its_frames_and_finds_the_mark(cuts):
    data = lame_stream(96)
    offsets = frame_offsets(data)
    for mark in (None, 0, 1, 57, offsets.size - 1):
        stream = streamed(data, cuts, mark)
        stream.check_whole()
        assert (stream.frames, stream.size) == (offsets.size - 1, len(data))
        assert stream.header == parse_header(data)
        assert stream.mark_offset == (None if mark is None else int(offsets[mark]))
        assert stream._predicted  # found by prediction, not walked frame by frame


def test_a_stream_in_pieces_padded_otherwise_is_walked():
    first, second = lame_stream(96, seconds=1.03), lame_stream(96, seconds=2.0)
    data = first + second
    offsets = frame_offsets(data)
    mark = offsets.size - 5  # in the second stream, where no prediction fits
    stream = streamed(data, list(range(0, len(data), 4099)), mark)
    stream.check_whole()
    assert stream.frames == offsets.size - 1
    assert stream.mark_offset == int(offsets[mark])
    assert not stream._predicted
    with pytest.raises(Mp3FormatError, match="cut short"):
        streamed(data[:-100], [5000], None).check_whole()
    with pytest.raises(Mp3FormatError, match="no frames"):
        FrameStream().check_whole()


def test_a_stream_cut_short_is_refused():
    data = lame_stream(96)
    with pytest.raises(Mp3FormatError, match="cut short"):
        frame_offsets(data[:-100])
    assert frame_offsets(b"").tolist() == [0]


@pytest.mark.parametrize(
    "size", [4_096, 4_097, 8_191, 65_536, 65_537, 300_001, 1 << 20, (1 << 21) + 3, 2_500_001]
)
def test_the_vectorized_crc_is_the_byte_by_byte_crc(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc16_fast(data) == crc16(data)
    assert crc16_fast(memoryview(data)[3:]) == crc16(data[3:])


@pytest.mark.parametrize("length_b", [0, 1, 63, 64, 4095, 4096, (1 << 20) + 1, 3_000_017])
def test_crcs_combine_over_any_length(length_b):
    # crc16_combine runs crc(a) through len(b) zero bytes a power of two at a time.
    a = b"audioguide"
    b = np.random.default_rng(length_b).integers(0, 256, length_b, dtype=np.uint8).tobytes()
    assert crc16_combine(crc16(a), crc16_fast(b), length_b) == crc16_fast(a + b)


def test_advancing_over_zero_bytes_adds_up():
    crc = crc16(b"audioguide")
    once = crc16_combine(crc, 0, 10**9 + 7)
    assert once == crc16_combine(crc16_combine(crc, 0, 10**9), 0, 7) != crc
