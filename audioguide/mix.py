"""Mix stage: timeline tracks and prepared sounds in, mastered track samples out.

A track is mixed a span at a time (``TrackMixer``, about 12 s), each span into one
preallocated float32 buffer (mono, values in [-1, 1] once mastered), so memory follows the
span, not the track or the session; the spans joined are the track mixed whole, sample for
sample. An event's first sample is ``round(start_s * rate)`` counted from the session start,
minus the track's own first sample, so no rounding accumulates over a long session. Every
sound placed starts and ends at zero (each is faded at its edges), and nothing is added where
the timeline has nothing, so a pause is digital silence unless an ambient bed is on.

The ambient bed is a seamless loop indexed by absolute session time, faded in and out with
each track and ducked under every spoken cue (the timeline says exactly when speech plays, so
the duck can begin before the voice does).

Mastering is one gain for the whole session (album gain: the ITU-R BS.1770 gated loudness over
every track's blocks, measured by ``loudness``), then the true-peak limiter of ``dynamics``,
span by span with a little of the track either side (``mastered_spans``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .audio import SAMPLE_RATE, apply_fades, db_to_gain, raised_cosine, seconds_to_samples
from .checks import check_choice, check_flag, check_number, check_optional_text, check_whole
from .dynamics import limit
from .loudness import BlockMeter, block_powers, gated_loudness
from .routine import AMBIENT_KINDS
from .sounds import (
    DEFAULT_BELL_FILE,
    INTERVAL_BELL_FILE,
    RecordedLoop,
    default_sound_path,
    load_loop,
    load_sound,
)
from .speech import Speech
from .synth import (
    BREATH_SOUNDS,
    DEFAULT_BREATH_SOUND,
    ambient_loop,
    breath_guide,
    fit_ring,
    loop_span,
    tick,
)
from .timeline import Event, Track

DEFAULT_LOUDNESS_LUFS = -16.0  # stereo-equivalent; a mono file is heard on both ears
MIN_LOUDNESS_LUFS = -30.0
MAX_LOUDNESS_LUFS = -10.0
MAX_SEED = 2**63 - 1
MONO_OFFSET_DB = 3.0103  # a mono channel measures this much lower than its stereo equivalent
# -1 dBTP is the promise for the decoded file. A lossy encoder adds overshoot on decoding, more
# the fewer bits it has: measured on back-pain with a -1.5 dBTP ceiling, the worst decoded
# sample was -1.40 dBFS at 128 kbps, -1.13 at 96, -1.06 at 64, -0.42 at 32 (and -1.04 at 48
# with a -2.0 ceiling). So the limiter's ceiling leaves that overshoot and about 0.3 dB more
# (true_peak_ceiling_dbtp); with these, back-pain decodes at -1.3 dBFS or under at every rate
# from 32 to 320 kbps.
TRUE_PEAK_CEILING_DBTP = -1.7
LOW_BITRATE_CEILINGS_DBTP = ((40, -2.6), (56, -2.4), (80, -2.0))  # (up to kbps, ceiling)
MOVE_TICK_PEAK = 0.06  # a soft tick per movement: peaks about 16 dB under the voice's

DEFAULT_AMBIENT = "none"
# The voice before mastering: espeak cues levelled to speech.SPEECH_RMS, peaks held, measure
# -25.9 LUFS (back-pain's 111 cues with the voice chain; -25.6 dry).
VOICE_LOUDNESS_LUFS = -25.9
MAX_VOICE_OVER_TARGET_LU = 6.0
# Levels before mastering, against a voice that measures -25.9 LUFS (VOICE_LOUDNESS_LUFS):
# a bell 3 LU under the voice, an interval chime 7 LU under (it marks time, not a change), a
# bed 19 LU under, felt rather than listened to. Sound files are peak-normalised first.
BELL_PEAK = 0.13
CHIME_PEAK = 0.07
AMBIENT_LOUDNESS_LUFS = -45.0
DUCK_DB = -6.0
DUCK_ATTACK_S = 0.08  # the bed starts to dip this long before the voice
DUCK_RELEASE_S = 0.4  # and comes back this slowly after it
AMBIENT_FADE_IN_S = 1.0
AMBIENT_FADE_OUT_S = 1.5
AMBIENT_SEED_STREAM = 7_919  # keeps the bed's random stream apart from the guide's
SPAN_SAMPLES = 1 << 19  # about 12 s: what a worker mixes, masters and encodes at a time


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

    def __post_init__(self) -> None:
        check_choice(self.breath_sound, "breath_sound", BREATH_SOUNDS)
        check_flag(self.bells, "bells")
        check_whole(self.seed, "seed", 0, MAX_SEED)
        check_number(
            self.loudness_lufs, "loudness_lufs", MIN_LOUDNESS_LUFS, MAX_LOUDNESS_LUFS, "LUFS"
        )
        check_optional_text(self.ambient, "ambient")
        check_optional_text(self.bell_file, "bell_file")


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


class TrackMixer:
    """One track's mix, a range at a time: ``mix(lo, hi)`` is samples ``lo`` to ``hi`` of
    the track mixed whole (``mix(0, length)``), sample for sample, so a long track can be
    mixed, mastered and encoded a span at a time.

    The events sounding in a range are found from their extents; each event's sound is made
    once and kept while later ranges can still reach it (ranges are expected in order; an
    earlier one is mixed again from scratch, just as exactly). Every event has its own random
    stream, so a range's samples do not depend on which ranges were mixed before it.
    Sound files are read when the mixer is made, so an unreadable file fails at once.
    """

    def __init__(self, track: Track, speech: Speech, settings: MixSettings) -> None:
        self.track = track
        self.first, self.length = track_span(track)
        self._speech = speech
        self._settings = settings
        self._events: list[tuple[int, Event]] = []
        starts, ends = [], []
        for index, event in enumerate(track.events):
            if not self._sounds(event):
                continue
            offset = seconds_to_samples(event.start_s) - self.first
            self._events.append((index, event))
            starts.append(offset)
            ends.append(offset + self._size(event))
        self._starts = np.array(starts, dtype=np.int64)
        self._ends = np.array(ends, dtype=np.int64)
        self._kept: dict[int, tuple[np.ndarray, float]] = {}
        kind = settings.ambient or track.ambient or DEFAULT_AMBIENT
        self._bed_kind = kind
        if kind != "none":
            _bed_loop(kind, settings.seed)
        if settings.bells and any(e.kind == "bell" for _, e in self._events):
            _bell_sound(settings, track)
        if settings.bells and any(e.kind == "chime" for _, e in self._events):
            _chime_sound(settings, track)

    def _sounds(self, event: Event) -> bool:
        if event.kind in ("say", "breath"):
            return True
        if event.kind in ("bell", "chime"):
            return self._settings.bells
        return event.kind == "move" and bool(event.tick)

    def _size(self, event: Event) -> int:
        if event.kind == "say":
            assert event.text is not None
            return self._speech.sample_count(event.text)
        return seconds_to_samples(event.end_s) - seconds_to_samples(event.start_s)

    def _sound(self, slot: int) -> tuple[np.ndarray, float]:
        """The samples of event ``slot`` and the gain it is mixed at."""
        kept = self._kept.get(slot)
        if kept is not None:
            return kept
        index, event = self._events[slot]
        settings = self._settings
        length = seconds_to_samples(event.end_s) - seconds_to_samples(event.start_s)
        sound: tuple[np.ndarray, float]
        if event.kind == "say":
            assert event.text is not None
            sound = self._speech.samples(event.text), 1.0
        elif event.kind == "breath":
            assert event.phase is not None
            if settings.breath_sound == "tone":
                sound = _tone(event.phase, length), 1.0
            else:
                rng = np.random.default_rng([settings.seed, self.track.index, index])
                sound = breath_guide(event.phase, length, settings.breath_sound, rng), 1.0
        elif event.kind == "bell":
            sound = fit_ring(_bell_sound(settings, self.track), length), BELL_PEAK
        elif event.kind == "chime":
            sound = fit_ring(_chime_sound(settings, self.track), length), CHIME_PEAK
        else:
            sound = tick(length), MOVE_TICK_PEAK
        self._kept[slot] = sound
        return sound

    def mix(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``lo`` to ``hi`` of the track (counted from its first), float32."""
        lo, hi = max(lo, 0), min(hi, self.length)
        buffer = np.zeros(max(hi - lo, 0), dtype=np.float32)
        if hi <= lo:
            return buffer
        for slot in np.flatnonzero((self._starts < hi) & (self._ends > lo)).tolist():
            samples, gain = self._sound(slot)
            _add(buffer, int(self._starts[slot]) - lo, samples, gain)
        # Ranges go forward: what ends before this one is not needed again.
        for slot in [s for s in self._kept if self._ends[s] <= lo]:
            del self._kept[slot]
        if self._bed_kind != "none":
            buffer += ambient_bed(
                self._bed_kind, self._settings.seed, self.track, self.first, self.length, lo, hi
            )
        return buffer

    def spans(self, span: int = SPAN_SAMPLES) -> Iterator[tuple[int, int]]:
        """(lo, hi) of consecutive ranges of at most ``span`` samples covering the track."""
        for lo in range(0, self.length, span):
            yield lo, min(lo + span, self.length)


