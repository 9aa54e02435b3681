"""Export: MP3 frames and the Info frame, the full-session file built from the tracks' frames,
tags, chapters, transcripts, playlists, formats and atomic output. The real LAME encoder and
libsndfile decode everything back; speech comes from the fast fake engine."""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import shutil
import struct
import subprocess
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from mutagen.id3 import ID3
from mutagen.mp3 import MP3, BitrateMode

from audioguide.cli import cli
from audioguide.errors import ExportError, OptionError
from audioguide.export import ExportOptions, SessionWriter, cover, session_files
from audioguide.export import ffmpeg as formats
from audioguide.export.cover import COVER_SIZE_PX, MEMO_SUFFIX, cover_png, memoized_cover_png
from audioguide.export.mp3 import EncodedTrack, TrackEncoder, copy_bytes, to_pcm16
from audioguide.export.mp3frames import (
    Mp3FormatError,
    crc16,
    crc16_combine,
    crc16_fast,
    frame_offsets,
    info_frame,
    parse_header,
)
from audioguide.export.ownership import MANIFEST_NAME
from audioguide.export.sidecars import PlaylistEntry, lrc_text, lrc_timestamp, playlist_text
from audioguide.export.tags import (
    Chapter,
    Cue,
    Gapless,
    TrackTags,
    id3_bytes,
    id3_tags,
    itunsmpb,
)
from audioguide.pipeline import SessionOptions, plan_session, render_session
from audioguide.synth import SAMPLE_RATE
from audioguide.timeline import Timeline, Track

SR = SAMPLE_RATE


def burst(n: int, freq_hz: float) -> np.ndarray:
    t = np.arange(n) / SR
    return (0.4 * np.sin(2 * np.pi * freq_hz * t) * np.hanning(n)).astype(np.float32)


def session_with_bursts(bounds: list[int]) -> tuple[np.ndarray, list[int]]:
    """Silence with a tone burst every 0.2 s, none within 0.3 s of a track boundary."""
    samples = np.zeros(bounds[-1], dtype=np.float32)
    marks = []
    for a, b in itertools.pairwise(bounds):
        for m in range(a + int(0.3 * SR), b - int(0.3 * SR) - 2000, int(0.2 * SR)):
            samples[m : m + 2000] += burst(2000, 300 + (m % 500))
            marks.append(m)
    return samples, marks


def lag_samples(decoded: np.ndarray, reference: np.ndarray, at: int, search: int = 400) -> int:
    best, best_score = 0, -np.inf
    for lag in range(-search, search + 1):
        lo = at + lag
        if lo < 0 or lo + reference.shape[0] > decoded.shape[0]:
            continue
        score = float(decoded[lo : lo + reference.shape[0]] @ reference)
        if score > best_score:
            best, best_score = lag, score
    return best


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def encode_whole(samples: np.ndarray, first_sample: int, folder: Path) -> EncodedTrack:
    """Reference: a track fed to the encoder in one piece."""
    encoder = TrackEncoder(first_sample, folder / "whole.frames")
    encoder.feed(samples)
    return encoder.finish()


def session_timeline(bounds: list[int]) -> Timeline:
    """A timeline whose tracks cover session samples ``bounds[i]`` to ``bounds[i + 1]``."""
    tracks = tuple(
        Track(index=i, title=f"Part {i}", start_s=a / SR, duration_s=(b - a) / SR, events=())
        for i, (a, b) in enumerate(itertools.pairwise(bounds), start=1)
    )
    total_s = (bounds[-1] - bounds[0]) / SR
    return Timeline("t", "Test", "audioguide", total_s, tracks, breath="6 breaths/min")


def write_session(
    folder: Path, samples: np.ndarray, bounds: list[int], bitrate_kbps: int = 96
) -> tuple[list[Path], Path]:
    """Write ``samples`` (session samples from ``bounds[0]`` on) as MP3 tracks cut at
    ``bounds``, and the full session, the way a render writes them: (tracks, full file)."""
    folder.mkdir(exist_ok=True)
    timeline = session_timeline(bounds)
    writer = SessionWriter(folder, timeline, ExportOptions(bitrate_kbps=bitrate_kbps))
    for track, (a, b) in zip(timeline.tracks, itertools.pairwise(bounds), strict=True):
        writer.write_track(track, samples[a - bounds[0] : b - bounds[0]])
    *tracks, full = writer.finish()
    return list(tracks), full


def one_track_mp3(
    folder: Path, samples: np.ndarray, first_sample: int = 0, bitrate_kbps: int = 96
) -> Path:
    """The MP3 file of one track of ``samples`` starting at session sample ``first_sample``."""
    tracks, _ = write_session(
        folder, samples, [first_sample, first_sample + len(samples)], bitrate_kbps
    )
    return tracks[0]


def frames_of(encoded: EncodedTrack) -> bytes:
    return encoded.path.read_bytes()


