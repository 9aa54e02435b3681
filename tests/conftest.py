"""Shared fixtures: an isolated speech cache, a fast fake speech engine, small routines, and
the CLI run as a user runs it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from click.testing import CliRunner

from audioguide.speech import Speech, SpeechClip, VoiceInfo

FAKE_RATE = 22_050
FAKE_SECONDS_PER_WORD = 0.3


class FakeEngine:
    """Speech-like audio whose length is known: 0.3 s per word of a 180 Hz buzz.

    Deterministic, about a thousand times faster than espeak; for unit tests only.
    """

    identity = "fake-engine/1"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def synthesize(self, text: str) -> SpeechClip:
        self.calls.append(text)
        n = int(len(text.split()) * FAKE_SECONDS_PER_WORD * FAKE_RATE)
        t = np.arange(n) / FAKE_RATE
        wave = 0.5 * np.sign(np.sin(2 * np.pi * 180 * t)) * np.sin(np.pi * t / t[-1])
        # A little silence around it, as a real engine leaves.
        pad = np.zeros(int(0.1 * FAKE_RATE))
        samples = np.concatenate([pad, wave, pad])
        return SpeechClip((samples * 20000).astype(np.int16), FAKE_RATE)

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("fake", "Fake", ("en",))]


@pytest.fixture(autouse=True, scope="session")
def espeak_by_default():
    """espeak-ng unless a test asks for another voice, for every fixture and test alike: the
    suite's timings and expectations are espeak's; tests/test_piper.py speaks with Piper on
    purpose (where the natural extra is installed, Piper is the default voice)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("AUDIOGUIDE_VOICE", "gmw/en-us")
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never touch the user's cache folder from a test."""
    monkeypatch.setenv("AUDIOGUIDE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake_speech(fake_engine: FakeEngine) -> Speech:
    return Speech(fake_engine, cache=None)


# Small enough to render in about a second with the real engine and encoder: two tracks, one
# of them spoken.
TINY = """\
title: Tiny
sections:
  - title: First
    steps:
      - say: One.
        pause: 1
  - title: Second
    steps:
      - pause: 2
"""


def run_cli(args: Sequence[str]) -> tuple[int, str]:
    """``audioguide ARGS`` in this process: its exit status and what it printed. An error the
    CLI did not turn into a message is raised here, with its traceback."""
    from audioguide.cli import cli

    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


SHORT_ROUTINE = """\
title: Short Test Session
sections:
  - title: Arrive
    steps:
      - bell: 4
      - say: Welcome. Sit comfortably.
        pause: 1
  - title: Breathe
    steps:
      - say: Follow the tone.
      - breathe:
          cycles: 3
          cues:
            inhale: In.
            exhale: Out.
          cue_cycles: 1
      - pause: 2
"""


@pytest.fixture
def short_routine_file(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text(SHORT_ROUTINE, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def rendered_short(tmp_path_factory: pytest.TempPathFactory):
    """SHORT_ROUTINE rendered once, with the real speech engine and encoder, into a folder of
    its own (``<folder>/short/``): what ``audioguide serve`` serves in the tests. Read only."""
    from audioguide.pipeline import SessionOptions, VoiceOptions, render_session

    work = tmp_path_factory.mktemp("rendered")
    routine = work / "short.yaml"
    routine.write_text(SHORT_ROUTINE, encoding="utf-8")
    # No cache: a session-wide fixture comes before the per-test isolated cache (and before
    # its AUDIOGUIDE_VOICE, so the voice is named here).
    options = SessionOptions(voice=VoiceOptions(voice="gmw/en-us"), use_cache=False, jobs=2)
    return render_session(routine, work / "out", options)


class Served:
    """``audioguide serve FOLDER --host 127.0.0.1 --port 0 ARGS`` running in its own process,
    as a user starts it; ``page_url`` and ``feed_url`` as it printed them."""

    def __init__(self, folder, *args: str) -> None:
        import os
        import selectors
        import subprocess
        import sys
        import time
        import urllib.request

        command = [sys.executable, "-m", "audioguide", "serve", str(folder)]
        command += ["--host", "127.0.0.1", "--port", "0", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.printed: list[str] = []
        self.stderr = ""
        # Read from the pipe itself, not through a buffered reader: a readline that pulled
        # the URLs into its buffer with the line before them left select() waiting on an
        # empty pipe, and the server "printed no URLs" it had printed.
        self._unread = b""  # the last line read, not yet ended
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 60
        with selectors.DefaultSelector() as selector:
            assert self.proc.stdout is not None
            stdout = self.proc.stdout.fileno()
            selector.register(stdout, selectors.EVENT_READ)
            while "Podcast feed" not in urls:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    self.stop()
                    raise AssertionError(f"the server printed no URLs: {self.printed}")
                chunk = os.read(stdout, 1 << 16)
                if not chunk:
                    self.stop()
                    raise AssertionError(f"the server stopped: {self.printed} {self.stderr}")
                *lines, self._unread = (self._unread + chunk).split(b"\n")
                for line in (raw.decode() for raw in lines):
                    self.printed.append(line)
                    label, _, url = line.strip().partition(": ")
                    if url.startswith("http://"):
                        urls[label] = url
        self.page_url = urls["Page"]
        self.feed_url = urls["Podcast feed"]
        # Answered once: the server is running, and has printed all it prints on starting.
        while True:
            try:
                with urllib.request.urlopen(self.page_url, timeout=5) as response:
                    assert response.status == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit status."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.printed += (self._unread + out).decode().splitlines()
        self._unread = b""
        self.stderr = err.decode()
        return self.proc.returncode


@pytest.fixture(scope="session")
def served(rendered_short):
    """The rendered short session served for the whole test run (read only)."""
    server = Served(rendered_short.folder.parent)
    yield server
    server.stop()
