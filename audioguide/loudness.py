"""Loudness (ITU-R BS.1770-4): mono float32 samples in, block powers and LUFS out.

The meter of the mastering stage, beside the limiter (``dynamics``): ``BlockMeter`` measures
the mean square of the K-weighted signal in 400 ms blocks every 100 ms, fed a piece at a time,
and ``gated_loudness`` turns block powers into integrated loudness with the BS.1770 gates.

numpy alone: the K-weighting's coefficients come from the cookbook formulas (``biquad``) and
the filter runs a block of samples at a time as matrix products (``KWeighting``), so a render
needs neither scipy.signal (1 s of CPU and about 50 MB to import) nor pyloudnorm. Every recursive
filter here is kept out of subnormal floats (``with_subnormal_guard``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .audio import SAMPLE_RATE, sos_state_space

BLOCK_S = 0.4
HOP_S = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0

_METER_CHUNK_SAMPLES = 1 << 18  # filtered at a time: 6 s, 1 MB
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
    _add_guard(x, first_sample)
    return x


def _add_guard(x: np.ndarray, first_sample: int) -> None:
    guard = np.float32(SUBNORMAL_GUARD)
    x[first_sample % 2 :: 2] += guard
    x[1 - first_sample % 2 :: 2] -= guard


BIQUAD_KINDS = ("high_pass", "low_pass", "low_shelf", "high_shelf", "peaking")
# The Q of a second-order Butterworth section, 1/sqrt(2), written so that 2Q is sqrt(2) exactly:
# ``biquad("low_pass", 0.0, BUTTERWORTH_Q, f, rate)`` is ``scipy.signal.butter(2, f, fs=rate)``.
BUTTERWORTH_Q = float(np.sqrt(2.0)) / 2


def biquad(kind: str, gain_db: float, q: float, corner_hz: float, sample_rate: int) -> np.ndarray:
    """One second-order section (b0, b1, b2, 1, a1, a2), float64, from the formulas of R.
    Bristow-Johnson's Audio EQ Cookbook, as pyloudnorm's IIRfilter computes them (BS.1770's
    K-weighting is a high shelf and a high pass of this kind)."""
    if kind not in BIQUAD_KINDS:
        raise ValueError(f"biquad kind must be one of {BIQUAD_KINDS}, not {kind!r}")
    a = 10 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * (corner_hz / sample_rate)
    cos_w0 = np.cos(w0)
    alpha = np.sin(w0) / (2.0 * q)
    root = 2 * np.sqrt(a) * alpha
    b: tuple[float, float, float]
    d: tuple[float, float, float]
    if kind in ("high_shelf", "low_shelf"):
        sign = 1 if kind == "high_shelf" else -1  # the low shelf mirrors the high one
        b = (
            a * ((a + 1) + sign * (a - 1) * cos_w0 + root),
            -2 * sign * a * ((a - 1) + sign * (a + 1) * cos_w0),
            a * ((a + 1) + sign * (a - 1) * cos_w0 - root),
        )
        d = (
            (a + 1) - sign * (a - 1) * cos_w0 + root,
            2 * sign * ((a - 1) - sign * (a + 1) * cos_w0),
            (a + 1) - sign * (a - 1) * cos_w0 - root,
        )
    elif kind == "high_pass":
        b = ((1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2)
        d = (1 + alpha, -2 * cos_w0, 1 - alpha)
    elif kind == "low_pass":
        b = ((1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2)
        d = (1 + alpha, -2 * cos_w0, 1 - alpha)
    else:  # peaking
        b = (1 + alpha * a, -2 * cos_w0, 1 - alpha * a)
        d = (1 + alpha / a, -2 * cos_w0, 1 - alpha / a)
    return np.array([*b, *d], dtype=np.float64) / d[0]


@lru_cache(maxsize=4)
def k_weighting(sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """BS.1770's K-weighting as second-order sections (2 x 6, float64): the "head" high shelf
    (+4 dB over 1.5 kHz), then the RLB high pass at 38 Hz."""
    sections = np.array(
        [
            biquad("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0, sample_rate),
            biquad("high_pass", 0.0, 0.5, 38.0, sample_rate),
        ]
    )
    sections.setflags(write=False)
    return sections


# The block filter: a block's zero-state response is one small matrix product per
# _BLOCK_SAMPLES samples, and the states at the blocks' starts follow from what each block
# adds to the state by a scan in log2(blocks) steps, each one matrix product over every block
# of a piece at once, not a Python loop over rows of blocks. Measured on back-pain's mixes,
# one thread, the guard included: 4.8 ms per million samples (6.5 with the loop over rows;
# scipy's sosfilt in float32, in C, 7.3 ms), and no 1 s import of scipy.signal.
_BLOCK_SAMPLES = 64
_PIECE_SAMPLES = _METER_CHUNK_SAMPLES  # filtered in one go: longer pieces are cut into these
_PIECE_BLOCKS = _PIECE_SAMPLES // _BLOCK_SAMPLES + 1  # and one block more, for the part-block
_NEGLIGIBLE = 1e-30  # coefficients under this (of a mode decayed away) are made exact zeros


def _negligible_to_zero(matrix: np.ndarray) -> np.ndarray:
    out = np.array(matrix, dtype=np.float64)
    out[np.abs(out) < _NEGLIGIBLE] = 0.0
    return out


@dataclass(frozen=True)
class _BlockFilter:
    """The fixed matrices of the block filter, as row vectors are multiplied by them."""

    from_samples: np.ndarray  # a block's samples to its outputs (float32, n x n)
    from_state: np.ndarray  # the state at a block's start to its outputs (float32, 4 x n)
    to_state: np.ndarray  # sample j of a block to the state at its end (n x 4); the last k
    #   rows carry the last k samples of a part-block to that part's end
    within_block: tuple[np.ndarray, ...]  # the state k samples on, for k < n
    scan_steps: tuple[np.ndarray, ...]  # the state 1, 2, 4, 8 ... blocks on


@lru_cache(maxsize=4)
def _block_filter(sample_rate: int) -> _BlockFilter:
    a_matrix, b_vector, c_vector, d = sos_state_space(np.asarray(k_weighting(sample_rate)))
    n = _BLOCK_SAMPLES
    powers = [np.eye(a_matrix.shape[0])]  # A^k for k <= n
    for _ in range(n):
        powers.append(_negligible_to_zero(a_matrix @ powers[-1]))
    scan_steps = [powers[n].T]
    while 1 << len(scan_steps) < _PIECE_BLOCKS:
        scan_steps.append(_negligible_to_zero(scan_steps[-1] @ scan_steps[-1]))
    impulse = [d] + [float(c_vector @ powers[k - 1] @ b_vector) for k in range(1, n)]
    toeplitz = np.zeros((n, n))
    for i in range(n):
        toeplitz[i, : i + 1] = impulse[i::-1]
    from_state = np.array([c_vector @ powers[i] for i in range(n)]).T
    return _BlockFilter(
        from_samples=np.ascontiguousarray(toeplitz.T, dtype=np.float32),
        from_state=_negligible_to_zero(from_state).astype(np.float32),
        to_state=_negligible_to_zero(np.array([powers[n - 1 - j] @ b_vector for j in range(n)])),
        within_block=tuple(p.T for p in powers[:n]),
        scan_steps=tuple(scan_steps),
    )


@lru_cache(maxsize=2)
def _guard_tone(parity: int) -> np.ndarray:
    """The guard of a whole piece that starts at an absolute sample of this parity, made once:
    added to the samples in the same pass that copies them into the filter's blocks."""
    tone = np.zeros(_PIECE_SAMPLES, dtype=np.float32)
    _add_guard(tone, parity)
    tone.setflags(write=False)
    return tone