def id3_size(data: bytes) -> int:
    assert data[:3] == b"ID3"
    size = 0
    for byte in data[6:10]:
        size = size << 7 | byte
    return 10 + size


def audio_frames(data: bytes) -> bytes:
    """An MP3 file's audio frames: after its ID3 tag and its Info frame."""
    info = id3_size(data)
    return data[info + parse_header(data, info).size_bytes :]


# -- frames and the Info frame -----------------------------------------------------------------


def test_crc16_is_lames_crc16_arc():
    assert crc16(b"123456789") == 0xBB3D  # the CRC-16/ARC check value


@given(st.binary(max_size=20_000))
@settings(max_examples=30, deadline=None)
def test_fast_crc_equals_the_byte_by_byte_crc(data):
    assert crc16_fast(data) == crc16(data)
    assert crc16_fast(memoryview(data)[7:]) == crc16(data[7:])  # a view, not a copy


@given(st.binary(max_size=3_000), st.binary(max_size=3_000))
@settings(max_examples=30, deadline=None)
def test_crcs_of_two_parts_combine_into_the_crc_of_both(a, b):
    assert crc16_combine(crc16(a), crc16(b), len(b)) == crc16(a + b)


@given(
    st.integers(0, 10 * 1152),
    st.lists(st.integers(1, 40_000), min_size=1, max_size=8),
)
@settings(max_examples=20, deadline=None)
def test_any_cut_of_the_input_encodes_to_the_same_frames(first_sample, lengths):
    samples = (0.2 * np.random.default_rng(3).standard_normal(SR)).astype(np.float32)
    bounds = [0, *np.minimum(np.cumsum(lengths), samples.size).tolist(), samples.size]
    with tempfile.TemporaryDirectory() as folder:
        encoder = TrackEncoder(first_sample, Path(folder) / "cut.frames")
        for lo, hi in itertools.pairwise(bounds):
            encoder.feed(samples[lo:hi])
        whole = encode_whole(samples, first_sample, Path(folder))
        assert frames_of(encoder.finish()) == frames_of(whole)


@pytest.mark.parametrize("first_sample", [0, 575, 577, 1151, 90_001])
def test_a_track_encoded_in_pieces_is_the_track_encoded_whole(tmp_path, first_sample):
    rng = np.random.default_rng(first_sample)
    samples = (0.2 * rng.standard_normal(3 * SR + 17)).astype(np.float32)
    whole = encode_whole(samples, first_sample, tmp_path)
    encoder = TrackEncoder(first_sample, tmp_path / "pieces.frames")
    # Pieces shorter than the encoder's delay, then longer than its blocks.
    for lo, hi in itertools.pairwise([0, 100, 250, 600, 70_000, samples.size]):
        encoder.feed(samples[lo:hi])
    pieces = encoder.finish()
    assert frames_of(pieces) == frames_of(whole)
    assert (pieces.delay_samples, pieces.padding_samples, pieces.sample_count) == (
        whole.delay_samples,
        whole.padding_samples,
        whole.sample_count,
    )


def test_music_crc_covers_the_audio_frames(tmp_path):
    data = one_track_mp3(tmp_path, np.zeros(SR, dtype=np.float32)).read_bytes()
    data = data[id3_size(data) :]
    info_size = parse_header(data).size_bytes
    at = 4 + 17 + 120 + 32  # the music CRC, just before the tag's own CRC
    assert struct.unpack(">H", data[at : at + 2])[0] == crc16(data[info_size:])


def test_info_frame_states_length_delay_and_padding(tmp_path):
    encoded = encode_whole(np.zeros(SR, dtype=np.float32), 0, tmp_path)
    audio = frames_of(encoded)
    frame = info_frame(
        encoded.header, audio_frames=encoded.frame_count, audio_bytes=len(audio),
        delay_samples=700, padding_samples=1000,
    )  # fmt: skip
    assert len(frame) == parse_header(frame).size_bytes
    info = MP3(write(tmp_path / "a.mp3", frame + audio)).info
    assert info.length == pytest.approx((encoded.frame_count * 1152 - 1700) / SR, abs=1e-9)
    assert info.bitrate_mode == BitrateMode.CBR
    assert info.encoder_info.startswith("LAME")
    # The LAME tag ends with a CRC of every byte before it.
    end = 4 + 17 + 120 + 34
    assert struct.unpack(">H", frame[end : end + 2])[0] == crc16(frame[:end])


@pytest.mark.parametrize(
    ("first_sample", "bitrate_kbps"),
    [(0, 96), (500, 96), (576, 96), (1000, 96), (1151, 96), (123_456, 96), (700, 32), (9, 320)],
)
def test_a_track_decodes_to_exactly_its_samples_wherever_it_starts(
    tmp_path, first_sample, bitrate_kbps
):
    n = SR + 777
    samples = np.zeros(n, dtype=np.float32)
    marks = [int(0.3 * SR), int(0.7 * SR)]
    for m in marks:
        samples[m : m + 2000] = burst(2000, 440)
    path = one_track_mp3(tmp_path, samples, first_sample, bitrate_kbps)
    decoded, rate = soundfile.read(path, dtype="float32")
    assert rate == SR
    assert decoded.shape == (n,)
    assert soundfile.info(str(path)).frames == n
    assert MP3(path).info.length == pytest.approx(n / SR, abs=1e-9)
    for m in marks:
        assert lag_samples(decoded, samples[m : m + 2000], m) == 0


