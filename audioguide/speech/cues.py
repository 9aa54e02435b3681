"""Cue preparation: cue text in, speech samples at the session rate out.

Asks the engine (or the cache) for each cue once, trims the engine's leading and trailing
silence, resamples with a polyphase anti-aliasing filter (audio.resample: a Kaiser-windowed
FIR, not linear interpolation, so the engine's 22 kHz voice gains no aliases), and levels
every cue to the same loudness so the voice sits at one level throughout. A cue's spoken
length is the length of these samples, so the timeline and the mix agree by construction. The
voice effect (voice_fx) colours each cue on the way, at the engine's rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from math import gcd

import numpy as np

from ..audio import SAMPLE_RATE, apply_fades, resample
from ..dynamics import limit
from . import voice_fx
from .cache import PreparedCue, SpeechCache
from .engine import SpeechClip, SpeechEngine
from .voice_fx import EDGE_FADE_S, VOICE_PEAK_OVER_RMS_DB, voiced_rms
from .workers import usable_cores

SPEECH_RMS = 0.1  # -20 dBFS over the voiced part of each cue
CACHE_READERS = 4  # threads reading cached cues at most (no more than the cores)
SILENCE_THRESHOLD = 10 ** (-45 / 20)  # relative to the cue's peak


def _trimmed(clip: SpeechClip) -> np.ndarray:
    """The engine's clip as float32 without its leading and trailing silence (20 ms kept)."""
    x = clip.samples.astype(np.float32) / 32768.0
    magnitude = np.abs(x)
    peak = float(magnitude.max()) if x.size else 0.0
    if peak > 0:
        loud = np.flatnonzero(magnitude > peak * SILENCE_THRESHOLD)
        margin = int(0.02 * clip.sample_rate)
        x = x[max(0, loud[0] - margin) : loud[-1] + margin]
    return x


def prepared_length(clip: SpeechClip, sample_rate: int = SAMPLE_RATE) -> int:
    """``prepare_clip(clip).shape[0]``, without resampling or levelling: all a plan needs."""
    return _resampled_length(_trimmed(clip).shape[0], clip.sample_rate, sample_rate)


