"""Sound files: a user's bell or ambient bed, and the bowls shipped in ``sounds/``, as samples.

Input: the path of a sound file. Output: ``samples: np.ndarray``, float32, 1-D mono, values
in [-1, 1] (peak-normalised to 1), at the session rate; or, for an ambient bed, a
``RecordedLoop`` of such samples kept in an anonymous temporary file, so a bed of any length
costs the render a block of memory, not the recording.

Files are decoded through libsndfile (``soundfile``): WAV of every kind, FLAC, OGG, MP3, AIFF
and more, with no other program. Only what libsndfile cannot read (M4A, say) goes to pydub,
which needs ffmpeg. Before a sample is decoded the header is checked (channels, sample rate,
sample size, a file cut short, the length a bell may have), so a damaged or hostile header is
a ``SoundFileError`` naming the file and the fix, never a traceback or an allocation sized
by the header. Decoding, the downmix to mono and the resampling to the session rate go a
block at a time.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np

from .audio import SAMPLE_RATE, resample_blocks
from .errors import SoundFileError
from .once import made_once

SOUNDS_PACKAGE = "audioguide"
SOUNDS_FOLDER = "sounds"
DEFAULT_BELL_FILE = "bowl.wav"
INTERVAL_BELL_FILE = "bowl-small.wav"
FFMPEG_HINT = (
    "install ffmpeg (Debian/Ubuntu: sudo apt install ffmpeg; macOS: brew install ffmpeg; "
    "Windows: winget install ffmpeg) or convert the file to WAV"
)
WAV_FIX = "export it again as a 16- or 24-bit PCM WAV file"
NOT_WAV_FIX = "check that it is a WAV file, or convert it"
# What a sound file may be. Rates outside these are a damaged header, not a recording (a header
# claiming 4 GHz once asked the resampler for 43 GiB); more channels than this, the same.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32
MAX_BELL_S = 60.0  # a bell rings for seconds; a longer file is a mistake (a bed, say)
MAX_BED_S = 6 * 3600.0  # the longest session a routine may make: a bed never plays past it
# The resampler's filter grows with the larger term of the rate ratio: an awkward rate (44,101
# Hz) is resampled as the nearest ratio with a denominator up to this, off by at most a few
# parts per million in pitch and length, inaudible.
MAX_RESAMPLE_DOWN = 1280
DECODE_BLOCK_FRAMES = 1 << 16  # frames decoded at a time: 1.5 s at 44.1 kHz
SILENT_PEAK = 1e-4
MIN_LOOP_S = 2.0
LOOP_CROSSFADE_S = 1.0
BED_BYTES_PER_SAMPLE = 4  # float32

# WAV format tags whose samples are plain integers or floats: their sizes are checked here.
WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
PCM_BITS = (8, 16, 24, 32)
FLOAT_BITS = (32, 64)
# Placeholders a streaming writer leaves in a data chunk's size: "up to the end of the file".
UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)
MAX_WAV_CHUNKS = 10_000
# Extensions libsndfile reads: a file of one of these it cannot open is broken, not exotic.
LIBSNDFILE_SUFFIXES = (
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".w64", ".rf64",
)  # fmt: skip


UNKNOWN_FRAMES = -1  # a WAV codec's frames (ADPCM, say) are not its data size over its blocks


@dataclass(frozen=True)
class SoundInfo:
    """What a sound file's header says, once checked: rate (Hz), channels, frames."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def default_sound_path(name: str) -> Path:
    """The path of a sound shipped with audioguide (``sounds/`` in the package)."""
    return Path(str(resources.files(SOUNDS_PACKAGE) / SOUNDS_FOLDER / name))


def has_ffmpeg() -> bool:
    """Whether pydub can read formats libsndfile cannot: it decodes with ffmpeg and asks
    ffprobe what a file holds first, so both must be there (every ffmpeg package ships both)."""
    ffmpeg = shutil.which("ffmpeg") and shutil.which("ffprobe")
    libav = shutil.which("avconv") and shutil.which("avprobe")
    return bool(ffmpeg or libav)


# ---------------------------------------------------------------------------------------------
# Headers


