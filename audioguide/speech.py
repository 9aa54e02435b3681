"""Speech preparation: cue text in, speech samples at the session rate out.

Asks the engine (or the cache) for each cue once, trims the engine's leading and trailing
silence, resamples with a polyphase anti-aliasing filter, and levels every cue to the same
loudness so the voice sits at one level throughout. A cue's spoken length is the length of
these samples, so the timeline and the mix agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from math import gcd

import numpy as np
from scipy import signal

from .cache import SpeechCache
from .synth import SAMPLE_RATE, apply_fades
from .tts import SpeechClip, SpeechEngine

SPEECH_RMS = 0.1  # -20 dBFS over the voiced part of each cue
SILENCE_THRESHOLD = 10 ** (-45 / 20)  # relative to the cue's peak
EDGE_FADE_S = 0.008


def prepare_clip(clip: SpeechClip, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Trim, resample and level one engine clip; float32 mono at ``sample_rate``."""
    x = clip.samples.astype(np.float32) / 32768.0
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0:
        loud = np.flatnonzero(np.abs(x) > peak * SILENCE_THRESHOLD)
        margin = int(0.02 * clip.sample_rate)
        x = x[max(0, loud[0] - margin) : loud[-1] + margin]
    if clip.sample_rate != sample_rate:
        g = gcd(sample_rate, clip.sample_rate)
        x = signal.resample_poly(x, sample_rate // g, clip.sample_rate // g).astype(np.float32)
    voiced = x[np.abs(x) > (np.max(np.abs(x)) if x.size else 0) * 0.05]
    rms = float(np.sqrt(np.mean(voiced.astype(np.float64) ** 2))) if voiced.size else 0.0
    if rms > 0:
        x = x * (SPEECH_RMS / rms)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.9:
        x = x * (0.9 / peak)
    x = x.astype(np.float32)
    edge = int(EDGE_FADE_S * sample_rate)
    return apply_fades(x, edge, edge)


class Speech:
    """Prepared speech for every cue of a session, from a cache or the engine.

    ``effect`` (optional) is applied to each prepared cue, e.g. the voice chain.
    """

    def __init__(
        self,
        engine: SpeechEngine,
        cache: SpeechCache | None = None,
        effect: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.engine = engine
        self.cache = cache
        self.effect = effect
        self._dry: dict[str, np.ndarray] = {}
        self._wet: dict[str, np.ndarray] = {}
        self.synthesized = 0

    def _raw(self, text: str) -> SpeechClip:
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

    def samples(self, text: str) -> np.ndarray:
        """The cue as mixed: prepared speech, through the voice effect if there is one."""
        if self.effect is None:
            return self.dry(text)
        if text not in self._wet:
            self._wet[text] = self.effect(self.dry(text))
        return self._wet[text]

    def length_s(self, text: str) -> float:
        """Spoken length in seconds: the prepared, dry cue (an effect's tail may ring on)."""
        return self.dry(text).shape[0] / SAMPLE_RATE

    def prepare(self, texts: Iterable[str], progress: Callable[[int], None] | None = None) -> None:
        for text in texts:
            self.dry(text)
            if progress is not None:
                progress(1)
