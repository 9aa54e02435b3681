"""Benchmark: every render against the limit of this machine, measured in the same run.

Each render runs in a fresh process exactly as a user types it, so the times include Python's
start-up and imports. With each voice engine (espeak-ng always; Piper when the ``natural``
extra is installed, else its rows are skipped with a message):

    cold espeak      audioguide render back-pain --voice gmw/en-us  (empty speech cache)
    warm espeak      the same again            (every cue and track's levels from the cache)
    measured espeak  the same, the kept levels removed first: pass 1 measures every track,
                     as a re-render at a new tempo or length does
    cold piper       audioguide render back-pain --voice en_US-joe-medium  (empty cache)
    warm piper, measured piper   as with espeak-ng
    piper synth   a cold ``plan back-pain`` less a warm one: Piper's synthesis on every core
    60 min        audioguide render back-pain --minutes 60  --voice gmw/en-us (cache warm)
    240 min       audioguide render back-pain --minutes 240 --voice gmw/en-us (cache warm)

The limit is what no MP3 render can beat: one LAME encode of the session's audio, split over
every core, plus the interpreter's start-up, measured as a whole process of its own
(``LIMIT_PROGRAM``) on the audio the render itself wrote (its full-session MP3, decoded).
Every render is printed as a ratio to the limit of its own session, in wall and CPU time,
measured right after it. The 20-minute renders run in rounds (``--repeat``, 3 by default),
each round every render once and, with Piper, the synthesis; every figure is the median of
the rounds', every ratio the median of the rounds' own ratios, and the cold Piper bound is
checked within each round, since this machine's speed drifts by 10 to 20% from minute to
minute. They are printed beside the CPU model and whether the CPU does subnormal float
arithmetic at full speed (a one-second check), so a figure from another machine can be read.
Peak RSS is given twice: the largest single process (the child's own ``ru_maxrss``, reaped
with ``wait4``) and the process tree's proportional set sizes summed (sampled every 100 ms:
Piper synthesizes in worker processes; PSS shares a page two processes map between them).
CPU time is the whole tree's. The slope of peak RSS between 20 and 240 minutes shows whether
memory grows with length.

The naive pydub build of the same session (AudioSegment concatenation and overlay, pydub
gain, MP3 export through ffmpeg) is printed for comparison when ``imageio-ffmpeg`` is
installed (``pip install '.[bench]'``), and skipped with a message when it is not.

Usage::

    python scripts/bench.py              # about five minutes on 2 cores (Piper: two more)
    python scripts/bench.py --no-naive   # without the naive build
    python scripts/bench.py --no-long    # without the 240-minute render
    python scripts/bench.py --serve      # only the load check of audioguide serve (below)
    python scripts/bench.py --programme  # only the programme runs (below)
    python scripts/bench.py --bed        # only: peak RSS of 60 minutes over a 20-minute WAV bed

With ``--programme``, instead: ``audioguide program back-pain --weeks 12`` (60 sessions) the
first time (empty speech cache), again with nothing changed, and again with one week's tempo
changed (only that week's five sessions are rendered).

The load check (``--serve``, needs ``pip install '.[serve]'``): ``back-pain-quick`` rendered
and served by ``audioguide serve`` on 127.0.0.1 in its own process, then 20 clients (threads
here, one keep-alive connection each) fetch random byte ranges of the full-session file, as
players seeking and buffering do, for 10 s: requests per second, median and p99 latency, and
the server's peak RSS (VmHWM). The clients share the machine's cores with the server.

``--bed`` writes a 20-minute stereo 16-bit WAV of soft noise (212 MB) in a temporary folder and
renders ``back-pain --minutes 60 --ambient that.wav`` in a fresh process, after a ``plan`` that
fills the speech cache; it reports that render's wall time and peak RSS (target 250 MB).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

ROUTINE = "back-pain"
LAME_BLOCK = 1 << 20  # samples per call to the encoder, as the render feeds it
ESPEAK_VOICE = "gmw/en-us"
PIPER_VOICE = "en_US-joe-medium"
# At most this many times the limit of the same session, in wall and in CPU time (issue 13).
TARGETS = {
    "warm espeak": 1.3,
    "measured espeak": 1.3,
    "warm piper": 1.3,
    "measured piper": 1.3,
    "cold espeak": 1.8,
}
RSS_TARGET_MB = 250.0  # at 240 minutes
FLAT_SLOPE_MB_PER_MIN = 0.05  # "flat in length": under this from 20 to 240 minutes
PIPER_COLD_TARGET_S = 30.0  # wall, 2 cores (issue 12)
PIPER_RSS_TARGET_MB = 500.0  # the cold render's process tree, summed
SERVE_ROUTINE = "back-pain-quick"
SERVE_CLIENTS = 20
SERVE_SECONDS = 10.0
SERVE_MAX_RANGE_BYTES = 256 * 1024  # a player's read: a few seconds of audio at most
LOOPBACK_ANY_PORT = ("--host", "127.0.0.1", "--port", "0")

# The limit, as a process of its own: start Python, read the session's PCM, encode it with
# LAME at the render's settings split into one contiguous part per core, each on a thread
# (lameenc releases the GIL), and exit.
LIMIT_PROGRAM = """
import sys, threading
import lameenc, numpy as np
path, cores, kbps, quality, rate, block = sys.argv[1:7]
pcm = np.memmap(path, dtype=np.int16, mode="r")  # paged in as encoded, never held whole
cores, block = int(cores), int(block)
bounds = [len(pcm) * i // cores for i in range(cores + 1)]
sizes = [0] * cores

def encode(part):
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(int(kbps))
    encoder.set_in_sample_rate(int(rate))
    encoder.set_out_sample_rate(int(rate))
    encoder.set_channels(1)
    encoder.set_quality(int(quality))
    encoder.silence()
    x = pcm[bounds[part] : bounds[part + 1]]
    size = sum(len(encoder.encode(x[i : i + block].tobytes())) for i in range(0, len(x), block))
    sizes[part] = size + len(encoder.flush())

threads = [threading.Thread(target=encode, args=(p,)) for p in range(cores)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert all(sizes)
"""


@dataclasses.dataclass
class Run:
    name: str
    session_s: float
    wall_s: float
    peak_rss_mb: float  # the largest single process
    cpu_s: float  # user + system time of the process tree: what the run costs on an idle machine
    tree_rss_mb: float = 0.0  # the process tree's memory summed (PSS), at its peak


def _children(root: int) -> list[int]:
    """``root`` and every process descended from it (Linux's /proc; just ``root`` elsewhere)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [root]
    for entry in entries:
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parents[int(entry)] = int(stat[1])
    found, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(found)


def _rss_mb(pid: int) -> float:
    """A process's proportional set size (its private pages, and its share of pages shared
    with others, so a tree's sum counts a shared page once), else its resident set."""
    for path, field in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        except OSError:
            continue
    return 0.0


SAMPLE_S = 0.1  # how often the process tree is sampled


def _cpu_s(pid: int) -> float | None:
    """A process's own CPU time so far (user + system, not its children's), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float, float, float]:
    """Run ``command`` in a fresh process: (wall s, peak RSS MB, CPU s, tree peak RSS MB).

    The child is reaped with wait4, which gives its own peak RSS (RUSAGE_CHILDREN would give
    the largest of every child so far). A thread samples the process tree every SAMPLE_S: its
    summed memory, and each process's own CPU time. The CPU time is the sum over every process
    of the tree of its own, the child's read once it has exited and before it is reaped: wait4
    alone misses workers the child does not reap itself (Piper's, forked by a fork server).
    Without /proc (not Linux), wait4's figure."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
        tree_mb = 0.0
        cpu: dict[int, float] = {}
        exited = threading.Event()

        def sample() -> None:
            nonlocal tree_mb
            while not exited.is_set():
                pids = _children(proc.pid)
                tree_mb = max(tree_mb, sum(_rss_mb(pid) for pid in pids))
                for pid in pids:
                    seconds = _cpu_s(pid)
                    if seconds is not None:
                        cpu[pid] = max(cpu.get(pid, 0.0), seconds)
                # Not more often: reading every process's memory map costs the cores the
                # render runs on (every 20 ms, a cold Piper render took 5 s longer).
                exited.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        waited = hasattr(os, "waitid")
        if waited:  # exited, not yet reaped: its /proc entry still counts
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        # The wall time ends when the child does, not when the sampler next wakes: taken after
        # its join, every figure was rounded up to the sampler's next 100 ms.
        end = time.perf_counter()
        exited.set()
        sampler.join()
        final = _cpu_s(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = (end if waited else time.perf_counter()) - start
        err_file.seek(0)
        err = err_file.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err}")
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 / 1024 / 1024 if sys.platform == "darwin" else 1 / 1024
    rss_mb = usage.ru_maxrss * scale
    if final is None:
        cpu_s = usage.ru_utime + usage.ru_stime
    else:
        cpu[proc.pid] = final
        cpu_s = sum(cpu.values())
    return wall_s, rss_mb, cpu_s, max(tree_mb, rss_mb)


def audioguide(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "audioguide", *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"audioguide {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


@dataclasses.dataclass(frozen=True)
class Spec:
    """One render of the bench: its name, arguments after ``render``, voice, whether the
    speech cache is emptied first, in how many of the rounds it runs (``render_runs``), and
    whether the kept levels are removed first (``measure``: pass 1 measures every track)."""

    name: str
    args: tuple[str, ...]
    voice: str
    cold: bool
    times: int
    measure: bool = False


def compiled() -> None:
    """Compile the package's modules to bytecode first, as pip does when it installs them: a
    checkout run with PYTHONDONTWRITEBYTECODE set (some machines set it) would otherwise
    compile every module in every render, about 0.2 s of CPU a run that no user pays."""
    import compileall

    import audioguide

    compileall.compile_dir(str(Path(audioguide.__file__).parent), quiet=1)


def piper_installed() -> bool:
    from audioguide.speech import piper

    return piper.piper_version() is not None and piper.find_voice(PIPER_VOICE) is not None


def specs(repeat: int, long: bool, piper: bool) -> list[Spec]:
    runs = [
        Spec("cold espeak", (ROUTINE,), ESPEAK_VOICE, True, repeat),
        Spec("warm espeak", (ROUTINE,), ESPEAK_VOICE, False, repeat),
        Spec("measured espeak", (ROUTINE,), ESPEAK_VOICE, False, repeat, measure=True),
    ]
    if piper:
        runs += [
            Spec("cold piper", (ROUTINE,), PIPER_VOICE, True, repeat),
            Spec("warm piper", (ROUTINE,), PIPER_VOICE, False, repeat),
            Spec("measured piper", (ROUTINE,), PIPER_VOICE, False, repeat, measure=True),
        ]
    runs.append(Spec("60 min", (ROUTINE, "--minutes", "60"), ESPEAK_VOICE, False, 1))
    if long:
        runs.append(Spec("240 min", (ROUTINE, "--minutes", "240"), ESPEAK_VOICE, False, 1))
    return runs


def _cache(work: Path, voice: str) -> Path:
    return work / f"cache-{'piper' if voice == PIPER_VOICE else 'espeak'}"


def _env(base: dict[str, str], work: Path, voice: str) -> dict[str, str]:
    return dict(base, AUDIOGUIDE_CACHE_DIR=str(_cache(work, voice)), AUDIOGUIDE_VOICE=voice)


@dataclasses.dataclass
class Paired:
    """One render of the bench in every round: each run with the limit measured right after
    it, on the audio that render wrote (the first round's)."""

    name: str
    pairs: list[tuple[Run, Run]]

    def ratios(self, cpu: bool = False) -> list[float]:
        """Each round's render over its own limit, in wall (or CPU) time."""
        if cpu:
            return [run.cpu_s / limit.cpu_s for run, limit in self.pairs]
        return [run.wall_s / limit.wall_s for run, limit in self.pairs]

    @property
    def run(self) -> Run:
        """The render as the table shows it: each figure the median of the rounds'."""
        return _median_run(self.name, [run for run, _ in self.pairs])

    @property
    def limit(self) -> Run:
        return _median_run("limit", [limit for _, limit in self.pairs])


def render_runs(
    work: Path,
    base: dict[str, str],
    jobs: int | None,
    runs: list[Spec],
    cores: int,
    repeat: int,
    piper: bool,
) -> tuple[list[Paired], list[Run]]:
    """Every render in ``repeat`` rounds, in the order of ``runs`` within each round, each run
    followed at once by its limit (``limit_run`` on the audio the render wrote the first
    time); with Piper, each round ends with Piper's synthesis (``synthesis_run``).

    This machine's speed drifts by 10 to 20% from one minute to the next, so every comparison
    is made between runs measured seconds apart: each render against the limit right after
    it, and a round's cold Piper render against the same round's synthesis and warm render.
    A render's figures are the medians of its rounds (``Paired``); a ratio is the median of
    the rounds' ratios. A spec with ``times`` 1 runs in the first round only. Returns each
    render's rounds, and each round's synthesis."""
    from audioguide.kept_levels import LEVELS_MEMO

    extra = ["--jobs", str(jobs)] if jobs else []
    paired = {spec.name: Paired(spec.name, []) for spec in runs}
    outs = {spec.name: work / spec.name.replace(" ", "-") for spec in runs}
    pcm = {name: out.with_suffix(".pcm") for name, out in outs.items()}
    synth: list[Run] = []
    for round_index in range(repeat):
        for spec in runs:
            if round_index >= spec.times:
                continue
            env = _env(base, work, spec.voice)
            out = outs[spec.name]
            if spec.cold:
                shutil.rmtree(_cache(work, spec.voice), ignore_errors=True)
            if spec.measure:
                shutil.rmtree(_cache(work, spec.voice) / LEVELS_MEMO, ignore_errors=True)
            command = [sys.executable, "-m", "audioguide", "render", *spec.args]
            command += ["-o", str(out), "-q", *extra]
            ticks = cpu_ticks()
            wall_s, rss_mb, cpu_s, tree_mb = measured(command, env)
            waited = waits(ticks, cpu_ticks())
            run = Run(spec.name, 0.0, wall_s, rss_mb, cpu_s, tree_mb)
            if round_index == 0:
                decoded_session(out, pcm[spec.name])
                plan = json.loads(audioguide(["plan", *spec.args, "--json"], env))
                run.session_s = float(plan["total_s"])
            else:
                run.session_s = paired[spec.name].pairs[0][0].session_s
            limit = limit_run(pcm[spec.name], cores, base, 1)
            paired[spec.name].pairs.append((run, limit))
            print(
                f"  {spec.name:<16} {wall_s:6.2f} s ({waited}), its limit {limit.wall_s:5.2f} s",
                file=sys.stderr,
            )
        if piper:
            synth.append(synthesis_run(work, base))
            print(f"  {'piper synth':<16} {synth[-1].wall_s:6.2f} s", file=sys.stderr)
    for spec in runs:
        pcm[spec.name].unlink(missing_ok=True)
        shutil.rmtree(outs[spec.name], ignore_errors=True)
    return list(paired.values()), synth


def synthesis_run(work: Path, base: dict[str, str]) -> Run:
    """Piper's synthesis of back-pain on every core: a cold ``plan`` (start-up, routine, every
    cue synthesized) less a warm one right after it (start-up, routine, every cue's length
    from the cache)."""
    env = _env(base, work, PIPER_VOICE)
    command = [sys.executable, "-m", "audioguide", "plan", ROUTINE]  # on every core
    shutil.rmtree(_cache(work, PIPER_VOICE), ignore_errors=True)
    cold = measured(command, env)
    warm = measured(command, env)
    return Run("piper synth", 0.0, cold[0] - warm[0], cold[1], cold[2] - warm[2], cold[3])


# ---------------------------------------------------------------------------------------------
# A long recorded bed

BED_MINUTES = 20.0
BED_RATE = 44_100
BED_MINUTES_OF_SESSION = 60
BED_TARGET_MB = 250.0


def write_bed(path: Path, minutes: float = BED_MINUTES) -> None:
    """A stereo 16-bit WAV of soft, slowly swelling noise, written ten seconds at a time."""
    import wave

    import numpy as np

    rng = np.random.default_rng(20)
    frames = round(minutes * 60 * BED_RATE)
    block = 10 * BED_RATE
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(BED_RATE)
        for start in range(0, frames, block):
            n = min(block, frames - start)
            t = (start + np.arange(n)) / BED_RATE
            swell = 0.6 + 0.4 * np.sin(2 * np.pi * t / 37.0)
            noise = rng.standard_normal((n, 2)) * (swell * 2000.0)[:, None]
            out.writeframes(np.clip(noise, -32768, 32767).astype("<i2").tobytes())


def bed_run(work: Path, jobs: int | None) -> Run:
    """``render back-pain --minutes 60 --ambient`` a 20-minute stereo WAV, in a fresh process,
    its speech cache filled first (as the 60 min run's is)."""
    bed = work / "bed.wav"
    write_bed(bed)
    env = dict(os.environ, AUDIOGUIDE_CACHE_DIR=str(work / "cache"), PYTHONWARNINGS="ignore")
    args = [ROUTINE, "--minutes", str(BED_MINUTES_OF_SESSION)]
    # plan: every cue synthesized into the cache
    session_s = float(json.loads(audioguide(["plan", *args, "--json"], env))["total_s"])
    extra = ["--jobs", str(jobs)] if jobs else []
    command = ["render", *args, "--ambient", str(bed), "-o", str(work / "out"), "-q", *extra]
    measure = measured([sys.executable, "-m", "audioguide", *command], env)
    return Run(f"60 min, {BED_MINUTES:g} min bed", session_s, *measure)


def print_bed_run(run: Run, bed: Path) -> None:
    print(f"bed: {BED_MINUTES:g} min stereo 16-bit WAV, {bed.stat().st_size / 1e6:.0f} MB")
    print(f"{'run':<24}{'session':>9}{'wall':>9}{'peak RSS':>11}{'CPU':>9}")
    print(
        f"{run.name:<24}{run.session_s / 60:>7.1f} m{run.wall_s:>8.2f}s"
        f"{run.peak_rss_mb:>8.0f} MB{run.cpu_s:>8.1f}s"
    )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"target: peak RSS <= {BED_TARGET_MB:.0f} MB: {run.peak_rss_mb:.0f} MB")


# ---------------------------------------------------------------------------------------------
# The limit and the machine


def decoded_session(out: Path, pcm_path: Path) -> None:
    """Write the audio of the session a render wrote in ``out`` (its full-session MP3, the
    largest file, decoded) to ``pcm_path`` as int16 mono, a block at a time."""
    import soundfile

    full = max(out.rglob("*.mp3"), key=lambda path: path.stat().st_size)
    with open(pcm_path, "wb") as pcm:
        for block in soundfile.blocks(str(full), blocksize=LAME_BLOCK, dtype="int16"):
            pcm.write(block.reshape(len(block), -1)[:, 0].tobytes())


def naive_session():  # type: ignore[no-untyped-def]
    """(timeline, speech, settings) of the 20-minute back-pain with espeak-ng, cache warm."""
    from audioguide.pipeline import SessionOptions, VoiceOptions, make_speech
    from audioguide.routine import load_routine
    from audioguide.timeline import build_timeline, speech_texts

    options = SessionOptions(voice=VoiceOptions(voice=ESPEAK_VOICE))
    routine = load_routine(ROUTINE)
    speech = make_speech(options)
    for text in speech_texts(routine, options.render):
        speech.sample_count(text)
    return build_timeline(routine, speech.length_s, options.render), speech, options.mix


def limit_run(pcm_path: Path, cores: int, env: dict[str, str], repeat: int) -> Run:
    """The limit for the session in ``pcm_path``: the fastest of ``repeat`` runs."""
    from audioguide.export import DEFAULT_BITRATE_KBPS, LAME_QUALITY
    from audioguide.synth import SAMPLE_RATE

    settings = [DEFAULT_BITRATE_KBPS, LAME_QUALITY, SAMPLE_RATE, LAME_BLOCK]
    command = [sys.executable, "-c", LIMIT_PROGRAM, str(pcm_path), str(cores)]
    command += [str(value) for value in settings]
    best = min((measured(command, env) for _ in range(repeat)), key=lambda m: m[0])
    session_s = pcm_path.stat().st_size / 2 / SAMPLE_RATE
    return Run("limit", session_s, *best)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_ticks() -> tuple[int, int, int] | None:
    """(steal, I/O wait, all) of the machine's CPU time so far, in ticks (Linux's
    /proc/stat), else None. Steal is time the hypervisor gave this machine's virtual cores to
    another guest; I/O wait, time a core sat idle while a read from the disk was pending (a
    page cache that does not hold the libraries and cues between runs). Either stretches a
    run in wall time."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(value) for value in fields[:8]]
    return (ticks[7], ticks[4], sum(ticks)) if len(ticks) == 8 else None


def waits(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> str:
    """The share of the cores' time between two ``cpu_ticks`` stolen and waiting on the disk."""
    if before is None or after is None or after[2] <= before[2]:
        return "steal and I/O wait unknown"
    total = after[2] - before[2]
    steal, io = ((after[i] - before[i]) / total for i in (0, 1))
    return f"{100 * steal:.1f}% stolen, {100 * io:.1f}% I/O wait"


def subnormal_slowdown() -> float:
    """How many times slower float32 arithmetic on subnormal numbers runs than on normal
    ones here (1 means full speed), from about a second of multiplications."""
    import numpy as np

    tiny = np.finfo(np.float32).smallest_normal
    times = {}
    for name, value in (("normal", tiny * 1e3), ("subnormal", tiny / 1e3)):
        x = np.full(1 << 16, value, dtype=np.float32)
        y = np.empty_like(x)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                np.multiply(x, np.float32(0.999), out=y)
            best = min(best, time.perf_counter() - start)
        times[name] = best
    return times["subnormal"] / times["normal"]


# ---------------------------------------------------------------------------------------------
# The naive build, for comparison


def naive_s(timeline, speech, settings, out: Path) -> float:  # type: ignore[no-untyped-def]
    """Seconds to build and export the session the naive way with pydub."""
    import imageio_ffmpeg  # type: ignore[import-untyped]
    import numpy as np
    import pyloudnorm
    from pydub import AudioSegment

    from audioguide.export import DEFAULT_BITRATE_KBPS, LAME_QUALITY, to_pcm16
    from audioguide.mix import TrackMixer
    from audioguide.synth import SAMPLE_RATE

    AudioSegment.converter = imageio_ffmpeg.get_ffmpeg_exe()
    out.mkdir(parents=True, exist_ok=True)

    def segment(samples: np.ndarray) -> AudioSegment:
        return AudioSegment(
            to_pcm16(samples).tobytes(), sample_width=2, frame_rate=SAMPLE_RATE, channels=1
        )

    def silence_ms(ms: float) -> AudioSegment:
        return AudioSegment.silent(duration=ms, frame_rate=SAMPLE_RATE)

    start = time.perf_counter()
    built = []
    for track in timeline.tracks:
        audio = AudioSegment.empty().set_frame_rate(SAMPLE_RATE)
        for event in track.events:
            # Each event's sound as the real mixer makes it, on its own.
            alone = dataclasses.replace(
                track, events=(event,), start_s=event.start_s, duration_s=event.duration_s
            )
            mixer = TrackMixer(alone, speech, settings)
            piece = segment(mixer.mix(0, mixer.length))
            at_ms = (event.start_s - track.start_s) * 1000.0
            if at_ms >= len(audio):
                audio += silence_ms(at_ms - len(audio)) + piece
            else:  # a cue spoken over its breath: overlay onto what is built so far
                if at_ms + len(piece) > len(audio):
                    audio += silence_ms(at_ms + len(piece) - len(audio))
                audio = audio.overlay(piece, position=at_ms)
        audio += silence_ms(track.duration_s * 1000.0 - len(audio))
        built.append(audio)
    session = sum(built[1:], built[0])
    samples = np.array(session.get_array_of_samples(), dtype=np.float64) / 32768.0
    loudness = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(samples)
    gain_db = settings.loudness_lufs - 3.0103 - loudness
    params = ["-compression_level", str(LAME_QUALITY)]
    bitrate = f"{DEFAULT_BITRATE_KBPS}k"
    for track, audio in zip(timeline.tracks, built, strict=True):
        audio.apply_gain(gain_db).export(
            out / f"{track.index:02d}.mp3", format="mp3", bitrate=bitrate, parameters=params
        )
    session.apply_gain(gain_db).export(
        out / "full.mp3", format="mp3", bitrate=bitrate, parameters=params
    )
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Load check of audioguide serve, on loopback only


@dataclasses.dataclass
class ServeLoad:
    requests: int
    failures: int
    seconds: float
    latencies_s: list[float]
    bytes_read: int
    peak_rss_mb: float
    file_mb: float

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def serve_load(work: Path, seed: int = 0) -> ServeLoad:
    """Render ``SERVE_ROUTINE``, serve it on 127.0.0.1 and load it with random range
    requests from ``SERVE_CLIENTS`` clients for ``SERVE_SECONDS``; stops by itself."""
    env = dict(os.environ, AUDIOGUIDE_CACHE_DIR=str(work / "cache"), PYTHONWARNINGS="ignore")
    out = work / "serve-out"
    audioguide(["render", SERVE_ROUTINE, "-o", str(out), "-q", "--single"], env)
    [full] = (out / SERVE_ROUTINE).glob("* (full).mp3")
    size = full.stat().st_size
    server = subprocess.Popen(
        [sys.executable, "-m", "audioguide", "serve", str(out), *LOOPBACK_ANY_PORT, "--no-token"],
        env=dict(env, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        page_url = ""
        while not page_url:
            line = server.stdout.readline()
            if not line:
                raise SystemExit("audioguide serve stopped before it printed its address")
            if line.startswith("Page: "):
                page_url = line.removeprefix("Page: ").strip()
        address = urlsplit(page_url)
        assert address.hostname == "127.0.0.1"  # loopback only, whatever was printed
        path = f"/{SERVE_ROUTINE}/{quote(full.name)}"
        latencies: list[list[float]] = [[] for _ in range(SERVE_CLIENTS)]
        failures = [0] * SERVE_CLIENTS
        read = [0] * SERVE_CLIENTS
        start = threading.Barrier(SERVE_CLIENTS + 1)
        deadline = [0.0]

        def client(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            connection = http.client.HTTPConnection("127.0.0.1", address.port, timeout=30)
            start.wait()
            while time.perf_counter() < deadline[0]:
                first = rng.randrange(size)
                last = min(size - 1, first + rng.randrange(1, SERVE_MAX_RANGE_BYTES))
                began = time.perf_counter()
                try:
                    connection.request("GET", path, headers={"Range": f"bytes={first}-{last}"})
                    response = connection.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException):
                    failures[index] += 1
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", address.port, timeout=30)
                    continue
                latencies[index].append(time.perf_counter() - began)
                read[index] += len(body)
                if response.status != 206 or len(body) != last - first + 1:
                    failures[index] += 1
            connection.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(SERVE_CLIENTS)]
        for thread in threads:
            thread.start()
        deadline[0] = time.perf_counter() + SERVE_SECONDS
        began = time.perf_counter()
        start.wait()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
        peak_kb = 0
        with open(f"/proc/{server.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak_kb = int(line.split()[1])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    every = [latency for client_latencies in latencies for latency in client_latencies]
    return ServeLoad(
        len(every), sum(failures), seconds, every, sum(read), peak_kb / 1024, size / 1e6
    )


def print_serve_load(load: ServeLoad) -> None:
    print(
        f"serve: {SERVE_CLIENTS} clients, random ranges up to {SERVE_MAX_RANGE_BYTES // 1024} KiB "
        f"of a {load.file_mb:.1f} MB file, {load.seconds:.1f} s on loopback"
    )
    rate_mb_s = load.bytes_read / load.seconds / 1e6
    print(
        f"  {load.requests / load.seconds:.0f} requests/s, {rate_mb_s:.0f} MB/s, latency "
        f"median {load.percentile_ms(0.5):.1f} ms, p99 "
        f"{load.percentile_ms(0.99):.1f} ms, {load.failures} failed, server peak RSS "
        f"{load.peak_rss_mb:.0f} MB"
    )


# ---------------------------------------------------------------------------------------------
# A programme: first run, re-run, one week changed

PROGRAMME_WEEKS = 12
CHANGED_WEEK = 5  # its tempo goes from 5.6 to 5.65 breaths a minute


def _run_capturing(args: list[str], env: dict[str, str]) -> tuple[str, tuple[float, float, float]]:
    """As measured, keeping the standard output: (stdout, (wall s, peak RSS MB, CPU s))."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "audioguide", *args], env=env, stdout=out_file, stderr=err_file
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"audioguide {' '.join(args)} failed:\n{err}")
    scale = 1 / 1024 / 1024 if sys.platform == "darwin" else 1 / 1024
    return out, (wall_s, usage.ru_maxrss * scale, usage.ru_utime + usage.ru_stime)


def programme_runs(work: Path, jobs: int | None) -> None:
    """``program back-pain --weeks 12`` three times in fresh processes, printing each run's
    wall time, CPU time, peak RSS and what it rendered.

    The programme is a copy of the built-in file under the same name (so the same folder), so
    that one week can be changed for the third run."""
    from importlib import resources

    env = dict(os.environ, AUDIOGUIDE_CACHE_DIR=str(work / "cache"), PYTHONWARNINGS="ignore")
    text = (resources.files("audioguide") / "programmes" / "back-pain.yaml").read_text("utf-8")
    programme = work / "back-pain.yaml"
    programme.write_text(text, encoding="utf-8")
    command = ["program", str(programme), "--weeks", str(PROGRAMME_WEEKS), "-o", str(work)]
    command += ["--start", "2026-12-07", *(["--jobs", str(jobs)] if jobs else [])]
    before = f"  - week: {CHANGED_WEEK}\n    minutes: 18\n    breath_tempo: 5.6\n"
    assert before in text, "the built-in programme changed: update CHANGED_WEEK"
    print(f"{'run':<26}{'wall':>9}{'CPU':>9}{'peak RSS':>11}  sessions")
    for name in ("first run", "re-run, nothing changed", f"week {CHANGED_WEEK} tempo changed"):
        if name.startswith("week"):
            programme.write_text(text.replace(before, before.replace("5.6", "5.65")), "utf-8")
        out, (wall_s, rss_mb, cpu_s) = _run_capturing(command, env)
        rendered = [line for line in out.splitlines() if line.startswith("Rendered ")]
        # "Rendered Mon 2026-12-07  Week 1, day 1 ...": the week number is the fifth word.
        weeks = sorted({int(line.split()[4].rstrip(",")) for line in rendered})
        summary = next(line for line in out.splitlines() if " rendered, " in line)
        summary = summary.split("; ")[-1]
        shown = ", ".join(map(str, weeks)) or "none"
        print(f"{name:<26}{wall_s:>8.1f}s{cpu_s:>8.1f}s{rss_mb:>8.0f} MB  {summary}; weeks {shown}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (1 min)")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="passed to render --jobs (default: cores)")
    parser.add_argument("--no-naive", action="store_true", help="skip the pydub build")
    parser.add_argument("--no-long", action="store_true", help="skip the 240-minute render")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of the 20-minute renders, each with its limit; the medians are given",
    )
    parser.add_argument(
        "--serve", action="store_true", help="only the load check of audioguide serve"
    )
    parser.add_argument(
        "--bed", action="store_true", help="only the 60-minute render over a 20-minute WAV bed"
    )
    parser.add_argument(
        "--programme",
        action="store_true",
        help=f"only the programme runs: program back-pain --weeks {PROGRAMME_WEEKS}, first run, "
        "re-run, one week changed",
    )
    args = parser.parse_args()
    if args.programme:
        with tempfile.TemporaryDirectory(prefix="audioguide-bench-") as tmp:
            print(f"audioguide bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
            programme_runs(Path(tmp), args.jobs)
        return
    cores = args.jobs or len(os.sched_getaffinity(0))

    if args.serve:
        with tempfile.TemporaryDirectory(prefix="audioguide-bench-") as tmp:
            print(f"audioguide bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
            print_serve_load(serve_load(Path(tmp)))
            print(f"load average while measuring: {os.getloadavg()[0]:.1f} (1 min)")
        return

    if args.bed:
        with tempfile.TemporaryDirectory(prefix="audioguide-bench-") as tmp:
            print(f"audioguide bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
            print_bed_run(bed_run(Path(tmp), args.jobs), Path(tmp) / "bed.wav")
        return

    piper = piper_installed()
    compiled()
    ticks = cpu_ticks()
    with tempfile.TemporaryDirectory(prefix="audioguide-bench-") as tmp:
        work = Path(tmp)
        base = dict(os.environ, PYTHONWARNINGS="ignore")
        slowdown = subnormal_slowdown()
        results, synth_rounds = render_runs(
            work,
            base,
            args.jobs,
            specs(args.repeat, not args.no_long, piper),
            cores,
            args.repeat,
            piper,
        )
        naive = None
        if args.no_naive:
            naive_note = "skipped (--no-naive)"
        elif importlib.util.find_spec("imageio_ffmpeg") is None:
            naive_note = "skipped: it needs ffmpeg through imageio-ffmpeg: pip install '.[bench]'"
        else:
            os.environ["AUDIOGUIDE_CACHE_DIR"] = str(_cache(work, ESPEAK_VOICE))
            naive = naive_s(*naive_session(), work / "naive")
            naive_note = ""

    by_name = {result.name: result for result in results}
    synth = _median_run("piper synth", synth_rounds) if synth_rounds else None
    full_speed = "yes" if slowdown < 2.0 else "NO"
    print(f"audioguide bench, Python {sys.version.split()[0]}, {cores} cores: {cpu_model()}")
    print(f"subnormal floats at full speed: {full_speed} ({slowdown:.1f}x the time of normal ones)")
    print(f"each figure: the median of {args.repeat} rounds; each ratio: the median of theirs")
    print()
    print(f"{'':<16}{'':>8}{'peak RSS MB':^14}{'wall s':^26}{'CPU s':^26}")
    header = f"{'run':<16}{'session':>8}{'one':>7}{'tree':>7}"
    print(header + f"{'render':>9}{'limit':>8}{'ratio':>9}" * 2)
    for result in results:
        run, limit = result.run, result.limit
        wall = statistics.median(result.ratios())
        cpu = statistics.median(result.ratios(cpu=True))
        print(
            f"{run.name:<16}{run.session_s / 60:>6.1f} m"
            f"{run.peak_rss_mb:>7.0f}{run.tree_rss_mb:>7.0f}"
            f"{run.wall_s:>9.2f}{limit.wall_s:>8.2f}{wall:>8.2f}x"
            f"{run.cpu_s:>9.2f}{limit.cpu_s:>8.2f}{cpu:>8.2f}x"
        )
    if synth is not None:
        print(
            f"{synth.name:<16}{'':>8}{synth.peak_rss_mb:>7.0f}{synth.tree_rss_mb:>7.0f}"
            f"{synth.wall_s:>9.2f}{'':>17}{synth.cpu_s:>9.2f}"
        )
    else:
        print("piper: skipped: the natural extra is not installed (pip install '.[natural]')")
    print(
        f"(limit: LAME encoding the session's audio, as the render wrote it, on {cores} cores, "
        "plus Python's start-up, as one process. piper synth: a cold plan less a warm one. "
        "On a busy machine wall times stretch; CPU times hold.)"
    )
    slope = None
    if "240 min" in by_name:
        # Against the 20-minute render that measures its tracks, as the 240-minute one does
        # (the warm render reads its levels back and skips the memory pass 1 takes).
        short, long = by_name["measured espeak"].run, by_name["240 min"].run
        minutes = (long.session_s - short.session_s) / 60
        slope = (long.peak_rss_mb - short.peak_rss_mb) / minutes
        # A peak moves by a few MB from one run of the same render to the next: so much of
        # the slope is that, read from the short render's own rounds.
        peaks = [run.peak_rss_mb for run, _ in by_name["measured espeak"].pairs]
        print(
            f"peak RSS slope, 20 to 240 min: {slope:.3f} MB per session-minute (the 20-minute "
            f"peak moved {min(peaks):.0f} to {max(peaks):.0f} MB over its rounds: "
            f"{(max(peaks) - min(peaks)) / minutes:.3f} MB per minute of noise)"
        )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"cores' time while measuring: {waits(ticks, cpu_ticks())}")
    print()
    print(f"targets ({cores} cores):")
    for line in target_lines(by_name, synth_rounds, slope):
        print(f"  {line}")
    if naive is None:
        print(f"naive pydub build: {naive_note}")
    else:
        warm = by_name["warm espeak"].run
        print(
            f"naive pydub build, 20 min: {naive:.2f} s, {naive / warm.wall_s:.2f}x the warm render"
        )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


READING_ROUNDS = 9  # rounds that read a target near its line (docs/performance.md: Rounds)


def _rounds_verdict(ok: bool, *rounds: tuple[list[float], float]) -> str:
    """``_met(ok)``, and a warning when the rounds of any ``(values, line)`` fall on both sides
    of its line: on a machine whose speed drifts, three rounds then decided the verdict by
    chance (a 1.71x of three rounds met the cold espeak-ng target where two runs of nine
    rounds gave 1.92x and 1.95x, docs/performance.md)."""
    verdict = _met(ok)
    if any(min(values) <= line < max(values) for values, line in rounds):
        count = min(len(values) for values, _ in rounds)
        # Read over enough already, asking for the same again would be no advice.
        advice = (
            f"read it over more rounds, --repeat {READING_ROUNDS}"
            if count < READING_ROUNDS
            else f"the median of {count} decides"
        )
        verdict += f" (rounds on both sides of the line: {advice})"
    return verdict


def _median_run(name: str, runs: list[Run]) -> Run:
    """``runs`` as one: each figure the median of theirs (the session, the first's)."""
    return Run(
        name,
        runs[0].session_s,
        statistics.median(r.wall_s for r in runs),
        statistics.median(r.peak_rss_mb for r in runs),
        statistics.median(r.cpu_s for r in runs),
        statistics.median(r.tree_rss_mb for r in runs),
    )


def _spread(values: list[float], unit: str = "x") -> str:
    """The median of ``values`` and, with more than one, their range."""
    middle = f"{statistics.median(values):.2f}{unit}"
    if len(values) < 2:
        return middle
    return f"{middle} ({min(values):.2f} to {max(values):.2f})"


def target_lines(
    by_name: dict[str, Paired], synth_rounds: list[Run], slope: float | None
) -> list[str]:
    """Each target of issues 12 and 13 with what was measured and whether it is met: a ratio
    target by the median of the rounds' ratios, the cold Piper bound by the median of the
    rounds' margins (each round's cold render against that round's synthesis and warm
    render)."""
    lines = []
    for name, target in TARGETS.items():
        if name not in by_name:
            continue
        walls, cpus = by_name[name].ratios(), by_name[name].ratios(cpu=True)
        ok = statistics.median(walls) <= target and statistics.median(cpus) <= target
        verdict = _rounds_verdict(ok, (walls, target), (cpus, target))
        lines.append(
            f"{name} <= {target}x the limit: {_spread(walls)} wall, {_spread(cpus)} CPU: {verdict}"
        )
    if synth_rounds and "cold piper" in by_name:
        colds = [run for run, _ in by_name["cold piper"].pairs]
        cold = by_name["cold piper"].run
        synth = _median_run("piper synth", synth_rounds)
        # Against the warm render as it is repeated unchanged (its levels kept), and as it
        # measures every track, the work a cold render does after its synthesis.
        for name in ("warm piper", "measured piper"):
            warms = [run for run, _ in by_name[name].pairs]
            margins = [
                cold_run.wall_s - (synth_run.wall_s + warm_run.wall_s)
                for cold_run, warm_run, synth_run in zip(colds, warms, synth_rounds, strict=True)
            ]
            warm = by_name[name].run
            lines.append(
                f"cold piper <= piper synth + {name}: cold less the two, in each round, "
                f"{_spread(margins, ' s')} (medians: {cold.wall_s:.2f} s against "
                f"{synth.wall_s:.2f} + {warm.wall_s:.2f} s): "
                f"{_rounds_verdict(statistics.median(margins) <= 0, (margins, 0.0))}"
            )
        lines.append(
            f"cold piper <= {PIPER_COLD_TARGET_S:.0f} s wall: {cold.wall_s:.2f} s: "
            f"{_met(cold.wall_s <= PIPER_COLD_TARGET_S)}"
        )
        lines.append(
            f"cold piper peak RSS (tree) <= {PIPER_RSS_TARGET_MB:.0f} MB: "
            f"{cold.tree_rss_mb:.0f} MB: {_met(cold.tree_rss_mb <= PIPER_RSS_TARGET_MB)}"
        )
        warm, espeak = by_name["warm piper"].run, by_name["warm espeak"].run
        lines.append(
            f"warm piper within 10% of warm espeak: {warm.wall_s:.2f} s against "
            f"{espeak.wall_s:.2f} s: {_met(warm.wall_s <= 1.1 * espeak.wall_s)}"
        )
    if "240 min" in by_name and slope is not None:
        rss = by_name["240 min"].run.peak_rss_mb
        lines.append(
            f"240 min peak RSS <= {RSS_TARGET_MB:.0f} MB: {rss:.0f} MB: "
            f"{_met(rss <= RSS_TARGET_MB)}"
        )
        lines.append(
            f"flat in length (slope < {FLAT_SLOPE_MB_PER_MIN} MB per minute): {slope:.3f}: "
            f"{_met(slope < FLAT_SLOPE_MB_PER_MIN)}"
        )
    return lines


if __name__ == "__main__":
    main()