def test_stereo_tracks_keep_their_channels_and_length(tmp_path):
    n = SR
    left = np.zeros(n, dtype=np.float32)
    left[20_000:22_000] = burst(2000, 440)
    samples = np.stack([left, np.zeros(n, dtype=np.float32)], axis=1)
    path = one_track_mp3(tmp_path, samples, first_sample=1000)
    decoded, _ = soundfile.read(path, dtype="float32")
    assert decoded.shape == (n, 2)
    assert lag_samples(decoded[:, 0], left[20_000:22_000], 20_000) == 0
    assert np.max(np.abs(decoded[:, 1])) < 0.01


def test_the_full_session_is_the_tracks_frames_and_plays_them_back_to_back(tmp_path):
    bounds = [0, int(2.37 * SR) + 11, int(5.1 * SR) + 500, int(6.9 * SR) + 3, int(8.5 * SR) + 1]
    samples, marks = session_with_bursts(bounds)
    tracks, path = write_session(tmp_path / "s", samples, bounds)
    decoded, _ = soundfile.read(path, dtype="float32")
    assert decoded.shape == samples.shape
    assert MP3(path).info.length == pytest.approx(samples.shape[0] / SR, abs=1e-9)
    for m in marks:
        assert lag_samples(decoded, samples[m : m + 2000], m) == 0
    # The tracks' own files, played one after another, give the same samples.
    joined = np.concatenate([soundfile.read(t, dtype="float32")[0] for t in tracks])
    assert np.max(np.abs(joined - decoded)) < 1e-4
    # No second encode: the full file holds each track's frames byte for byte.
    first = audio_frames(tracks[0].read_bytes())
    assert first[: int(frame_offsets(first)[3])] in path.read_bytes()


def test_pcm16_rounds_and_clips():
    pcm = to_pcm16(np.array([0.0, 1.0, -1.0, 0.25, 1.5, -1.5, 1e-6], dtype=np.float32))
    assert pcm.dtype == np.int16
    assert pcm.tolist() == [0, 32767, -32767, 8192, 32767, -32768, 0]


