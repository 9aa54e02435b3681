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
span by span with a little of the track either side (``mastered_spans``). Where that gain would
push the voice into the limiter or far over the target (a session of little speech), the voice
is mixed lower than the rest instead and the session gain raised (``balanced_gain``), so every
session meets its target with the voice held at its bounds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .audio import SAMPLE_RATE, apply_fades, db_to_gain, raised_cosine, seconds_to_samples
from .checks import check_choice, check_flag, check_number, check_optional_text, check_whole
from .dynamics import limit
from .loudness import (
    BLOCK_S,
    HOP_S,
    K_WEIGHTING_MEMORY_S,
    BlockMeter,
    StemMeter,
    blend_powers,
    block_means,
    block_powers,
    gated_loudness,
    silent_hop_energy,
)
from .once import made_once
from .routine import AMBIENT_KINDS, Routine
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
# -25.9 LUFS (back-pain's 111 cues with the voice chain; -25.6 dry). The levels below are set
# against it; the mastering measures the voice of each session instead (``voice_blocks``).
VOICE_LOUDNESS_LUFS = -25.9
# What is heard while the voice speaks (the mix over the blocks of its cues) is never mastered
# more than this over the session's target: the session is raised around the voice instead.
# At the plain gain back-pain speaks 2.0 LU over its target at 20 minutes and 4.4 LU at 60; a
# session of two cues in 30 minutes, 10.7 LU. With espeak's and Piper's voices the peak bound
# (MAX_VOICE_LIMITING_DB) binds first at -16 LUFS; this one at lower targets (-23: 6 LU).
MAX_VOICE_OVER_TARGET_LU = 6.0
# The voice's typical cue (the median of its cues' peaks) is mastered to peak at most this far
# over the limiter's ceiling. Further, the limiter presses the voice and takes back the
# loudness the gain was measured to give: back-pain at 60 minutes (plain gain 11.5 dB, its
# typical cue 2.9 dB over the ceiling) lost 0.85 LU to it and missed the target.
MAX_VOICE_LIMITING_DB = 1.0
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


_TONES_KEPT = 64


# Workers wanting the same tone wait for the one making it rather than make it again (both
# first tracks of back-pain breathe: each of its two tones was made twice, 40 ms of CPU each).
@made_once(maxsize=_TONES_KEPT)
def _tone(phase: str, n: int) -> np.ndarray:
    # The tone guide has no randomness: every cycle at one tempo reuses the same phase sound.
    out = breath_guide(phase, n, "tone")  # no generator: a warm render never imports numpy.random
    out.setflags(write=False)
    return out


def bell_file(settings: MixSettings, track: Track) -> str | None:
    """The sound file a track's bells and interval chimes ring: the user's own (``bell_file``),
    else the routine's; None: the bowls shipped with audioguide."""
    return settings.bell_file or track.bell_sound


def bed_kind(settings: MixSettings, track: Track) -> str:
    """The bed under a track: ``ambient`` for every track, else the track's own (its section's
    or the routine's, ``Routine.bed_of``), else none; a kind (AMBIENT_KINDS) or a sound file."""
    return _bed_under(settings, track.ambient)


def _bed_under(settings: MixSettings, named: str | None) -> str:
    return settings.ambient or named or DEFAULT_AMBIENT


def _bell_sound(settings: MixSettings, track: Track) -> np.ndarray:
    return _bell_file_sound(bell_file(settings, track))


def _bell_file_sound(path: str | None) -> np.ndarray:
    # Read once however many workers ask at once (sounds.load_sound): the first two tracks of
    # back-pain both ring the bowl, 28 ms of CPU each.
    return load_sound(path or default_sound_path(DEFAULT_BELL_FILE))


def bell_in_background(settings: MixSettings, routine_bell: str | None) -> None:
    """Start reading the bell a session's tracks ring (``routine_bell``: the routine's own,
    which every track takes) on a thread of its own, while the speech is read: about 40 ms
    that the first two workers of pass 1 otherwise spent one waiting for the other.

    Only warms ``load_sound``'s cache: a file that cannot be read fails where it always did,
    when the mixers are made."""
    if not settings.bells:
        return

    def read() -> None:
        with contextlib.suppress(Exception):  # raised again, and reported, by the mixers
            _bell_file_sound(settings.bell_file or routine_bell)

    threading.Thread(target=read, name="bell", daemon=True).start()


