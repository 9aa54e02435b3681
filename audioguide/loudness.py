"""Loudness (ITU-R BS.1770-4): mono float32 samples in, block powers and LUFS out.

The meter of the mastering stage, beside the limiter (``dynamics``): ``BlockMeter`` measures
the mean square of the K-weighted signal in 400 ms blocks every 100 ms, fed a piece at a time,
and ``gated_loudness`` turns block powers into integrated loudness with the BS.1770 gates.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .synth import SAMPLE_RATE

BLOCK_S = 0.4
HOP_S = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0

_LOUDNESS_CHUNK_HOPS = 256
# What keeps a recursive filter fed exact silence out of the subnormal floats (below 1.2e-38 in
# float32), whose arithmetic some CPUs run 40 to 50 times slower: -300 dBFS, 15 orders under
# the quietest sample a 16-bit file holds, so nothing measured or heard changes.
SUBNORMAL_GUARD = 1e-15


def with_subnormal_guard(samples: np.ndarray, first_sample: int = 0) -> np.ndarray:
    """A float32 copy of ``samples`` plus +-SUBNORMAL_GUARD alternating from sample to sample
    (the sign by the absolute sample index ``first_sample + i``, so pieces of a signal guarded
    one by one are the signal guarded whole).

    Fed to a recursive filter, the guard is a tone at half the sample rate: a filter that
    passes the top of the band (a high pass, shelves, a peaking EQ: the K-weighting, the voice
    EQ) then settles at about SUBNORMAL_GUARD in silence instead of decaying through the
    subnormals after every sound. Added to a sample above 1e-8 it changes nothing at all (it
    is under half the float32 step there). A DC offset would not do: a high pass removes it.
    A low pass or a band pass with a zero at half the sample rate needs another guard.
    """
    x = np.array(samples, dtype=np.float32)
    guard = np.float32(SUBNORMAL_GUARD)
    x[first_sample % 2 :: 2] += guard
    x[1 - first_sample % 2 :: 2] -= guard
    return x


@lru_cache(maxsize=4)
def _k_weighting(sample_rate: int) -> np.ndarray:
    from pyloudnorm.iirfilter import IIRfilter  # on first use: it imports scipy.signal

    shelf = IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sample_rate, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
    return np.array(
        [np.concatenate([f.b, f.a]) / f.a[0] for f in (shelf, high_pass)], dtype=np.float64
    )


class KWeighting:
    """The BS.1770 K-weighting filter (a high shelf, then a high pass) with its state carried
    from one piece to the next: ``filter`` on consecutive pieces is the filter of them joined.

    ``state`` (sections x 2) is what the filter carries into the next piece. Its input is
    guarded (``with_subnormal_guard``), so neither its output nor its state ever holds a
    subnormal number, however long the silence.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        # Filtered in float32 (3x faster; energies within 1e-7 of float64).
        from scipy import signal  # on first use: 0.45 s that only audio work needs

        self._sosfilt = signal.sosfilt
        self._sos = _k_weighting(sample_rate).astype(np.float32)
        self.state = np.zeros((self._sos.shape[0], 2), dtype=np.float32)
        self._position = 0  # samples filtered so far: the guard's phase

    def filter(self, samples: np.ndarray) -> np.ndarray:
        """The next piece, K-weighted; float32."""
        x = with_subnormal_guard(samples, self._position)
        self._position += x.shape[0]
        y, self.state = self._sosfilt(self._sos, x, zi=self.state)
        return np.asarray(y, dtype=np.float32)


class BlockMeter:
    """Mean square of the K-weighted signal in 400 ms blocks every 100 ms (BS.1770 eq. 1), of
    samples fed in pieces of any length: the same blocks as measuring them joined.

    Filtered with carried filter state, a few MB at a time, so memory stays small for any
    length: a block is four hops, so block powers are sums of per-hop energies (summed in
    float64).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.hop = round(HOP_S * sample_rate)
        self.block = round(BLOCK_S * sample_rate)
        assert self.block % self.hop == 0
        self._filter = KWeighting(sample_rate)
        self._energies: list[np.ndarray] = []
        self._rest = np.zeros(0, dtype=np.float32)  # filtered samples short of a whole hop

    def feed(self, samples: np.ndarray) -> None:
        hop = self.hop
        chunk = hop * _LOUDNESS_CHUNK_HOPS
        for start in range(0, samples.shape[0], chunk):
            y = self._filter.filter(samples[start : start + chunk])
            if self._rest.size:
                y = np.concatenate((self._rest, y))
            whole = y.shape[0] - y.shape[0] % hop
            squares = (y[:whole] * y[:whole]).reshape(-1, hop)
            self._energies.append(np.asarray(np.sum(squares, axis=1, dtype=np.float64)))
            self._rest = y[whole:].copy()

    def powers(self) -> np.ndarray:
        """The block powers of everything fed so far (the last part-hop is not a block)."""
        energies = np.concatenate(self._energies) if self._energies else np.zeros(0)
        hops_per_block = self.block // self.hop
        if energies.size < hops_per_block:
            return np.zeros(0)
        cumulative = np.concatenate(([0.0], np.cumsum(energies)))
        return (cumulative[hops_per_block:] - cumulative[:-hops_per_block]) / self.block


def block_powers(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """BS.1770 block powers of ``samples`` (see BlockMeter)."""
    meter = BlockMeter(sample_rate)
    meter.feed(samples)
    return meter.powers()


def gated_loudness(powers: np.ndarray) -> float:
    """Integrated loudness in LUFS of one channel from its block powers (BS.1770 gating).

    Returns -inf for silence.
    """
    if powers.size == 0:
        return float("-inf")
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(powers)
    gated = powers[loudness > ABSOLUTE_GATE_LUFS]
    if gated.size == 0:
        return float("-inf")
    relative = -0.691 + 10 * np.log10(gated.mean()) + RELATIVE_GATE_LU
    gated = powers[(loudness > ABSOLUTE_GATE_LUFS) & (loudness > relative)]
    return float(-0.691 + 10 * np.log10(gated.mean()))


def integrated_loudness(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """BS.1770 integrated loudness (LUFS) of mono ``samples``, as measured on the one channel."""
    return gated_loudness(block_powers(samples, sample_rate))