@pytest.mark.parametrize("bitrate_kbps", [64, 96, 192, 224, 320])
def test_the_decoded_level_is_the_mastered_level(tmp_path, bitrate_kbps):
    # LAME scales its input by a factor that depends on the bit rate (0.95 to 1).
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    path = one_track_mp3(tmp_path, tone, bitrate_kbps=bitrate_kbps)
    decoded, _ = soundfile.read(path, dtype="float64")
    middle = slice(SR // 4, 3 * SR // 4)
    rms_ratio = np.sqrt(np.mean(decoded[middle] ** 2)) / np.sqrt(np.mean(tone[middle] ** 2))
    assert 20 * np.log10(rms_ratio) == pytest.approx(0.0, abs=0.05)


def test_bad_bitrate_is_refused_with_the_choices(tmp_path):
    # The encoder and ExportOptions run one check, with one message.
    for make in (
        lambda: TrackEncoder(0, tmp_path / "t.frames", bitrate_kbps=100),
        lambda: ExportOptions(bitrate_kbps=100),
    ):
        with pytest.raises(OptionError, match=r"^bitrate_kbps: must be one of 32, 40, .* 320 "):
            make()


def test_frames_go_to_disk_as_they_are_made_not_into_memory(tmp_path):
    # A track's frames (0.72 MB a minute at 96 kbps) would otherwise grow with its length.
    path = tmp_path / "t.frames"
    encoder = TrackEncoder(0, path)
    tone = (0.3 * np.sin(np.arange(SR) * 2 * np.pi * 440 / SR)).astype(np.float32)
    for second in range(1, 11):
        encoder.feed(tone)
        assert path.stat().st_size >= (second - 1) * 12_000  # 96 kbps: 12 kB a second
    encoded = encoder.finish()
    assert path.stat().st_size == encoded.size >= 10 * 12_000
    assert encoded.frame_count == len(frame_offsets(path.read_bytes())) - 1 > 10 * SR // 1152


def test_a_long_track_is_encoded_in_memory_that_does_not_grow_with_its_length(tmp_path):
    # What the encoder keeps between spans (where frames start, their CRC) must not grow with
    # the track: a 240-minute session has tracks of over an hour, two or more in flight.
    span = np.zeros(1 << 19, dtype=np.float32)  # 12 s, as the mixer gives them
    encoder = TrackEncoder(0, tmp_path / "t.frames", next_first_sample=20 * span.size)
    for _ in range(8):  # past the first megabyte of frames: the CRC's tables are made
        encoder.feed(span)
    tracemalloc.start()
    try:
        for _ in range(25):  # five minutes more: 11,480 frames
            encoder.feed(span)
        held_bytes, peak_bytes = tracemalloc.get_traced_memory()
        encoded = encoder.finish()
        _, finish_peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert encoded.frame_count > 33 * span.size // 1152
    assert encoded.piece.frames == 20 * span.size // 1152
    # A few header bytes, not bytes per frame (a list of where each starts: 400 kB).
    assert held_bytes < 32_000
    # One span converted to 16 bits (a float32 scratch, int16, bytes) and one CRC block.
    assert max(peak_bytes, finish_peak_bytes) < 2 * span.nbytes + 3 * 2**20


# -- tags ----------------------------------------------------------------------------------------


def read_id3_frames(path: Path) -> list[tuple[str, bytes]]:
    """(frame id, body) in the order they are stored, from an ID3v2.3 tag."""
    return read_id3_frames_of(path.read_bytes())


def read_id3_frames_of(data: bytes) -> list[tuple[str, bytes]]:
    head = data[:10]
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    body = data[10 : 10 + size]
    frames, at = [], 0
    while at + 10 <= len(body) and body[at : at + 4] != b"\0\0\0\0":
        (length,) = struct.unpack(">I", body[at + 4 : at + 8])
        frames.append((body[at : at + 4].decode("ascii"), body[at + 10 : at + 10 + length]))
        at += 10 + length
    return frames


def retag(path: Path, tags: TrackTags) -> None:
    """``path`` with ``tags`` in place of its own, as the sink writes a file: the tag, then
    the Info frame and the frames."""
    data = path.read_bytes()
    audio = data[id3_size(data) :]
    path.write_bytes(id3_bytes(tags, len(audio), path) + audio)


def test_cover_art_does_not_change_the_length_players_read(tmp_path):
    n = 10 * SR
    path = one_track_mp3(tmp_path, np.zeros(n, np.float32))
    tags = TrackTags("T", "A", "B", 1, 1, cover_png=b"\x89PNG" + bytes(60_000))
    retag(path, tags)
    assert soundfile.info(str(path)).frames == n
    assert MP3(path).info.length == pytest.approx(10.0, abs=1e-9)


def test_chapters_are_stored_in_time_order(tmp_path):
    path = one_track_mp3(tmp_path, np.zeros(SR, np.float32))
    # Titles of falling length: mutagen alone stores the shortest frame first.
    titles = ["A very long first chapter title indeed", "Medium second", "3rd", "4"]
    chapters = tuple(Chapter(t, i * 0.2, (i + 1) * 0.2) for i, t in enumerate(titles))
    retag(path, TrackTags("T", "A", "B", 1, 1, chapters=chapters))
    stored = [body for frame_id, body in read_id3_frames(path) if frame_id == "CHAP"]
    starts = [struct.unpack(">I", b[b.index(b"\0") + 1 :][:4])[0] for b in stored]
    assert starts == [0, 200, 400, 600]
    id3 = ID3(path)
    assert id3.version == (2, 3, 0)
    (toc,) = id3.getall("CTOC")
    assert toc.child_element_ids == ["chp0", "chp1", "chp2", "chp3"]
    assert [id3[f"CHAP:{e}"].sub_frames["TIT2"].text[0] for e in toc.child_element_ids] == titles


@pytest.mark.parametrize("seconds", [1, 30])
def test_the_tag_made_in_memory_is_the_one_mutagen_writes_into_the_file(tmp_path, seconds):
    # The sink writes each file once, its tag first: the tag must be what mutagen writes into
    # the finished file (its padding grows with the audio), byte for byte, but for the
    # chapters, which are the same frames put in time order, so players see the same file.
    path = one_track_mp3(tmp_path, np.zeros(seconds * SR, np.float32))
    audio = path.read_bytes()[id3_size(path.read_bytes()) :]  # the Info frame and the frames
    titles = ["A very long first chapter title indeed", "Medium second", "3rd", "4"]
    chapters = tuple(Chapter(t, i * 0.2, (i + 1) * 0.2) for i, t in enumerate(titles))
    cues = (Cue(0.0, "Breathe in."), Cue(4.0, "And out."))
    plain = TrackTags("T", "A", "B", 1, 1, cover_png=b"\x89PNG" + bytes(9_000), cues=cues)
    chaptered = TrackTags("T", "A", "B", 1, 1, chapters=chapters, gapless=Gapless(576, 100, SR, SR))
    for tags in (plain, chaptered):
        path.write_bytes(audio)
        id3_tags(tags).save(str(path), v2_version=3)
        by_mutagen = path.read_bytes()
        made = id3_bytes(tags, len(audio), path)
        assert len(made) == id3_size(by_mutagen) and by_mutagen[len(made) :] == audio
        if tags is plain:
            assert made == by_mutagen[: len(made)]
        else:
            path.write_bytes(made + audio)
            ours = read_id3_frames(path)
            assert ours != read_id3_frames_of(by_mutagen)  # mutagen's order is not time order
            assert sorted(ours) == sorted(read_id3_frames_of(by_mutagen))
            stored = [body for frame_id, body in ours if frame_id == "CHAP"]
            starts = [struct.unpack(">I", b[b.index(b"\0") + 1 :][:4])[0] for b in stored]
            assert starts == [0, 200, 400, 600]


def test_frames_are_copied_whole_where_the_kernel_cannot_copy_them(tmp_path, monkeypatch):
    source, target = tmp_path / "frames", tmp_path / "file.mp3"
    data = bytes(range(256)) * 5_000
    source.write_bytes(data)

    def refused(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    # The kernel's copy where this system has one, then refused, then absent (macOS, Windows).
    for copy_file_range in (getattr(os, "copy_file_range", refused), refused, None):
        if copy_file_range is None:
            monkeypatch.delattr(os, "copy_file_range", raising=False)
        else:
            monkeypatch.setattr(os, "copy_file_range", copy_file_range, raising=False)
        with open(source, "rb") as frames, open(target, "wb") as out:
            out.write(b"head")
            assert frames.read(10) == data[:10]  # read ahead: the file object's buffer
            copy_bytes(frames, out, len(data) - 10)
        assert target.read_bytes() == b"head" + data[10:]
    # Frames that end early are an error, not a short file passed on.
    with open(source, "rb") as frames, open(target, "wb") as out, pytest.raises(Mp3FormatError):
        copy_bytes(frames, out, len(data) + 1)


def test_cover_is_a_square_png_that_shows_the_title():
    from PIL import Image

    first = cover_png("Qigong for Back Pain Relief", "audioguide")
    assert first == cover_png("Qigong for Back Pain Relief", "audioguide")  # reproducible
    image = Image.open(io.BytesIO(first))
    assert (image.format, image.size) == ("PNG", (COVER_SIZE_PX, COVER_SIZE_PX))
    # The title is drawn: another title changes the pixels where text goes, not elsewhere.
    other = np.asarray(Image.open(io.BytesIO(cover_png("Evening Calm", "audioguide"))))
    pixels = np.asarray(image)
    differs = np.any(pixels != other, axis=2)
    assert differs[int(COVER_SIZE_PX * 0.65) :].any()
    assert not differs[: int(COVER_SIZE_PX * 0.6)].any()


TITLE, SUBTITLE = "Qigong for Back Pain Relief", "audioguide"


def test_a_memoized_cover_is_the_drawn_cover_read_back_without_drawing(tmp_path, monkeypatch):
    drawn = cover_png(TITLE, SUBTITLE)
    assert memoized_cover_png(TITLE, SUBTITLE, memo=tmp_path) == drawn  # drawn and kept
    (kept,) = tmp_path.glob(f"*{MEMO_SUFFIX}")
    assert not list(tmp_path.glob("*.tmp"))  # written through a renamed temporary file

    def no_drawing(*args: object) -> bytes:
        raise AssertionError("the cover was drawn again")

    monkeypatch.setattr(cover, "cover_png", no_drawing)
    assert memoized_cover_png(TITLE, SUBTITLE, memo=tmp_path) == drawn
    # Anything else that is drawn is another entry, never this one's bytes.
    monkeypatch.undo()
    assert memoized_cover_png("Evening Calm", SUBTITLE, memo=tmp_path) != drawn
    assert memoized_cover_png(TITLE, "", memo=tmp_path) != drawn
    assert len(memoized_cover_png(TITLE, SUBTITLE, 300, memo=tmp_path)) < len(drawn)
    assert len(list(tmp_path.glob(f"*{MEMO_SUFFIX}"))) == 4
    assert kept.read_bytes().endswith(drawn)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut short
        lambda data: data[:32],  # no picture at all
        lambda data: bytes(len(data)),  # zeroed by a power cut
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one bit of the picture
        lambda data: bytes([data[0] ^ 1]) + data[1:],  # one bit of the checksum
        lambda data: b"",
    ],
)
def test_a_damaged_cover_memo_is_drawn_again_and_replaced(tmp_path, damage):
    drawn = cover_png(TITLE, SUBTITLE)
    memoized_cover_png(TITLE, SUBTITLE, memo=tmp_path)
    (kept,) = tmp_path.glob(f"*{MEMO_SUFFIX}")
    whole = kept.read_bytes()
    kept.write_bytes(damage(whole))
    assert memoized_cover_png(TITLE, SUBTITLE, memo=tmp_path) == drawn
    assert kept.read_bytes() == whole


