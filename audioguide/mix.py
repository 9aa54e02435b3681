"""Mix stage: timeline tracks and prepared sounds in, mastered track samples out.

Each track is mixed into one preallocated float32 buffer (mono, values in [-1, 1] once
mastered). An event's first sample is ``round(start_s * rate)`` counted from the session start,
minus the track's own first sample, so no rounding accumulates over a long session. Every
sound placed starts and ends at zero (each is faded at its edges), and nothing is added where
the timeline has nothing, so a pause is digital silence unless an ambient bed is on.

The ambient bed is a seamless loop indexed by absolute session time, faded in and out with
each track and ducked under every spoken cue (the timeline says exactly when speech plays, so
the duck can begin before the voice does).

Mastering is one gain for the whole session (album gain: the ITU-R BS.1770 gated loudness over
every track's blocks), then a true-peak limiter. True peak is the peak of the 4x oversampled
signal; it is found without oversampling a whole track, by oversampling only where the
interpolation filter could lift a sample above the ceiling (see ``hot_samples``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pyloudnorm.iirfilter import IIRfilter
from scipy import ndimage, signal

from .errors import SoundFileError
from .speech import Speech
from .synth import (
    AMBIENT_KINDS,
    DEFAULT_BELL_FILE,
    DEFAULT_BREATH_SOUND,
    INTERVAL_BELL_FILE,
    SAMPLE_RATE,
    ambient_loop,
    apply_fades,
    breath_guide,
    default_sound_path,
    fit_ring,
    load_sound,
    loop_span,
    seamless_loop,
    seconds_to_samples,
    tick,
)
from .timeline import Track

DEFAULT_LOUDNESS_LUFS = -16.0  # stereo-equivalent; a mono file is heard on both ears
MONO_OFFSET_DB = 3.0103  # a mono channel measures this much lower than its stereo equivalent
# -1 dBTP is the promise; the MP3 encoder adds up to about 0.3 dB of overshoot on decoding.
TRUE_PEAK_CEILING_DBTP = -1.5
LIMITER_WINDOW_S = 0.02
MOVE_TICK_PEAK = 0.12  # a paced movement's tick: heard, but under the voice
BLOCK_S = 0.4
HOP_S = 0.1

DEFAULT_AMBIENT = "none"
BELL_PEAK = 0.3  # a bell file is peak-normalised, then placed at this peak
CHIME_PEAK = 0.16  # an interval bell is a smaller bowl, quieter: it marks time, not a change
# Ambient loudness before mastering (the voice measures about -22 LUFS before mastering): a
# bed about 18 LU under the voice is felt rather than listened to.
AMBIENT_LOUDNESS_LUFS = -40.0
DUCK_DB = -6.0
DUCK_ATTACK_S = 0.08  # the bed starts to dip this long before the voice
DUCK_RELEASE_S = 0.4  # and comes back this slowly after it
AMBIENT_FADE_IN_S = 1.0
AMBIENT_FADE_OUT_S = 1.5
AMBIENT_SEED_STREAM = 7_919  # keeps the bed's random stream apart from the guide's


@dataclass(frozen=True)
class MixSettings:
    """How tracks are made to sound. Defaults are the CLI's defaults.

    ``ambient`` is a kind (none, pink, brown, drone) or a sound file, for every track; None
    lets each section choose (its own ``ambient``, else the routine's, else none).
    ``bell_file`` is a sound file for the bells; None takes the routine's, else the bowl
    shipped in ``sounds/``.
    """

    breath_sound: str = DEFAULT_BREATH_SOUND
    bells: bool = True
    seed: int = 0
    loudness_lufs: float = DEFAULT_LOUDNESS_LUFS
    ambient: str | None = None
    bell_file: str | None = None


def track_span(track: Track, sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(first sample, number of samples) of a track, counted from the session start."""
    first = seconds_to_samples(track.start_s, sample_rate)
    return first, seconds_to_samples(track.end_s, sample_rate) - first


def _add(buffer: np.ndarray, offset: int, samples: np.ndarray, gain: float = 1.0) -> None:
    start = max(offset, 0)
    end = min(buffer.shape[0], offset + samples.shape[0])
    if end > start:
        piece = samples[start - offset : end - offset]
        buffer[start:end] += piece if gain == 1.0 else piece * np.float32(gain)


@lru_cache(maxsize=64)
def _tone(phase: str, n: int) -> np.ndarray:
    # The tone guide has no randomness: every cycle at one tempo reuses the same phase sound.
    out = breath_guide(phase, n, "tone", np.random.default_rng(0))
    out.setflags(write=False)
    return out


def _bell_sound(settings: MixSettings, track: Track) -> np.ndarray:
    path = settings.bell_file or track.bell_sound
    return load_sound(path or default_sound_path(DEFAULT_BELL_FILE))


def _chime_sound(settings: MixSettings, track: Track) -> np.ndarray:
    # A user's own bell serves for the interval bells too, so one file changes every bell.
    path = settings.bell_file or track.bell_sound
    return load_sound(path or default_sound_path(INTERVAL_BELL_FILE))


def mix_track(track: Track, speech: Speech, settings: MixSettings) -> np.ndarray:
    """Mix one track, before mastering: float32 mono samples, silent where nothing happens."""
    first, n = track_span(track)
    buffer = np.zeros(n, dtype=np.float32)
    rng = np.random.default_rng([settings.seed, track.index])
    for event in track.events:
        offset = seconds_to_samples(event.start_s) - first
        length = seconds_to_samples(event.end_s) - seconds_to_samples(event.start_s)
        if event.kind == "say":
            assert event.text is not None
            _add(buffer, offset, speech.samples(event.text))
        elif event.kind == "breath":
            assert event.phase is not None
            if settings.breath_sound == "tone":
                _add(buffer, offset, _tone(event.phase, length))
            else:
                _add(buffer, offset, breath_guide(event.phase, length, settings.breath_sound, rng))
        elif event.kind == "bell" and settings.bells:
            _add(buffer, offset, fit_ring(_bell_sound(settings, track), length), BELL_PEAK)
        elif event.kind == "chime" and settings.bells:
            _add(buffer, offset, fit_ring(_chime_sound(settings, track), length), CHIME_PEAK)
        elif event.kind == "move" and event.tick:
            _add(buffer, offset, tick(length), MOVE_TICK_PEAK)
    kind = settings.ambient or track.ambient or DEFAULT_AMBIENT
    if kind != "none":
        buffer += ambient_bed(kind, settings.seed, track, first, n)
    return buffer


# ---------------------------------------------------------------------------------------------
# Ambient bed


@lru_cache(maxsize=4)
def _bed_loop(kind: str, seed: int) -> np.ndarray:
    if kind in AMBIENT_KINDS:
        rng = np.random.default_rng([seed, AMBIENT_SEED_STREAM, AMBIENT_KINDS.index(kind)])
        loop = ambient_loop(kind, rng)
    else:
        try:
            loop = seamless_loop(load_sound(kind))
        except ValueError as exc:
            raise SoundFileError(
                f"{kind}: too short for an ambient bed ({exc}); use a longer recording"
            ) from None
    loudness = gated_loudness(block_powers(loop))
    loop = loop * np.float32(db_to_gain(AMBIENT_LOUDNESS_LUFS - loudness))
    loop.setflags(write=False)
    return loop


def duck_gain(track: Track, n: int, first: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Gain (float32, ``n`` samples) that dips the bed DUCK_DB under every spoken cue.

    The dip starts DUCK_ATTACK_S before the voice and recovers over DUCK_RELEASE_S after it,
    on raised-cosine ramps; overlapping dips take the lower gain, never a sum.
    """
    depth = 1.0 - db_to_gain(DUCK_DB)
    attack = max(1, seconds_to_samples(DUCK_ATTACK_S, sample_rate))
    release = max(1, seconds_to_samples(DUCK_RELEASE_S, sample_rate))
    dip = np.zeros(n, dtype=np.float32)  # 0: no duck, 1: full duck
    down = _ramp(attack)
    raised = _ramp(release)[::-1]
    for event in track.events:
        if event.kind != "say":
            continue
        lo = seconds_to_samples(event.start_s, sample_rate) - first
        hi = seconds_to_samples(event.end_s, sample_rate) - first
        dip[max(lo, 0) : max(hi, 0)] = 1.0
        _lift(dip, lo - attack, lo, down)
        _lift(dip, hi, hi + release, raised)
    return (1.0 - depth * dip).astype(np.float32)


def _ramp(n: int) -> np.ndarray:
    x = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)


def _lift(dip: np.ndarray, lo: int, hi: int, values: np.ndarray) -> None:
    """dip[lo:hi] = max(dip[lo:hi], values), clipped to the buffer."""
    a, b = max(lo, 0), min(hi, dip.shape[0])
    if b > a:
        np.maximum(dip[a:b], values[a - lo : b - lo], out=dip[a:b])


def ambient_bed(kind: str, seed: int, track: Track, first: int, n: int) -> np.ndarray:
    """The bed under one track: looped from absolute time, ducked, faded in and out."""
    bed = loop_span(_bed_loop(kind, seed), first, n)
    bed *= duck_gain(track, n, first)
    fade_in = min(seconds_to_samples(AMBIENT_FADE_IN_S), n // 2)
    fade_out = min(seconds_to_samples(AMBIENT_FADE_OUT_S), n // 2)
    return apply_fades(bed, fade_in, fade_out)


# ---------------------------------------------------------------------------------------------
# Loudness (ITU-R BS.1770-4), measured across tracks

_LOUDNESS_CHUNK_HOPS = 256


@lru_cache(maxsize=4)
def _k_weighting(sample_rate: int) -> np.ndarray:
    shelf = IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sample_rate, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
    return np.array(
        [np.concatenate([f.b, f.a]) / f.a[0] for f in (shelf, high_pass)], dtype=np.float64
    )


def block_powers(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mean square of the K-weighted signal in 400 ms blocks every 100 ms (BS.1770 eq. 1).

    Filtered in chunks with carried filter state, so memory stays a few MB for any length:
    a block is four hops, so block powers are sums of per-hop energies.
    """
    hop = round(HOP_S * sample_rate)
    block = round(BLOCK_S * sample_rate)
    hops_per_block = block // hop
    assert hops_per_block * hop == block
    n_hops = samples.shape[0] // hop
    if n_hops < hops_per_block:
        return np.zeros(0)
    sos = _k_weighting(sample_rate)
    state = np.zeros((sos.shape[0], 2))
    energies = np.empty(n_hops)
    chunk = hop * _LOUDNESS_CHUNK_HOPS
    for start in range(0, n_hops * hop, chunk):
        stop = min(start + chunk, n_hops * hop)
        x = samples[start:stop].astype(np.float64)
        y, state = signal.sosfilt(sos, x, zi=state)
        energies[start // hop : stop // hop] = np.sum((y * y).reshape(-1, hop), axis=1)
    cumulative = np.concatenate(([0.0], np.cumsum(energies)))
    return (cumulative[hops_per_block:] - cumulative[:-hops_per_block]) / block


def gated_loudness(powers: np.ndarray) -> float:
    """Integrated loudness in LUFS of one channel from its block powers (BS.1770 gating).

    Returns -inf for silence.
    """
    if powers.size == 0:
        return float("-inf")
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(powers)
    gated = powers[loudness > -70.0]
    if gated.size == 0:
        return float("-inf")
    relative = -0.691 + 10 * np.log10(gated.mean()) - 10.0
    gated = powers[(loudness > -70.0) & (loudness > relative)]
    return float(-0.691 + 10 * np.log10(gated.mean()))


def integrated_loudness(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """BS.1770 integrated loudness (LUFS) of mono ``samples``, as measured on the one channel."""
    return gated_loudness(block_powers(samples, sample_rate))


# ---------------------------------------------------------------------------------------------
# True peak and limiting

OVERSAMPLE = 4
# scipy's resample_poly(x, 4, 1) filter, rebuilt so its worst-case gain is known exactly.
_HALF_TAPS = 10 * OVERSAMPLE
_UPSAMPLER = signal.firwin(2 * _HALF_TAPS + 1, 1.0 / OVERSAMPLE, window=("kaiser", 5.0))
_UPSAMPLER *= OVERSAMPLE
_REACH = _HALF_TAPS // OVERSAMPLE  # input samples either side that feed an output point
# Oversampled point 4i+p is the dot product of x[i-10 : i+11] with column p of this matrix.
_POLYPHASE = np.zeros((2 * _REACH + 1, OVERSAMPLE))
for _j in range(-_REACH, _REACH + 1):
    for _p in range(OVERSAMPLE):
        if 0 <= _HALF_TAPS + _p - OVERSAMPLE * _j < _UPSAMPLER.size:
            _POLYPHASE[_j + _REACH, _p] = _UPSAMPLER[_HALF_TAPS + _p - OVERSAMPLE * _j]
# No oversampled point can exceed the largest sample within its reach by more than this
# factor: the largest sum of |taps| over the four phases (2.24, +7 dB).
OVERSHOOT_BOUND = float(np.abs(_POLYPHASE).sum(axis=0).max())
_ROWS_PER_CHUNK = 1 << 16


def hot_samples(samples: np.ndarray, threshold: float) -> np.ndarray:
    """Indices ``i`` where an oversampled point 4i..4i+3 could exceed ``threshold``.

    A point is a weighted sum of the 21 samples around it, so it can exceed ``threshold``
    only if one of them exceeds ``threshold / OVERSHOOT_BOUND``; everywhere else the true
    peak is known to be under ``threshold`` without oversampling anything.
    """
    x = np.abs(np.asarray(samples, dtype=np.float32))
    loud = np.flatnonzero(x > threshold / OVERSHOOT_BOUND)
    if loud.size == 0:
        return loud
    # Merge loud samples whose reaches touch into runs, then list every index in each run.
    breaks = np.flatnonzero(np.diff(loud) > 2 * _REACH + 1) + 1
    firsts = np.maximum(loud[np.concatenate(([0], breaks))] - _REACH, 0)
    lasts = np.minimum(loud[np.concatenate((breaks - 1, [loud.size - 1]))] + _REACH, x.size - 1)
    lengths = lasts - firsts + 1
    offsets = np.repeat(firsts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(int(lengths.sum())) + offsets


def oversampled_envelope(samples: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """For each index ``i``, the largest |value| of the 4x oversampled signal at points
    4i..4i+3 (the sample and the three points after it); float64, one value per index.

    Equal to ``resample_poly(samples, 4, 1)`` at those points, computed only there.
    """
    x = np.asarray(samples)
    n = x.shape[0]
    taps = np.arange(-_REACH, _REACH + 1)
    out = np.empty(indices.shape[0])
    for start in range(0, indices.shape[0], _ROWS_PER_CHUNK):
        rows = indices[start : start + _ROWS_PER_CHUNK, None] + taps
        windows = np.take(x, rows, mode="clip").astype(np.float64)
        if rows[0, 0] < 0 or rows[-1, -1] >= n:
            windows[(rows < 0) | (rows >= n)] = 0.0  # the signal is silent beyond its ends
        out[start : start + rows.shape[0]] = np.abs(windows @ _POLYPHASE).max(axis=1)
    return out


def true_peak(samples: np.ndarray) -> float:
    """The 4x oversampled peak (linear), oversampling only where it could be found."""
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return 0.0
    best = float(np.max(np.abs(x)))
    if best == 0.0:
        return 0.0
    hot = hot_samples(x, best)
    return max(best, float(oversampled_envelope(x, hot).max())) if hot.size else best


def limit(samples: np.ndarray, ceiling: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Bring the true peak of ``samples`` to at most ``ceiling`` (linear), smoothly.

    Where the oversampled envelope is over the ceiling, the gain it needs is spread over
    LIMITER_WINDOW_S on both sides (a minimum filter, then a moving average of the same width,
    which never rises above the need), so the limiter anticipates a peak and lets go without
    a click. Elsewhere the samples are untouched. A sliding gain changes the interpolated
    shape a little, so the stretches it changed are measured again, until none is over.
    Returns a new float32 array.
    """
    x = samples.astype(np.float32, copy=True)
    n = x.shape[0]
    width = max(3, round(LIMITER_WINDOW_S * sample_rate)) | 1
    # The gain's ramps, and twice the filter's reach beyond them: every point the gain can
    # change is measured again from samples inside the stretch.
    margin = width + 2 * _REACH + 2
    hot = hot_samples(x, ceiling)
    for _ in range(6):
        if hot.size == 0:
            return x
        env = oversampled_envelope(x, hot)
        is_over = env > ceiling
        if not is_over.any():
            return x
        over = hot[is_over]
        # 0.1% under the ceiling, for the small change a sliding gain makes to the shape.
        need_at = np.minimum(1.0, 0.999 * ceiling / env[is_over])
        breaks = np.flatnonzero(np.diff(over) > 2 * margin) + 1
        rechecked = []
        for part, needs in zip(np.split(over, breaks), np.split(need_at, breaks), strict=True):
            a, b = max(0, int(part[0]) - margin), min(n, int(part[-1]) + margin + 1)
            need = np.ones(b - a)
            need[part - a] = needs
            gain = ndimage.minimum_filter1d(need, width, mode="nearest")
            gain = ndimage.uniform_filter1d(gain, width, mode="nearest")
            x[a:b] *= gain.astype(np.float32)
            rechecked.append(a + hot_samples(x[a:b], ceiling))
        hot = np.concatenate(rechecked)
    peak = true_peak(x)
    if peak > ceiling:  # pragma: no cover - a couple of passes have always sufficed
        x *= np.float32(ceiling / peak)
    return x


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


def master_gain_db(powers: list[np.ndarray], loudness_lufs: float, channels: int = 1) -> float:
    """The one gain (dB) that brings a session with these block powers to ``loudness_lufs``
    (stereo-equivalent). Zero for a silent session."""
    target = loudness_lufs - (MONO_OFFSET_DB if channels == 1 else 0.0)
    measured = gated_loudness(np.concatenate(powers) if powers else np.zeros(0))
    if not np.isfinite(measured):
        return 0.0
    return target - measured


def master(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """Apply the session gain and the true-peak limiter; float32, within [-1, 1]."""
    x = samples * np.float32(db_to_gain(gain_db))
    return limit(x, db_to_gain(TRUE_PEAK_CEILING_DBTP))