def _check_layout(path: str, channels: int, sample_rate: int, says: str) -> None:
    if channels < 1:
        raise SoundFileError(
            f"{path}: cannot decode this sound file ({says} {channels} channels); {WAV_FIX}"
        )
    if channels > MAX_CHANNELS:
        raise SoundFileError(
            f"{path}: {says} {channels} channels, more than the {MAX_CHANNELS} audioguide "
            "reads; mix it down to mono or stereo"
        )
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise SoundFileError(
            f"{path}: {says} a sample rate of {sample_rate:,} Hz; audioguide reads "
            f"{MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,} Hz, so export it again at 44,100 Hz"
        )


def _undecodable(path: str, reason: str, fix: str = WAV_FIX) -> SoundFileError:
    return SoundFileError(f"{path}: cannot decode this sound file ({reason}); {fix}")


def read_wav_header(path: str, head: IO[bytes], size: int) -> SoundInfo:
    """Check a RIFF WAV file's header against what its fmt and data chunks promise.

    Reads only the chunk headers and the fmt chunk (a few dozen bytes), whatever ``size``
    the file is. Raises SoundFileError for a header no recording has (0 channels, 7-bit
    samples, a rate of 0 or 4 GHz, a frame size that disagrees with them) and for a file cut
    short of what its data chunk says, or cut mid-frame.
    """
    riff = head.read(12)
    if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RIFX") or riff[8:12] != b"WAVE":
        raise _undecodable(path, "no RIFF WAVE header", NOT_WAV_FIX)
    order = "<" if riff[:4] == b"RIFF" else ">"
    fmt: bytes | None = None
    data: tuple[int, int] | None = None  # (offset, declared size)
    offset = 12
    for _ in range(MAX_WAV_CHUNKS):
        head.seek(offset)
        chunk = head.read(8)
        if len(chunk) < 8:
            break
        chunk_id, chunk_size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
        if chunk_id == b"fmt " and fmt is None:
            fmt = head.read(min(chunk_size, 64))
        elif chunk_id == b"data" and data is None:
            data = (offset + 8, chunk_size)
            if chunk_size in UNKNOWN_DATA_SIZES:
                break  # to the end of the file: nothing can follow it
        if fmt is not None and data is not None:
            break
        offset += 8 + chunk_size + (chunk_size & 1)
    if fmt is None:
        raise _undecodable(path, "no fmt chunk, so nothing says what its samples are")
    if len(fmt) < 16:
        raise _undecodable(path, f"its fmt chunk is {len(fmt)} bytes, a WAV header needs 16")
    tag, channels, sample_rate, _, block_align, bits = struct.unpack(order + "HHIIHH", fmt[:16])
    _check_layout(path, channels, sample_rate, "its header says")
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack(order + "H", fmt[24:26])[0]  # the sub-format GUID's first field
    if tag in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        allowed = PCM_BITS if tag == WAVE_FORMAT_PCM else FLOAT_BITS
        kind = "PCM" if tag == WAVE_FORMAT_PCM else "floating-point"
        if bits not in allowed:
            sizes = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
            raise _undecodable(
                path, f"its header says {bits}-bit samples; {kind} WAV holds {sizes}-bit ones"
            )
        if block_align != channels * bits // 8:
            raise _undecodable(
                path,
                f"its header says {block_align} bytes per frame, but {channels} channels of "
                f"{bits}-bit samples take {channels * bits // 8}",
            )
    if data is None:
        raise _undecodable(path, "no data chunk, so it holds no sound")
    data_offset, declared = data
    held = max(size - data_offset, 0)
    length = held if declared in UNKNOWN_DATA_SIZES else min(declared, held)
    frame_bytes = max(block_align, 1)
    if declared not in UNKNOWN_DATA_SIZES and declared > held:
        raise SoundFileError(
            f"{path}: the file is cut short (it holds {held:,} of the {declared:,} bytes of "
            "sound its header promises); copy or export it again"
        )
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        return SoundInfo(sample_rate, channels, UNKNOWN_FRAMES)  # a codec's: libsndfile knows
    if declared not in UNKNOWN_DATA_SIZES and length % frame_bytes:
        raise SoundFileError(
            f"{path}: the file is cut off mid-sample (its sound ends {length % frame_bytes} "
            f"bytes into a {frame_bytes}-byte frame); copy or export it again"
        )
    return SoundInfo(sample_rate, channels, length // frame_bytes)


def _is_riff(head: bytes) -> bool:
    return head[:4] in (b"RIFF", b"RIFX")


def _open(path: str) -> tuple[Any, SoundInfo] | None:
    """The open ``soundfile.SoundFile`` and its checked info, or None for a format libsndfile
    does not read (so pydub and ffmpeg may)."""
    import soundfile

    try:
        with open(path, "rb") as raw:
            riff = _is_riff(raw.read(4))
            size = os.fstat(raw.fileno()).st_size
            raw.seek(0)
            checked = read_wav_header(path, raw, size) if riff else None
    except OSError as exc:
        raise SoundFileError(f"{path}: cannot read this sound file ({exc.strerror})") from None
    if checked is None and path.lower().endswith((".wav", ".wave")):
        # Named WAV but not RIFF: RF64 and Wave64 are libsndfile's; anything else is broken.
        with open(path, "rb") as raw:
            if raw.read(4) not in (b"RF64", b"BW64", b"riff"):
                raise _undecodable(path, "no RIFF WAVE header", NOT_WAV_FIX)
    try:
        sound = soundfile.SoundFile(path)
    except soundfile.LibsndfileError as exc:
        if riff or (not has_ffmpeg() and path.lower().endswith(LIBSNDFILE_SUFFIXES)):
            reason = str(exc.error_string).rstrip(".")
            fix = WAV_FIX if riff else "check that it is a sound file, or convert it to WAV"
            raise _undecodable(path, reason, fix) from None
        return None
    except (RuntimeError, TypeError, ValueError) as exc:  # what older soundfiles raise
        raise _undecodable(path, str(exc), "check that it is a sound file") from None
    try:
        _check_layout(path, sound.channels, sound.samplerate, "it says")
    except SoundFileError:
        sound.close()
        raise
    frames = int(sound.frames)
    if checked is not None and checked.frames != UNKNOWN_FRAMES:
        frames = min(frames, checked.frames)
    return sound, SoundInfo(sound.samplerate, sound.channels, max(frames, 0))


LENGTH_FIXES = {
    "a bell": "trim it, or use a long recording as the ambient bed",
    "an ambient bed": "trim it",
}


def _check_length(path: str, info: SoundInfo, max_s: float, what: str) -> None:
    if info.duration_s > max_s:
        raise SoundFileError(
            f"{path}: the sound lasts {_duration(info.duration_s)}; {what} may last at most "
            f"{_duration(max_s)}; {LENGTH_FIXES[what]}"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


# ---------------------------------------------------------------------------------------------
# Decoding


def _ratio(from_rate: int, to_rate: int) -> tuple[int, int]:
    ratio = Fraction(to_rate, from_rate).limit_denominator(MAX_RESAMPLE_DOWN)
    return ratio.numerator, ratio.denominator


def _mono_blocks(path: str, sample_rate: int, max_s: float, what: str) -> Iterator[np.ndarray]:
    """The file as float64 mono blocks at ``sample_rate``: decoded, downmixed (the mean of
    its channels) and resampled a block at a time; not yet normalised. Stops with
    SoundFileError once more than ``max_s`` is decoded, whatever the header said."""
    opened = _open(path)
    if opened is None:
        mono, rate = _pydub_mono(path)
        _check_length(path, SoundInfo(rate, 1, mono.shape[0]), max_s, what)
        yield from resample_blocks([mono], *_ratio(rate, sample_rate))
        return
    sound, info = opened
    _check_length(path, info, max_s, what)

    def decoded() -> Iterator[np.ndarray]:
        import soundfile

        frames = 0
        with sound:
            while True:
                try:
                    block = sound.read(DECODE_BLOCK_FRAMES, dtype="float64", always_2d=True)
                except (soundfile.LibsndfileError, RuntimeError) as exc:
                    raise _undecodable(path, str(exc), "copy or export it again") from None
                if block.shape[0] == 0:
                    break
                frames += block.shape[0]
                _check_length(path, SoundInfo(info.sample_rate, 1, frames), max_s, what)
                mono = block[:, 0] if block.shape[1] == 1 else block.sum(axis=1) / block.shape[1]
                if not np.all(np.isfinite(mono)):
                    raise SoundFileError(
                        f"{path}: it holds samples that are not numbers (NaN or infinity); "
                        f"{WAV_FIX}"
                    )
                yield mono

    yield from resample_blocks(decoded(), *_ratio(info.sample_rate, sample_rate))


def _pydub_mono(path: str) -> tuple[np.ndarray, int]:
    """A file libsndfile cannot read, through pydub and ffmpeg: float64 mono and its rate."""
    with warnings.catch_warnings():
        # pydub warns on import when ffmpeg is missing (we say it better, when it matters),
        # and, on Python 3.11 and 3.12, that the audioop it uses is deprecated.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from pydub import AudioSegment
        from pydub.exceptions import CouldntDecodeError

    if not has_ffmpeg():
        raise SoundFileError(
            f"{path}: reading {Path(path).suffix or 'this kind of'} files needs ffmpeg, which "
            f"is not installed; {FFMPEG_HINT}"
        )
    try:
        segment = AudioSegment.from_file(path)
    except (CouldntDecodeError, IndexError, ValueError, EOFError) as exc:
        # pydub's message carries ffmpeg's whole banner; its last line is the reason.
        lines = str(exc).strip().splitlines()
        reason = lines[-1] if lines else type(exc).__name__
        raise _undecodable(path, reason, "check that it is a sound file") from None
    except OSError as exc:
        raise SoundFileError(f"{path}: cannot read this sound file ({exc})") from None
    _check_layout(path, segment.channels, segment.frame_rate, "it says")
    channels = segment.split_to_mono()
    full_scale = float(1 << (8 * segment.sample_width - 1))
    mono = np.zeros(int(segment.frame_count()), dtype=np.float64)
    for channel in channels:
        raw = np.array(channel.get_array_of_samples(), dtype=np.float64)
        if segment.sample_width == 1:  # 8-bit is unsigned
            raw -= 128.0
        mono[: raw.shape[0]] += raw[: mono.shape[0]]
    mono /= full_scale * max(len(channels), 1)
    return mono, int(segment.frame_rate)


def _checked_path(path: str | Path) -> tuple[str, int]:
    file = Path(path)
    try:
        stamp = file.stat().st_mtime_ns
    except OSError as exc:
        raise SoundFileError(
            f"{file}: cannot read this sound file ({exc.strerror}); check the path"
        ) from None
    if not file.is_file():
        raise SoundFileError(f"{file}: is not a file; give the path of a sound file")
    return str(file), stamp


def load_sound(
    path: str | Path, sample_rate: int = SAMPLE_RATE, max_s: float = MAX_BELL_S
) -> np.ndarray:
    """Read a short sound file (a bell) as float32 mono at ``sample_rate``, peak 1, read-only.

    Raises SoundFileError naming the file and the fix when it is missing, unreadable, damaged,
    silent, longer than ``max_s``, or needs ffmpeg that is not installed. Cached per path and
    modification time.
    """
    file, stamp = _checked_path(path)
    return _load_sound(file, stamp, sample_rate, max_s)


@made_once(maxsize=16)  # workers ringing the same bell at once wait for one reading
def _load_sound(path: str, stamp: int, sample_rate: int, max_s: float) -> np.ndarray:
    blocks = list(_mono_blocks(path, sample_rate, max_s, "a bell"))
    mono = np.concatenate(blocks) if blocks else np.zeros(0)
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak < SILENT_PEAK:
        raise SoundFileError(f"{path}: the sound is silent or empty; choose another file")
    out = (mono / peak).astype(np.float32)
    out.setflags(write=False)
    return out


# ---------------------------------------------------------------------------------------------
# Ambient beds: recordings that loop


def _crossfade_length(n: int, sample_rate: int) -> int:
    return min(int(LOOP_CROSSFADE_S * sample_rate), n // 4)


def _crossfaded(head: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """The head of a loop with the recording's tail faded out over it, equal power."""
    fade = head.shape[0]
    x = np.linspace(0.0, 1.0, fade, endpoint=False) + 0.5 / fade
    fade_in = np.sin(0.5 * np.pi * x)
    return (head.astype(np.float64) * fade_in + tail * fade_in[::-1]).astype(np.float32)


class RecordedLoop:
    """A recording made into a seamless loop: float32 mono at the session rate, peak 1 before
    ``gain``, kept in an anonymous temporary file (gone when the loop is, whatever ends the
    process) and read a span at a time, from any thread."""

    def __init__(self, file: IO[bytes], size: int, gain: float = 1.0) -> None:
        self._file = file
        self.size = size
        self.gain = gain

    def scaled(self, gain: float) -> RecordedLoop:
        """The same loop, every sample times ``gain`` (float32, as ``loop * gain`` is)."""
        return RecordedLoop(self._file, self.size, gain)

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples ``start`` to ``start + n`` of one pass of the loop, without the gain."""
        out = np.empty(max(n, 0), dtype=np.float32)
        view = out.view(np.uint8).data
        done, offset = 0, start * BED_BYTES_PER_SAMPLE
        while done < view.nbytes:
            got = os.preadv(self._file.fileno(), [view[done:]], offset + done)
            if got <= 0:
                raise SoundFileError("the ambient bed's temporary file was cut short; render again")
            done += got
        return out

    def blocks(self, block: int = DECODE_BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """One pass of the loop, without the gain, ``block`` samples at a time."""
        for start in range(0, self.size, block):
            yield self.read(start, min(block, self.size - start))

    def span(self, start: int, n: int) -> np.ndarray:
        """``n`` samples of the loop played forever, from absolute sample ``start``, times the
        gain (a new array): consecutive tracks continue the same bed."""
        out = np.empty(max(n, 0), dtype=np.float32)
        done, offset = 0, start % self.size
        while done < out.shape[0]:
            step = min(self.size - offset, out.shape[0] - done)
            out[done : done + step] = self.read(offset, step)
            done += step
            offset = 0
        if self.gain != 1.0:
            out *= np.float32(self.gain)
        return out

    def samples(self) -> np.ndarray:
        """The whole loop in memory, times the gain."""
        return self.span(0, self.size)


def load_loop(path: str | Path, sample_rate: int = SAMPLE_RATE) -> RecordedLoop:
    """Read a recording for an ambient bed and make it a seamless loop, a block at a time
    into a temporary file: its last LOOP_CROSSFADE_S (less for a short file) crossfaded into
    its head with equal power, so the loop is that much shorter than the recording.

    Two passes over the file: the first finds the peak (after resampling, as the loop will
    be), the second writes the normalised samples. Raises SoundFileError as ``load_sound``
    does, and for a recording shorter than MIN_LOOP_S or longer than MAX_BED_S.
    """
    file, _ = _checked_path(path)
    peak, n = 0.0, 0
    for block in _mono_blocks(file, sample_rate, MAX_BED_S, "an ambient bed"):
        if block.size:
            peak = max(peak, float(np.max(np.abs(block))))
        n += block.shape[0]
    if peak < SILENT_PEAK:
        raise SoundFileError(f"{file}: the sound is silent or empty; choose another file")
    if n < MIN_LOOP_S * sample_rate:
        raise SoundFileError(
            f"{file}: too short for an ambient bed (a loop needs at least {MIN_LOOP_S:g} s of "
            "sound); use a longer recording"
        )
    # Unnamed on disk: nothing is left behind, whatever ends the process. The loop owns it.
    store = tempfile.TemporaryFile(prefix="audioguide-bed-")  # noqa: SIM115
    try:
        for block in _mono_blocks(file, sample_rate, MAX_BED_S, "an ambient bed"):
            store.write((block / peak).astype(np.float32).tobytes())
        store.flush()
        fade = _crossfade_length(n, sample_rate)
        whole = RecordedLoop(store, n)
        head = _crossfaded(whole.read(0, fade), whole.read(n - fade, fade))
        store.seek(0)
        store.write(head.tobytes())
        store.truncate((n - fade) * BED_BYTES_PER_SAMPLE)
        store.flush()
    except OSError as exc:
        store.close()
        megabytes = n * BED_BYTES_PER_SAMPLE / 1e6
        raise SoundFileError(
            f"{file}: cannot prepare this ambient bed in the temporary folder "
            f"({exc.strerror}; it needs {megabytes:.0f} MB); free some space there or point "
            "TMPDIR at a folder with room"
        ) from None
    except BaseException:
        store.close()
        raise
    return RecordedLoop(store, n - fade)