def test_a_cover_memo_of_another_key_is_not_used(tmp_path):
    memoized_cover_png("Evening Calm", SUBTITLE, memo=tmp_path)
    (other,) = tmp_path.glob(f"*{MEMO_SUFFIX}")
    memoized_cover_png(TITLE, SUBTITLE, memo=tmp_path)
    (mine,) = set(tmp_path.glob(f"*{MEMO_SUFFIX}")) - {other}
    mine.write_bytes(other.read_bytes())  # a valid memo, under the wrong name
    assert memoized_cover_png(TITLE, SUBTITLE, memo=tmp_path) == cover_png(TITLE, SUBTITLE)


def test_a_cover_memo_that_cannot_be_written_only_costs_the_drawing(tmp_path):
    blocked = tmp_path / "memo"
    blocked.write_text("a file where the memo folder would be")
    assert memoized_cover_png(TITLE, SUBTITLE, memo=blocked) == cover_png(TITLE, SUBTITLE)
    assert memoized_cover_png(TITLE, SUBTITLE, memo=None) == cover_png(TITLE, SUBTITLE)


def test_a_render_takes_its_cover_from_the_memo_with_the_same_bytes(
    short_routine_file, tmp_path, fake_speech, monkeypatch
):
    first = render(short_routine_file, tmp_path, fake_speech)
    drawn = cover_png(first.timeline.title, first.timeline.artist)
    assert (first.folder / "cover.png").read_bytes() == drawn

    def no_drawing(*args: object) -> bytes:
        raise AssertionError("the cover was drawn again")

    monkeypatch.setattr(cover, "cover_png", no_drawing)
    again = render(short_routine_file, tmp_path, fake_speech)
    assert (again.folder / "cover.png").read_bytes() == drawn
    assert ID3(again.files[0]).getall("APIC")[0].data == drawn


