"""The real speech engine: every cue synthesized, checked, and silent on the terminal."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_errors import TINY, documented

from audioguide.cli import cli
from audioguide.errors import SpeechError
from audioguide.speech import DEFAULT_RATE_WPM, espeak
from audioguide.speech.engine import expected_length_s
from audioguide.speech.espeak import Pyttsx3Engine, list_voices


@pytest.fixture(scope="module")
def engine() -> Pyttsx3Engine:
    return Pyttsx3Engine()


def test_each_cue_gets_its_own_audio(engine):
    # pyttsx3's espeak driver can hand a cue the previous cue's audio; lengths tell them apart.
    short = engine.synthesize("In.")
    long = engine.synthesize(
        "Let your shoulders soften and your breath settle into a slow easy rhythm."
    )
    again = engine.synthesize("In.")
    assert short.samples.dtype == np.int16
    assert short.sample_rate == 22_050
    assert long.samples.size > 4 * short.samples.size
    assert abs(again.samples.size - short.samples.size) < 0.1 * short.samples.size


def test_length_follows_the_rate():
    words = "Slowly lift your arms in front of you to the height of your shoulders."
    slow = Pyttsx3Engine(rate_wpm=100).synthesize(words)
    fast = Pyttsx3Engine(rate_wpm=200).synthesize(words)
    ratio = (slow.samples.size / slow.sample_rate) / (fast.samples.size / fast.sample_rate)
    assert 1.5 < ratio < 2.5
    expected = expected_length_s(words, DEFAULT_RATE_WPM)
    assert expected == pytest.approx(14 * 60 / DEFAULT_RATE_WPM)


@pytest.mark.parametrize("rate", [120, 140, 160])
def test_rate_is_words_per_minute_as_spoken(rate):
    # Measured as the calibration measures it (scripts/calibrate_espeak.py): the words of real
    # cues over the length of the prepared cues, pauses included. espeak-ng's own setting
    # reads about 15% faster than it says (161 a minute at 140).
    from audioguide.pronounce import ESPEAK
    from audioguide.routine import load_routine
    from audioguide.speech import prepared_length
    from audioguide.speech.engine import words_per_minute
    from audioguide.synth import SAMPLE_RATE
    from audioguide.timeline import speech_texts

    texts = list(dict.fromkeys(speech_texts(load_routine("back-pain"))))
    clips = Pyttsx3Engine(rate_wpm=rate).synthesize_all([ESPEAK.respell(t) for t in texts])
    seconds = [prepared_length(clip) / SAMPLE_RATE for clip in clips]
    assert words_per_minute(texts, seconds) == pytest.approx(rate, rel=0.05)


def test_the_espeak_setting_follows_the_measured_pace():
    assert espeak.espeak_rate_for(140) == 123  # 2.97 + 0.8541 x 140
    assert espeak.espeak_rate_for(80) == espeak.ESPEAK_MIN_RATE  # espeak-ng's slowest
    settings = [espeak.espeak_rate_for(r) for r in range(80, 261)]
    assert settings == sorted(settings)
    assert Pyttsx3Engine(rate_wpm=140).identity != Pyttsx3Engine(rate_wpm=141).identity


def test_unknown_voice_is_refused_with_matches():
    with pytest.raises(SpeechError, match=r"--voice: no voice 'en-usa'\. Close matches: .*en-us"):
        Pyttsx3Engine(voice="en-usa")


def test_rate_outside_range_is_refused():
    with pytest.raises(SpeechError, match="--rate must be between 80 and 260"):
        Pyttsx3Engine(rate_wpm=500)


def test_voices_lists_english():
    ids = {v.id for v in list_voices()}
    assert "gmw/en-us" in ids


def test_nothing_reaches_the_terminal(short_routine_file, tmp_path):
    # espeak's driver prints "Audio saved to ..." from its own code for every cue.
    env_cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "audioguide", "plan", str(short_routine_file), "--no-cache"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "AUDIOGUIDE_CACHE_DIR": str(env_cache)},
        check=True,
    )
    assert "Audio saved" not in result.stdout + result.stderr
    assert result.stdout.startswith("Short Test Session")
    assert result.stderr == ""


# -- the worker processes: time bounds, a way out, and the driver patch they own -------------

NO_FILE_GROWS = textwrap.dedent(
    """
    import resource, sys
    from audioguide.cli import main
    # No file may grow past 4 KiB, in this process or the workers it starts: what a nearly
    # full temporary folder does to a WAV file written there.
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    sys.argv = ["audioguide", *sys.argv[1:]]
    main()
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="espeak-ng's driver is patched on Linux")
def test_a_cues_audio_goes_through_no_file(tmp_path):
    """The driver's WAV file per cue is kept in memory: a plan needs no temporary folder with
    room (it used to end in an error when the WAV file could not be written), and leaves
    nothing there."""
    (tmp_path / "routine.yaml").write_text(TINY, encoding="utf-8")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": "tmp", "AUDIOGUIDE_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", NO_FILE_GROWS, "plan", "routine.yaml", "--no-cache"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Tiny")
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "command", [["voices"], ["plan", "routine.yaml"], ["render", "routine.yaml"]]
)
def test_espeak_data_path_pointing_nowhere_is_named_with_the_fix(tmp_path, command):
    (tmp_path / "routine.yaml").write_text(TINY, encoding="utf-8")
    env = {
        **os.environ,
        "ESPEAK_DATA_PATH": "/nowhere",
        "AUDIOGUIDE_CACHE_DIR": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "audioguide", *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    message, status = documented()["espeak-data-missing"]
    assert (result.returncode, result.stderr.splitlines()) == (status, [message])
    assert result.stdout == ""
    assert not (tmp_path / "audioguide-out").exists()


def test_a_cue_with_nothing_to_pronounce_is_named_without_advice_to_reinstall(tmp_path):
    for text in ("...", "-", "\u200b\u200e"):
        with pytest.raises(SpeechError) as raised:
            Pyttsx3Engine().synthesize(text)
        assert f"the cue {text!r} has nothing to pronounce" in str(raised.value)
        assert "reinstall" not in str(raised.value)
    (tmp_path / "routine.yaml").write_text(
        'title: T\nsections:\n  - title: One\n    steps:\n      - say: "..."\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["plan", str(tmp_path / "routine.yaml")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and "'...'" in line and "reinstall" not in line


def worker_pids(pid: int) -> list[int]:
    """The speech workers of process ``pid``: children running ``python -c`` (a child
    stopped between fork and exec would still hold the parent's stdout)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = []
    for child in map(int, children):
        with contextlib.suppress(OSError):
            if b"\0-c\0" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
    return workers


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_ctrl_c_ends_a_render_whose_speech_worker_is_stuck(short_routine_file, tmp_path):
    env = {**os.environ, "AUDIOGUIDE_CACHE_DIR": str(tmp_path / "cache")}
    # A worker that stops answering: SIGSTOP it as soon as it exists, before it replies.
    proc = subprocess.Popen(
        [sys.executable, "-m", "audioguide", "render", str(short_routine_file), "-o", "out"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stopped: list[int] = []
    stopped_at = 0.0
    try:
        deadline = time.monotonic() + 60
        while not stopped or time.monotonic() < stopped_at + 1.5:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no speech worker was started"
            for child in set(worker_pids(proc.pid)) - set(stopped):
                os.kill(child, signal.SIGSTOP)
                stopped.append(child)
                stopped_at = time.monotonic()
        assert proc.poll() is None  # waiting on the stuck workers...
        assert not list((tmp_path / "out").glob(".*.partial"))  # ...with no cue mixed yet
        pressed = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert time.monotonic() - pressed < 10
    finally:
        proc.kill()
        for child in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGCONT)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "Interrupted; nothing was changed."
    assert "Traceback" not in err
    for child in stopped:  # the worker was ended, not left behind stopped
        assert (
            not Path(f"/proc/{child}").exists()
            or "zombie" in Path(f"/proc/{child}/status").read_text()
        )


def test_a_worker_that_stops_answering_is_ended_within_the_time_bound(monkeypatch):
    engine = Pyttsx3Engine()
    engine.synthesize("Warm up.")
    monkeypatch.setattr(espeak, "CUE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(espeak, "REPLY_GRACE_S", 0.5)
    idle = list(espeak._POOL._idle)
    assert idle
    for worker in idle:
        os.kill(worker.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(SpeechError, match=r"did not finish speaking 'Hello there\.' in time"):
        engine.synthesize("Hello there.")
    assert time.monotonic() - started < 5
    for worker in idle:
        assert worker.process.poll() is not None  # ended, not left stopped
    # The next cue gets a fresh worker.
    assert engine.synthesize("Hello there.").samples.size > 0


def test_close_frees_a_thread_waiting_on_a_stuck_worker():
    engine = Pyttsx3Engine()
    engine.synthesize("Warm up.")
    for worker in espeak._POOL._idle:
        os.kill(worker.process.pid, signal.SIGSTOP)
    failures: list[BaseException] = []

    def speak() -> None:
        try:
            engine.synthesize("Nobody answers.")
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=speak)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()
    started = time.monotonic()
    engine.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    assert len(failures) == 1 and isinstance(failures[0], SpeechError)


def test_the_driver_patch_is_in_effect_in_the_worker():
    Pyttsx3Engine().synthesize("Breathe in.")
    stats = espeak._request(("stats",), 10.0, "reporting")
    assert stats["sleeps"] > 0  # the driver's run loop slept through our clock
    assert stats["printed"] >= 1  # and announced its file through our print


def test_the_driver_clock_passes_everything_but_sleep_through():
    clock = espeak.DriverClock()
    assert clock.monotonic is time.monotonic
    assert clock.time is time.time
    assert clock.perf_counter is time.perf_counter
    assert clock.strftime is time.strftime
    started = time.perf_counter()
    clock.sleep(0.5)
    assert time.perf_counter() - started < 0.1  # capped at 1 ms
    clock.deadline = time.monotonic() - 1
    with pytest.raises(espeak._CueFailed):
        clock.sleep(0.01)


def fake_driver(loop_source: str) -> types.ModuleType:
    module = types.ModuleType("pyttsx3.drivers.espeak")
    module.time = time  # type: ignore[attr-defined]
    exec(loop_source, module.__dict__)
    return module


@pytest.mark.parametrize(
    "loop_source",
    [
        pytest.param(
            "from time import sleep\nclass EspeakDriver:\n"
            "    def startLoop(self):\n        sleep(0.01)\n"
            "    def _onSynth(self):\n        print('saved')\n",
            id="sleep-imported-by-name",
        ),
        pytest.param(
            "class EspeakDriver:\n    def startLoop(self):\n        time.sleep(0.01)\n"
            "    def _onSynth(self):\n        import logging; logging.info('saved')\n",
            id="no-print",
        ),
        pytest.param(
            "class Driver:\n    def loop(self):\n        time.sleep(0.01)\n", id="renamed-class"
        ),
        pytest.param(
            "class EspeakDriver:\n    def startLoop(self):\n        time.sleep(0.01)\n"
            "    def _onSynth(self):\n        open('cue.wav', 'wb').close(); print('saved')\n",
            id="no-wave",
        ),
    ],
)
def test_a_pyttsx3_the_patch_does_not_fit_is_refused(monkeypatch, loop_source):
    driver = fake_driver(loop_source)
    drivers = types.ModuleType("pyttsx3.drivers")
    drivers.espeak = driver  # type: ignore[attr-defined]
    package = types.ModuleType("pyttsx3")
    package.drivers = drivers  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyttsx3", package)
    monkeypatch.setitem(sys.modules, "pyttsx3.drivers", drivers)
    monkeypatch.setitem(sys.modules, "pyttsx3.drivers.espeak", driver)
    with pytest.raises(SpeechError, match=r"install pyttsx3>=2\.99,<3"):
        espeak.patch_driver(espeak.DriverClock(), lambda *args: None, espeak.CapturedWav())
    assert driver.time is time  # nothing was patched


def test_the_installed_pyttsx3_is_the_major_version_the_patch_knows():
    from importlib import metadata

    assert int(metadata.version("pyttsx3").split(".")[0]) in espeak.SUPPORTED_PYTTSX3


# -- reproducible fresh synthesis ---------------------------------------------------------------

BATCH = [
    "Welcome. Sit comfortably.",
    "Breathe in slowly.",
    "And out.",
    "Let your shoulders soften and your breath settle.",
]


def test_espeak_sounds_a_cue_differently_after_other_cues():
    # Why batches exist: the same text, after a different history, is not the same clip.
    engine = Pyttsx3Engine()
    (alone,) = engine.synthesize_all(["Breathe in slowly."])
    for text in BATCH:
        engine.synthesize(text)
    after_others = engine.synthesize("Breathe in slowly.")
    assert not np.array_equal(alone.samples, after_others.samples)


def test_a_batch_sounds_the_same_whatever_was_spoken_before():
    engine = Pyttsx3Engine()
    first = engine.synthesize_all(BATCH)
    for text in reversed(BATCH):
        engine.synthesize(text)
    engine.synthesize("Something else entirely, said before the batch.")
    again = engine.synthesize_all(BATCH)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)


def test_two_cold_renders_are_byte_identical(short_routine_file, tmp_path):
    outputs = []
    for run in ("a", "b"):
        env = {**os.environ, "AUDIOGUIDE_CACHE_DIR": str(tmp_path / f"cache-{run}")}
        out = ["--seed", "3", "-q", "-o", str(tmp_path / run)]
        subprocess.run(
            [sys.executable, "-m", "audioguide", "render", str(short_routine_file), *out],
            env=env,
            check=True,
            timeout=300,
        )
        folder = tmp_path / run / "short"
        outputs.append({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    assert len(outputs[0]) >= 4  # tracks, the full session, the playlist, transcripts
    assert outputs[0].keys() == outputs[1].keys()
    assert [n for n in outputs[0] if outputs[0][n] != outputs[1][n]] == []


COUNT_WORKERS_AND_RENDER = """
import atexit, subprocess, sys
started = []
real_init = subprocess.Popen.__init__
def init(self, args, *rest, **kwargs):
    if args[0] == sys.executable:  # a worker (ldconfig, say, is not one)
        started.append(args)
    real_init(self, args, *rest, **kwargs)
subprocess.Popen.__init__ = init
atexit.register(lambda: print("workers started:", len(started)))
sys.argv[0] = "audioguide"
from audioguide.__main__ import main
main()
"""


def test_a_warm_render_starts_no_espeak_worker(tmp_path):
    """Every cue in the cache: nothing to speak, so no worker is started (its start was about
    0.3 s of a 4 s render) just to learn espeak-ng's version and voices; they are kept beside
    the cache, keyed by the files that decide them."""
    env = {**os.environ, "AUDIOGUIDE_VOICE": "gmw/en-us"}
    render = ["render", "back-pain-quick", "-o", str(tmp_path / "out"), "-q", "--force"]
    for expected in (None, 0, 0):
        proc = subprocess.run(
            [sys.executable, "-c", COUNT_WORKERS_AND_RENDER, *render],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        count = int(proc.stdout.strip().splitlines()[-1].rsplit(" ", 1)[1])
        if expected is None:
            assert count >= 1  # cold: a worker speaks the cues
        else:
            assert count == expected


def test_what_a_worker_said_is_kept_only_for_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOGUIDE_CACHE_DIR", str(tmp_path))
    info = {"version": "espeak-ng 1.52.0", "voices": [["gmw/en-us", "English", ["en-us"]]]}
    fingerprint = espeak._fingerprint()
    espeak._keep_info(fingerprint, info)
    assert espeak._kept_info(fingerprint) == info
    assert espeak._kept_info(fingerprint + "changed") is None  # another library or data
    kept = tmp_path / espeak.INFO_FILE
    for damaged in (b"", b"{not json", b'{"fingerprint": 1}', b"\xff\xfe"):
        kept.write_bytes(damaged)
        assert espeak._kept_info(fingerprint) is None


def test_the_fingerprint_follows_the_voice_data(tmp_path, monkeypatch):
    before = espeak._fingerprint()
    data = tmp_path / "espeak-ng-data"
    data.mkdir()
    (data / "phontab").write_bytes(b"x")
    monkeypatch.setenv("ESPEAK_DATA_PATH", str(data))
    moved = espeak._fingerprint()
    assert moved != before
    (data / "phontab").write_bytes(b"xy")
    assert espeak._fingerprint() != moved


def test_a_cue_spoken_wrong_in_a_batch_leaves_the_batch_as_if_nothing_had_gone_wrong(
    monkeypatch,
):
    """Now and then espeak hands a cue over empty. It was spoken all the same, and every cue
    after it would come out a few samples different; the batch goes on from a worker that has
    spoken only the cues before it."""
    clean = [clip.samples for clip in Pyttsx3Engine().synthesize_all(BATCH)]
    real_request = espeak._request

    def empty(wav):
        rate, width, channels, _frames = wav
        return rate, width, channels, b""  # as espeak hands it over

    def attempt() -> tuple[list[str], list[np.ndarray]] | None:
        """The batch with its third cue handed over empty the first time: what was asked and
        the clips; None if espeak itself handed a cue over empty too (it does, now and then,
        most often under load), which adds replays of its own to what was asked."""
        asked: list[str] = []
        genuine: list[str] = []

        def once_empty(text, wav):
            asked.append(text)
            if not wav[3]:
                genuine.append(text)
            return empty(wav) if text == BATCH[2] and asked.count(BATCH[2]) == 1 else wav

        def request(request, timeout_s, what):
            reply = real_request(request, timeout_s, what)
            if request[0] == "synthesize":
                return once_empty(request[1], reply)
            if request[0] == "synthesize_many":  # the batch asks for a few cues at a time
                return [once_empty(t, w) for t, w in zip(request[1], reply, strict=True)]
            return reply

        with monkeypatch.context() as patched:
            patched.setattr(espeak, "_request", request)
            again = [clip.samples for clip in Pyttsx3Engine().synthesize_all(BATCH)]
        return None if genuine else (asked, again)

    tried = (attempt() for _ in range(4))
    result = next((r for r in tried if r is not None), None)
    assert result is not None, "espeak handed a cue over empty on its own in every attempt"
    asked, again = result
    assert asked == [*BATCH[:3], *BATCH[:2], *BATCH[2:]]  # the cues before it, spoken again
    for a, b in zip(clean, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_batch_asks_for_several_cues_at_a_time_and_sounds_as_one_at_a_time(monkeypatch):
    """The batch's worker speaks a few cues per request, without waiting on this process in
    between; the clips are the ones it gives asked for each cue on its own."""
    texts = [f"{text} Number {n}." for n in range(3) for text in BATCH]
    sizes: list[int] = []
    real_request = espeak._request

    def counted(request, timeout_s, what):
        if request[0] == "synthesize_many":
            sizes.append(len(request[1]))
        return real_request(request, timeout_s, what)

    monkeypatch.setattr(espeak, "_request", counted)
    together = [clip.samples for clip in Pyttsx3Engine().synthesize_all(texts)]
    assert sizes == [1, 2, 4, 5]  # espeak.BATCH_CUES, the last cut to the batch
    monkeypatch.setattr(espeak, "BATCH_CUES", (1,))
    sizes.clear()
    alone = [clip.samples for clip in Pyttsx3Engine().synthesize_all(texts)]
    assert sizes == [1] * len(texts)
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_cue_with_nothing_to_pronounce_in_a_batch_fails_where_its_clip_would_come():
    texts = [*BATCH[:3], "...", BATCH[3]]
    clips = Pyttsx3Engine().synthesize_all(texts)
    for _ in BATCH[:3]:  # in the same request as the cue after them
        assert next(clips).samples.size > 0
    with pytest.raises(SpeechError, match=re.escape("the cue '...' has nothing to pronounce")):
        next(clips)


def test_the_fingerprint_follows_a_system_library_and_starts_no_process(tmp_path, monkeypatch):
    """A system's espeak-ng is told by the dynamic loader's cache and the folders it searches:
    not by ctypes.util.find_library, which runs ldconfig and the C compiler (30 ms a render)."""

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fingerprint started a process")

    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    monkeypatch.setattr(subprocess, "Popen", no_process)
    before = espeak._fingerprint()
    (tmp_path / "libespeak-ng.so.1").write_bytes(b"a library installed by hand")
    assert espeak._fingerprint() != before
    assert espeak.LOADER_CACHE.as_posix() in before