def _resampled_length(n: int, from_rate: int, to_rate: int) -> int:
    if from_rate == to_rate:
        return n
    g = gcd(from_rate, to_rate)
    return -(-n * (to_rate // g) // (from_rate // g))


Effect = Callable[[np.ndarray, int], np.ndarray]
"""A voice effect: float32 mono samples and their rate in, float32 samples at that rate out."""


def prepare_clip(
    clip: SpeechClip, sample_rate: int = SAMPLE_RATE, effect: Effect | None = None
) -> np.ndarray:
    """Trim, level and resample one engine clip, through ``effect`` if one is given; float32
    mono at ``sample_rate``.

    Levelled twice over: the voiced part to SPEECH_RMS, and the peaks held to
    VOICE_PEAK_OVER_RMS_DB above it (dynamics, not colour: done with or without the chain).
    Without an effect the clip is resampled first and levelled at ``sample_rate``; with one,
    levelled and put through the effect at the engine's rate, then resampled: the chain
    costs half as much there, and sounds the same (docs/voices.md: the engines' voices hold
    nothing above 10 kHz that the resampler would keep).
    """
    return _prepared(clip, sample_rate, effect)[0]


def _prepared(
    clip: SpeechClip, sample_rate: int = SAMPLE_RATE, effect: Effect | None = None
) -> tuple[np.ndarray, int]:
    """``prepare_clip``'s samples and ``prepared_length``, trimming the clip once."""
    x = _trimmed(clip)
    dry_samples = _resampled_length(x.shape[0], clip.sample_rate, sample_rate)
    if effect is None:
        if clip.sample_rate != sample_rate:
            x = resample(x, clip.sample_rate, sample_rate)
        return _levelled(x, sample_rate), dry_samples
    x = effect(_levelled(x, clip.sample_rate), clip.sample_rate)
    if clip.sample_rate != sample_rate:
        x = resample(x, clip.sample_rate, sample_rate)
    edge = int(EDGE_FADE_S * sample_rate)
    # The resampler's ripple at the edges, faded out.
    return apply_fades(x, edge, edge), dry_samples


def _levelled(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """The voiced part at SPEECH_RMS, the peaks held; float32, faded at the edges."""
    rms = voiced_rms(x)
    x = x.astype(np.float32)
    if rms > 0:
        x *= np.float32(SPEECH_RMS / rms)
        ceiling = SPEECH_RMS * 10 ** (VOICE_PEAK_OVER_RMS_DB / 20)
        x = limit(x, ceiling, sample_rate, oversample=False, in_place=True)
    edge = int(EDGE_FADE_S * sample_rate)
    return apply_fades(x, edge, edge)


# What prepares a cue for mixing, in the prepared-cue cache's key. Bump it by hand with any
# change that alters a prepared cue's samples (trimming, resampling, levelling, the voice
# chain, or the dynamics and fades they call): old entries are then never used.
# tests/test_speech.py prepares a fixed input and fails until the version and its recorded
# fingerprint are updated together; it sees any change over 1e-4 of the cue, not one that
# only rounds differently (the last bits follow the CPU), which needs a new version all the
# same.
# 2: the limiter's gain smoothing in numpy (dynamics), up to 1e-5 apart; 3: the voice EQ's
# subnormal guard (voice_fx.equalize), back-pain's cues up to 4 steps of 16 bits apart; 4: the
# resampler, the EQ and the room in numpy (float32 rounding), and the chain at the engine's
# rate before resampling; 5: the room by overlap-add, upsampling by correlation and the
# limiter's stretches smoothed together (float32 rounding: 2e-7 of full scale); 6: upsampling
# as products over rows of 64 samples (audio._upsampled; float32 rounding).
PREPARATION_VERSION = 6


def _preparation_key(effect: Effect | None) -> str | None:
    """What prepares a cue for mixing, for the cache's key; None (not cached) for an effect
    that is not one of voice_fx's own, which PREPARATION_VERSION does not cover."""
    if effect is None:
        name = "none"
    elif getattr(effect, "__module__", None) == voice_fx.__name__:
        name = effect.__name__
    else:
        return None
    # numpy's matrix products and FFTs may round differently from one release to the next.
    return f"{name}/v{PREPARATION_VERSION}/{np.__version__}/{SAMPLE_RATE}"


class Speech:
    """Prepared speech for every cue of a session, from a cache or the engine.

    ``effect`` (optional) colours each cue as it is prepared, e.g. the voice chain
    (``prepare_clip``: at the engine's rate, before resampling).
    """

    def __init__(
        self,
        engine: SpeechEngine,
        cache: SpeechCache | None = None,
        effect: Effect | None = None,
    ):
        self.engine = engine
        self.cache = cache
        self.effect = effect
        self._dry: dict[str, np.ndarray] = {}
        self._held: dict[str, PreparedCue] = {}
        self._preparation = _preparation_key(effect)
        self._dry_samples: dict[str, int] = {}  # lengths of dry cues no longer held
        self._fresh: dict[str, SpeechClip] = {}  # synthesized by synthesize_missing, not cached
        # Cues being prepared on synthesize_missing's thread while the engine speaks on.
        self._pending: dict[str, Future[PreparedCue]] = {}
        self.synthesized = 0

    def close(self) -> None:
        """Stop the engine's work now, if it runs any outside this thread (an engine with a
        ``close`` method: espeak's worker processes); a thread waiting on it gets an error."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def synthesize_missing(
        self,
        texts: Iterable[str],
        *,
        prepared: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Synthesize, in one batch and in the order given, every cue the cache lacks (only
        its clip when ``prepared`` is false: a plan needs no prepared cue). ``progress`` is
        told (cues spoken, cues missing) before the batch and as each cue comes.

        An engine may sound a cue a little differently depending on what it spoke before
        (espeak-ng does, by a few samples): one batch in the routine's order gives the same
        audio every time from the same cache, where cues synthesized on demand by several
        threads would come in whatever order the threads ran.
        """
        identity = self.engine.identity
        # A plan needs only each cue's length: one known already (its clip used and let go)
        # is not asked for again.
        measured = () if prepared else self._dry_samples
        wanted = [
            text
            for text in dict.fromkeys(texts)
            if text not in self._dry
            and text not in self._held
            and text not in self._fresh
            and text not in measured
        ]
        missing = []
        # What the cache holds is read (and checked) here, once: a damaged entry is missing.
        for text, found in zip(wanted, self._read_cache(wanted, prepared), strict=True):
            if isinstance(found, PreparedCue):
                self._held[text] = found
                self._dry_samples[text] = found.dry_samples
            elif found is not None:
                self._fresh[text] = found
            else:
                missing.append(text)
        if not missing:
            return
        if progress is not None:
            progress(0, len(missing))
        many = getattr(self.engine, "synthesize_all", None)
        clips = many(missing) if many is not None else map(self.engine.synthesize, missing)
        # An engine that hands each clip over as it is spoken (espeak's worker) leaves this
        # process's cores to the preparation meanwhile: threads prepare the clips as they
        # come, and the threads that ask for the cues later take over what they have not
        # started. One fewer than the cores: the engine's worker is the critical path
        # (espeak-ng speaks back-pain in 0.6 s of a core of its own), and a thread per core
        # beside it took a third of its core, stretching the batch to 0.8 s; a cold render
        # took 0.1 s longer (docs/performance.md).
        helpers = max(1, usable_cores() - 1)
        helper = ThreadPoolExecutor(max_workers=helpers) if prepared else None
        try:
            for spoken, (text, clip) in enumerate(zip(missing, clips, strict=True), 1):
                self.synthesized += 1
                if self.cache is not None:
                    self.cache.put(identity, text, clip)
                self._fresh[text] = clip
                if helper is not None:
                    self._pending[text] = helper.submit(self._make_held, text)
                if progress is not None:
                    progress(spoken, len(missing))
        except BaseException:
            if helper is not None:
                helper.shutdown(wait=False, cancel_futures=True)
            raise
        if helper is not None:
            helper.shutdown(wait=False)  # its thread ends when the last cue is prepared

    def _read_cache(
        self, texts: list[str], prepared: bool
    ) -> list[PreparedCue | SpeechClip | None]:
        """Each text's prepared cue from the cache (when ``prepared``), else its engine clip,
        else None; in the order given.

        Read on a few threads: a warm render reads every prepared cue of a session here
        (back-pain: 111 files, 40 MB, each checked by its SHA-256), and reading a file and
        hashing its bytes release the GIL.
        """
        cache = self.cache
        if cache is None or not texts:
            return [None] * len(texts)
        identity = self.engine.identity
        preparation = self._preparation if prepared else None

        def read(text: str) -> PreparedCue | SpeechClip | None:
            if preparation is not None:
                cue = cache.get_prepared(identity, text, preparation)
                if cue is not None:
                    return cue
            return cache.get(identity, text)

        readers = min(CACHE_READERS, len(texts), usable_cores())
        if readers < 2:
            return [read(text) for text in texts]
        with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="cue cache") as pool:
            return list(pool.map(read, texts))

    def _raw(self, text: str) -> SpeechClip:
        fresh = self._fresh.pop(text, None)
        if fresh is not None:
            return fresh
        identity = self.engine.identity
        if self.cache is not None:
            cached = self.cache.get(identity, text)
            if cached is not None:
                return cached
        clip = self.engine.synthesize(text)
        self.synthesized += 1
        if self.cache is not None:
            self.cache.put(identity, text, clip)
        return clip

    def dry(self, text: str) -> np.ndarray:
        if text not in self._dry:
            self._dry[text] = prepare_clip(self._raw(text))
        return self._dry[text]

    def _hold(self, text: str) -> PreparedCue:
        held = self._held.get(text)
        if held is not None:
            return held
        pending = self._pending.pop(text, None)
        if pending is not None and not pending.cancel():
            return pending.result()  # being prepared on synthesize_missing's thread
        return self._make_held(text)

    def _make_held(self, text: str) -> PreparedCue:
        held = self._cached(text) or self._prepare(text)
        self._held[text] = held
        self._dry_samples[text] = held.dry_samples
        return held

    def _cached(self, text: str) -> PreparedCue | None:
        if self.cache is None or self._preparation is None:
            return None
        return self.cache.get_prepared(self.engine.identity, text, self._preparation)

    def _prepare(self, text: str) -> PreparedCue:
        if self.effect is None:
            wet = self.dry(text)
            dry_samples = wet.shape[0]
        else:
            wet, dry_samples = _prepared(self._raw(text), effect=self.effect)
        # Only the cue as mixed is kept from now on, and as 16 bits scaled to its own peak
        # (noise 100 dB under it, far below what the MP3 keeps): a session's speech in half
        # the memory (back-pain: 36 MB instead of 72). Its dry length is all the timeline
        # needs.
        peak = float(np.max(np.abs(wet))) if wet.size else 0.0
        scale = np.float32(peak / 32767 if peak > 0 else 1.0)
        steps = wet / scale
        cue = PreparedCue(np.rint(steps, out=steps).astype(np.int16), float(scale), dry_samples)
        self._dry.pop(text, None)
        if self.cache is not None and self._preparation is not None:
            cue = self.cache.put_prepared(self.engine.identity, text, self._preparation, cue)
        return cue

    def samples(self, text: str) -> np.ndarray:
        """The cue as mixed, float32: prepared speech, through the voice effect if there is
        one. Made once per cue; each call returns a new array."""
        return self._hold(text).as_float()

    def sample_count(self, text: str) -> int:
        """``samples(text).shape[0]``, without making the samples."""
        return int(self._hold(text).samples.shape[0])

    def checksum(self, text: str) -> bytes | None:
        """What the cue as mixed is: its cache entry's SHA-256 (``PreparedCue.checksum``), the
        same for the same samples; None when it is not cached (no cache, or an effect the
        cache does not key)."""
        return self._hold(text).checksum

    def length_s(self, text: str) -> float:
        """Spoken length in seconds: the prepared, dry cue (an effect's tail may ring on)."""
        n = self._dry_samples.get(text)
        if n is None:
            dry = self._dry.get(text)
            n = prepared_length(self._raw(text)) if dry is None else dry.shape[0]
            self._dry_samples[text] = n
        return n / SAMPLE_RATE

    def prepare(
        self, texts: Iterable[str], progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Learn every cue's length, synthesizing what the cache lacks (``progress`` as
        ``synthesize_missing`` tells it); mixes nothing."""
        texts = list(texts)
        self.synthesize_missing(texts, prepared=False, progress=progress)
        for text in texts:
            self.length_s(text)