def test_a_render_without_the_cache_draws_its_cover(short_routine_file, tmp_path, fake_speech):
    options = SessionOptions(use_cache=False, jobs=2)
    result = render_session(str(short_routine_file), tmp_path / "out", options, speech=fake_speech)
    assert (result.folder / "cover.png").read_bytes() == cover_png(
        result.timeline.title, result.timeline.artist
    )
    assert not list(tmp_path.rglob(f"*{MEMO_SUFFIX}"))


def test_itunsmpb_states_delay_padding_and_length():
    text = itunsmpb(Gapless(576, 1000, sample_count=441_000, sample_rate=SR))
    fields = text.split()
    assert text.startswith(" ")
    assert fields[1:4] == ["00000240", "000003E8", "000000000006BAA8"]
    assert len(fields) == 12


# -- playlist and transcripts --------------------------------------------------------------------


def test_playlist_lines_are_what_phone_players_read():
    text = playlist_text(
        [PlaylistEntry("01 - A.mp3", "A", 61.4), PlaylistEntry("02 - B.mp3", "B\nx", 9.6)],
        "audioguide",
    )
    assert text.splitlines() == [
        "#EXTM3U",
        "#EXTINF:61,audioguide - A",
        "01 - A.mp3",
        "#EXTINF:10,audioguide - B x",
        "02 - B.mp3",
    ]


def test_lrc_time_stamps():
    assert lrc_timestamp(0) == "[00:00.00]"
    assert lrc_timestamp(65.432) == "[01:05.43]"
    assert lrc_timestamp(3725.0) == "[62:05.00]"  # LRC minutes run past an hour
    text = lrc_text([Cue(8.0, "Welcome.\nSit.")], title="T", artist="A", album="B", length_s=75)
    assert text.splitlines()[-1] == "[00:08.00]Welcome. Sit."
    assert "[length:01:15]" in text


# -- a whole render, fake speech -----------------------------------------------------------------

UNSAFE_ROUTINE = """\
title: 'Back: "Relief"? <now>/../..'
sections:
  - title: '../../x'
    steps:
      - say: Welcome.
        pause: 1
  - title: 'CON'
    steps:
      - say: Breathe in.
      - say: Breathe out slowly.
"""


TRACK_FILES = ["01 - Arrive.mp3", "02 - Breathe.mp3"]  # short_routine_file's


def render(routine, tmp_path, fake_speech, **export):
    options = SessionOptions(export=ExportOptions(**export), jobs=2)
    return render_session(str(routine), tmp_path / "out", options, speech=fake_speech)