def bed_in_background(settings: MixSettings, routine: Routine) -> None:
    """Start making the beds the tracks of ``routine`` (as it is played) lie on, on a thread
    of their own, while the speech is read: a bed is made by the first worker whose track
    needs it while the others wait (made_once), 0.2 s of CPU for pink noise and 0.5 s for
    the drone, which the start of a render's first pass waited on.

    Only warms ``_bed_loop``'s cache: a recording that cannot be read fails where it always
    did, when the mixers are made."""
    kinds = {_bed_under(settings, routine.bed_of(section)) for section in routine.sections}
    kinds.discard("none")
    if not kinds:
        return

    def make() -> None:
        for kind in sorted(kinds):
            with contextlib.suppress(Exception):  # raised again, and reported, by the mixers
                _bed_loop(kind, settings.seed)

    threading.Thread(target=make, name="bed", daemon=True).start()


def make_breath_tones(tracks: Iterable[Track], settings: MixSettings, jobs: int) -> None:
    """Make every breath tone the tracks sound, once each, on ``jobs`` threads, before the
    tracks are mixed: each is 20 to 50 ms of CPU, and the worker that first needed one made
    it while the others waited for it. None when there are more than are kept."""
    if settings.breath_sound != "tone":
        return
    wanted = {
        (event.phase, _event_samples(event))
        for track in tracks
        for event in track.events
        if event.kind == "breath" and event.phase is not None
    }
    if len(wanted) > _TONES_KEPT:
        return  # a tempo that changes every cycle: they would not all be kept till mixed
    missing = sorted(wanted, key=lambda key: -key[1])  # the longest first, so they end together
    if len(missing) <= 1 or jobs <= 1:
        for phase, n in missing:
            _tone(phase, n)
        return
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tone") as pool:
        for done in [pool.submit(_tone, phase, n) for phase, n in missing]:
            done.result()


def _event_samples(event: Event) -> int:
    return seconds_to_samples(event.end_s) - seconds_to_samples(event.start_s)