# ---------------------------------------------------------------------------------------------
# Ambient bed


# A recorded bed held in memory up to this long; a longer one is read from its temporary file
# a span at a time, so a 20-minute recording costs a span of memory, not 212 MB.
BED_IN_MEMORY_S = 60.0
_BED_LOCK = threading.Lock()  # workers wanting the same bed wait for it rather than redo it


def _bed_loop(kind: str, seed: int) -> np.ndarray | RecordedLoop:
    """One loop of the bed at AMBIENT_LOUDNESS_LUFS: a kind synthesized, or a recording."""
    with _BED_LOCK:
        return _levelled_bed_loop(kind, seed)


@lru_cache(maxsize=4)
def _levelled_bed_loop(kind: str, seed: int) -> np.ndarray | RecordedLoop:
    if kind in AMBIENT_KINDS:
        rng = np.random.default_rng([seed, AMBIENT_SEED_STREAM, AMBIENT_KINDS.index(kind)])
        loop = ambient_loop(kind, rng)
        loudness = gated_loudness(block_powers(loop))
    else:
        recorded = load_loop(kind)
        meter = BlockMeter()
        for block in recorded.blocks():
            meter.feed(block)
        loudness = gated_loudness(meter.powers())
        recorded = recorded.scaled(float(np.float32(db_to_gain(AMBIENT_LOUDNESS_LUFS - loudness))))
        if recorded.size > seconds_to_samples(BED_IN_MEMORY_S):
            return recorded
        loop = recorded.samples()
        loop.setflags(write=False)
        return loop
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
    down = raised_cosine(attack)
    raised = raised_cosine(release)[::-1]
    for event in track.events:
        if event.kind != "say":
            continue
        lo = seconds_to_samples(event.start_s, sample_rate) - first
        hi = seconds_to_samples(event.end_s, sample_rate) - first
        dip[max(lo, 0) : max(hi, 0)] = 1.0
        _lift(dip, lo - attack, lo, down)
        _lift(dip, hi, hi + release, raised)
    dip *= np.float32(-depth)  # the gain, 1 - depth * dip, made in the same buffer
    dip += np.float32(1.0)
    return dip