def test_every_tag_chapter_and_transcript_matches_the_timeline(
    short_routine_file, tmp_path, fake_speech
):
    result = render(short_routine_file, tmp_path, fake_speech)
    timeline = result.timeline
    folder = result.folder
    tracks = timeline.tracks
    full = folder / "Short Test Session (full).mp3"
    assert [p.name for p in result.files] == [*TRACK_FILES, full.name]
    assert (folder / "cover.png").read_bytes() == ID3(full).getall("APIC")[0].data
    for track, path in zip(tracks, result.files, strict=False):
        id3 = ID3(path)
        assert path.read_bytes()[3] == 3  # ID3v2.3
        assert id3["TIT2"].text == [track.title]
        assert id3["TPE1"].text == [timeline.artist]
        assert id3["TALB"].text == [timeline.title]
        assert id3["TRCK"].text == [f"{track.index}/{len(tracks)}"]
        assert id3["TCON"].text == ["Meditation"]
        assert str(id3["TDRC"].text[0]).isdigit()  # stored as TYER in v2.3
        (comment,) = [c.text[0] for c in id3.getall("COMM") if c.desc == ""]
        assert comment == f"Rendered at {timeline.breath}, voice {timeline.voice}"
        assert id3.getall("APIC")[0].data.startswith(b"\x89PNG")
        cues = [e for e in track.events if e.kind == "say"]
        assert id3.getall("USLT")[0].text.splitlines() == [e.text for e in cues]
        sylt = id3.getall("SYLT")[0].text
        assert [ms for _, ms in sylt] == [round((e.start_s - track.start_s) * 1000) for e in cues]
        # Gapless: the comment and the LAME tag agree, and both give the exact length.
        smpb = next(c.text[0] for c in id3.getall("COMM") if c.desc == "iTunSMPB").split()
        info = MP3(path).info
        assert int(smpb[3], 16) == round(track.duration_s * SR)
        assert int(id3["TLEN"].text[0]) == round(track.duration_s * 1000)
        assert info.length == pytest.approx(track.duration_s, abs=1e-4)
        assert soundfile.info(str(path)).duration == pytest.approx(track.duration_s, abs=1e-4)
        lrc = path.with_suffix(".lrc").read_text(encoding="utf-8").splitlines()
        stamps = [line[: line.index("]") + 1] for line in lrc if line[1].isdigit()]
        assert stamps == [lrc_timestamp(e.start_s - track.start_s) for e in cues]
    id3 = ID3(full)
    assert id3["TALB"].text == ["Short Test Session (full)"]  # not among the tracks' album
    assert id3["TRCK"].text == ["1/1"]
    chaps = [id3[f"CHAP:{e}"] for e in id3.getall("CTOC")[0].child_element_ids]
    assert [c.sub_frames["TIT2"].text[0] for c in chaps] == [t.title for t in tracks]
    for chap, track in zip(chaps, tracks, strict=True):
        assert abs(chap.start_time / 1000 - track.start_s) <= 0.010
        assert abs(chap.end_time / 1000 - track.end_s) <= 0.010
    assert MP3(full).info.length == pytest.approx(timeline.total_s, abs=1e-4)
    assert soundfile.info(str(full)).duration == pytest.approx(timeline.total_s, abs=1e-4)
    full_lrc = full.with_suffix(".lrc").read_text(encoding="utf-8")
    assert full_lrc.count("\n[0") == sum(1 for e in timeline.events() if e.kind == "say")


def test_unsafe_titles_render_to_safe_names_the_playlist_resolves(tmp_path, fake_speech):
    routine = tmp_path / "unsafe.yaml"
    routine.write_text(UNSAFE_ROUTINE, encoding="utf-8")
    result = render(routine, tmp_path, fake_speech)
    out = tmp_path / "out"
    every = [p for p in out.rglob("*")]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in every)
    assert not (tmp_path / "x.mp3").exists()
    names = sorted(p.name for p in result.folder.iterdir() if p.name != MANIFEST_NAME)
    for name in names:
        assert not set('/\\:*?"<>|') & set(name)
        assert name == name.strip(" .")
    raw = result.playlist.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8").splitlines()
    assert lines[0] == "#EXTM3U"
    listed = [line for line in lines if not line.startswith("#")]
    assert len(listed) == 2
    for name in listed:
        assert "/" not in name and not name.startswith(".")
        assert (result.folder / name).is_file()


@pytest.mark.parametrize("mode", ["tracks", "single"])
def test_tracks_or_single_writes_only_those(short_routine_file, tmp_path, fake_speech, mode):
    result = render(short_routine_file, tmp_path, fake_speech, mode=mode)
    mp3s = sorted(p.name for p in result.folder.glob("*.mp3"))
    lines = result.playlist.read_text(encoding="utf-8").splitlines()
    if mode == "tracks":
        assert mp3s == TRACK_FILES
        assert len(lines) == 1 + 2 * len(mp3s)
    else:
        assert mp3s == ["Short Test Session (full).mp3"]
        assert lines[2] == mp3s[0]
        total_s = round(result.timeline.total_s)
        assert lines[1] == f"#EXTINF:{total_s},audioguide - Short Test Session"
        assert MP3(result.folder / mp3s[0]).info.length == pytest.approx(
            result.timeline.total_s, abs=1e-4
        )


def test_every_file_states_the_crc_of_its_own_frames(short_routine_file, tmp_path, fake_speech):
    result = render(short_routine_file, tmp_path, fake_speech)
    # Nothing the render kept aside (each track's frames for the full file) is left behind;
    # the manifest is the one hidden file.
    hidden = [p.name for p in result.folder.iterdir() if p.name.startswith(".")]
    assert hidden == [MANIFEST_NAME]
    for path in result.folder.glob("*.mp3"):
        data = path.read_bytes()
        info = id3_size(data)
        audio = data[info + parse_header(data, info).size_bytes :]
        at = info + 4 + 17 + 120 + 32  # the music CRC, just before the tag's own CRC
        assert struct.unpack(">H", data[at : at + 2])[0] == crc16_fast(audio), path.name