def _chime_sound(settings: MixSettings, track: Track) -> np.ndarray:
    # A user's own bell serves for the interval bells too, so one file changes every bell.
    path = bell_file(settings, track)
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

    ``voice_gain_db`` is the level of the spoken cues against everything else (0: as they
    are prepared); the mastering lowers it for a session of little speech (``balanced_gain``).
    """

    def __init__(
        self, track: Track, speech: Speech, settings: MixSettings, voice_gain_db: float = 0.0
    ) -> None:
        self.track = track
        self.first, self.length = track_span(track)
        self._speech = speech
        self._settings = settings
        self._voice_gain = 1.0 if voice_gain_db == 0.0 else float(db_to_gain(voice_gain_db))
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
        self._spoken = np.array([e.kind == "say" for _, e in self._events], dtype=bool)
        # Each spoken cue's sample peak, noted as it is mixed once voice_peaks asks for them.
        self._peaks: dict[int, float] | None = None
        self._kept: dict[int, tuple[np.ndarray, float]] = {}
        kind = bed_kind(settings, track)
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
        return _event_samples(event)

    def _sound(self, slot: int) -> tuple[np.ndarray, float]:
        """The samples of event ``slot`` and the gain it is mixed at."""
        kept = self._kept.get(slot)
        if kept is not None:
            return kept
        index, event = self._events[slot]
        settings = self._settings
        length = _event_samples(event)
        sound: tuple[np.ndarray, float]
        if event.kind == "say":
            assert event.text is not None
            sound = self._speech.samples(event.text), 1.0
            if self._peaks is not None:
                self._peaks[slot] = float(np.max(np.abs(sound[0]), initial=0.0))
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
            if self._spoken[slot]:
                gain *= self._voice_gain
            _add(buffer, int(self._starts[slot]) - lo, samples, gain)
        self._forget_before(lo)
        if self._bed_kind != "none":
            buffer += self._bed(lo, hi)
        return buffer

    def mix_stems(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``lo`` to ``hi`` as two stems, (the spoken cues, everything else), each
        float32; ``voice_gain_db`` aside, they add up to ``mix(lo, hi)``."""
        lo, hi = max(lo, 0), min(hi, self.length)
        voice = np.zeros(max(hi - lo, 0), dtype=np.float32)
        rest = np.zeros_like(voice)
        if hi <= lo:
            return voice, rest
        for slot in np.flatnonzero((self._starts < hi) & (self._ends > lo)).tolist():
            samples, gain = self._sound(slot)
            _add(voice if self._spoken[slot] else rest, int(self._starts[slot]) - lo, samples, gain)
        self._forget_before(lo)
        if self._bed_kind != "none":
            rest += self._bed(lo, hi)
        return voice, rest

    def _forget_before(self, lo: int) -> None:
        # Ranges go forward: what ends before this one is not needed again.
        for slot in [s for s in self._kept if self._ends[s] <= lo]:
            del self._kept[slot]

    def _bed(self, lo: int, hi: int) -> np.ndarray:
        return ambient_bed(
            self._bed_kind, self._settings.seed, self.track, self.first, self.length, lo, hi
        )

    def note_voice_peaks(self) -> None:
        """From now on note each spoken cue's peak as it is mixed (``voice_peaks``)."""
        if self._peaks is None:
            self._peaks = {}

    def voice_peaks(self) -> np.ndarray:
        """The sample peak of every spoken cue mixed since ``note_voice_peaks`` (before
        ``voice_gain_db``), in the track's order."""
        peaks = self._peaks or {}
        return np.array([peaks[slot] for slot in sorted(peaks)], dtype=np.float64)

    def sounding_spans(self) -> list[tuple[int, int]]:
        """(first, end) sample of every stretch where anything may sound, counted from the
        track's first, in order: the events' audio joined where it overlaps or touches (the
        whole track under a bed). Outside them the mix is exact silence."""
        if self._bed_kind != "none":
            return [(0, self.length)] if self.length > 0 else []
        return _joined_runs(
            (max(int(self._starts[slot]), 0), min(int(self._ends[slot]), self.length))
            for slot in np.argsort(self._starts, kind="stable").tolist()
        )

    def voice_spans(self) -> list[tuple[int, int]]:
        """(first, end) sample of every spoken cue's audio, counted from the track's first."""
        return [
            (int(self._starts[slot]), int(self._ends[slot]))
            for slot in np.flatnonzero(self._spoken).tolist()
        ]

    def spans(self, span: int = SPAN_SAMPLES) -> Iterator[tuple[int, int]]:
        """(lo, hi) of consecutive ranges of at most ``span`` samples covering the track."""
        for lo in range(0, self.length, span):
            yield lo, min(lo + span, self.length)


# ---------------------------------------------------------------------------------------------
# Ambient bed


# A recorded bed held in memory up to this long; a longer one is read from its temporary file
# a span at a time, so a 20-minute recording costs a span of memory, not 212 MB.
BED_IN_MEMORY_S = 60.0


@made_once(maxsize=4)  # workers wanting the same bed wait for it rather than redo it
def _bed_loop(kind: str, seed: int) -> np.ndarray | RecordedLoop:
    """One loop of the bed at AMBIENT_LOUDNESS_LUFS: a kind synthesized, or a recording."""
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


# A loudness block and its hop, in samples (loudness.BLOCK_S, HOP_S).
_BLOCK = round(BLOCK_S * SAMPLE_RATE)
_HOP = round(HOP_S * SAMPLE_RATE)