class KWeighting:
    """The BS.1770 K-weighting filter with its state carried from one piece to the next:
    ``filter`` on consecutive pieces is the filter of them joined (to float32 rounding).

    A recursive filter run with numpy alone: the signal is cut into blocks of 64 samples; a
    block's output is a fixed matrix times its samples plus a fixed matrix times the filter's
    state at its start, and those states follow from one another by one more matrix, found
    for every block at once by a scan (a prefix sum whose steps are powers of that matrix).
    States are float64, samples float32. ``state`` is what the filter carries into the next
    piece.

    Its input is guarded (``with_subnormal_guard``), so neither its output nor its state
    ever holds a subnormal number, however long the silence. ``first_sample`` is the index of
    the first sample it is fed in the signal it is part of: the guard's phase.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, first_sample: int = 0) -> None:
        self._matrices = _block_filter(sample_rate)
        self.state = np.zeros(self._matrices.from_state.shape[0])
        self._position = first_sample  # the guard's phase

    def filter(self, samples: np.ndarray, *, carry: bool = True) -> np.ndarray:
        """The next piece, K-weighted; float32. ``carry=False`` leaves the state as it was:
        a look at a piece that is to be filtered again, longer."""
        n = samples.shape[0]
        if n <= _PIECE_SAMPLES:
            return self._filter_piece(samples, carry)
        state, position = self.state, self._position
        y = np.concatenate(
            [
                self._filter_piece(samples[a : a + _PIECE_SAMPLES], True)
                for a in range(0, n, _PIECE_SAMPLES)
            ]
        )
        if not carry:
            self.state, self._position = state, position
        return y

    def _filter_piece(self, samples: np.ndarray, carry: bool) -> np.ndarray:
        m = self._matrices
        n = samples.shape[0]
        block = _BLOCK_SAMPLES
        full, tail = divmod(n, block)
        count = full + 1  # one block more than the whole ones: its start state ends the piece
        x = np.empty(count * block, dtype=np.float32)
        np.add(samples, _guard_tone(self._position % 2)[:n], out=x[:n], dtype=np.float32)
        x[n:] = 0.0  # the part-block's rest, and the block after it
        blocks = x.reshape(count, block)
        # What each block's samples add to the state at its end (the first block's with the
        # piece's start state carried over it), summed with what the blocks before add,
        # carried on: the state at the next block's start. The sums by a scan: after its
        # step j, each row holds what the last 2^(j+1) blocks add.
        added = blocks @ m.to_state
        added[0] += self.state @ m.scan_steps[0]
        span = 1
        for step in m.scan_steps:
            if span >= count:
                break
            added[span:] += added[:-span] @ step
            span *= 2
        starts = np.empty_like(added)
        starts[0] = self.state
        starts[1:] = added[:-1]
        y = blocks @ m.from_samples
        y += starts.astype(np.float32) @ m.from_state
        # The state after the piece: the start of the block it ends in, carried over the tail.
        end = starts[full] @ m.within_block[tail]
        if tail:
            end = end + blocks[full, :tail].astype(np.float64) @ m.to_state[block - tail :]
        if carry:
            self.state = end
            self._position += n
        return y.reshape(-1)[:n]


# How long the K-weighting remembers. Its slowest modes (the RLB high pass's double pole near
# 38 Hz) decay by a factor of 0.9946 a sample: whatever came in more than this long ago adds
# at most 1.7e-50 (-1000 dB) of its peak to the output now (the tail of the filter's impulse
# response, summed in tests/test_loudness.py), so a filter started at rest this long before a
# sample gives it as the filter carried from the track's start does, to float32 rounding.
K_WEIGHTING_MEMORY_S = 0.5


class BlockMeter:
    """Mean square of the K-weighted signal in 400 ms blocks every 100 ms (BS.1770 eq. 1), of
    samples fed in pieces of any length: exactly the blocks of measuring them joined.

    Filtered with carried filter state a chunk at a time, on chunks counted from the first
    sample whatever the pieces fed, so memory stays small for any length and the cut into
    pieces changes no bit: a block is four hops, so block powers are sums of per-hop energies
    (summed in float64).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, first_sample: int = 0) -> None:
        self.hop = round(HOP_S * sample_rate)
        self.block = round(BLOCK_S * sample_rate)
        assert self.block % self.hop == 0
        self._filter = KWeighting(sample_rate, first_sample)
        self._energies: list[np.ndarray] = []
        self._rest = np.zeros(0, dtype=np.float32)  # filtered samples short of a whole hop
        self._pending = np.zeros(0, dtype=np.float32)  # fed samples short of a whole chunk

    def feed(self, samples: np.ndarray) -> None:
        x = np.asarray(samples)
        if self._pending.size:
            take = _METER_CHUNK_SAMPLES - self._pending.size
            self._pending = np.concatenate((self._pending, x[:take].astype(np.float32)))
            x = x[take:]
            if self._pending.size < _METER_CHUNK_SAMPLES:
                return
            self._measure(self._filter.filter(self._pending))
        whole = x.shape[0] - x.shape[0] % _METER_CHUNK_SAMPLES
        for start in range(0, whole, _METER_CHUNK_SAMPLES):
            self._measure(self._filter.filter(x[start : start + _METER_CHUNK_SAMPLES]))
        self._pending = x[whole:].astype(np.float32)

    def _measure(self, filtered: np.ndarray) -> None:
        energies, self._rest = self._hop_energies(filtered, self._rest)
        self._energies.append(energies)

    def _hop_energies(self, y: np.ndarray, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hop = self.hop
        if rest.size:
            y = np.concatenate((rest, y))
        whole = y.shape[0] - y.shape[0] % hop
        hops = y[:whole].reshape(-1, hop)
        # Float32 sums of squares (within 1e-6 of float64: 4e-6 dB), four times faster than
        # squares summed in float64; the block powers are sums of them in float64.
        energies = np.einsum("ij,ij->i", hops, hops).astype(np.float64)
        return energies, y[whole:].copy()

    def energies(self) -> np.ndarray:
        """The energy (sum of K-weighted squares, float64) of every whole hop fed so far."""
        energies = list(self._energies)
        if self._pending.size:  # filtered for this answer only: more may be fed
            filtered = self._filter.filter(self._pending, carry=False)
            energies.append(self._hop_energies(filtered, self._rest)[0])
        return np.concatenate(energies) if energies else np.zeros(0)

    def powers(self) -> np.ndarray:
        """The block powers of everything fed so far (the last part-hop is not a block)."""
        return block_means(self.energies(), self.block // self.hop, self.block)


@lru_cache(maxsize=4)
def silent_hop_energy(sample_rate: int = SAMPLE_RATE) -> float:
    """The energy ``BlockMeter`` gives a hop of exact silence more than K_WEIGHTING_MEMORY_S
    after any sound: the guard's, K-weighted (about 1e-26, some 250 dB under the absolute
    gate), so a hop of silence can be given it without filtering."""
    meter = BlockMeter(sample_rate)
    settled = -(-round(K_WEIGHTING_MEMORY_S * sample_rate) // meter.hop)
    meter.feed(np.zeros((settled + 1) * meter.hop, dtype=np.float32))
    return float(meter.energies()[-1])


def block_means(energies: np.ndarray, hops_per_block: int, block: int) -> np.ndarray:
    """Per-hop energies (the last axis) to the mean square of every block of
    ``hops_per_block`` hops (``block`` samples), one block a hop: none when there is no whole
    block."""
    hops = energies.shape[-1]
    if hops < hops_per_block:
        return np.zeros((*energies.shape[:-1], 0))
    zero = np.zeros((*energies.shape[:-1], 1))
    cumulative = np.concatenate((zero, np.cumsum(energies, axis=-1)), axis=-1)
    return (cumulative[..., hops_per_block:] - cumulative[..., :-hops_per_block]) / block


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


# ---------------------------------------------------------------------------------------------
# Two stems of one mix, measured so that the loudness of any blend of them can be computed


class StemMeter:
    """The BS.1770 blocks of two stems ``a`` and ``b`` of a mix (fed in pieces, side by side):
    each one's block powers and their cross term, the block mean of K(a) * K(b).

    The K-weighting is linear, so the mix ``ga * a + gb * b`` has block powers
    ``ga**2 * A + gb**2 * B + 2 * ga * gb * AB`` for any gains (``blend_powers``): one
    measurement answers every balance of the two. Blocks are counted from the first sample
    fed, which is sample ``first_sample`` of the stems (the filters' guard phase, as
    ``KWeighting``'s); the filters start at rest there.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, first_sample: int = 0) -> None:
        self.hop = round(HOP_S * sample_rate)
        self.block = round(BLOCK_S * sample_rate)
        self._filters = (
            KWeighting(sample_rate, first_sample),
            KWeighting(sample_rate, first_sample),
        )
        self._rest = (np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32))
        self._energies: list[np.ndarray] = []  # per hop: sum a^2, sum b^2, sum a*b (3 x hops)

    def feed(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.shape != b.shape:
            raise ValueError(f"stems must be fed alike (got {a.shape} and {b.shape})")
        ka = np.concatenate((self._rest[0], self._filters[0].filter(a)))
        kb = np.concatenate((self._rest[1], self._filters[1].filter(b)))
        whole = ka.shape[0] - ka.shape[0] % self.hop
        wa, wb = ka[:whole].reshape(-1, self.hop), kb[:whole].reshape(-1, self.hop)
        self._energies.append(
            np.stack(
                [
                    np.sum(wa * wa, axis=1, dtype=np.float64),
                    np.sum(wb * wb, axis=1, dtype=np.float64),
                    np.sum(wa * wb, axis=1, dtype=np.float64),
                ]
            )
        )
        self._rest = (ka[whole:].copy(), kb[whole:].copy())

    def powers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, B, AB): the block powers of ``a``, of ``b``, and their cross term."""
        joined = np.concatenate(self._energies, axis=1) if self._energies else np.zeros((3, 0))
        blocks = block_means(joined, self.block // self.hop, self.block)
        return blocks[0], blocks[1], blocks[2]


def blend_powers(
    a: np.ndarray, b: np.ndarray, ab: np.ndarray, gain_a: float, gain_b: float
) -> np.ndarray:
    """The block powers of ``gain_a * a + gain_b * b`` from StemMeter's (A, B, AB); gains are
    amplitude factors. Never negative (rounding could take a near-silent block under zero)."""
    powers = gain_a * gain_a * a + gain_b * gain_b * b + 2.0 * gain_a * gain_b * ab
    return np.maximum(powers, 0.0)