def test_zip_holds_the_folder(short_routine_file, tmp_path, fake_speech):
    result = render(short_routine_file, tmp_path, fake_speech, zip=True)
    archive = result.folder.with_name(result.folder.name + ".zip")
    with zipfile.ZipFile(archive) as z:
        assert z.testzip() is None
        assert sorted(z.namelist()) == sorted(
            f"{result.folder.name}/{p.name}"
            for p in result.folder.iterdir()
            if p.name != MANIFEST_NAME  # the manifest proves the folder, not the archive
        )


def test_a_failure_mid_render_leaves_the_previous_output(
    short_routine_file, tmp_path, fake_speech, monkeypatch
):
    first = render(short_routine_file, tmp_path, fake_speech)
    before = {p.name: p.read_bytes() for p in first.folder.iterdir()}

    def failing(*args, **kwargs):
        raise ExportError("disk trouble")

    monkeypatch.setattr("audioguide.export.mp3.session_info_frame", failing)
    with pytest.raises(ExportError, match="disk trouble"):
        render(short_routine_file, tmp_path, fake_speech)
    assert {p.name: p.read_bytes() for p in first.folder.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [first.folder.name]


# -- other formats -------------------------------------------------------------------------------


def test_other_formats_without_ffmpeg_say_how_to_install_it(short_routine_file, monkeypatch):
    monkeypatch.setattr(formats, "ffmpeg_path", lambda: None)
    result = CliRunner().invoke(cli, ["render", str(short_routine_file), "--format", "m4a"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --format m4a needs ffmpeg, which is not installed")
    assert "apt install ffmpeg" in result.output
    assert "Traceback" not in result.output


needs_ffmpeg = pytest.mark.skipif(formats.ffmpeg_path() is None, reason="ffmpeg not installed")


@needs_ffmpeg
@pytest.mark.parametrize("audio_format", ["m4a", "ogg", "flac", "wav"])
def test_other_formats_hold_tags_and_true_lengths(
    short_routine_file, tmp_path, fake_speech, audio_format
):
    import mutagen

    result = render(short_routine_file, tmp_path, fake_speech, audio_format=audio_format)
    timeline = result.timeline
    for track, path in zip(timeline.tracks, result.files, strict=False):
        assert path.suffix == f".{audio_format}"
        audio = mutagen.File(path)
        # AAC and Vorbis frames may round the end up by a frame or two.
        assert abs(audio.info.length - track.duration_s) <= 0.1
        text = json.dumps({k: str(v) for k, v in (audio.tags or {}).items()}, ensure_ascii=False)
        assert track.title in text
        assert timeline.title in text
    full = result.folder / f"Short Test Session (full).{audio_format}"
    assert abs(mutagen.File(full).info.length - timeline.total_s) <= 0.1
    if shutil.which("ffprobe"):
        probed = subprocess.run(
            ["ffprobe", "-v", "error", "-print_format", "json", "-show_chapters", str(full)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        chapters = json.loads(probed)["chapters"]
        assert [c["tags"]["title"] for c in chapters] == [t.title for t in timeline.tracks]
        for chapter, track in zip(chapters, timeline.tracks, strict=True):
            assert abs(float(chapter["start_time"]) - track.start_s) <= 0.010


def test_plan_and_render_agree_on_file_names(short_routine_file, tmp_path, fake_speech):
    timeline = plan_session(str(short_routine_file), speech=fake_speech)
    result = render(short_routine_file, tmp_path, fake_speech)
    names = session_files(timeline, "mp3").tracks
    assert [p.name for p in result.files[:-1]] == list(names) == TRACK_FILES


@pytest.mark.parametrize("audio_format", ["mp3", "ogg"])
def test_plan_json_names_the_files_in_the_format_asked_for(short_routine_file, audio_format):
    args = ["plan", str(short_routine_file), "--json", "--format", audio_format]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    files = [track["file"] for track in json.loads(result.output)["tracks"]]
    assert files == ["01 - Arrive." + audio_format, "02 - Breathe." + audio_format]


def test_a_cover_made_in_the_background_is_the_same_and_its_failure_is_raised_where_wanted(
    tmp_path, monkeypatch
):
    made = cover.cover_in_background(TITLE, SUBTITLE, memo=tmp_path)
    assert made.result(timeout=60) == cover_png(TITLE, SUBTITLE)

    def broken(*args: object) -> bytes:
        raise OSError("no fonts")

    monkeypatch.setattr(cover, "cover_png", broken)
    failed = cover.cover_in_background("Evening Calm", SUBTITLE, memo=tmp_path)
    with pytest.raises(OSError, match="no fonts"):
        failed.result(timeout=60)
    assert not list(tmp_path.glob("*.tmp"))