def track_powers(mixer: TrackMixer) -> np.ndarray:
    """The block powers of a track's mix, mixed and measured a span at a time, only where
    something sounds.

    A block power is the sum of its hops' energies. Where the mix has been exact silence for
    K_WEIGHTING_MEMORY_S, the K-weighting has forgotten every sound before (to 1.7e-50 of its
    peak) and gives the guard alone: such a hop is given that energy
    (``loudness.silent_hop_energy``, some 250 dB under the absolute gate) without mixing or
    filtering anything. The hops from a sound's start to K_WEIGHTING_MEMORY_S after its end
    (``measured_hops``) are mixed and K-weighted, each run by a filter started at rest where
    the run starts: there the filter carried from the track's start holds only the guard's
    own response (about 1e-15) and what is left of earlier sounds, so the two give the same
    samples to float32 rounding (the guard's argument: 1e-15 changes no sample over 1e-8).
    Under a bed the whole track is one run, measured exactly as it always was.
    """
    hops = mixer.length // _HOP
    energies = np.full(hops, silent_hop_energy())
    for first, end in measured_hops(mixer, hops):
        # The last run takes the track's part-hop too, so a track measured whole (under a bed)
        # is filtered in the very pieces it was before.
        lo, hi = first * _HOP, mixer.length if end == hops else end * _HOP
        meter = BlockMeter(first_sample=lo)
        for a in range(lo, hi, SPAN_SAMPLES):
            meter.feed(mixer.mix(a, min(a + SPAN_SAMPLES, hi)))
        energies[first:end] = meter.energies()
    return block_means(energies, _BLOCK // _HOP, _BLOCK)


def measured_hops(mixer: TrackMixer, hops: int) -> list[tuple[int, int]]:
    """(first, end) of the runs of a track's first ``hops`` loudness hops that are filtered
    to be measured, in order: from the hop a sounding stretch (``TrackMixer.sounding_spans``)
    starts in to the one that ends K_WEIGHTING_MEMORY_S or more after it, so a run starts
    only after that much silence, or at the track's start. Runs that meet are joined."""
    memory = seconds_to_samples(K_WEIGHTING_MEMORY_S)
    return _joined_runs(
        (lo // _HOP, min(hops, -(-(hi + memory) // _HOP))) for lo, hi in mixer.sounding_spans()
    )


def _joined_runs(runs: Iterable[tuple[int, int]], slack: int = 0) -> list[tuple[int, int]]:
    """The ``(first, end)`` runs given, in order of their first, that are not empty, each
    joined to the one before when it starts at most ``slack`` after that one's end."""
    joined: list[tuple[int, int]] = []
    for first, end in runs:
        if end <= first:
            continue
        if joined and first <= joined[-1][1] + slack:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((first, end))
    return joined


def voice_blocks(mixer: TrackMixer, blocks: int) -> np.ndarray:
    """Which of a track's first ``blocks`` loudness blocks are heard while the voice speaks
    (bool): those whose middle falls in a spoken cue's audio."""
    spoken = np.zeros(blocks, dtype=bool)
    for lo, hi in mixer.voice_spans():
        # Block i's middle is i * _HOP + _BLOCK / 2: in [lo, hi) for i from first to end - 1.
        first = max(0, -(-(2 * lo - _BLOCK) // (2 * _HOP)))
        end = max(0, -(-(2 * hi - _BLOCK) // (2 * _HOP)))
        spoken[first:end] = True
    return spoken


@dataclass(frozen=True)
class TrackLevels:
    """A track measured for the mastering: its mix's block powers, and which blocks are heard
    while the voice speaks (``voice_blocks``)."""

    powers: np.ndarray
    spoken: np.ndarray
    voice_peaks: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class StemLevels:
    """A track measured as two stems (``loudness.StemMeter``): the voice's block powers, the
    rest's (breath guide, bells, chimes, ticks, bed), their cross term, and the spoken blocks."""

    voice: np.ndarray
    rest: np.ndarray
    cross: np.ndarray
    spoken: np.ndarray
    voice_peaks: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class MasterGain:
    """The mastering of a session: ``gain_db`` on every track, after the voice was mixed at
    ``voice_gain_db`` against the rest (``TrackMixer``'s)."""

    gain_db: float
    voice_gain_db: float = 0.0


def track_levels(mixer: TrackMixer) -> TrackLevels:
    """A track's mix measured a span at a time, for ``master_gain``."""
    mixer.note_voice_peaks()
    powers = track_powers(mixer)
    return TrackLevels(powers, voice_blocks(mixer, powers.shape[0]), mixer.voice_peaks())


def stem_levels(mixer: TrackMixer, levels: TrackLevels) -> StemLevels:
    """A track's two stems, for ``balanced_gain``, from its mix as pass 1 measured it
    (``levels``, ``track_levels``): only the blocks the voice reaches are mixed and measured
    again, so the cost follows the speech, not the track.

    The voice stem is exact silence between cues, and the K-weighting forgets its input
    within K_WEIGHTING_MEMORY_S. So a block that no cue's audio, nor the K_WEIGHTING_MEMORY_S
    after it, reaches has no voice and no cross term, and the rest's power there is the mix's.
    The blocks a cue does reach are measured as two stems (``loudness.StemMeter``), with
    filters started at rest K_WEIGHTING_MEMORY_S before them (or at the track's start),
    where they give what filters carried from the track's start give.
    """
    lead_hops = -(-seconds_to_samples(K_WEIGHTING_MEMORY_S) // _HOP)
    voice = np.zeros_like(levels.powers)
    rest = levels.powers.copy()
    cross = np.zeros_like(levels.powers)
    for first, end in voiced_blocks(mixer, levels.powers.shape[0]):
        lead = min(first, lead_hops)
        lo, hi = (first - lead) * _HOP, (end - 1) * _HOP + _BLOCK
        meter = StemMeter(first_sample=lo)
        for a in range(lo, hi, SPAN_SAMPLES):
            meter.feed(*mixer.mix_stems(a, min(a + SPAN_SAMPLES, hi)))
        measured = meter.powers()
        for out, blocks in zip((voice, rest, cross), measured, strict=True):
            out[first:end] = blocks[lead:]
    return StemLevels(voice, rest, cross, levels.spoken, levels.voice_peaks)


def voiced_blocks(mixer: TrackMixer, blocks: int) -> list[tuple[int, int]]:
    """(first, end) of the runs of a track's first ``blocks`` loudness blocks that the voice
    reaches: blocks that overlap a spoken cue's audio or the K_WEIGHTING_MEMORY_S after it, in
    order. Runs closer than K_WEIGHTING_MEMORY_S are joined (measured apart, the second would
    mix that much of the first again to start its filters)."""
    memory = seconds_to_samples(K_WEIGHTING_MEMORY_S)
    # Block i spans [i * _HOP, i * _HOP + _BLOCK): it overlaps [lo, hi + memory) for i from
    # first to end - 1. A run starting at block f is joined to one ending at block e when
    # f * _HOP - memory <= (e - 1) * _HOP + _BLOCK, that is f <= e + slack (whole blocks).
    slack = (_BLOCK - _HOP + memory) // _HOP
    return _joined_runs(
        (
            (max(0, (lo - _BLOCK) // _HOP + 1), min(blocks, -(-(hi + memory) // _HOP)))
            for lo, hi in sorted(mixer.voice_spans())
        ),
        slack,
    )


def _mono_target(loudness_lufs: float, channels: int) -> float:
    return loudness_lufs - (MONO_OFFSET_DB if channels == 1 else 0.0)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0)


def master_gain_db(powers: list[np.ndarray], loudness_lufs: float, channels: int = 1) -> float:
    """The one gain (dB) that brings a session with these block powers to ``loudness_lufs``
    (stereo-equivalent). Zero for a silent session."""
    measured = gated_loudness(_joined(powers))
    if not np.isfinite(measured):
        return 0.0
    return _mono_target(loudness_lufs, channels) - measured


def voice_gain_limit_db(voice_peaks: np.ndarray, ceiling_dbtp: float) -> float:
    """The most gain the voice may be mastered at: where the peak of its typical cue (the
    median of its cues' peaks) stands MAX_VOICE_LIMITING_DB over the limiter's ceiling.
    Infinite for a session with no speech."""
    typical = _median(voice_peaks) if voice_peaks.size else 0.0
    if typical <= 0.0:
        return float("inf")
    return ceiling_dbtp + MAX_VOICE_LIMITING_DB - float(20.0 * np.log10(typical))


def _median(x: np.ndarray) -> float:
    """``np.median(x)`` of a non-empty 1-D array without NaNs, to the bit, without the 12 ms
    of CPU every render paid for ``np.median``'s first call importing ``numpy.ma``."""
    half = x.size // 2
    if x.size % 2:
        return float(np.partition(x, half)[half])
    middle = np.partition(x, [half - 1, half])[half - 1 : half + 1]
    return float(np.mean(middle))


def _voice_fits(voice_gain_db: float, over_session_lu: float, limit_db: float) -> bool:
    """Whether a voice mastered at ``voice_gain_db``, heard ``over_session_lu`` over the
    session (which meets its target), is within both bounds on the voice."""
    over = over_session_lu if np.isfinite(over_session_lu) else float("-inf")
    return voice_gain_db <= limit_db + 1e-9 and over <= MAX_VOICE_OVER_TARGET_LU + 1e-9


def master_gain(
    levels: list[TrackLevels],
    loudness_lufs: float,
    ceiling_dbtp: float = TRUE_PEAK_CEILING_DBTP,
    channels: int = 1,
) -> MasterGain | None:
    """The session's mastering from its tracks' mixes: the one gain that meets the target.
    None where that gain would take the voice past a bound (``balanced_gain``'s docstring):
    then ``balanced_gain`` decides, from the tracks measured as stems. A session with no
    speech, or a silent one, never needs it."""
    gain_db = master_gain_db([t.powers for t in levels], loudness_lufs, channels)
    session = gated_loudness(_joined([t.powers for t in levels]))
    spoken = gated_loudness(_joined([t.powers[t.spoken] for t in levels]))
    limit_db = voice_gain_limit_db(_joined([t.voice_peaks for t in levels]), ceiling_dbtp)
    if not _voice_fits(gain_db, spoken - session, limit_db):  # no voice: always fits
        return None
    return MasterGain(gain_db)


# Bisection on the rest's lift: 40 halvings of at most MAX_REST_LIFT_DB leave under 1e-10 dB.
_BALANCE_STEPS = 40
# The rest is lifted at most until it is as loud as the voice (each measured alone), and never
# more than this: past that point the guide, the bells and the bed would be the programme and
# the voice an aside. That stop binds only for a voice so peaky that its peak bound leaves it
# far under the target (not espeak's nor Piper's); the session still meets its target then,
# its voice past the bounds.
MAX_REST_LIFT_DB = 40.0
_STEMS = ("voice", "rest", "cross")


def balanced_gain(
    stems: list[StemLevels],
    loudness_lufs: float,
    ceiling_dbtp: float = TRUE_PEAK_CEILING_DBTP,
    channels: int = 1,
) -> MasterGain:
    """The mastering of a session whose voice the plain session gain would push too far.

    Two bounds keep the voice from shouting: its typical cue peaks at most
    MAX_VOICE_LIMITING_DB over the limiter's ceiling (``voice_gain_limit_db``: a voice
    pushed into the limiter loses the loudness the session was measured with, and sounds
    pressed), and what is heard while it speaks at most MAX_VOICE_OVER_TARGET_LU over the
    target. Where the plain gain breaks either, the rest (breath guide, bells, chimes, ticks,
    bed) is lifted against the voice by the least that lets the session meet its target
    within both; with the K-weighting linear, every blend's block powers follow exactly from
    the stems' (``loudness.blend_powers``), so no track is mixed again. The lift stops where
    the rest, measured alone, is as loud as the voice alone (MAX_REST_LIFT_DB at most).
    """
    target = _mono_target(loudness_lufs, channels)
    voice, rest, cross = (_joined([getattr(t, name) for t in stems]) for name in _STEMS)
    spoken = _joined([t.spoken for t in stems])
    limit_db = voice_gain_limit_db(_joined([t.voice_peaks for t in stems]), ceiling_dbtp)

    def balance(lift_db: float) -> tuple[bool, float]:
        """(whether the voice fits, the voice's gain) with the rest lifted ``lift_db``."""
        powers = blend_powers(voice, rest, cross, 1.0, float(db_to_gain(lift_db)))
        session = gated_loudness(powers)
        voice_gain_db = target - session
        over_lu = gated_loudness(powers[spoken]) - session
        return _voice_fits(voice_gain_db, over_lu, limit_db), voice_gain_db

    rest_lufs, voice_lufs = gated_loudness(rest), gated_loudness(voice)
    if not (np.isfinite(rest_lufs) and np.isfinite(voice_lufs)):  # nothing to lift, or no voice
        session = gated_loudness(blend_powers(voice, rest, cross, 1.0, 1.0))
        return MasterGain(target - session if np.isfinite(session) else 0.0)
    lo, hi = 0.0, float(np.clip(voice_lufs - rest_lufs, 0.0, MAX_REST_LIFT_DB))
    if balance(lo)[0]:
        hi = lo
    elif balance(hi)[0]:
        for _ in range(_BALANCE_STEPS):  # the voice does not fit at lo, fits at hi
            middle = 0.5 * (lo + hi)
            if balance(middle)[0]:
                hi = middle
            else:
                lo = middle
    lift_db = hi
    # The voice is mixed lift_db under the rest, and the whole session raised to the target.
    return MasterGain(balance(lift_db)[1] + lift_db, -lift_db)


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
