"""MP3 frames: offsets predicted for LAME's constant bit rate and checked, the vectorized CRC.

tests/test_export.py checks the Info frame and the files a render writes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from audioguide.export.mp3 import TrackEncoder
from audioguide.export.mp3frames import (
    Mp3FormatError,
    _predicted_offsets,
    _walked_offsets,
    crc16,
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