def _lift(dip: np.ndarray, lo: int, hi: int, values: np.ndarray) -> None:
    """dip[lo:hi] = max(dip[lo:hi], values), clipped to the buffer."""
    a, b = max(lo, 0), min(hi, dip.shape[0])
    if b > a:
        np.maximum(dip[a:b], values[a - lo : b - lo], out=dip[a:b])


def ambient_bed(
    kind: str, seed: int, track: Track, first: int, n: int, lo: int = 0, hi: int | None = None
) -> np.ndarray:
    """The bed under samples ``lo`` to ``hi`` (default: all ``n``) of a track that starts at
    session sample ``first``: looped from absolute time, ducked, faded in and out at the
    track's edges."""
    hi = n if hi is None else hi
    loop = _bed_loop(kind, seed)
    if isinstance(loop, RecordedLoop):
        bed = loop.span(first + lo, hi - lo)
    else:
        bed = loop_span(loop, first + lo, hi - lo)
    bed *= duck_gain(track, hi - lo, first + lo)
    fade_in = min(seconds_to_samples(AMBIENT_FADE_IN_S), n // 2)
    fade_out = min(seconds_to_samples(AMBIENT_FADE_OUT_S), n // 2)
    return apply_fades(bed, fade_in, fade_out, start=lo, length=n)


# ---------------------------------------------------------------------------------------------
# Mastering: one session gain from the tracks' loudness blocks (``loudness``), then the limiter


def track_powers(mixer: TrackMixer) -> np.ndarray:
    """The block powers of a track's mix, mixed and measured a span at a time."""
    meter = BlockMeter()
    for lo, hi in mixer.spans():
        meter.feed(mixer.mix(lo, hi))
    return meter.powers()


def master_gain_db(powers: list[np.ndarray], loudness_lufs: float, channels: int = 1) -> float:
    """The one gain (dB) that brings a session with these block powers to ``loudness_lufs``
    (stereo-equivalent). Zero for a silent session.

    Never more than lifts the voice MAX_VOICE_OVER_TARGET_LU over the target: a session that
    is almost all ambient bed or chimes (one sentence, then twenty quiet minutes) would
    otherwise be raised until the bed alone met the target, its few words shouted into the
    limiter. Such a session measures under the target instead; every session with a
    reasonable share of speech (the built-ins: a quarter to a third) is unaffected.
    """
    target = loudness_lufs - (MONO_OFFSET_DB if channels == 1 else 0.0)
    measured = gated_loudness(np.concatenate(powers) if powers else np.zeros(0))
    if not np.isfinite(measured):
        return 0.0
    return min(target - measured, target + MAX_VOICE_OVER_TARGET_LU - VOICE_LOUDNESS_LUFS)


def true_peak_ceiling_dbtp(bitrate_kbps: int | None = None) -> float:
    """The limiter's ceiling for a file encoded at ``bitrate_kbps`` (None: lossless or the
    default rate), so that the decoded file peaks at or under -1 dBFS."""
    for up_to_kbps, ceiling_dbtp in LOW_BITRATE_CEILINGS_DBTP:
        if bitrate_kbps is not None and bitrate_kbps <= up_to_kbps:
            return ceiling_dbtp
    return TRUE_PEAK_CEILING_DBTP


# The limiter's gain at a sample depends on samples a few limiter windows around it (each of
# its passes reaches LIMITER_WINDOW_S plus the oversampling filter further), so a span
# limited with this much of the track on either side comes out as limiting the whole track.
LIMITER_CONTEXT_SAMPLES = 1 << 13


def mastered_spans(
    mixer: TrackMixer,
    gain_db: float,
    *,
    ceiling_dbtp: float = TRUE_PEAK_CEILING_DBTP,
    span: int = SPAN_SAMPLES,
) -> Iterator[np.ndarray]:
    """The track mixed and mastered a span at a time, in order: joined, they are the whole
    track mixed, times the session gain, through the true-peak limiter at ``ceiling_dbtp``,
    while only a span (and its context) is held."""
    gain = np.float32(db_to_gain(gain_db))
    ceiling = db_to_gain(ceiling_dbtp)
    context = LIMITER_CONTEXT_SAMPLES
    for lo, hi in mixer.spans(span):
        a, b = max(lo - context, 0), min(hi + context, mixer.length)
        x = mixer.mix(a, b)
        x *= gain
        yield limit(x, ceiling, in_place=True)[lo - a : hi - a]
